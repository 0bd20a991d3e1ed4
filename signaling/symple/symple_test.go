package symple

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/auth"
)

func TestAuthErrors(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{Token: "s3cret"}, nil)
	cases := []struct {
		name    string
		first   any
		message string
		closes  bool
	}{
		{"missing user", map[string]any{"type": "auth", "token": "s3cret"}, "Missing user field", false},
		{"wrong token", map[string]any{"type": "auth", "user": "u", "token": "nope"}, "Authentication failed", true},
		{"no token", map[string]any{"type": "auth", "user": "u"}, "Authentication failed", true},
		{"message first", map[string]any{"type": "message", "to": "public", "data": "hi"}, "Not authenticated", true},
		{"not an object", []int{1, 2}, "Not authenticated", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustDial(t, ts.url)
			c.send(tc.first)
			m := c.next()
			if m["type"] != "error" || m["status"] != 401.0 || m["message"] != tc.message {
				t.Fatalf("got %v, want error 401 %q", m, tc.message)
			}
			if tc.closes {
				if ce := c.expectClosed(); ce.Code != websocket.ClosePolicyViolation {
					t.Fatalf("close code %d", ce.Code)
				}
				return
			}
			// Still open: a proper auth now succeeds.
			c.login("u", "s3cret")
		})
	}
	t.Run("token on the upgrade request", func(t *testing.T) {
		c, _, err := dial(t, ts.url+"?token=s3cret", nil)
		if err != nil {
			t.Fatal(err)
		}
		c.login("u", "")
	})
}

func TestWelcomeAndPresence(t *testing.T) {
	checkLeaks(t)
	for _, tc := range []struct {
		mode string
		caps []any
	}{
		{"stream", []any{"view"}},
		{"record", []any{"publish"}},
		{"relay", []any{"publish", "view"}},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			ts := newTestServer(t, Config{Mode: tc.mode}, nil)
			a := mustDial(t, ts.url)
			w := a.login("alice", "", "lobby")
			if w["protocol"] != "symple/4" || w["status"] != 200.0 {
				t.Fatalf("welcome %v", w)
			}
			p := a.peer
			if p["user"] != "alice" || p["name"] != "ALICE" || p["online"] != true || p["type"] != "Peer" ||
				p["peerType"] != "viewer" || len(p["id"].(string)) < 8 {
				t.Fatalf("welcome peer %v", p)
			}
			if got := w["rooms"]; !reflect.DeepEqual(got, []any{"alice", "lobby", "public"}) {
				t.Fatalf("rooms %v", got)
			}
			sp := a.next()
			want := map[string]any{"type": "presence", "from": "icey|server", "data": map[string]any{
				"id": "server", "user": "icey", "name": "Icey Server", "type": "server", "online": true,
				"mode": tc.mode, "capabilities": tc.caps, "path": "main"}}
			if !reflect.DeepEqual(sp, want) {
				t.Fatalf("server presence\n got %v\nwant %v", sp, want)
			}

			b := mustDial(t, ts.url)
			b.login("bob", "")
			// A learns about B; B learns about the server and A.
			bp := a.expect("bob online", presenceOf(b.addr, true))
			if d := bp["data"].(map[string]any); d["user"] != "bob" || d["peerType"] != "viewer" {
				t.Fatalf("bob presence %v", bp)
			}
			if m := b.next(); m["from"] != "icey|server" {
				t.Fatalf("first presence for bob should be the server's: %v", m)
			}
			b.expect("alice online", presenceOf(a.addr, true))
			if a.peer["id"] == b.peer["id"] {
				t.Fatal("session ids must differ")
			}
			if ts.s.Peers() != 2 {
				t.Fatalf("Peers() = %d", ts.s.Peers())
			}
			_ = b.ws.Close()
			a.expect("bob offline", presenceOf(b.addr, false))
		})
	}
}

func TestRouting(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{}, nil)
	a, b, c := mustDial(t, ts.url), mustDial(t, ts.url), mustDial(t, ts.url)
	a.login("a", "", "r1")
	b.login("b", "", "r1", "r2")
	c.login("c", "")
	// c leaves public: it then shares no room with a or b.
	c.send(map[string]any{"type": "leave", "room": "public"})
	if m := c.nextNonPresence(); m["type"] != "leave:ok" || m["room"] != "public" {
		t.Fatalf("leave reply %v", m)
	}
	n := 0
	// flush waits until the server has routed p's earlier frames: they are
	// handled in order, so the reply to a no-op join comes after them.
	flush := func(p *client) {
		t.Helper()
		p.send(map[string]any{"type": "join", "room": p.peer["user"]})
		if m := p.expect("join:ok", isType("join:ok")); m["room"] != p.peer["user"] {
			t.Fatalf("join reply %v", m)
		}
	}
	sentinelAfter := func(p *client) {
		// Every peer gets the sentinel next if nothing else was delivered.
		flush(p)
		n++
		ts.s.Broadcast("sentinel", n)
	}
	// got returns what the peer received before the sentinel (nil: nothing).
	got := func(p *client) map[string]any {
		m := p.nextNonPresence()
		if m["subtype"] == "icey:sentinel" {
			return nil
		}
		if s := p.nextNonPresence(); s["subtype"] != "icey:sentinel" {
			t.Fatalf("%s: expected sentinel after %v, got %v", p.addr, m, s)
		}
		return m
	}
	cases := []struct {
		name string
		from *client
		to   any // nil: no to
		recv []*client
	}{
		{"no to: sender's rooms", a, nil, []*client{b}},
		{"peer address", a, "b|" + b.peer["id"].(string), []*client{b}},
		{"bare session id", b, a.peer["id"], []*client{a}},
		{"peer sharing no room", a, c.addr, nil},
		{"wrong user part", a, "x|" + b.peer["id"].(string), nil},
		// A room reaches its members only when the sender is one of them.
		{"room name (member)", a, "r1", []*client{b}},
		{"room name (not a member)", c, "r1", nil},
		{"user room (shares a room)", a, "b", []*client{b}},
		{"user room (shares no room)", a, "c", nil},
		{"array of rooms (member)", b, []string{"r2", "r1"}, []*client{a}},
		{"array of rooms (not a member)", c, []string{"r2", "a"}, nil},
		{"array mixing member and foreign rooms", a, []string{"r1", "c"}, []*client{b}},
		{"empty array", a, []string{}, nil},
		{"unknown room", a, "nowhere", nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msg := map[string]any{"type": "message", "id": "m1", "from": "evil|forged", "data": map[string]any{"x": tc.name}}
			if tc.to != nil {
				msg["to"] = tc.to
			}
			tc.from.send(msg)
			sentinelAfter(tc.from)
			for _, p := range []*client{a, b, c} {
				m := got(p)
				want := false
				for _, r := range tc.recv {
					want = want || r == p
				}
				if !want {
					if m != nil {
						t.Fatalf("%s should not get %v", p.addr, m)
					}
					continue
				}
				if m == nil {
					t.Fatalf("%s got nothing", p.addr)
				}
				d, _ := m["data"].(map[string]any)
				if m["from"] != tc.from.addr || m["id"] != "m1" || d["x"] != tc.name {
					t.Fatalf("%s got %v (from must be rewritten to %s)", p.addr, m, tc.from.addr)
				}
			}
		})
	}

	t.Run("join and leave", func(t *testing.T) {
		c.send(map[string]any{"type": "join", "room": "r1"})
		if m := c.nextNonPresence(); m["type"] != "join:ok" || m["room"] != "r1" {
			t.Fatalf("join reply %v", m)
		}
		// Now sharing r1, a and c learn about each other.
		a.expect("c online after join", presenceOf(c.addr, true))
		b.send(map[string]any{"type": "command", "node": "ping", "to": "r1"})
		sentinelAfter(b)
		if m := got(a); m == nil || m["type"] != "command" {
			t.Fatalf("a: %v", m)
		}
		if m := got(c); m == nil || m["type"] != "command" || m["from"] != b.addr {
			t.Fatalf("c: %v", m)
		}
		if m := got(b); m != nil {
			t.Fatalf("sender got its own message: %v", m)
		}
		c.send(map[string]any{"type": "leave", "room": "r1"})
		if m := c.nextNonPresence(); m["type"] != "leave:ok" {
			t.Fatalf("leave reply %v", m)
		}
		b.send(map[string]any{"type": "event", "name": "x", "to": "r1"})
		sentinelAfter(b)
		if m := got(c); m != nil {
			t.Fatalf("c left r1 but got %v", m)
		}
		if m := got(a); m == nil || m["type"] != "event" {
			t.Fatalf("a: %v", m)
		}
		got(b)
	})

	t.Run("presence probe", func(t *testing.T) {
		a.send(map[string]any{"type": "presence", "probe": true, "data": map[string]any{"id": "spoof"}})
		sentinelAfter(a)
		m := b.next()
		if m["type"] != "presence" || m["probe"] != true || m["from"] != a.addr {
			t.Fatalf("b got %v", m)
		}
		// Identity fields are a's own, not what a wrote.
		if d, _ := m["data"].(map[string]any); d["id"] != a.peer["id"] || d["user"] != "a" || d["name"] != "A" || d["type"] != "Peer" {
			t.Fatalf("b got presence data %v", m["data"])
		}
		if s := b.next(); s["subtype"] != "icey:sentinel" {
			t.Fatalf("b: %v", s)
		}
		// The server peer ignores it: a gets only the sentinel.
		if s := a.next(); s["subtype"] != "icey:sentinel" {
			t.Fatalf("a: %v", s)
		}
		got(c)
	})

	t.Run("broadcast", func(t *testing.T) {
		ts.s.Broadcast("icey:vision", map[string]any{"label": "person"})
		for _, p := range []*client{a, b, c} {
			m := p.nextNonPresence()
			d, _ := m["data"].(map[string]any)
			if m["subtype"] != "icey:vision" || m["from"] != "icey|server" || d["label"] != "person" {
				t.Fatalf("%s got %v", p.addr, m)
			}
		}
	})
}

func TestShutdownEvent(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{}, nil)
	s := ts.s
	a := mustDial(t, ts.url)
	a.login("a", "")
	done := make(chan struct{})
	go func() { s.Shutdown(); close(done) }()
	m := a.expect("shutdown event", isType("event"))
	if m["name"] != "shutdown" || m["message"] != "Server shutting down" {
		t.Fatalf("event %v", m)
	}
	if ce := a.expectClosed(); ce.Code != websocket.CloseGoingAway {
		t.Fatalf("close code %d", ce.Code)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	// New connections are refused.
	_, resp, err := dial(t, ts.url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("dial after shutdown: %v %v", resp, err)
	}
}

func TestOriginRule(t *testing.T) {
	for _, tc := range []struct {
		host, origin string
		allowed      []string
		ok           bool
	}{
		{"127.0.0.1:4500", "", nil, true},
		{"127.0.0.1:4500", "http://127.0.0.1:4500", nil, true},
		{"127.0.0.1:4500", "http://localhost:4500", nil, true},
		{"localhost:4500", "http://[::1]:4500", nil, true},
		{"127.0.0.1:4500", "http://localhost:4501", nil, false},
		{"cam.example.com", "https://cam.example.com", nil, false}, // scheme https → port 443 ≠ 80 on plain http
		{"cam.example.com:8080", "http://cam.example.com:8080", nil, true},
		{"cam.example.com:8080", "http://evil.example.com:8080", nil, false},
		{"cam.example.com:8080", "https://app.example.com", []string{"https://app.example.com/"}, true},
		{"cam.example.com:8080", "https://other.example.com", []string{"*"}, true},
		{"cam.example.com:8080", "null", nil, false},
	} {
		r, _ := http.NewRequest("GET", "http://"+tc.host+"/ws", nil)
		if tc.origin != "" {
			r.Header.Set("Origin", tc.origin)
		}
		if got := auth.AllowOrigin(r, tc.allowed); got != tc.ok {
			t.Errorf("host %s origin %q allowed %v: got %v", tc.host, tc.origin, tc.allowed, got)
		}
	}
}

func TestIsPublishOffer(t *testing.T) {
	mk := func(sections ...string) string {
		return "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + strings.Join(sections, "")
	}
	for _, tc := range []struct {
		sdp  string
		want bool
	}{
		{mk("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n"), false},
		{mk("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n"), false},
		{mk("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n"), true},
		{mk("m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n", "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n"), true},
		{mk("m=video 0 UDP/TLS/RTP/SAVPF 96\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n"), true},
	} {
		if got := isPublishOffer(tc.sdp); got != tc.want {
			t.Errorf("isPublishOffer(%q) = %v", tc.sdp, got)
		}
	}
}
