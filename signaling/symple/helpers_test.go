package symple

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/icey/icey-server/internal/testenv"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/builtin"
	"github.com/icey/icey-server/signaling"
)

func testLogger() *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// checkLeaks: see testenv.CheckGoroutines.
func checkLeaks(t *testing.T) { t.Helper(); testenv.CheckGoroutines(t) }

// testServer is a Symple server on an httptest server at 127.0.0.1.
type testServer struct {
	s    *Server
	http *httptest.Server
	url  string // ws://127.0.0.1:port/ws
}

func newTestServer(t *testing.T, cfg Config, sessions Sessions) *testServer {
	t.Helper()
	s := New(cfg, sessions, testLogger())
	mux := http.NewServeMux()
	mux.Handle("/ws", s)
	hs := httptest.NewServer(mux)
	ts := &testServer{s: s, http: hs, url: "ws" + strings.TrimPrefix(hs.URL, "http") + "/ws"}
	t.Cleanup(func() {
		s.Shutdown()
		hs.Close()
	})
	return ts
}

// client is a raw WebSocket client speaking Symple.
type client struct {
	t    *testing.T
	ws   *websocket.Conn
	addr string         // user|id after login
	peer map[string]any // welcome peer
}

func dial(t *testing.T, url string, hdr http.Header) (*client, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial(url, hdr)
	if err != nil {
		return nil, resp, err
	}
	c := &client{t: t, ws: ws}
	t.Cleanup(func() { _ = ws.Close() })
	return c, resp, nil
}

func mustDial(t *testing.T, url string) *client {
	t.Helper()
	c, _, err := dial(t, url, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	return c
}

func (c *client) send(v any) {
	c.t.Helper()
	_ = c.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	b, err := json.Marshal(v) // not WriteJSON: it appends a newline
	if err != nil {
		c.t.Fatal(err)
	}
	if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// read returns the next frame, or the error that ended the connection.
func (c *client) read(timeout time.Duration) (map[string]any, error) {
	_ = c.ws.SetReadDeadline(time.Now().Add(timeout))
	_, b, err := c.ws.ReadMessage()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("bad frame %q: %v", b, err)
	}
	return m, nil
}

func (c *client) next() map[string]any {
	c.t.Helper()
	m, err := c.read(10 * time.Second)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

// expect reads until a frame matches, failing after a timeout.
func (c *client) expect(what string, match func(map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		m, err := c.read(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v", what, err)
		}
		if match(m) {
			return m
		}
	}
	c.t.Fatalf("timed out waiting for %s", what)
	return nil
}

// nextNonPresence skips presence frames.
func (c *client) nextNonPresence() map[string]any {
	c.t.Helper()
	for {
		m := c.next()
		if m["type"] != "presence" {
			return m
		}
	}
}

// expectClosed reads until the server closes the connection and returns
// the close error.
func (c *client) expectClosed() *websocket.CloseError {
	c.t.Helper()
	for {
		_, err := c.read(10 * time.Second)
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if e, ok := err.(*websocket.CloseError); ok {
			ce = e
			return ce
		}
		c.t.Fatalf("expected a close frame, got %v", err)
	}
}

// login authenticates and consumes the welcome; presence frames that follow
// are left for the test.
func (c *client) login(user, token string, rooms ...string) map[string]any {
	c.t.Helper()
	auth := map[string]any{"type": "auth", "user": user, "name": strings.ToUpper(user), "token": token,
		"data": map[string]any{"peerType": "viewer"}}
	if len(rooms) > 0 {
		auth["rooms"] = rooms
	}
	c.send(auth)
	w := c.next()
	if w["type"] != "welcome" {
		c.t.Fatalf("expected welcome, got %v", w)
	}
	c.peer = w["peer"].(map[string]any)
	c.addr = fmt.Sprint(c.peer["user"], "|", c.peer["id"])
	return w
}

func isType(typ string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == typ }
}

func isSub(sub string) func(map[string]any) bool {
	return func(m map[string]any) bool { return m["type"] == "message" && m["subtype"] == sub }
}

func presenceOf(addr string, online bool) func(map[string]any) bool {
	return func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["type"] == "presence" && m["from"] == addr && d != nil && d["online"] == online
	}
}

// ---------------------------------------------------------------------------
// A real session layer fed by the built-in H.264 + Opus test stream.

type sessionLayer struct {
	m      *signaling.Manager
	st     *media.Stream
	cancel context.CancelFunc
	done   chan struct{}
}

// newSessionLayer starts a signaling.Manager on a loopback UDP socket. With
// feed, the built-in source plays into its stream; else the stream never
// gets tracks (source unavailable).
func newSessionLayer(t *testing.T, cfg signaling.Config, feed bool) *sessionLayer {
	t.Helper()
	return newSessionLayerMode(t, cfg, "stream", feed)
}

// newSessionLayerMode is newSessionLayer with the default path's policy of
// a server mode: stream (viewers), record (a publisher), relay (both).
func newSessionLayerMode(t *testing.T, cfg signaling.Config, mode string, feed bool) *sessionLayer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "test"}, nil)
	cfg.UDPConn = conn
	cfg.LoopbackOnly = true
	m, err := signaling.NewManager(cfg, signaling.OneStream(st, mode != "record", mode != "stream"), testLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	l := &sessionLayer{m: m, st: st, cancel: cancel, done: make(chan struct{})}
	if feed {
		go func() {
			defer close(l.done)
			_ = builtin.New(nil).Run(ctx, st)
		}()
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		if _, err := st.WaitTracks(wctx); err != nil {
			t.Fatalf("builtin source declared no tracks: %v", err)
		}
	} else {
		close(l.done)
	}
	t.Cleanup(l.close)
	return l
}

func (l *sessionLayer) close() {
	l.cancel()
	<-l.done
	l.m.Close("test over")
	l.st.Close()
}

// ---------------------------------------------------------------------------
// A pion PeerConnection acting as the browser.

func loopbackAPI(t *testing.T) *webrtc.API {
	t.Helper()
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	return webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se))
}
