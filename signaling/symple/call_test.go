package symple

import (
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/signaling"
)

// browser is a pion PeerConnection driven over Symple like a browser.
type browser struct {
	t      *testing.T
	c      *client
	pc     *webrtc.PeerConnection
	to     string       // the server peer called: "icey|server" unless set
	frames atomic.Int64 // complete video frames received (RTP marker bits)
	cands  []webrtc.ICECandidateInit
	// Sending tracks of a sendonly browser, by kind ("video", "audio").
	local map[string]*webrtc.TrackLocalStaticRTP
	// forward, when set before the call, gets every RTP packet received,
	// by kind: a recvonly browser then feeds a sendonly one.
	forward map[string]*webrtc.TrackLocalStaticRTP
}

func newBrowser(t *testing.T, c *client, direction webrtc.RTPTransceiverDirection) *browser {
	t.Helper()
	pc, err := loopbackAPI(t).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	b := &browser{t: t, c: c, pc: pc, to: ServerAddress, local: map[string]*webrtc.TrackLocalStaticRTP{}}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if direction == webrtc.RTPTransceiverDirectionSendonly {
			codec := webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000}
			if kind == webrtc.RTPCodecTypeAudio {
				codec = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}
			}
			tr, err := webrtc.NewTrackLocalStaticRTP(codec, kind.String(), "pub")
			if err != nil {
				t.Fatal(err)
			}
			b.local[kind.String()] = tr
			if _, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: direction}); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if _, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: direction}); err != nil {
			t.Fatal(err)
		}
	}
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo && p.Marker {
				b.frames.Add(1)
			}
			if out := b.forward[tr.Kind().String()]; out != nil {
				p.Extension, p.Extensions = false, nil
				_ = out.WriteRTP(p)
			}
		}
	})
	return b
}

// offer creates the offer and gathers; the returned SDP carries no
// candidates, so they must travel as call:candidate (trickle).
func (b *browser) offer() string {
	b.t.Helper()
	offer, err := b.pc.CreateOffer(nil)
	if err != nil {
		b.t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(b.pc)
	b.pc.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			b.cands = append(b.cands, c.ToJSON())
		}
	})
	if err := b.pc.SetLocalDescription(offer); err != nil {
		b.t.Fatal(err)
	}
	<-gathered
	if strings.Contains(offer.SDP, "a=candidate") || len(b.cands) == 0 {
		b.t.Fatalf("expected a candidate-less offer and gathered candidates (%d)", len(b.cands))
	}
	return offer.SDP
}

func (b *browser) callMsg(subtype string, data any) {
	b.c.send(map[string]any{"type": "message", "subtype": subtype, "to": b.to, "data": data})
}

func (b *browser) sendCandidates() {
	for _, ci := range b.cands {
		b.callMsg("call:candidate", map[string]any{"candidate": ci.Candidate, "sdpMid": ci.SDPMid, "sdpMLineIndex": ci.SDPMLineIndex})
	}
	b.callMsg("call:candidate", map[string]any{"candidate": ""})
}

func callData(m map[string]any) map[string]any {
	d, _ := m["data"].(map[string]any)
	return d
}

// call runs init → accept → (candidates first, to exercise buffering) →
// offer → answer, applying the server's trickled candidates, and waits for
// the connection.
func (b *browser) call() {
	b.t.Helper()
	b.callWith(nil)
}

// callWith is call with extra call:offer data (e.g. a publish token).
func (b *browser) callWith(extra map[string]any) {
	b.t.Helper()
	b.callMsg("call:init", map[string]any{})
	acc := b.c.expect("call:accept", isSub("call:accept"))
	if acc["from"] != b.to || acc["to"] != b.c.addr {
		b.t.Fatalf("accept %v", acc)
	}
	if _, has := acc["data"]; has {
		b.t.Fatalf("server's call:accept carries no data: %v", acc)
	}
	sdp := b.offer()
	b.sendCandidates() // before the offer: the server must buffer them
	offer := map[string]any{"type": "offer", "sdp": sdp}
	for k, v := range extra {
		offer[k] = v
	}
	b.callMsg("call:offer", offer)
	ans := b.c.expect("call:answer", func(m map[string]any) bool {
		if isSub("call:reject")(m) || isSub("call:hangup")(m) {
			b.t.Fatalf("offer to %s refused: %v", b.to, m)
		}
		return isSub("call:answer")(m) && m["from"] == b.to
	})
	d := callData(ans)
	if d["type"] != "answer" || d["sdp"] == "" {
		b.t.Fatalf("answer %v", ans)
	}
	if err := b.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: d["sdp"].(string)}); err != nil {
		b.t.Fatal(err)
	}
	// The server trickles too (its answer already holds every candidate,
	// then an empty candidate marks the end).
	end := b.c.expect("end of server candidates", func(m map[string]any) bool {
		if !isSub("call:candidate")(m) || m["from"] != b.to {
			return false
		}
		cd := callData(m)
		cand, _ := cd["candidate"].(string)
		if cand == "" {
			return true
		}
		if !strings.HasPrefix(cand, "a=candidate:") || cd["sdpMid"] == nil {
			b.t.Fatalf("server candidate %v", cd)
		}
		mid := cd["sdpMid"].(string)
		if err := b.pc.AddICECandidate(webrtc.ICECandidateInit{Candidate: strings.TrimPrefix(cand, "a="), SDPMid: &mid}); err != nil {
			b.t.Fatal(err)
		}
		return false
	})
	_ = end
}

func (b *browser) waitFrames(n int64) {
	b.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for b.frames.Load() < n {
		if time.Now().After(deadline) {
			b.t.Fatalf("only %d video frames received (state %s)", b.frames.Load(), b.pc.ConnectionState())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitSessions(t *testing.T, m *signaling.Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for len(m.Sessions()) != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions, want %d", len(m.Sessions()), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestCallFlow: the whole call with a real session layer and a pion
// browser: video frames arrive; a second call:init is busy; hangup ends
// the session; and a WebSocket close ends a session too.
func TestCallFlow(t *testing.T) {
	checkLeaks(t)
	l := newSessionLayer(t, signaling.Config{}, true)
	ts := newTestServer(t, Config{}, l.m)

	c := mustDial(t, ts.url)
	c.login("viewer", "")
	b := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	b.call()
	b.waitFrames(30)
	if s := l.m.Sessions(); len(s) != 1 || s[0].Role != "viewer" {
		t.Fatalf("sessions %+v", s)
	}

	b.callMsg("call:init", map[string]any{})
	if rej := c.expect("busy reject", isSub("call:reject")); callData(rej)["reason"] != "busy" {
		t.Fatalf("reject %v", rej)
	}
	if len(l.m.Sessions()) != 1 {
		t.Fatal("a busy reject must not touch the running call")
	}

	b.callMsg("call:hangup", map[string]any{"reason": "hangup"})
	waitSessions(t, l.m, 0)

	// A new call on the same connection works, and closing the WebSocket
	// ends it.
	b2 := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	b2.call()
	b2.waitFrames(10)
	_ = c.ws.Close()
	waitSessions(t, l.m, 0)
}

// TestCallEndedBySession: when the session ends by itself the browser gets
// call:hangup with the session's reason.
func TestCallEndedBySession(t *testing.T) {
	checkLeaks(t)
	l := newSessionLayer(t, signaling.Config{}, true)
	ts := newTestServer(t, Config{}, l.m)
	c := mustDial(t, ts.url)
	c.login("viewer", "")
	b := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	b.call()
	b.waitFrames(10)
	_ = b.pc.Close() // the "browser" goes away without a hangup frame
	h := c.expect("call:hangup", isSub("call:hangup"))
	if r := callData(h)["reason"]; r != "peer closed" && r != "connection failed" {
		t.Fatalf("hangup reason %v", r)
	}
	waitSessions(t, l.m, 0)
	// The peer can call again.
	b2 := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	b2.call()
	b2.waitFrames(10)
}

// TestShutdownHangsUpCalls: Shutdown hangs up with reason "shutdown", sends
// the shutdown event, closes, and the session is gone.
func TestShutdownHangsUpCalls(t *testing.T) {
	checkLeaks(t)
	l := newSessionLayer(t, signaling.Config{}, true)
	ts := newTestServer(t, Config{}, l.m)
	c := mustDial(t, ts.url)
	c.login("viewer", "")
	b := newBrowser(t, c, webrtc.RTPTransceiverDirectionRecvonly)
	b.call()
	b.waitFrames(10)
	done := make(chan struct{})
	go func() { ts.s.Shutdown(); close(done) }()
	if h := c.expect("call:hangup", isSub("call:hangup")); callData(h)["reason"] != "shutdown" {
		t.Fatalf("hangup %v", h)
	}
	if ev := c.next(); ev["type"] != "event" || ev["name"] != "shutdown" {
		t.Fatalf("event %v", ev)
	}
	c.expectClosed()
	<-done
	waitSessions(t, l.m, 0)
}

// TestCallRefusals: what the browser hears when no session can be made.
func TestCallRefusals(t *testing.T) {
	checkLeaks(t)
	cases := []struct {
		name      string
		mode      string
		feed      bool
		max       int
		direction webrtc.RTPTransceiverDirection
		occupy    bool // another peer holds the only session slot
		subtype   string
		reason    string // prefix
	}{
		{"source unavailable", "stream", false, 0, webrtc.RTPTransceiverDirectionRecvonly, false, "call:hangup", "source unavailable: "},
		{"capacity", "stream", true, 1, webrtc.RTPTransceiverDirectionRecvonly, true, "call:reject", "capacity"},
		{"publish offer", "stream", true, 0, webrtc.RTPTransceiverDirectionSendonly, false, "call:reject", "not allowed"},
		{"view in record mode", "record", true, 0, webrtc.RTPTransceiverDirectionRecvonly, false, "call:reject", "not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l := newSessionLayerMode(t, signaling.Config{MaxSessions: tc.max}, tc.mode, tc.feed)
			ts := newTestServer(t, Config{Mode: tc.mode}, l.m)
			if tc.occupy {
				o := mustDial(t, ts.url)
				o.login("other", "")
				ob := newBrowser(t, o, webrtc.RTPTransceiverDirectionRecvonly)
				ob.call()
			}
			c := mustDial(t, ts.url)
			c.login("viewer", "")
			b := newBrowser(t, c, tc.direction)
			b.callMsg("call:init", map[string]any{})
			c.expect("call:accept", isSub("call:accept"))
			b.callMsg("call:offer", map[string]any{"type": "offer", "sdp": b.offer()})
			m := c.expect(tc.subtype, func(m map[string]any) bool {
				return isSub("call:reject")(m) || isSub("call:hangup")(m) || isSub("call:answer")(m)
			})
			reason, _ := callData(m)["reason"].(string)
			if m["subtype"] != tc.subtype || !strings.HasPrefix(reason, tc.reason) {
				t.Fatalf("got %v %q, want %s %q...", m["subtype"], reason, tc.subtype, tc.reason)
			}
			if msg, _ := callData(m)["message"].(string); reason == "not allowed" && msg == "" {
				t.Fatalf("a not-allowed refusal explains itself: %v", m)
			}
			// The refusal ended the call: a new call:init is accepted.
			b.callMsg("call:init", map[string]any{})
			c.expect("call:accept again", isSub("call:accept"))
		})
	}
}
