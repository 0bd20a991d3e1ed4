package web

// The bundled UI in Chromium against a fake Symple server that speaks the
// call protocol of docs (../shared/spec/signaling.md, paths.md) with two
// server peers: icey|server (main, stream: view) and icey|stage (relay:
// publish and view). A pion PeerConnection answers each call, so Broadcast
// (camera → sendonly offer) and Watch (recvonly) really connect. What is
// checked is the UI: the path picker and URL, Broadcast/Stop, the preview,
// the publish state line, the waiting-for-a-publisher cover, busy and
// permission errors in words, and window.iceyState.

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
)

type fakePeer struct {
	addr, path, mode string
	caps             []string
}

var fakePeers = []fakePeer{
	{"icey|server", "main", "stream", []string{"view"}},
	{"icey|stage", "stage", "relay", []string{"publish", "view"}},
}

// fakeSymple is one browser's view of the server: the socket and its call.
type fakeSymple struct {
	t   *testing.T
	api *webrtc.API

	mu        sync.Mutex
	ws        *websocket.Conn
	busy      bool     // reject the next Broadcast with "busy"
	log       []string // call:* frames received, as "init icey|stage"
	offers    []string // offer SDPs
	offerData []map[string]any
	pc        *webrtc.PeerConnection
	gotMedia  chan string // the first RTP packet of a published track: its codec
	connected chan string // the peer address of each call whose PeerConnection connected
}

func (f *fakeSymple) send(m map[string]any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ws != nil {
		f.ws.WriteJSON(m)
	}
}

func (f *fakeSymple) record(s string) {
	f.mu.Lock()
	f.log = append(f.log, s)
	f.mu.Unlock()
}

func (f *fakeSymple) calls() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.log, "; ")
}

func (f *fakeSymple) closePC() {
	f.mu.Lock()
	pc := f.pc
	f.pc = nil
	f.mu.Unlock()
	if pc != nil {
		pc.Close()
	}
}

func (f *fakeSymple) serveWS(w http.ResponseWriter, r *http.Request) {
	up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	ws, err := up.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	var auth map[string]any
	if err := ws.ReadJSON(&auth); err != nil {
		return
	}
	me := fmt.Sprintf("%v|b1", auth["user"])
	f.mu.Lock()
	f.ws = ws
	f.mu.Unlock()
	f.send(map[string]any{"type": "welcome", "protocol": "symple/4", "status": 200,
		"peer": map[string]any{"id": "b1", "user": auth["user"], "name": auth["name"], "online": true, "type": "Peer"}, "rooms": []string{"public"}})
	for _, p := range fakePeers {
		id := strings.TrimPrefix(p.addr, "icey|")
		name := p.path
		if p.path == "main" {
			name = "Icey Server"
		}
		f.send(map[string]any{"type": "presence", "from": p.addr, "data": map[string]any{"id": id, "user": "icey", "name": name,
			"type": "server", "online": true, "mode": p.mode, "capabilities": p.caps, "path": p.path}})
	}
	// Another browser, and one that claims to be the server: neither is a
	// server peer (the real server forces type "Peer" on relayed presence).
	f.send(map[string]any{"type": "presence", "from": "icey|x7", "data": map[string]any{"id": "x7", "user": "icey", "name": "impostor", "type": "Peer", "online": true}})
	// A relaying third-party server might pass this on: a peer claiming to be
	// the server peer of another path. A path's peer is named after its path.
	f.send(map[string]any{"type": "presence", "from": "icey|x8", "data": map[string]any{"id": "x8", "user": "icey", "name": "fake main",
		"type": "server", "online": true, "mode": "relay", "capabilities": []string{"publish"}, "path": "main"}})
	for {
		var m struct {
			Type, Subtype, To string
			Data              json.RawMessage
		}
		if err := ws.ReadJSON(&m); err != nil {
			f.closePC()
			return
		}
		if m.Type != "message" || !strings.HasPrefix(m.Subtype, "call:") {
			continue
		}
		action := strings.TrimPrefix(m.Subtype, "call:")
		if action != "candidate" {
			f.record(action + " " + m.To)
		}
		reply := func(action string, data any) {
			f.send(map[string]any{"type": "message", "subtype": "call:" + action, "from": m.To, "to": me, "data": data})
		}
		switch action {
		case "init":
			f.mu.Lock()
			busy := f.busy
			f.busy = false
			f.mu.Unlock()
			if busy {
				reply("reject", map[string]any{"reason": "busy", "message": `path "stage" already has a publisher`})
				continue
			}
			reply("accept", map[string]any{})
		case "offer":
			var d struct{ SDP string }
			json.Unmarshal(m.Data, &d)
			var all map[string]any
			json.Unmarshal(m.Data, &all)
			delete(all, "sdp")
			f.mu.Lock()
			f.offers = append(f.offers, d.SDP)
			f.offerData = append(f.offerData, all)
			f.mu.Unlock()
			ans, err := f.answer(d.SDP, m.To)
			if err != nil {
				f.t.Errorf("answer: %v", err)
				reply("hangup", map[string]any{"reason": "bad offer"})
				continue
			}
			reply("answer", map[string]any{"type": "answer", "sdp": ans})
		case "candidate":
			var d struct {
				Candidate     string
				SDPMid        *string `json:"sdpMid"`
				SDPMLineIndex *uint16 `json:"sdpMLineIndex"`
			}
			json.Unmarshal(m.Data, &d)
			f.mu.Lock()
			pc := f.pc
			f.mu.Unlock()
			if pc != nil && d.Candidate != "" {
				pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: d.Candidate, SDPMid: d.SDPMid, SDPMLineIndex: d.SDPMLineIndex})
			}
		case "hangup":
			f.closePC()
		}
	}
}

// answer answers an offer like the server: a publisher's tracks are read;
// a viewer gets a (silent) video track.
func (f *fakeSymple) answer(offer, peer string) (string, error) {
	f.closePC()
	pc, err := f.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return "", err
	}
	if strings.Contains(offer, "a=recvonly") {
		tr, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "icey")
		if err != nil {
			return "", err
		}
		if _, err := pc.AddTrack(tr); err != nil {
			return "", err
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		if _, _, err := tr.ReadRTP(); err == nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			select {
			case f.gotMedia <- tr.Codec().MimeType:
			default:
			}
		}
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
		}
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			select {
			case f.connected <- peer:
			default:
			}
		}
	})
	f.mu.Lock()
	f.pc = pc
	f.mu.Unlock()
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offer}); err != nil {
		return "", err
	}
	ans, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", err
	}
	done := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(ans); err != nil {
		return "", err
	}
	<-done
	return pc.LocalDescription().SDP, nil
}

func newFakeServer(t *testing.T) (*fakeSymple, string) {
	return newFakeServerWith(t, nil)
}

// newFakeServerWith is newFakeServer with some routes replaced or added
// (pattern → handler), e.g. "/api/status" or "/api/recordings".
func newFakeServerWith(t *testing.T, routes map[string]http.HandlerFunc) (*fakeSymple, string) {
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	f := &fakeSymple{t: t, api: webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)),
		gotMedia: make(chan string, 1), connected: make(chan string, 4)}
	files, err := FS("")
	if err != nil {
		t.Fatal(err)
	}
	ui, page := Handler(files), Index(files)
	pathPage := regexp.MustCompile(`^/[A-Za-z0-9][A-Za-z0-9._-]{0,63}/$`)
	mux := http.NewServeMux()
	handle := func(pattern string, h http.HandlerFunc) {
		if _, ok := routes[pattern]; !ok {
			mux.HandleFunc(pattern, h)
		}
	}
	for pattern, h := range routes {
		mux.HandleFunc(pattern, h)
	}
	handle("/ws", f.serveWS)
	handle("/api/config", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{}`)) })
	handle("/api/ready", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status":"ok","ready":true,"checks":[]}`))
	})
	handle("/api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"status":"ok","mode":"stream","uptimeSec":1,"sessions":{"active":0,"total":0},` +
			`"paths":[{"name":"main","state":"up"},{"name":"stage","state":"waiting-publisher"}]}`))
	})
	handle("/api/events", http.NotFound)
	handle("/", func(w http.ResponseWriter, r *http.Request) {
		if pathPage.MatchString(r.URL.Path) { // GET /{path}/ is the UI (the server maps it)
			page.ServeHTTP(w, r)
			return
		}
		ui.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(mux)
	srv.Listener = l
	srv.Start()
	t.Cleanup(func() { srv.Close(); f.closePC() })
	return f, srv.URL
}

func TestChromiumBroadcastAndPaths(t *testing.T) {
	testenv.LoopbackOnly(t)
	f, base := newFakeServer(t)
	b := browsertest.Start(t, browsertest.Options{Width: 1280, Height: 800, FakeMedia: true})
	if err := b.Navigate(base + "/stage/?publishToken=pt-1"); err != nil {
		b.Fatalf("open /stage/: %v", err)
	}
	poll := func(what, expr string, d time.Duration) {
		t.Helper()
		if err := b.Poll(expr, d); err != nil {
			state, _ := browsertest.Eval[string](b, 2*time.Second, `JSON.stringify({s: window.iceyState, call: document.getElementById("call-state").textContent, banner: document.getElementById("banner").hidden ? "" : document.getElementById("banner").innerText, events: document.getElementById("events").innerText.slice(0, 1500)})`)
			b.Fatalf("%s: %v\nstate: %s\nserver saw: %s", what, err, state, f.calls())
		}
	}
	click := func(id string) {
		t.Helper()
		browsertest.MustEval[bool](b, 5*time.Second, `document.getElementById("`+id+`").click(), true`)
	}
	wait := func(ch chan string, what string) string {
		t.Helper()
		select {
		case v := <-ch:
			return v
		case <-time.After(20 * time.Second):
			b.Fatalf("server: no %s (calls: %s)", what, f.calls())
			return ""
		}
	}

	// The page takes its path from the URL; the picker lists both paths;
	// Broadcast and Watch are both offered on the relay path.
	poll("connected on stage", `window.icey.connected && window.iceyState.path === "stage" && window.iceyState.paths.join() === "main,stage"`, 10*time.Second)
	poll("picker", `!document.getElementById("path-picker").hidden && document.getElementById("path-picker").value === "stage" && document.getElementById("path-picker").options.length === 2`, 5*time.Second)
	poll("buttons", `!document.getElementById("broadcast").hidden && !document.getElementById("broadcast").disabled && !document.getElementById("btn-watch").disabled && document.getElementById("broadcast-stop").hidden`, 5*time.Second)
	poll("publish state from /api/status", `!document.getElementById("publish-state").hidden && document.getElementById("publish-state").textContent === "waiting for a publisher" && window.iceyState.lastState === "waiting-publisher"`, 10*time.Second)
	if q := browsertest.MustEval[string](b, 2*time.Second, `location.search`); q != "" {
		t.Errorf("publishToken left in the address bar: %q", q)
	}
	// The impostor ("icey|x7", type Peer) is listed as a peer, not a path.
	poll("impostor is not a path", `document.querySelectorAll("#peers li.peer.server").length === 2 && [...document.querySelectorAll("#peers li.peer:not(.server)")].some(li => li.textContent.includes("impostor"))`, 5*time.Second)

	// Broadcast: camera preview, a sendonly offer to icey|stage preferring
	// H.264, then "publishing".
	click("broadcast")
	poll("publishing", `window.iceyState.publishing && window.iceyState.call === "publish" && document.getElementById("publish-state").textContent === "publishing"`, 20*time.Second)
	poll("preview", `!document.getElementById("local-preview").hidden && document.getElementById("local-preview").videoWidth > 0 && document.getElementById("local-preview").muted`, 10*time.Second)
	poll("stop shown", `!document.getElementById("broadcast-stop").hidden && document.getElementById("broadcast").hidden && document.getElementById("live").textContent === "ON AIR"`, 5*time.Second)
	if p := wait(f.connected, "connected publisher"); p != "icey|stage" {
		t.Errorf("the broadcast connected to %s, want icey|stage", p)
	}
	if codec := wait(f.gotMedia, "published video"); !strings.EqualFold(codec, webrtc.MimeTypeH264) {
		t.Errorf("published video codec %s, want H.264 (preferred with setCodecPreferences)", codec)
	}
	b.Screenshot("ui-broadcast.png")
	f.mu.Lock()
	offer := f.offers[len(f.offers)-1]
	offerData := f.offerData[len(f.offerData)-1]
	f.mu.Unlock()
	if !strings.Contains(offer, "a=sendonly") || strings.Contains(offer, "a=recvonly") {
		t.Errorf("the Broadcast offer is not sendonly:\n%s", offer)
	}
	if m := regexp.MustCompile(`(?m)^m=video \d+ \S+ (\d+)`).FindStringSubmatch(offer); m != nil {
		if !regexp.MustCompile(`(?m)^a=rtpmap:` + m[1] + ` H264/`).MatchString(offer) {
			t.Errorf("the offer's first video codec (pt %s) is not H.264", m[1])
		}
	}
	if !strings.Contains(offer, "opus/48000") {
		t.Errorf("no Opus in the offer")
	}
	if offerData["token"] != "pt-1" || offerData["type"] != "offer" {
		t.Errorf("Broadcast call:offer data %v, want the publish token as \"token\"", offerData)
	}

	// Stop: hang up, camera off.
	click("broadcast-stop")
	poll("stopped", `window.iceyState.call === null && !window.iceyState.publishing && document.getElementById("local-preview").hidden && !document.getElementById("local-preview").srcObject && !document.getElementById("broadcast").hidden`, 5*time.Second)
	if c := f.calls(); !strings.HasSuffix(c, "hangup icey|stage") {
		t.Errorf("server saw %s, want a hangup to icey|stage last", c)
	}

	// Busy: someone else publishes on the path.
	f.mu.Lock()
	f.busy = true
	f.mu.Unlock()
	click("broadcast")
	poll("busy in words", `!document.getElementById("banner").hidden && document.getElementById("banner-text").textContent.includes("Someone else is already broadcasting on “stage”") && window.iceyState.call === null && document.getElementById("local-preview").hidden`, 10*time.Second)

	// Permission denied, in words.
	browsertest.MustEval[bool](b, 2*time.Second, `navigator.mediaDevices.getUserMedia = () => Promise.reject(new DOMException("Permission denied", "NotAllowedError")), true`)
	n := len(strings.Split(f.calls(), "; "))
	click("broadcast")
	poll("denied in words", `document.getElementById("banner-text").textContent.startsWith("Camera and microphone access was denied") && window.iceyState.error.startsWith("Camera") && window.iceyState.call === null`, 5*time.Second)
	if m := len(strings.Split(f.calls(), "; ")); m != n {
		t.Errorf("a refused camera still called the server: %s", f.calls())
	}

	// Switch to main with the picker: URL /, no Broadcast there; Watch.
	browsertest.MustEval[bool](b, 2*time.Second, `(() => { const s = document.getElementById("path-picker"); s.value = "main"; s.dispatchEvent(new Event("change")); return true; })()`)
	poll("main selected", `location.pathname === "/" && window.iceyState.path === "main" && document.getElementById("broadcast").hidden && document.getElementById("publish-state").hidden`, 5*time.Second)
	click("btn-watch")
	poll("watching main", `window.iceyState.watching && window.iceyState.call === "view"`, 20*time.Second)
	if p := wait(f.connected, "connected viewer"); p != "icey|server" {
		t.Errorf("Watch on main connected to %s, want icey|server", p)
	}
	f.mu.Lock()
	offer = f.offers[len(f.offers)-1]
	f.mu.Unlock()
	if strings.Contains(offer, "a=sendonly") || !strings.Contains(offer, "a=recvonly") {
		t.Errorf("the Watch offer is not recvonly")
	}

	// Switching path while watching hangs up and watches the new path.
	browsertest.MustEval[bool](b, 2*time.Second, `window.icey.selectPath("stage"), true`)
	poll("watching stage", `location.pathname === "/stage/" && window.iceyState.path === "stage" && window.iceyState.watching && document.querySelector('li.peer.server[data-peer="icey|stage"] .in-call') !== null`, 20*time.Second)
	if c := f.calls(); !strings.Contains(c, "hangup icey|server; init icey|stage") {
		t.Errorf("switching path: server saw %s", c)
	}
	wait(f.connected, "connected viewer on stage")

	// The publisher leaves: the call stays, the picture is covered.
	f.send(map[string]any{"type": "message", "subtype": "icey:state", "from": "icey|stage", "data": map[string]any{"path": "stage", "state": "waiting-publisher"}})
	poll("waiting cover", `document.getElementById("stage").dataset.state === "waiting" && getComputedStyle(document.getElementById("placeholder")).display !== "none" && document.getElementById("ph-text").textContent.includes("Waiting for a publisher") && document.getElementById("publish-state").textContent === "waiting for a publisher" && window.iceyState.watching`, 5*time.Second)
	b.Screenshot("ui-waiting-publisher.png")
	// Only server peers speak for a path: a peer's (or an impostor's) state is ignored.
	f.send(map[string]any{"type": "message", "subtype": "icey:state", "from": "icey|x7", "data": map[string]any{"path": "stage", "state": "publishing"}})
	f.send(map[string]any{"type": "message", "subtype": "icey:state", "from": "web-zz|q1", "data": map[string]any{"path": "stage", "state": "publishing"}})
	time.Sleep(300 * time.Millisecond)
	if st := browsertest.MustEval[string](b, 2*time.Second, `window.iceyState.lastState`); st != "waiting-publisher" {
		t.Errorf("a non-server peer changed the path state to %q", st)
	}
	// A publisher starts: the cover goes, the line says live.
	f.send(map[string]any{"type": "message", "subtype": "icey:state", "from": "icey|stage", "data": map[string]any{"path": "stage", "state": "publishing"}})
	poll("live again", `document.getElementById("stage").dataset.state === "playing" && document.getElementById("publish-state").textContent === "live" && window.iceyState.lastState === "publishing" && !document.getElementById("live").hidden`, 5*time.Second)
	b.Screenshot("ui-paths-watch-relay.png")

	click("btn-hangup")
	poll("idle", `window.iceyState.call === null && !document.getElementById("btn-watch").disabled && !document.getElementById("broadcast").hidden`, 5*time.Second)
}
