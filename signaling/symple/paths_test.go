package symple

// One server peer per path: presence, calls addressed to a path, Broadcast
// (publisher) calls and path state notices, over a session layer whose
// Router serves several streams.

import (
	"context"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/builtin"
	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/signaling"
)

// testPath is one path of a multiRouter.
type testPath struct {
	st            *media.Stream
	read, publish bool
	token         string // publish token; "" = none
	slot          chan struct{}
}

// multiRouter is a signaling.Router over several streams.
type multiRouter struct{ paths map[string]*testPath }

func (r *multiRouter) get(path string) (*testPath, error) {
	if path == "" {
		path = signaling.DefaultPath
	}
	p := r.paths[path]
	if p == nil {
		return nil, fmt.Errorf("%w: %q", paths.ErrNotFound, path)
	}
	return p, nil
}

func (r *multiRouter) View(_ context.Context, path string) (*media.Stream, func(), error) {
	p, err := r.get(path)
	if err != nil {
		return nil, nil, err
	}
	if !p.read {
		return nil, nil, fmt.Errorf("%w: path %q does not accept viewers", paths.ErrNotAllowed, path)
	}
	return p.st, func() {}, nil
}

func (r *multiRouter) Publish(_ context.Context, path, token string) (*media.Stream, func(), error) {
	p, err := r.get(path)
	if err != nil {
		return nil, nil, err
	}
	if !p.publish {
		return nil, nil, fmt.Errorf("%w: path %q does not accept publishers", paths.ErrNotAllowed, path)
	}
	if p.token != "" && token != p.token {
		return nil, nil, fmt.Errorf("%w: path %q needs its publish token", paths.ErrUnauthorized, path)
	}
	select {
	case p.slot <- struct{}{}:
	default:
		return nil, nil, fmt.Errorf("%w: %q", paths.ErrBusy, path)
	}
	var once sync.Once
	return p.st, func() { once.Do(func() { <-p.slot }) }, nil
}

// pathSpec describes one path of newMultiLayer; feed plays the built-in
// source into it.
type pathSpec struct {
	name          string
	read, publish bool
	feed          bool
	token         string
}

// multiLayer is a session layer over a multiRouter.
type multiLayer struct {
	m      *signaling.Manager
	router *multiRouter
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newMultiLayer(t *testing.T, specs ...pathSpec) *multiLayer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &multiRouter{paths: map[string]*testPath{}}
	ctx, cancel := context.WithCancel(context.Background())
	l := &multiLayer{router: r, cancel: cancel}
	for _, sp := range specs {
		st := media.NewStream(media.StreamConfig{Name: sp.name}, nil)
		r.paths[sp.name] = &testPath{st: st, read: sp.read, publish: sp.publish, token: sp.token, slot: make(chan struct{}, 1)}
		if sp.feed {
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				_ = builtin.New(nil).Run(ctx, st)
			}()
		}
	}
	l.m, err = signaling.NewManager(signaling.Config{UDPConn: conn, LoopbackOnly: true}, r, testLogger())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		l.wg.Wait()
		l.m.Close("test over")
		for _, p := range r.paths {
			p.st.Close()
		}
	})
	for _, sp := range specs {
		if sp.feed {
			wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
			_, err := r.paths[sp.name].st.WaitTracks(wctx)
			wcancel()
			if err != nil {
				t.Fatalf("path %s: builtin source declared no tracks: %v", sp.name, err)
			}
		}
	}
	return l
}

// symplePaths is the Config.Paths of specs.
func symplePaths(specs ...pathSpec) []Path {
	out := make([]Path, 0, len(specs))
	for _, sp := range specs {
		out = append(out, Path{Name: sp.name, Read: sp.read, Publish: sp.publish})
	}
	return out
}

// sessionPaths counts live sessions by path and role ("cam2/viewer").
func sessionPaths(m *signaling.Manager) map[string]int {
	out := map[string]int{}
	for _, s := range m.Sessions() {
		out[s.Path+"/"+s.Role]++
	}
	return out
}

func waitSessionPaths(t *testing.T, m *signaling.Manager, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := sessionPaths(m)
		if reflect.DeepEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sessions %v, want %v", got, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// refusal sends an offer of the given direction to the browser's server
// peer and returns the call:reject or call:hangup it gets.
func (b *browser) refusal(extra map[string]any) map[string]any {
	b.t.Helper()
	b.callMsg("call:init", map[string]any{})
	b.c.expect("call:accept", func(m map[string]any) bool { return isSub("call:accept")(m) && m["from"] == b.to })
	offer := map[string]any{"type": "offer", "sdp": b.offer()}
	for k, v := range extra {
		offer[k] = v
	}
	b.callMsg("call:offer", offer)
	return b.c.expect("refusal", func(m map[string]any) bool {
		if isSub("call:answer")(m) && m["from"] == b.to {
			b.t.Fatalf("expected a refusal, got an answer")
		}
		return (isSub("call:reject")(m) || isSub("call:hangup")(m)) && m["from"] == b.to
	})
}

// TestPathPresence: one server peer per path that reads or publishes, the
// default path first with the seed's identity, each with its data.path.
func TestPathPresence(t *testing.T) {
	checkLeaks(t)
	ts := newTestServer(t, Config{Paths: []Path{
		{Name: "cam2", Read: true},
		{Name: "main", Read: true},
		{Name: "live", Publish: true},
		{Name: "both", Read: true, Publish: true},
		{Name: "off"},
		{Name: "cam2", Publish: true}, // listed twice: the first counts
		{Name: "server", Read: true},  // the default path's id
		{Name: "a|b", Read: true},
	}}, nil)
	peer := func(id, name, mode, path string, caps ...any) map[string]any {
		return map[string]any{"type": "presence", "from": "icey|" + id, "data": map[string]any{
			"id": id, "user": "icey", "name": name, "type": "server", "online": true,
			"mode": mode, "capabilities": caps, "path": path}}
	}
	want := []map[string]any{
		peer("server", "Icey Server", "stream", "main", "view"),
		peer("cam2", "cam2", "stream", "cam2", "view"),
		peer("live", "live", "record", "live", "publish"),
		peer("both", "both", "relay", "both", "publish", "view"),
	}
	for _, user := range []string{"alice", "bob"} {
		c := mustDial(t, ts.url)
		c.login(user, "")
		for i, w := range want {
			if got := c.next(); !reflect.DeepEqual(got, w) {
				t.Fatalf("%s: server presence %d\n got %v\nwant %v", user, i, got, w)
			}
		}
		// Nothing else from a server peer follows: a broadcast comes next
		// (alice's presence for bob is on its own lane, skipped).
		ts.s.Broadcast("sentinel", user)
		if m := c.nextNonPresence(); m["subtype"] != "icey:sentinel" {
			t.Fatalf("%s: got %v", user, m)
		}
	}
	if PeerAddress("") != "icey|server" || PeerAddress("main") != "icey|server" || PeerAddress("cam2") != "icey|cam2" {
		t.Fatal("PeerAddress")
	}
}

// TestCallToPath: a call to icey|cam2 is a session on path cam2; a peer may
// be in calls with two server peers at once, but in one per server peer;
// hanging up one call leaves the other; a path without a source hangs up
// with its reason; a server without the default path refuses icey|server.
func TestCallToPath(t *testing.T) {
	checkLeaks(t)
	specs := []pathSpec{
		{name: "main", read: true, feed: true},
		{name: "cam2", read: true, feed: true},
		{name: "empty", read: true},
	}
	l := newMultiLayer(t, specs...)
	ts := newTestServer(t, Config{Paths: symplePaths(specs...)}, l.m)
	c := mustDial(t, ts.url)
	c.login("viewer", "")

	cam := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	cam.to = "icey|cam2"
	cam.call()
	cam.waitFrames(20)
	waitSessionPaths(t, l.m, map[string]int{"cam2/viewer": 1})

	// Busy on cam2, but main may be called at the same time.
	cam.callMsg("call:init", map[string]any{})
	if rej := c.expect("busy", isSub("call:reject")); rej["from"] != "icey|cam2" || callData(rej)["reason"] != "busy" {
		t.Fatalf("reject %v", rej)
	}
	main := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	main.call()
	main.waitFrames(20)
	waitSessionPaths(t, l.m, map[string]int{"cam2/viewer": 1, "main/viewer": 1})

	// A path whose stream has no tracks: the call is hung up with the reason.
	empty := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	empty.to = "icey|empty"
	if m := empty.refusal(nil); m["subtype"] != "call:hangup" || !strings.HasPrefix(callData(m)["reason"].(string), "source unavailable") {
		t.Fatalf("empty path: %v", m)
	}

	// Hanging up cam2 leaves main playing.
	cam.callMsg("call:hangup", map[string]any{"reason": "hangup"})
	waitSessionPaths(t, l.m, map[string]int{"main/viewer": 1})
	n := main.frames.Load()
	main.waitFrames(n + 10)

	_ = c.ws.Close()
	waitSessionPaths(t, l.m, map[string]int{})

	t.Run("no default path", func(t *testing.T) {
		ts := newTestServer(t, Config{Paths: []Path{{Name: "cam2", Read: true}}}, l.m)
		c := mustDial(t, ts.url)
		c.login("old-client", "")
		if p := c.next(); p["from"] != "icey|cam2" {
			t.Fatalf("presence %v", p)
		}
		c.send(map[string]any{"type": "message", "subtype": "call:init", "to": "icey|server", "data": map[string]any{}})
		rej := c.expect("reject", isSub("call:reject"))
		if rej["from"] != "icey|server" || callData(rej)["reason"] != "not found" {
			t.Fatalf("reject %v", rej)
		}
	})
}

// TestNotifyPath: icey:state notices reach the peers in a call with that
// path's server peer, and nobody else.
func TestNotifyPath(t *testing.T) {
	checkLeaks(t)
	specs := []pathSpec{
		{name: "main", read: true, feed: true},
		{name: "cam2", read: true, feed: true},
	}
	l := newMultiLayer(t, specs...)
	ts := newTestServer(t, Config{Paths: symplePaths(specs...)}, l.m)
	camViewer, mainViewer, idle, both := mustDial(t, ts.url), mustDial(t, ts.url), mustDial(t, ts.url), mustDial(t, ts.url)
	camViewer.login("cam", "")
	mainViewer.login("main", "")
	idle.login("idle", "")
	both.login("both", "")

	cb := newBrowser(t, camViewer, webrtc.RTPTransceiverDirectionRecvonly)
	cb.to = "icey|cam2"
	cb.call()
	mb := newBrowser(t, mainViewer, webrtc.RTPTransceiverDirectionRecvonly)
	mb.call()
	b1 := newBrowser(t, both, webrtc.RTPTransceiverDirectionRecvonly)
	b1.to = "icey|cam2"
	b1.call()
	b2 := newBrowser(t, both, webrtc.RTPTransceiverDirectionRecvonly)
	b2.call()
	// A call that is only initiated counts too.
	idle.send(map[string]any{"type": "message", "subtype": "call:init", "to": "icey|cam2", "data": map[string]any{}})
	idle.expect("accept", isSub("call:accept"))
	waitSessionPaths(t, l.m, map[string]int{"cam2/viewer": 2, "main/viewer": 2})

	ts.s.NotifyPath("cam2", StateReconnecting, "rtsp: connection refused")
	ts.s.NotifyPath("nowhere", StateDown, "") // no such path: nobody
	ts.s.Broadcast("sentinel", 1)
	// notices returns the icey:state frames a peer got before the sentinel.
	notices := func(c *client) []map[string]any {
		var out []map[string]any
		for {
			m := c.nextNonPresence()
			switch m["subtype"] {
			case "icey:sentinel":
				return out
			case "icey:state":
				out = append(out, m)
			}
		}
	}
	want := map[string]any{"path": "cam2", "state": "reconnecting", "detail": "rtsp: connection refused"}
	for _, c := range []*client{camViewer, both, idle} {
		got := notices(c)
		if len(got) != 1 || got[0]["from"] != "icey|cam2" || got[0]["type"] != "message" || !reflect.DeepEqual(got[0]["data"], want) {
			t.Fatalf("%s got %v", c.addr, got)
		}
	}
	if got := notices(mainViewer); len(got) != 0 {
		t.Fatalf("main's viewer got %v", got)
	}

	// The default path's notices come from icey|server; "" names it.
	ts.s.NotifyPath("", StateUp, "")
	ts.s.Broadcast("sentinel", 2)
	for _, c := range []*client{mainViewer, both} {
		got := notices(c)
		if len(got) != 1 || got[0]["from"] != "icey|server" || callData(got[0])["path"] != "main" || callData(got[0])["state"] != "up" {
			t.Fatalf("%s got %v", c.addr, got)
		}
	}
	for _, c := range []*client{camViewer, idle} {
		if got := notices(c); len(got) != 0 {
			t.Fatalf("%s got %v", c.addr, got)
		}
	}

	// After a hangup the peer hears no more of that path.
	cb.callMsg("call:hangup", map[string]any{})
	waitSessionPaths(t, l.m, map[string]int{"cam2/viewer": 1, "main/viewer": 2})
	ts.s.NotifyPath("cam2", StateUp, "")
	ts.s.Broadcast("sentinel", 3)
	if got := notices(camViewer); len(got) != 0 {
		t.Fatalf("after hangup: %v", got)
	}
	if got := notices(both); len(got) != 1 {
		t.Fatalf("both: %v", got)
	}
}

// TestBroadcast: a sendonly offer to a path that accepts a publisher is a
// publisher session whose media reaches that path's viewers; a second
// publisher is refused busy; publishing where it is not allowed, or without
// the path's token, is refused with the reason; the token may come from
// call:offer or from the login.
func TestBroadcast(t *testing.T) {
	checkLeaks(t)
	specs := []pathSpec{
		{name: "main", read: true, feed: true},
		{name: "live", read: true, publish: true},
		{name: "secret", publish: true, token: "pt"},
	}
	l := newMultiLayer(t, specs...)
	ts := newTestServer(t, Config{Paths: symplePaths(specs...)}, l.m)
	ctx := context.Background()

	// The publisher's media: what a viewer of main receives, forwarded
	// into the publisher's sending tracks.
	pub := mustDial(t, ts.url)
	pub.login("publisher", "")
	pb := newBrowser(t, pub, webrtc.RTPTransceiverDirectionSendonly)
	pb.to = "icey|live"
	pb.call()
	src := newBrowser(t, pub, webrtc.RTPTransceiverDirectionRecvonly)
	src.forward = pb.local
	src.call()
	waitSessionPaths(t, l.m, map[string]int{"live/publisher": 1, "main/viewer": 1})
	wctx, wcancel := context.WithTimeout(ctx, 15*time.Second)
	_, err := l.router.paths["live"].st.WaitTracks(wctx)
	wcancel()
	if err != nil {
		t.Fatalf("the publisher declared no tracks on live: %v", err)
	}

	// A viewer of live sees the publisher's video.
	view := mustDial(t, ts.url)
	view.login("viewer", "")
	vb := newBrowser(t, view, webrtc.RTPTransceiverDirectionRecvonly)
	vb.to = "icey|live"
	vb.call()
	vb.waitFrames(20)
	waitSessionPaths(t, l.m, map[string]int{"live/publisher": 1, "live/viewer": 1, "main/viewer": 1})

	// NotifyPath reaches publisher and viewer of live.
	ts.s.NotifyPath("live", StatePublishing, "")
	for _, c := range []*client{pub, view} {
		if m := c.expect("icey:state", isSub("icey:state")); m["from"] != "icey|live" || callData(m)["state"] != "publishing" {
			t.Fatalf("%s got %v", c.addr, m)
		}
	}

	other := mustDial(t, ts.url)
	other.login("other", "")
	refused := func(to string, extra map[string]any, direction webrtc.RTPTransceiverDirection, wantReason string) {
		t.Helper()
		b := newBrowser(t, other, direction)
		b.to = to
		m := b.refusal(extra)
		if d := callData(m); m["subtype"] != "call:reject" || d["reason"] != wantReason || d["message"] == nil {
			t.Fatalf("%s: got %v, want call:reject %q with a message", to, m, wantReason)
		}
	}
	// A second Broadcast on live: busy.
	refused("icey|live", nil, webrtc.RTPTransceiverDirectionSendonly, "busy")
	// Publishing to a read-only path: not allowed.
	refused("icey|server", nil, webrtc.RTPTransceiverDirectionSendonly, "not allowed")
	// Viewing a publish-only path: not allowed.
	refused("icey|secret", nil, webrtc.RTPTransceiverDirectionRecvonly, "not allowed")
	// The path's token: missing, then wrong in call:offer.
	refused("icey|secret", nil, webrtc.RTPTransceiverDirectionSendonly, "unauthorized")
	refused("icey|secret", map[string]any{"token": "nope"}, webrtc.RTPTransceiverDirectionSendonly, "unauthorized")
	// The token in call:offer, then the login's token.
	sb := newBrowser(t, other, webrtc.RTPTransceiverDirectionSendonly)
	sb.to = "icey|secret"
	sb.callWith(map[string]any{"token": "pt"})
	waitSessionPaths(t, l.m, map[string]int{"live/publisher": 1, "live/viewer": 1, "main/viewer": 1, "secret/publisher": 1})
	sb.callMsg("call:hangup", map[string]any{})
	waitSessionPaths(t, l.m, map[string]int{"live/publisher": 1, "live/viewer": 1, "main/viewer": 1})
	tok := mustDial(t, ts.url)
	tok.login("tokened", "pt")
	tb := newBrowser(t, tok, webrtc.RTPTransceiverDirectionSendonly)
	tb.to = "icey|secret"
	tb.call()
	waitSessionPaths(t, l.m, map[string]int{"live/publisher": 1, "live/viewer": 1, "main/viewer": 1, "secret/publisher": 1})

	// The publisher leaves: its session ends, live is free again.
	pb.callMsg("call:hangup", map[string]any{})
	waitSessionPaths(t, l.m, map[string]int{"live/viewer": 1, "main/viewer": 1, "secret/publisher": 1})
	again := newBrowser(t, other, webrtc.RTPTransceiverDirectionSendonly)
	again.to = "icey|live"
	again.call()
}

func TestOfferRole(t *testing.T) {
	mk := func(sections ...string) string {
		return "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n" + strings.Join(sections, "")
	}
	const (
		recv        = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"
		send        = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=msid:- t1\r\na=sendonly\r\n"
		sendAudio   = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n"
		both        = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\na=msid:- t1\r\n"
		bothNamed   = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\na=msid:s1 t1\r\n"
		bothNoAttr  = "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
		recvAudio   = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=recvonly\r\n"
		disabledVid = "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n"
	)
	for _, tc := range []struct {
		name          string
		sdp           string
		read, publish bool
		want          string
	}{
		{"recvonly", mk(recv, recvAudio), true, true, roleViewer},
		{"recvonly on a publish-only path", mk(recv, recvAudio), false, true, roleViewer},
		{"sendonly", mk(send, sendAudio), true, false, rolePublisher},
		{"sendonly beside a disabled section", mk(disabledVid, sendAudio), true, true, rolePublisher},
		{"sendrecv on a read path", mk(bothNamed), true, false, roleViewer},
		{"sendrecv on a publish-only path", mk(both), false, true, rolePublisher},
		{"sendrecv without a named stream on relay", mk(both, recvAudio), true, true, roleViewer},
		{"sendrecv without attribute on relay", mk(bothNoAttr), true, true, roleViewer},
		{"sendrecv with a named stream on relay", mk(bothNamed, recvAudio), true, true, rolePublisher},
		{"sendonly video and recvonly audio on relay", mk(send, recvAudio), true, true, rolePublisher},
		{"sendonly video and recvonly audio on a read path", mk(send, recvAudio), true, false, roleViewer},
		{"session-level sendonly", "v=0\r\ns=-\r\na=sendonly\r\n" + bothNoAttr, true, true, rolePublisher},
		{"session-level sendonly, section recvonly", "v=0\r\ns=-\r\na=sendonly\r\n" + recv, true, true, roleViewer},
	} {
		if got := offerRole(tc.sdp, tc.read, tc.publish); got != tc.want {
			t.Errorf("%s: offerRole = %s, want %s", tc.name, got, tc.want)
		}
	}
}
