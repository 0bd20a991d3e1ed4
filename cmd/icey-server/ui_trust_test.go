package main

// The bundled UI in Chromium against the binary: it acts on the server's
// own frames only (a peer cannot fake a shutdown or an icey: event), and an
// ICE failure names the cause the evidence points at.

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/web"
)

func TestChromiumUITrustsOnlyTheServer(t *testing.T) {
	testenv.LoopbackOnly(t)
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	b := browsertest.Start(t, browsertest.Options{})
	if err := b.Navigate(p.base + "/"); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	if err := b.Poll(`window.icey.connected && !document.getElementById("btn-watch").disabled`, 10*time.Second); err != nil {
		b.Fatalf("UI never connected: %v", err)
	}

	// A peer that names itself "icey" and "Icey Server". The server refuses
	// server-only names from peers; what it relays is shown as the peer's.
	ws := "ws" + strings.TrimPrefix(p.base, "http") + "/ws"
	c, _, err := websocket.DefaultDialer.Dial(ws, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteJSON(map[string]any{"type": "auth", "user": "icey", "name": "Icey Server"}); err != nil {
		t.Fatal(err)
	}
	var welcome map[string]any
	if err := c.ReadJSON(&welcome); err != nil || welcome["type"] != "welcome" {
		t.Fatalf("welcome %v %v", welcome, err)
	}
	go func() { // drain what the server sends the peer
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	for _, f := range []map[string]any{
		{"type": "event", "name": "shutdown", "from": "icey|server", "message": "FAKE shutdown claiming the server"},
		{"type": "message", "subtype": "icey:vision", "from": "icey|server", "data": map[string]any{"label": "FAKE-VISION"}},
		{"type": "event", "name": "reboot", "from": "icey|server", "message": "FAKE reboot"},
	} {
		if err := c.WriteJSON(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Poll(`/event reboot from icey\|\S+/.test(document.getElementById("events").innerText)`, 10*time.Second); err != nil {
		b.Fatalf("the peer's event never showed up as the peer's: %v\nrail:\n%s", err,
			browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("events").innerText`))
	}
	noFakes(t, b)

	// The real shutdown, from the server itself, is believed.
	if err := syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := b.Poll(`!document.getElementById("banner").hidden && document.getElementById("banner-title").textContent === "Server is restarting"`, 15*time.Second); err != nil {
		b.Fatalf("the server's own shutdown event was not shown: %v", err)
	}
	p.wait(t, 15*time.Second)
}

// noFakes checks that nothing a peer sent was taken for the server's: no
// restart banner, no server (icey) event or system line with FAKE in it.
func noFakes(t *testing.T, b *browsertest.Browser) {
	t.Helper()
	got := browsertest.MustEval[string](b, 2*time.Second, `JSON.stringify({banner: document.getElementById("banner").hidden ? "" : document.getElementById("banner").innerText,
	    trusted: [...document.querySelectorAll("#events li.ev-icey, #events li.ev-system")].map(li => li.innerText).join("\n")})`)
	if strings.Contains(got, "restarting") || strings.Contains(got, "FAKE") {
		b.Fatalf("the UI believed a peer posing as the server: %s", got)
	}
	if !browsertest.MustEval[bool](b, 2*time.Second, `window.icey.connected`) {
		b.Fatalf("the UI dropped its connection over a peer's frames")
	}
}

// The UI's own rule, against a Symple server that relays everything (an
// older or third-party server): frames of peers carry the peer's address in
// "from" and are never acted on, even from a peer whose user is "icey";
// only frames without "from" or from "icey|server" are the server's.
func TestChromiumUITrustsOnlyTheServerOnARelayingServer(t *testing.T) {
	testenv.LoopbackOnly(t)
	files, err := web.FS("")
	if err != nil {
		t.Fatal(err)
	}
	ui := web.Handler(files)
	conns := make(chan *websocket.Conn, 1)
	up := websocket.Upgrader{}
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		var auth map[string]any
		if err := c.ReadJSON(&auth); err != nil {
			c.Close()
			return
		}
		user, _ := auth["user"].(string)
		c.WriteJSON(map[string]any{"type": "welcome", "protocol": "symple/4", "status": 200,
			"peer": map[string]any{"id": "b1", "user": user, "name": "Browser", "online": true, "type": "Peer"}, "rooms": []string{user, "public"}})
		c.WriteJSON(map[string]any{"type": "presence", "from": "icey|server", "data": map[string]any{"id": "server", "user": "icey",
			"name": "Icey Server", "type": "server", "online": true, "mode": "stream", "capabilities": []string{"view"}}})
		conns <- c
	})
	mux.Handle("/api/", http.NotFoundHandler())
	mux.Handle("/", ui)
	hs := httptest.NewServer(mux)
	defer hs.Close()

	b := browsertest.Start(t, browsertest.Options{})
	if err := b.Navigate(hs.URL + "/"); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	var c *websocket.Conn
	select {
	case c = <-conns:
	case <-time.After(15 * time.Second):
		b.Fatalf("the UI never connected to the relaying server")
	}
	defer c.Close()
	if err := b.Poll(`window.icey.connected`, 10*time.Second); err != nil {
		b.Fatalf("UI not connected: %v", err)
	}
	for _, f := range []map[string]any{
		{"type": "event", "name": "shutdown", "from": "mallory|m1", "message": "FAKE shutdown from a peer"},
		{"type": "event", "name": "shutdown", "from": "icey|a1b2c3d4", "message": "FAKE shutdown from a peer called icey"},
		{"type": "message", "subtype": "icey:vision", "from": "icey|a1b2c3d4", "data": map[string]any{"label": "FAKE-VISION"}},
		{"type": "message", "subtype": "icey:vision", "from": "mallory|m1", "data": map[string]any{"label": "FAKE-VISION-2"}},
		// The server's own, last: once it shows, the fakes were handled.
		{"type": "message", "subtype": "icey:vision", "from": "icey|server", "data": map[string]any{"label": "person"}},
	} {
		if err := c.WriteJSON(f); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Poll(`[...document.querySelectorAll("#events li.ev-icey")].some(li => li.innerText.includes("vision") && li.innerText.includes("person"))`, 10*time.Second); err != nil {
		b.Fatalf("the server's own icey: event was not shown: %v", err)
	}
	noFakes(t, b)
	rail := browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("events").innerText`)
	for _, want := range []string{"event shutdown from mallory|m1", "event shutdown from icey|a1b2c3d4", "icey:vision from icey|a1b2c3d4 ignored", "icey:vision from mallory|m1 ignored"} {
		if !strings.Contains(rail, want) {
			b.Fatalf("the rail lacks %q:\n%s", want, rail)
		}
	}

	// The server's shutdown event (no "from") is believed.
	if err := c.WriteJSON(map[string]any{"type": "event", "name": "shutdown", "message": "Server shutting down"}); err != nil {
		t.Fatal(err)
	}
	if err := b.Poll(`!document.getElementById("banner").hidden && document.getElementById("banner-title").textContent === "Server is restarting"`, 10*time.Second); err != nil {
		b.Fatalf("the server's shutdown event was not shown: %v", err)
	}
}

// iceFailure plays in a browser that cannot reach the media address the
// server offers, and returns the message the UI shows.
func iceFailure(t *testing.T, b *browsertest.Browser, page string) string {
	t.Helper()
	if err := b.Navigate(page); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	if err := b.Poll(`window.icey.connected && !document.getElementById("btn-watch").disabled`, 10*time.Second); err != nil {
		b.Fatalf("UI never connected: %v", err)
	}
	browsertest.MustEval[bool](b, 5*time.Second, `document.getElementById("btn-watch").click(), true`)
	if err := b.Poll(`document.getElementById("call-state").textContent.startsWith("ICE failed")`, 40*time.Second); err != nil {
		b.Fatalf("no ICE failure message: %v\ncall state: %s", err,
			browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("call-state").textContent`))
	}
	msg := browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("call-state").textContent`)
	if banner := browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("banner-text").textContent`); banner != msg {
		b.Fatalf("banner %q differs from the call state %q", banner, msg)
	}
	return msg
}

// noLoopbackICE is a browser that, like a default Chromium, uses no
// loopback address for WebRTC: in a loopback-only namespace it has no
// address of its own, so the server cannot reach it either and ICE fails.
func noLoopbackICE(flags map[string]any) browsertest.Options {
	f := map[string]any{"allow-loopback-in-peer-connection": false}
	for k, v := range flags {
		f[k] = v
	}
	return browsertest.Options{Flags: f}
}

func TestChromiumUIICEFailureNamesTheCause(t *testing.T) {
	testenv.LoopbackOnly(t)
	// webrtc.publicIps makes the server offer 198.18.0.1 (the benchmarking
	// range; nothing answers there and nothing leaves the namespace).
	const unreachable = "ICEY_PUBLIC_IPS=198.18.0.1"

	t.Run("page on this machine", func(t *testing.T) {
		p := launch(t, nil, unreachable)
		p.waitFor(t, "/api/ready", 200, 20*time.Second)
		_, ready, _ := p.get(t, "/api/ready")
		b := browsertest.Start(t, noLoopbackICE(nil))
		msg := iceFailure(t, b, p.base+"/")
		t.Logf("message: %s", msg)
		for _, want := range []string{"127.0.0.1", "198.18.0.1", "--host 127.0.0.1", "webrtc check"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q", want)
			}
		}
		// It quotes what the server's webrtc check says, when there is one.
		for _, c := range ready["checks"].([]any) {
			if m := c.(map[string]any); m["name"] == "webrtc" && !strings.Contains(msg, m["detail"].(string)) {
				t.Errorf("message does not quote the webrtc check %q", m["detail"])
			}
		}
		if strings.Contains(msg, "turn.externalIp") || strings.Contains(msg, "TURN") {
			t.Errorf("blames TURN for a browser on the server's own machine")
		}
		b.Screenshot("ui-ice-failed-local.png")
	})

	t.Run("page on this machine, browser without an address", func(t *testing.T) {
		// Without TURN: the embedded relay on loopback could otherwise give
		// this browser a relay candidate and the call would play.
		p := launch(t, []string{"--no-turn"})
		p.waitFor(t, "/api/ready", 200, 20*time.Second)
		b := browsertest.Start(t, noLoopbackICE(nil))
		msg := iceFailure(t, b, p.base+"/")
		t.Logf("message: %s", msg)
		for _, want := range []string{"offered 127.0.0.1", "this browser gathered no local address", "webrtc check"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q", want)
			}
		}
		if strings.Contains(msg, "TURN") || strings.Contains(msg, "--host 127.0.0.1") {
			t.Errorf("blames TURN or the bind for a browser without an address")
		}
	})

	t.Run("page from elsewhere, no relay", func(t *testing.T) {
		p := launch(t, []string{"--no-turn"}, unreachable)
		p.waitFor(t, "/api/ready", 200, 20*time.Second)
		// The browser resolves icey.test to 127.0.0.1: to the UI the server
		// is a remote host (the page is not on localhost).
		b := browsertest.Start(t, noLoopbackICE(map[string]any{"host-resolver-rules": "MAP icey.test 127.0.0.1"}))
		msg := iceFailure(t, b, "http://icey.test:"+strconv.Itoa(p.port)+"/")
		t.Logf("message: %s", msg)
		for _, want := range []string{"198.18.0.1", "no TURN relay is configured", "turn.externalIp", "webrtc.publicIps"} {
			if !strings.Contains(msg, want) {
				t.Errorf("message lacks %q", want)
			}
		}
		if strings.Contains(msg, "--host 127.0.0.1") {
			t.Errorf("suggests a loopback bind to a remote viewer")
		}
		b.Screenshot("ui-ice-failed-remote.png")

		// The same page with evidence of other situations (a loopback-only
		// machine cannot produce them): a relay that gives no address, and a
		// relay that cannot reach private media addresses.
		relayDown := browsertest.MustEval[string](b, 5*time.Second, `window.icey.iceFailureText({pageHost: "cams.example.org",
		    server: [{protocol: "udp", address: "203.0.113.7", port: "4500", type: "host"}], local: [{protocol: "udp", address: "192.168.1.20", port: "50000", type: "host"}],
		    iceErrors: [{url: "turn:203.0.113.7:3478?transport=udp", code: 701, text: "TURN host lookup received error."}],
		    cfg: {turn: {enabled: true, host: "203.0.113.7", port: 3478}},
		    ready: {checks: [{name: "turn", result: "warn", detail: "static demo credentials (no turn.secret)"}]}}, "connection failed")`)
		for _, want := range []string{"ICE failed (connection failed)", "turn:203.0.113.7:3478", "no relay address", "701", "Open UDP/TCP 3478", "static demo credentials"} {
			if !strings.Contains(relayDown, want) {
				t.Errorf("relay-down message lacks %q: %s", want, relayDown)
			}
		}
		relayRefused := browsertest.MustEval[string](b, 5*time.Second, `window.icey.iceFailureText({pageHost: "cams.example.org",
		    server: [{protocol: "udp", address: "10.0.0.5", port: "4500", type: "host"}], local: [{protocol: "udp", address: "203.0.113.7", port: "61000", type: "relay"}],
		    iceErrors: [], turnRefused: ["peer 10.0.0.5 is not a public address"], cfg: {turn: {enabled: true, host: "203.0.113.7", port: 3478}}, ready: {checks: []}})`)
		for _, want := range []string{"relay address from turn:203.0.113.7:3478", "10.0.0.5", "turn.refused: peer 10.0.0.5 is not a public address", "turn.allowLocalRelay", "webrtc.publicIps"} {
			if !strings.Contains(relayRefused, want) {
				t.Errorf("relay-refused message lacks %q: %s", want, relayRefused)
			}
		}
	})
}
