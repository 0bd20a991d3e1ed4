package symple

// Abuse of the server by its own users: forged identities and server-only
// events, many idle peers before a join, unauthenticated sockets, and a
// broadcast flood while others are in calls. Room isolation for every form
// of "to" is in TestRouting.

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/signaling"
)

// TestNoForgery: "from", presence identity fields and server-only names
// cannot be forged; the forger gets a 403 for a server-only name.
func TestNoForgery(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{}, nil)
	v, m := mustDial(t, ts.url), mustDial(t, ts.url)
	v.login("victim", "")
	m.login("mallory", "")
	v.expect("mallory online", presenceOf(m.addr, true))

	m.send(map[string]any{"type": "presence", "from": ServerAddress,
		"data": map[string]any{"id": ServerID, "user": ServerUser, "name": ServerName, "type": "server", "online": false, "token": "x"}})
	p := v.expect("presence", isType("presence"))
	d := p["data"].(map[string]any)
	if p["from"] != m.addr || d["id"] != m.peer["id"] || d["user"] != "mallory" || d["name"] != "MALLORY" || d["type"] != "Peer" {
		t.Fatalf("forged presence delivered as %v", p)
	}
	if _, has := d["token"]; has || d["online"] != false {
		t.Fatalf("presence data %v", d)
	}

	for _, f := range []map[string]any{
		{"type": "event", "name": "shutdown", "message": "Server shutting down"},
		{"type": "event", "name": "SHUTDOWN", "to": v.addr},
		{"type": "message", "subtype": "icey:vision", "data": map[string]any{"label": "forged"}},
		{"type": "event", "name": "icey:speech"},
		{"type": "command", "subtype": "icey:x", "to": "public"},
	} {
		m.send(f)
		if e := m.expect("error", isType("error")); e["status"] != 403.0 {
			t.Fatalf("%v answered %v, want 403", f, e)
		}
	}
	m.send(map[string]any{"type": "message", "from": ServerAddress, "to": v.addr, "data": "last"})
	got := v.nextNonPresence()
	if got["data"] != "last" || got["from"] != m.addr {
		t.Fatalf("victim got %v first (server-only frames must not be delivered)", got)
	}
}

// TestJoinAfterManyIdlePeers: N peers (300; SYMPLE_JOIN_PEERS to measure
// more) authenticate and then never read; one more joins, receives the
// welcome, the server's presence and every peer's, calls and receives
// video, and nobody was dropped.
func TestJoinAfterManyIdlePeers(t *testing.T) {
	checkLeaks(t)
	n := 300
	if v, err := strconv.Atoi(os.Getenv("SYMPLE_JOIN_PEERS")); err == nil && v > 0 {
		n = v
	}
	l := newSessionLayer(t, signaling.Config{}, true)
	// Idle peers that never read get every later arrival's presence; with
	// thousands of them their socket buffers fill and the server's writes
	// to them block. The default WriteTimeout would then (rightly) drop
	// them for their own slowness, and the keepalive would drop them for
	// never answering a ping; this test wants them all present.
	ts := newTestServer(t, Config{MaxConns: n + 10, WriteTimeout: time.Hour, PingInterval: time.Hour}, l.m)
	w := mustDial(t, ts.url)
	w.login("watcher", "")
	var online atomic.Int64
	var werr atomic.Value
	_ = w.ws.SetReadDeadline(time.Time{}) // login left a short one
	go func() {
		for {
			_, b, err := w.ws.ReadMessage()
			if err != nil {
				werr.Store(err)
				return
			}
			if strings.Contains(string(b), `"online":true`) && !strings.Contains(string(b), ServerAddress) {
				online.Add(1)
			}
		}
	}()
	start := time.Now()
	for i := range n {
		c := mustDial(t, ts.url)
		c.send(map[string]any{"type": "auth", "user": fmt.Sprintf("idle%d", i)})
	}
	t.Logf("%d idle peers dialled in %s", n, time.Since(start).Round(time.Millisecond))
	deadline := time.Now().Add(time.Minute + time.Duration(n)*20*time.Millisecond)
	for online.Load() < int64(n) {
		if time.Now().After(deadline) {
			t.Fatalf("watcher saw %d of %d peers come online (%d peers on the server, watcher error %v)", online.Load(), n, ts.s.Peers(), werr.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d idle peers in after %s", n, time.Since(start).Round(time.Millisecond))

	start = time.Now()
	late := mustDial(t, ts.url)
	late.login("late", "")
	seen := map[any]bool{}
	for len(seen) < n+1 {
		m := late.next()
		if m["type"] == "presence" && m["from"] != ServerAddress {
			seen[m["from"]] = true
		}
	}
	t.Logf("joined among %d peers: welcome and %d presences in %s", n+1, len(seen), time.Since(start).Round(time.Millisecond))
	start = time.Now()
	b := newBrowser(t, late, webrtc.RTPTransceiverDirectionRecvonly)
	b.call()
	b.waitFrames(10)
	t.Logf("call answered and 10 video frames in %s", time.Since(start).Round(time.Millisecond))
	if ts.s.Peers() != n+2 {
		t.Fatalf("%d peers, want %d: nobody may be dropped", ts.s.Peers(), n+2)
	}
}

// TestUnauthenticatedPool: with a token set, 1000 sockets that never
// authenticate fill only the small pending pool (oldest evicted with 503);
// a token holder is still welcomed, with the token in the auth frame or on
// the upgrade request.
func TestUnauthenticatedPool(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{Token: "tok", MaxConns: 3}, nil)
	var idle []*client
	for range 1000 {
		c, resp, err := dial(t, ts.url, nil)
		if err != nil {
			t.Fatalf("dial: %v (%v)", err, resp)
		}
		idle = append(idle, c)
	}
	h := mustDial(t, ts.url)
	h.login("holder", "tok")
	h2, _, err := dial(t, ts.url+"?token=tok", nil)
	if err != nil {
		t.Fatal(err)
	}
	h2.login("holder2", "")
	// The first idle socket was evicted with a 503.
	if m := idle[0].next(); m["type"] != "error" || m["status"] != 503.0 || m["message"] != "Too many unauthenticated connections" {
		t.Fatalf("oldest pending socket got %v", m)
	}
	if ce := idle[0].expectClosed(); ce.Code != websocket.CloseTryAgainLater {
		t.Fatalf("close code %d", ce.Code)
	}
	// The newest pending socket can still authenticate.
	idle[len(idle)-1].login("late", "tok")
	// MaxConns (3) counts authenticated peers only: the next auth is refused.
	x := idle[len(idle)-2]
	x.send(map[string]any{"type": "auth", "user": "x", "token": "tok"})
	if m := x.expect("error", isType("error")); m["status"] != 503.0 {
		t.Fatalf("auth beyond MaxConns: %v", m)
	}
	if ts.s.Peers() != 3 {
		t.Fatalf("%d peers", ts.s.Peers())
	}
}

// reader drains a client in the background, optionally slowly.
type reader struct {
	frames, big atomic.Int64
	done        chan struct{}
	err         error
}

func startReader(c *client, delay time.Duration) *reader {
	r := &reader{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for {
			_ = c.ws.SetReadDeadline(time.Now().Add(time.Minute))
			_, b, err := c.ws.ReadMessage()
			if err != nil {
				r.err = err
				return
			}
			r.frames.Add(1)
			if len(b) > 4096 {
				r.big.Add(1)
			}
			if delay > 0 {
				time.Sleep(delay)
			}
		}
	}()
	return r
}

func (r *reader) alive() bool {
	select {
	case <-r.done:
		return false
	default:
		return true
	}
}

// TestFloodShedsInsteadOfDisconnecting: ten peers send 30 KB messages to
// every observer at the rate limit while three observers are in calls, one of them reading
// slowly. Nobody who reads is disconnected (frames over their relay budget
// are shed) and every call keeps receiving video. A peer that does not read
// at all is dropped after WriteTimeout for its own slowness, and its call
// keeps receiving video.
func TestFloodShedsInsteadOfDisconnecting(t *testing.T) {
	checkLeaks(t)
	l := newSessionLayer(t, signaling.Config{}, true)
	ts := newTestServer(t, Config{RateLimit: 20, RateWindow: 2 * time.Second, WriteTimeout: 3 * time.Second}, l.m)

	var obs []*client
	var calls []*browser
	for i := range 4 {
		c := mustDial(t, ts.url)
		c.login(fmt.Sprintf("observer%d", i), "")
		b := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
		b.call()
		b.waitFrames(10)
		obs, calls = append(obs, c), append(calls, b)
	}
	readers := []*reader{startReader(obs[0], 0), startReader(obs[1], 0), startReader(obs[2], 30*time.Millisecond)}
	// obs[3] never reads again.

	// The flooders address the observers only (one frame to four peers),
	// which keeps this in-process test's own reading cost (under -race)
	// low enough that the observers are not starved of CPU; the black-box
	// test floods with 60 KB broadcasts.
	payload := strings.Repeat("x", 30_000)
	var to []string
	for _, o := range obs {
		to = append(to, o.addr)
	}
	var wg sync.WaitGroup
	var sent atomic.Int64
	stop := time.Now().Add(8 * time.Second)
	for i := range 10 {
		s := mustDial(t, ts.url)
		s.login(fmt.Sprintf("flooder%d", i), "")
		startReader(s, 0)
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, _ := json.Marshal(map[string]any{"type": "message", "to": to, "data": payload})
			for time.Now().Before(stop) {
				// 20 frames per 2 s is the limit; stay well under it even when
				// scheduling bunches the sends (a flooder over it is rightly
				// disconnected, which is not what this test is about).
				time.Sleep(150 * time.Millisecond)
				if s.ws.WriteMessage(websocket.TextMessage, b) != nil {
					return
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	for i, r := range readers {
		t.Logf("observer %d: %d flood frames read, alive %v (%v)", i, r.big.Load(), r.alive(), r.err)
		if !r.alive() {
			t.Errorf("observer %d was disconnected: %v", i, r.err)
		}
	}
	t.Logf("%d flood frames sent; %d relayed frames shed", sent.Load(), ts.s.Shed())
	if ts.s.Shed() == 0 {
		t.Error("the slow observer's budget never filled: no frame was shed")
	}
	// The non-reader was dropped for its own slowness ...
	deadline := time.Now().Add(15 * time.Second)
	for ts.s.Peers() != 13 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if ts.s.Peers() != 13 {
		t.Errorf("%d peers, want 13 (the non-reading observer dropped)", ts.s.Peers())
	}
	// ... and every call, its own included, keeps receiving video.
	if len(l.m.Sessions()) != 4 {
		t.Errorf("%d sessions, want 4", len(l.m.Sessions()))
	}
	for i, b := range calls {
		n := b.frames.Load()
		b.waitFrames(n + 20)
		t.Logf("call %d: %d video frames", i, b.frames.Load())
	}
}

// TestPendingEvictionPrefersTheBusiestHost: a host flooding the pending
// pool evicts its own sockets, not an older pending socket of another host.
func TestPendingEvictionPrefersTheBusiestHost(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{Token: "tok", MaxPending: 8}, nil)
	legit := mustDial(t, ts.url) // from 127.0.0.1, the oldest pending socket
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second, NetDial: func(network, addr string) (net.Conn, error) {
		return (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}).Dial(network, addr)
	}}
	for range 50 {
		ws, _, err := d.Dial(ts.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
	}
	legit.login("legit", "tok")
}
