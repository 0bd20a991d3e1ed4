package symple

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// TestLimits breaches each admission limit with one connection while two
// peers are connected; the breach gets an error frame with the status and a
// close, and the two others keep talking.
func TestLimits(t *testing.T) {
	checkLeaks(t)
	cases := []struct {
		name   string
		cfg    Config
		status int
		code   int
		breach func(t *testing.T, ts *testServer) *client // returns the breaching client
	}{
		{
			name: "message too large", cfg: Config{}, status: 413, code: websocket.CloseMessageTooBig,
			breach: func(t *testing.T, ts *testServer) *client {
				x := mustDial(t, ts.url)
				x.login("x", "")
				// Exactly the limit is fine ...
				x.send(message("x", 64<<10))
				x.send(map[string]any{"type": "join", "room": "x"})
				x.expect("join:ok", isType("join:ok"))
				// ... one byte more is not.
				x.send(message("x", 64<<10+1))
				return x
			},
		},
		{
			name: "rate limit", cfg: Config{}, status: 429, code: websocket.ClosePolicyViolation,
			breach: func(t *testing.T, ts *testServer) *client {
				x := mustDial(t, ts.url)
				x.login("x", "") // frame 1
				for i := 2; i < 100; i++ {
					x.send(map[string]any{"type": "message", "to": "x", "data": i})
				}
				x.send(map[string]any{"type": "join", "room": "x"}) // frame 100: still fine
				x.expect("join:ok", isType("join:ok"))
				x.send(map[string]any{"type": "message", "to": "x"}) // frame 101
				return x
			},
		},
		{
			name: "auth deadline", cfg: Config{AuthTimeout: 2 * time.Second}, status: 408, code: websocket.ClosePolicyViolation,
			breach: func(t *testing.T, ts *testServer) *client {
				return mustDial(t, ts.url) // and say nothing
			},
		},
		{
			name: "max connections", cfg: Config{MaxConns: 2}, status: 503, code: websocket.CloseTryAgainLater,
			breach: func(t *testing.T, ts *testServer) *client {
				return mustDial(t, ts.url)
			},
		},
		{
			name: "foreign origin", cfg: Config{}, status: 403,
			breach: func(t *testing.T, ts *testServer) *client {
				_, resp, err := dial(t, ts.url, http.Header{"Origin": {"http://evil.example.com"}})
				if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
					t.Fatalf("foreign origin: resp %v err %v, want 403", resp, err)
				}
				// The same origin and a loopback alias on the same port pass.
				port := ts.http.URL[strings.LastIndex(ts.http.URL, ":"):]
				for _, o := range []string{ts.http.URL, "http://localhost" + port} {
					c, _, err := dial(t, ts.url, http.Header{"Origin": {o}})
					if err != nil {
						t.Fatalf("origin %s refused: %v", o, err)
					}
					_ = c.ws.Close()
				}
				return nil
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ts := newTestServer(t, tc.cfg, nil)
			a, b := mustDial(t, ts.url), mustDial(t, ts.url)
			a.login("a", "")
			b.login("b", "")
			a.expect("b online", presenceOf(b.addr, true))

			x := tc.breach(t, ts)
			if x != nil {
				m := x.expect("error frame", isType("error"))
				if m["status"] != float64(tc.status) {
					t.Fatalf("error frame %v, want status %d", m, tc.status)
				}
				if ce := x.expectClosed(); ce.Code != tc.code {
					t.Fatalf("close code %d, want %d", ce.Code, tc.code)
				}
			}

			// Nobody else noticed: a and b still exchange messages both ways.
			a.send(map[string]any{"type": "message", "to": b.addr, "data": "still here?"})
			if m := b.nextNonPresence(); m["from"] != a.addr || m["data"] != "still here?" {
				t.Fatalf("b got %v", m)
			}
			b.send(map[string]any{"type": "message", "to": a.addr, "data": "yes"})
			if m := a.nextNonPresence(); m["from"] != b.addr || m["data"] != "yes" {
				t.Fatalf("a got %v", m)
			}
		})
	}
}

// message returns a message frame whose JSON encoding is exactly size bytes.
func message(to string, size int) map[string]any {
	m := map[string]any{"type": "message", "to": to, "data": ""}
	overhead := len(mustJSON(m))
	m["data"] = strings.Repeat("x", size-overhead)
	if n := len(mustJSON(m)); n != size {
		panic("message size mismatch")
	}
	return m
}
