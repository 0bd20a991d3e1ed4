package symple

import (
	"context"
	"encoding/json"
	"errors"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/signaling"
)

// maxPendingCandidates bounds candidates buffered before the session exists.
const maxPendingCandidates = 64

// call is a peer's call with the server peer. The browser always offers;
// the server answers.
type call struct {
	settingUp bool // an offer is being answered
	sess      *signaling.Session
	pending   []webrtc.ICECandidateInit
	detached  chan struct{} // closed when the peer leaves the call running
}

func newCall() *call { return &call{detached: make(chan struct{})} }

// toServer handles frames addressed to the server peer. Only the call:*
// messages mean something to it; anything else is ignored.
func (c *conn) toServer(typ string, m msg) {
	if typ != "message" {
		return
	}
	data := m["data"]
	switch sub := m.str("subtype"); sub {
	case "call:init":
		c.callInit()
	case "call:offer":
		c.callOffer(data)
	case "call:candidate":
		c.callCandidate(data)
	case "call:hangup":
		var d struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(data, &d)
		if d.Reason == "" {
			d.Reason = "hangup"
		}
		c.endCall(d.Reason, false)
	default:
		// call:accept/reject/answer only flow server → browser.
		c.s.log.Debug("ignoring message to the server peer", "subtype", sub, "peer", c.addr)
	}
}

// sendCall sends a call:* message from the server peer to this peer.
func (c *conn) sendCall(subtype string, data any) {
	f := frame{"type": "message", "subtype": subtype, "id": randomID(8), "from": ServerAddress, "to": c.addr}
	if data != nil {
		f["data"] = data
	}
	c.send(f)
}

type reasonData struct {
	Reason string `json:"reason"`
}

func (c *conn) callInit() {
	if c.s.sessions == nil {
		c.sendCall("call:reject", reasonData{"calls are not available on this server"})
		return
	}
	c.cmu.Lock()
	busy := c.call != nil
	if !busy {
		c.call = newCall()
	}
	c.cmu.Unlock()
	if busy {
		c.sendCall("call:reject", reasonData{"busy"})
		return
	}
	c.sendCall("call:accept", nil)
}

func (c *conn) callOffer(data json.RawMessage) {
	d, err := parseOffer(data)
	if err != nil {
		c.sendError(400, "call:offer needs data {\"type\":\"offer\",\"sdp\":\"...\"}")
		return
	}
	if c.s.sessions == nil {
		c.sendCall("call:reject", reasonData{"calls are not available on this server"})
		return
	}
	c.cmu.Lock()
	if c.call == nil {
		c.call = newCall() // tolerate clients that skip call:init
	}
	cl := c.call
	busy := cl.settingUp || cl.sess != nil
	if !busy {
		cl.settingUp = true
	}
	c.cmu.Unlock()
	if busy {
		c.sendCall("call:reject", reasonData{"busy"})
		return
	}
	if isPublishOffer(d.SDP) {
		c.dropCall(cl)
		c.sendCall("call:reject", reasonData{"publishing is not available in this mode/build"})
		return
	}

	ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.CallSetupTimeout)
	sess, answer, err := c.s.sessions.NewViewer(ctx, d.SDP, signaling.SessionMeta{Role: "viewer", Remote: c.remote})
	cancel()
	if err != nil {
		if !c.dropCall(cl) {
			return // hung up meanwhile (shutdown); the peer was told already
		}
		reason := strings.TrimPrefix(err.Error(), "signaling: ")
		c.s.log.Info("call refused", "peer", c.addr, "reason", reason)
		switch {
		case errors.Is(err, signaling.ErrCapacity):
			c.sendCall("call:reject", reasonData{"capacity"})
		case errors.Is(err, signaling.ErrWrongMode):
			c.sendCall("call:reject", reasonData{reason})
		case errors.Is(err, signaling.ErrClosed):
			c.sendCall("call:hangup", reasonData{"shutdown"})
		case errors.Is(err, context.DeadlineExceeded):
			c.sendCall("call:hangup", reasonData{"call setup timed out"})
		default: // ErrNoSource ("source unavailable: ..."), ErrBadOffer, ...
			c.sendCall("call:hangup", reasonData{reason})
		}
		return
	}

	c.cmu.Lock()
	if c.call != cl {
		c.cmu.Unlock()
		sess.Close("hangup") // the call ended while we were answering
		return
	}
	cl.settingUp = false
	cl.sess = sess
	pending := cl.pending
	cl.pending = nil
	c.cmu.Unlock()

	c.s.log.Info("call started", "peer", c.addr, "session", sess.ID())
	c.sendCall("call:answer", map[string]string{"type": "answer", "sdp": answer})
	for _, ci := range pending {
		if err := sess.AddICECandidate(ci); err != nil {
			c.s.log.Debug("buffered remote candidate rejected", "peer", c.addr, "err", err)
		}
	}
	// Registered after the answer went out: candidates must follow it.
	sess.OnLocalCandidate(func(ic *webrtc.ICECandidate) {
		c.cmu.Lock()
		current := c.call == cl
		c.cmu.Unlock()
		if !current {
			return
		}
		if ic == nil {
			c.sendCall("call:candidate", map[string]any{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0})
			return
		}
		j := ic.ToJSON()
		mid := "0"
		if j.SDPMid != nil && *j.SDPMid != "" {
			mid = *j.SDPMid
		}
		out := map[string]any{"candidate": "a=" + j.Candidate, "sdpMid": mid}
		if j.SDPMLineIndex != nil {
			out["sdpMLineIndex"] = *j.SDPMLineIndex
		}
		c.sendCall("call:candidate", out)
	})
	c.s.wg.Add(1) // the handler goroutine holds the count above zero
	go c.watch(cl, sess)
}

// watch tells the peer when its session ends by itself (handshake timeout,
// connection failed, source closed, ...).
func (c *conn) watch(cl *call, sess *signaling.Session) {
	defer c.s.wg.Done()
	select {
	case <-sess.Done():
	case <-cl.detached:
		return // the peer is gone; the session runs on by itself
	}
	if !c.dropCall(cl) {
		return // ended by us; whoever ended it has told the peer
	}
	reason := "ended"
	if err := sess.Err(); err != nil {
		reason = err.Error()
	}
	c.s.log.Info("call ended by the session", "peer", c.addr, "reason", reason)
	c.sendCall("call:hangup", reasonData{reason})
}

// dropCall forgets cl if it is still the current call, reporting whether it was.
func (c *conn) dropCall(cl *call) bool {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if c.call != cl {
		return false
	}
	c.call = nil
	return true
}

// endCall hangs up the current call, if any, with reason; notify also sends
// call:hangup to the peer.
func (c *conn) endCall(reason string, notify bool) {
	c.cmu.Lock()
	cl := c.call
	c.call = nil
	c.cmu.Unlock()
	if cl == nil {
		return
	}
	if cl.sess != nil {
		cl.sess.Close(reason)
		c.s.log.Info("call hung up", "peer", c.addr, "session", cl.sess.ID(), "reason", reason)
	}
	if notify {
		c.sendCall("call:hangup", reasonData{reason})
	}
}

// detachCall forgets the current call without ending its session: the
// peer's signalling was dropped for slowness, but the PeerConnection may
// still be playing. The session ends by itself (ICE/DTLS) or at shutdown of
// the session layer.
func (c *conn) detachCall() {
	c.cmu.Lock()
	cl := c.call
	c.call = nil
	c.cmu.Unlock()
	if cl == nil {
		return
	}
	close(cl.detached)
	if cl.sess != nil {
		c.s.log.Info("signalling dropped; call left running", "peer", c.addr, "session", cl.sess.ID())
	}
}

func (c *conn) callCandidate(data json.RawMessage) {
	ci, err := parseCandidate(data)
	if err != nil {
		c.sendError(400, "call:candidate needs data {\"candidate\":\"candidate:...\",\"sdpMid\":\"0\"}")
		return
	}
	if ci.Candidate == "" {
		return // end of candidates: nothing to do for ICE lite-style gathering here
	}
	c.cmu.Lock()
	cl := c.call
	if cl == nil {
		c.cmu.Unlock()
		return // a late candidate of a finished call
	}
	if cl.sess == nil {
		// Before the offer was answered: keep it for the session.
		if len(cl.pending) < maxPendingCandidates {
			cl.pending = append(cl.pending, ci)
		}
		c.cmu.Unlock()
		return
	}
	sess := cl.sess
	c.cmu.Unlock()
	if err := sess.AddICECandidate(ci); err != nil {
		c.s.log.Debug("remote candidate rejected", "peer", c.addr, "err", err)
	}
}

// isPublishOffer reports whether an offer only sends media (a browser
// wanting to broadcast), which the viewer path cannot answer.
func isPublishOffer(sdp string) bool {
	active, receives := 0, 0
	inMedia, sectionActive, sectionRecv := false, false, false
	flush := func() {
		if inMedia && sectionActive {
			active++
			if sectionRecv {
				receives++
			}
		}
	}
	for _, line := range strings.Split(sdp, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "m="):
			flush()
			f := strings.Fields(line[2:])
			inMedia = len(f) >= 2 && (f[0] == "audio" || f[0] == "video")
			sectionActive = inMedia && f[1] != "0"
			sectionRecv = true
		case inMedia && (line == "a=sendonly" || line == "a=inactive"):
			sectionRecv = false
		}
	}
	flush()
	return active > 0 && receives == 0
}
