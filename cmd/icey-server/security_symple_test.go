package main

// Black-box tests of Symple (/ws) against abuse by its own users: room
// isolation for every form of "to", forged identities and server-only
// events, many idle peers, unauthenticated sockets with a token set, and a
// broadcast flood while innocent observers are in video calls. Each test
// drives the built binary with gorilla WebSocket clients and, where a call
// is involved, a pion PeerConnection that counts the video it receives.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/testpeer"
)

// symClient is a Symple client whose reader goroutine records every frame
// (frames larger than 4 KiB are only counted) and the error that ended the
// connection.
type symClient struct {
	t    *testing.T
	ws   *websocket.Conn
	addr string
	id   string
	wmu  sync.Mutex

	mu     sync.Mutex
	cond   *sync.Cond
	frames []map[string]any
	big    int   // frames > 4 KiB received
	err    error // why reading stopped
}

func symDial(t *testing.T, p *proc, hdr http.Header) (*symClient, *http.Response, error) {
	t.Helper()
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := d.Dial("ws://127.0.0.1:"+strconv.Itoa(p.port)+"/ws", hdr)
	if err != nil {
		return nil, resp, err
	}
	c := &symClient{t: t, ws: ws}
	c.cond = sync.NewCond(&c.mu)
	t.Cleanup(func() { _ = ws.Close() })
	return c, resp, nil
}

func mustSymDial(t *testing.T, p *proc) *symClient {
	t.Helper()
	c, resp, err := symDial(t, p, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("dial /ws: %v (HTTP %d)", err, code)
	}
	return c
}

// startReading runs the reader goroutine.
func (c *symClient) startReading() {
	go func() {
		for {
			_, b, err := c.ws.ReadMessage()
			c.mu.Lock()
			if err != nil {
				c.err = err
				c.cond.Broadcast()
				c.mu.Unlock()
				return
			}
			// The server's icey: messages (analysis events carry a grid)
			// are kept up to 64 KiB; other large frames are only counted.
			if len(b) > 4096 && (len(b) > 64<<10 || !bytes.Contains(b, []byte(`"subtype":"icey:`))) {
				c.big++
			} else {
				var m map[string]any
				if json.Unmarshal(b, &m) == nil {
					m["_arrivedAt"] = time.Now()
					c.frames = append(c.frames, m)
				}
			}
			c.cond.Broadcast()
			c.mu.Unlock()
		}
	}()
}

func (c *symClient) send(v any) error {
	b, _ := json.Marshal(v)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteMessage(websocket.TextMessage, b)
}

// waitFrame returns the first recorded frame at index >= *from that
// matches, and moves *from past it.
func (c *symClient) waitFrame(from *int, d time.Duration, match func(map[string]any) bool) (map[string]any, error) {
	deadline := time.Now().Add(d)
	timer := time.AfterFunc(d, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer timer.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		for ; *from < len(c.frames); *from++ {
			if m := c.frames[*from]; match(m) {
				*from++
				return m, nil
			}
		}
		if c.err != nil {
			return nil, fmt.Errorf("connection ended: %w", c.err)
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("timed out after %s", d)
		}
		c.cond.Wait()
	}
}

func (c *symClient) closedErr() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// login sends auth and waits for the welcome; the reader keeps running.
func (c *symClient) login(user, token string, rooms ...string) error {
	a := map[string]any{"type": "auth", "user": user, "name": user, "token": token, "data": map[string]any{"peerType": "viewer"}}
	if len(rooms) > 0 {
		a["rooms"] = rooms
	}
	if err := c.send(a); err != nil {
		return err
	}
	c.startReading()
	i := 0
	w, err := c.waitFrame(&i, 20*time.Second, func(m map[string]any) bool { return m["type"] == "welcome" || m["type"] == "error" })
	if err != nil {
		return err
	}
	if w["type"] != "welcome" {
		return fmt.Errorf("auth answered %v", w)
	}
	peer := w["peer"].(map[string]any)
	c.id = peer["id"].(string)
	c.addr = fmt.Sprint(peer["user"], "|", c.id)
	return nil
}

func (c *symClient) mustLogin(user, token string, rooms ...string) {
	c.t.Helper()
	if err := c.login(user, token, rooms...); err != nil {
		c.t.Fatalf("login %s: %v", user, err)
	}
}

// roundTrip sends a no-op join and waits for join:ok: every frame the client
// sent before has been routed by then (a peer's frames are handled in order).
func (c *symClient) roundTrip() {
	c.t.Helper()
	room := "rt-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	if err := c.send(map[string]any{"type": "join", "room": room}); err != nil {
		c.t.Fatal(err)
	}
	i := 0
	if _, err := c.waitFrame(&i, 10*time.Second, func(m map[string]any) bool { return m["type"] == "join:ok" && m["room"] == room }); err != nil {
		c.t.Fatalf("%s: join:ok: %v", c.addr, err)
	}
	_ = c.send(map[string]any{"type": "leave", "room": room})
}

func isPresence(m map[string]any) bool { return m["type"] == "presence" }

// symViewer is a pion PeerConnection in a Symple call with the server peer.
type symViewer struct {
	pc     *webrtc.PeerConnection
	video  atomic.Int64
	closed atomic.Bool
}

// sympleCall runs call:init → call:accept → call:offer → call:answer and
// waits until the PeerConnection is connected.
func sympleCall(t *testing.T, c *symClient) *symViewer {
	t.Helper()
	pc, err := testpeer.NewPeerConnection()
	if err != nil {
		t.Fatal(err)
	}
	v := &symViewer{pc: pc}
	t.Cleanup(func() { _ = pc.Close() })
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
		if s == webrtc.PeerConnectionStateFailed || s == webrtc.PeerConnectionStateClosed {
			v.closed.Store(true)
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			if _, _, err := tr.ReadRTP(); err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				v.video.Add(1)
			}
		}
	})
	from := 0
	sub := func(s string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return m["type"] == "message" && m["subtype"] == s && m["from"] == "icey|server"
		}
	}
	callMsg := func(subtype string, data any) {
		if err := c.send(map[string]any{"type": "message", "subtype": subtype, "to": "icey|server", "data": data}); err != nil {
			t.Fatalf("%s: %v", subtype, err)
		}
	}
	callMsg("call:init", map[string]any{})
	if _, err := c.waitFrame(&from, 20*time.Second, sub("call:accept")); err != nil {
		t.Fatalf("%s: call:accept: %v", c.addr, err)
	}
	offer, err := testpeer.RecvOffer(pc)
	if err != nil {
		t.Fatal(err)
	}
	callMsg("call:offer", map[string]any{"type": "offer", "sdp": offer})
	ans, err := c.waitFrame(&from, 20*time.Second, func(m map[string]any) bool {
		return sub("call:answer")(m) || sub("call:hangup")(m) || sub("call:reject")(m)
	})
	if err != nil {
		t.Fatalf("%s: call:answer: %v", c.addr, err)
	}
	d, _ := ans["data"].(map[string]any)
	sdp, _ := d["sdp"].(string)
	if ans["subtype"] != "call:answer" || sdp == "" {
		t.Fatalf("%s: expected call:answer, got %v", c.addr, ans)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: sdp}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s: PeerConnection not connected (state %s)", c.addr, pc.ConnectionState())
	}
	return v
}

// waitVideo waits until at least n more video packets arrived.
func (v *symViewer) waitVideo(t *testing.T, n int64, d time.Duration) {
	t.Helper()
	start := v.video.Load()
	deadline := time.Now().Add(d)
	for v.video.Load()-start < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d video packets in %s (state %s)", v.video.Load()-start, d, v.pc.ConnectionState())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSympleRoomIsolationOnTheBinary: a peer reaches only rooms it is in,
// whatever form "to" takes; members of those rooms still get everything.
func TestSympleRoomIsolationOnTheBinary(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)

	bob := mustSymDial(t, p)
	bob.mustLogin("bob", "", "secret")
	helper := mustSymDial(t, p)
	helper.mustLogin("helper", "", "secret")
	mallory := mustSymDial(t, p)
	mallory.mustLogin("mallory", "")
	// bob leaves public: he shares no room with mallory, only "secret" with helper.
	if err := bob.send(map[string]any{"type": "leave", "room": "public"}); err != nil {
		t.Fatal(err)
	}
	bob.roundTrip()

	// deliveredTo sends one frame from sender and reports what bob got before
	// a sentinel that helper sends him afterwards (helper's frame is routed
	// after the sender's, and one receiver's frames are written in order).
	n := 0
	bobFrom := 0
	deliveredTo := func(sender *symClient, to any) map[string]any {
		t.Helper()
		n++
		tag := fmt.Sprintf("probe-%d", n)
		m := map[string]any{"type": "message", "data": tag}
		if to != nil {
			m["to"] = to
		}
		if err := sender.send(m); err != nil {
			t.Fatal(err)
		}
		sender.roundTrip()
		sentinel := fmt.Sprintf("sentinel-%d", n)
		if err := helper.send(map[string]any{"type": "message", "to": bob.addr, "data": sentinel}); err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		for {
			f, err := bob.waitFrame(&bobFrom, 10*time.Second, func(m map[string]any) bool { return m["type"] == "message" })
			if err != nil {
				t.Fatalf("bob waiting for the sentinel: %v", err)
			}
			if f["data"] == sentinel {
				return got
			}
			if f["data"] == tag {
				got = f
			}
		}
	}
	attacks := []struct {
		name string
		to   any
	}{
		{"room name", "secret"},
		{"array of rooms", []string{"secret"}},
		{"mixed array", []string{"public", "secret", "bob"}},
		{"user room", "bob"},
		{"user room in an array", []string{"bob"}},
		{"peer address", bob.addr},
		{"bare session id", bob.id},
		{"no to", nil},
	}
	leaks := 0
	for _, a := range attacks {
		if f := deliveredTo(mallory, a.to); f != nil {
			leaks++
			t.Errorf("to=%v (%s): bob, who shares no room with mallory, got %v", a.to, a.name, f)
		} else {
			t.Logf("to=%v (%s): not delivered to bob", a.to, a.name)
		}
	}
	// A member of "secret" reaches bob in every form.
	for _, to := range []any{"secret", []string{"secret"}, bob.addr, bob.id, "bob", nil} {
		f := deliveredTo(helper, to)
		if f == nil || f["from"] != helper.addr {
			t.Errorf("helper (shares secret with bob) to=%v: bob got %v", to, f)
		}
	}
	t.Logf("attacks delivered to bob: %d of %d", leaks, len(attacks))
}

// TestSympleForgeryOnTheBinary: a peer cannot pose as the server or as
// another peer: from is rewritten, presence identity fields are its own, and
// server-only events are refused.
func TestSympleForgeryOnTheBinary(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	victim := mustSymDial(t, p)
	victim.mustLogin("victim", "")
	mallory := mustSymDial(t, p)
	mallory.mustLogin("mallory", "")
	vf := 0
	if _, err := victim.waitFrame(&vf, 10*time.Second, func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return isPresence(m) && m["from"] == mallory.addr && d["online"] == true
	}); err != nil {
		t.Fatal(err)
	}

	frames := []map[string]any{
		{"type": "message", "from": "icey|server", "subtype": "call:hangup", "data": map[string]any{"reason": "forged"}},
		{"type": "presence", "from": "icey|server", "data": map[string]any{"id": "server", "user": "icey", "name": "Icey Server", "type": "server", "online": false}},
		{"type": "presence", "data": map[string]any{"id": victim.id, "user": "victim", "name": "victim", "online": false}},
		{"type": "event", "name": "shutdown", "message": "Server shutting down"},
		{"type": "event", "from": "icey|server", "name": "shutdown", "to": victim.addr},
		{"type": "message", "subtype": "icey:vision", "from": "icey|server", "data": map[string]any{"label": "forged"}},
		{"type": "event", "name": "icey:speech", "data": "forged"},
	}
	for _, f := range frames {
		if err := mallory.send(f); err != nil {
			t.Fatal(err)
		}
	}
	mallory.roundTrip()
	// A sentinel from mallory: everything before it has been delivered.
	_ = mallory.send(map[string]any{"type": "message", "to": victim.addr, "data": "sentinel"})
	var got []map[string]any
	for {
		m, err := victim.waitFrame(&vf, 10*time.Second, func(map[string]any) bool { return true })
		if err != nil {
			t.Fatalf("victim: %v", err)
		}
		if m["data"] == "sentinel" {
			break
		}
		got = append(got, m)
	}
	bad := 0
	for _, m := range got {
		d, _ := m["data"].(map[string]any)
		switch {
		case m["from"] != mallory.addr:
			t.Errorf("victim got a frame not from mallory's address: %v", m)
			bad++
		case isPresence(m) && (d["id"] != mallory.id || d["user"] != "mallory" || d["type"] == "server"):
			t.Errorf("victim got presence with a forged identity: %v", m)
			bad++
		case m["type"] == "event" && m["name"] == "shutdown":
			t.Errorf("victim got a shutdown event from a peer: %v", m)
			bad++
		case strings.HasPrefix(fmt.Sprint(m["subtype"]), "icey:") || strings.HasPrefix(fmt.Sprint(m["name"]), "icey:"):
			t.Errorf("victim got a server-only icey:* frame from a peer: %v", m)
			bad++
		default:
			t.Logf("victim got (acceptable): %v", m)
		}
	}
	t.Logf("forged frames sent %d, delivered as forged %d", len(frames), bad)
	// mallory was told the server-only events were refused.
	mf := 0
	if _, err := mallory.waitFrame(&mf, 5*time.Second, func(m map[string]any) bool { return m["type"] == "error" && m["status"] == 403.0 }); err != nil {
		t.Errorf("mallory got no 403 error frame for a server-only event: %v", err)
	}
}

// TestSympleManyIdlePeersOnTheBinary: 300 peers connect, authenticate and
// then never read; one more peer joins, gets the welcome and every presence,
// calls the server and receives video.
func TestSympleManyIdlePeersOnTheBinary(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	const idle = 300
	watcher := mustSymDial(t, p)
	watcher.mustLogin("watcher", "")
	for i := range idle {
		c := mustSymDial(t, p)
		b, _ := json.Marshal(map[string]any{"type": "auth", "user": fmt.Sprintf("idle%d", i), "token": ""})
		if err := c.ws.WriteMessage(websocket.TextMessage, b); err != nil {
			t.Fatal(err)
		}
		// and never read
	}
	// Wait until all idle peers are in: the watcher saw each come online.
	wf := 0
	online := map[any]bool{}
	for len(online) < idle {
		m, err := watcher.waitFrame(&wf, 30*time.Second, isPresence)
		if err != nil {
			t.Fatalf("watcher saw %d idle peers: %v", len(online), err)
		}
		online[m["from"]] = true
	}
	start := time.Now()
	late := mustSymDial(t, p)
	if err := late.login("late", ""); err != nil {
		t.Fatalf("peer joining after %d idle peers: %v", idle, err)
	}
	from := 0
	seen := map[any]bool{}
	for len(seen) < idle+1 { // the idle peers and the watcher
		m, err := late.waitFrame(&from, 30*time.Second, func(m map[string]any) bool {
			return isPresence(m) && m["from"] != "icey|server"
		})
		if err != nil {
			t.Fatalf("late peer after %d presences: %v", len(seen), err)
		}
		seen[m["from"]] = true
	}
	t.Logf("joined after %d idle peers: welcome and %d presences in %s", idle, len(seen), time.Since(start).Round(time.Millisecond))
	v := sympleCall(t, late)
	v.waitVideo(t, 50, 20*time.Second)
	t.Logf("late peer's call receives video: %d packets", v.video.Load())
}

// TestSympleUnauthenticatedSocketsOnTheBinary: with a token set, 1000
// sockets that never authenticate do not keep a token holder out.
func TestSympleUnauthenticatedSocketsOnTheBinary(t *testing.T) {
	p := launch(t, nil, "ICEY_AUTH_TOKEN=tok-123")
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	const n = 1000
	refused := 0
	for range n {
		c, resp, err := symDial(t, p, nil)
		if err != nil {
			if resp != nil && resp.StatusCode == 503 {
				refused++
				continue
			}
			t.Fatalf("dial: %v", err)
		}
		_ = c // holds the socket open, says nothing
	}
	t.Logf("%d unauthenticated sockets opened (%d refused at the upgrade)", n, refused)
	c, resp, err := symDial(t, p, nil)
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		t.Fatalf("token holder could not even upgrade: %v (HTTP %d)", err, code)
	}
	if err := c.login("holder", "tok-123"); err != nil {
		t.Fatalf("token holder after %d unauthenticated sockets: %v", n, err)
	}
	t.Logf("token holder welcomed as %s", c.addr)
	// The upgrade-request token is honoured too.
	c2, _, err := symDial(t, p, http.Header{"Authorization": {"Bearer tok-123"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c2.login("holder2", ""); err != nil {
		t.Fatalf("token holder (upgrade token): %v", err)
	}
}

// TestSympleBroadcastFloodOnTheBinary: ten peers broadcast 60 KB messages
// at the rate limit while three observers watch video over Symple calls.
// The observers stay connected and their calls keep receiving video.
func TestSympleBroadcastFloodOnTheBinary(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	var obs []*symClient
	var views []*symViewer
	for i := range 3 {
		c := mustSymDial(t, p)
		c.mustLogin(fmt.Sprintf("observer%d", i), "")
		obs = append(obs, c)
		v := sympleCall(t, c)
		v.waitVideo(t, 20, 20*time.Second)
		views = append(views, v)
	}
	payload := strings.Repeat("x", 60_000)
	const senders = 10
	const flood = 12 * time.Second
	var wg sync.WaitGroup
	var sent, senderErrs atomic.Int64
	for i := range senders {
		s := mustSymDial(t, p)
		s.mustLogin(fmt.Sprintf("flooder%d", i), "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 100 frames per 10 s is the limit: auth was one; send 9.5/s.
			tick := time.NewTicker(105 * time.Millisecond)
			defer tick.Stop()
			end := time.Now().Add(flood)
			for n := 0; time.Now().Before(end); n++ {
				<-tick.C
				if err := s.send(map[string]any{"type": "message", "data": payload, "n": n}); err != nil {
					senderErrs.Add(1)
					return
				}
				sent.Add(1)
			}
		}()
	}
	before := make([]int64, len(views))
	for i, v := range views {
		before[i] = v.video.Load()
	}
	wg.Wait()
	time.Sleep(time.Second)
	dropped := 0
	for i, c := range obs {
		c.mu.Lock()
		big, err := c.big, c.err
		c.mu.Unlock()
		got := views[i].video.Load() - before[i]
		t.Logf("observer %d: %d flood frames received, connection error %v, %d video packets during the flood, pc %s",
			i, big, err, got, views[i].pc.ConnectionState())
		if err != nil {
			dropped++
			t.Errorf("observer %d was disconnected: %v", i, err)
		}
	}
	t.Logf("flood: %d senders sent %d frames of 60 KB in %s (%d send errors); observers disconnected: %d of %d",
		senders, sent.Load(), flood, senderErrs.Load(), dropped, len(obs))
	// Their calls keep receiving video after the flood.
	for i, v := range views {
		if v.closed.Load() {
			t.Errorf("observer %d's call was torn down (pc %s)", i, v.pc.ConnectionState())
			continue
		}
		v.waitVideo(t, 50, 10*time.Second)
	}
	// And the observers still talk: a message to the server peer is answered.
	for i, c := range obs {
		if c.closedErr() != nil {
			continue
		}
		c.mu.Lock()
		from := len(c.frames)
		c.mu.Unlock()
		_ = c.send(map[string]any{"type": "message", "subtype": "call:init", "to": "icey|server", "data": map[string]any{}})
		if _, err := c.waitFrame(&from, 10*time.Second, func(m map[string]any) bool { return m["subtype"] == "call:reject" }); err != nil {
			t.Errorf("observer %d: no busy reject after the flood: %v", i, err)
		}
	}
}
