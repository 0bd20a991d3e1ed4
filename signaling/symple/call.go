package symple

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/signaling"
)

// maxPendingCandidates bounds candidates buffered before the session exists.
const maxPendingCandidates = 64

// call is a peer's call with one server peer (one path). The browser
// always offers; the server answers.
type call struct {
	sp        *serverPeer
	settingUp bool // an offer is being answered
	sess      *signaling.Session
	pending   []webrtc.ICECandidateInit
	detached  chan struct{} // closed when the peer leaves the call running
}

func newCall(sp *serverPeer) *call { return &call{sp: sp, detached: make(chan struct{})} }

// toServer handles frames addressed to a server peer. Only the call:*
// messages mean something to it; anything else is ignored.
func (c *conn) toServer(sp *serverPeer, typ string, m msg) {
	if typ != "message" {
		return
	}
	data := m["data"]
	switch sub := m.str("subtype"); sub {
	case "call:init":
		c.callInit(sp)
	case "call:offer":
		c.callOffer(sp, data)
	case "call:candidate":
		c.callCandidate(sp, data)
	case "call:hangup":
		var d struct {
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(data, &d)
		if d.Reason == "" {
			d.Reason = "hangup"
		}
		c.endCall(sp, d.Reason, false)
	default:
		// call:accept/reject/answer only flow server → browser.
		c.s.log.Debug("ignoring message to a server peer", "subtype", sub, "peer", c.addr, "to", sp.addr)
	}
}

// sendCall sends a call:* message from server peer sp to this peer.
func (c *conn) sendCall(sp *serverPeer, subtype string, data any) {
	f := frame{"type": "message", "subtype": subtype, "id": randomID(8), "from": sp.addr, "to": c.addr}
	if data != nil {
		f["data"] = data
	}
	c.send(f)
}

// reasonData is call:reject's and call:hangup's data; Message explains a
// reason that is a fixed word ("busy", "not allowed", ...).
type reasonData struct {
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// refuseNoCalls answers a call to a server peer that cannot take one,
// reporting whether it did.
func (c *conn) refuseNoCalls(sp *serverPeer) bool {
	switch {
	case c.s.sessions == nil:
		c.sendCall(sp, "call:reject", reasonData{Reason: "calls are not available on this server"})
	case sp.absent:
		c.sendCall(sp, "call:reject", reasonData{Reason: "not found", Message: "the default path is not served"})
	default:
		return false
	}
	return true
}

// inCall reports whether the peer has a call with sp, in any phase.
func (c *conn) inCall(sp *serverPeer) bool {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	return c.calls[sp] != nil
}

func (c *conn) callInit(sp *serverPeer) {
	if c.refuseNoCalls(sp) {
		return
	}
	c.cmu.Lock()
	busy := c.calls[sp] != nil
	if !busy {
		c.calls[sp] = newCall(sp)
	}
	c.cmu.Unlock()
	if busy {
		c.sendCall(sp, "call:reject", reasonData{Reason: "busy", Message: "already in a call with " + sp.addr})
		return
	}
	c.sendCall(sp, "call:accept", nil)
}

func (c *conn) callOffer(sp *serverPeer, data json.RawMessage) {
	d, err := parseOffer(data)
	if err != nil {
		c.sendError(400, "call:offer needs data {\"type\":\"offer\",\"sdp\":\"...\"}")
		return
	}
	if c.refuseNoCalls(sp) {
		return
	}
	c.cmu.Lock()
	cl := c.calls[sp]
	if cl == nil {
		cl = newCall(sp) // tolerate clients that skip call:init
		c.calls[sp] = cl
	}
	busy := cl.settingUp || cl.sess != nil
	if !busy {
		cl.settingUp = true
	}
	c.cmu.Unlock()
	if busy {
		c.sendCall(sp, "call:reject", reasonData{Reason: "busy", Message: "already in a call with " + sp.addr})
		return
	}

	role := offerRole(d.SDP, sp.read, sp.publish)
	token := d.Token
	if token == "" {
		token = c.token
	}
	meta := signaling.SessionMeta{Role: role, Remote: c.remote, Path: sp.path, Token: token}
	ctx, cancel := context.WithTimeout(c.ctx, c.s.cfg.CallSetupTimeout)
	var (
		sess   *signaling.Session
		answer string
	)
	if role == roleViewer {
		sess, answer, err = c.s.sessions.NewViewer(ctx, d.SDP, meta)
	} else {
		sess, answer, err = c.s.sessions.NewPublisher(ctx, d.SDP, meta)
	}
	cancel()
	if err != nil {
		if !c.dropCall(cl) {
			return // hung up meanwhile (shutdown); the peer was told already
		}
		c.refuse(sp, role, err)
		return
	}

	c.cmu.Lock()
	if c.calls[sp] != cl {
		c.cmu.Unlock()
		sess.Close("hangup") // the call ended while we were answering
		return
	}
	cl.settingUp = false
	cl.sess = sess
	pending := cl.pending
	cl.pending = nil
	c.cmu.Unlock()

	c.s.log.Info("call started", "peer", c.addr, "path", sp.path, "role", role, "session", sess.ID())
	c.sendCall(sp, "call:answer", map[string]string{"type": "answer", "sdp": answer})
	for _, ci := range pending {
		if err := sess.AddICECandidate(ci); err != nil {
			c.s.log.Debug("buffered remote candidate rejected", "peer", c.addr, "err", err)
		}
	}
	// Registered after the answer went out: candidates must follow it.
	sess.OnLocalCandidate(func(ic *webrtc.ICECandidate) {
		c.cmu.Lock()
		current := c.calls[sp] == cl
		c.cmu.Unlock()
		if !current {
			return
		}
		if ic == nil {
			c.sendCall(sp, "call:candidate", map[string]any{"candidate": "", "sdpMid": "0", "sdpMLineIndex": 0})
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
		c.sendCall(sp, "call:candidate", out)
	})
	c.s.wg.Add(1) // the handler goroutine holds the count above zero
	go c.watch(cl, sess)
}

// errReason is an error's text without its package prefix.
func errReason(err error) string {
	r := err.Error()
	for _, p := range []string{"signaling: ", "paths: "} {
		r = strings.TrimPrefix(r, p)
	}
	return r
}

// refuse tells the peer why its offer got no session: call:reject when
// the request itself cannot be served (busy, not allowed, unauthorized,
// not found, capacity), call:hangup when the session could not be made
// now (source unavailable, shutdown, timeout, ...).
func (c *conn) refuse(sp *serverPeer, role string, err error) {
	reason := errReason(err)
	c.s.log.Info("call refused", "peer", c.addr, "path", sp.path, "role", role, "reason", reason)
	reject := func(word, message string) {
		c.sendCall(sp, "call:reject", reasonData{Reason: word, Message: message})
	}
	switch {
	case errors.Is(err, signaling.ErrCapacity):
		reject("capacity", reason)
	case errors.Is(err, paths.ErrBusy):
		reject("busy", fmt.Sprintf("path %q already has a publisher", sp.path))
	case errors.Is(err, paths.ErrNotAllowed), errors.Is(err, signaling.ErrWrongMode):
		reject("not allowed", reason)
	case errors.Is(err, paths.ErrUnauthorized):
		reject("unauthorized", reason)
	case errors.Is(err, paths.ErrNotFound):
		reject("not found", reason)
	case errors.Is(err, signaling.ErrClosed), errors.Is(err, paths.ErrClosed):
		c.sendCall(sp, "call:hangup", reasonData{Reason: "shutdown"})
	case errors.Is(err, context.DeadlineExceeded):
		c.sendCall(sp, "call:hangup", reasonData{Reason: "call setup timed out"})
	default: // ErrNoSource / ErrUnavailable ("source unavailable: ..."), ErrBadOffer, ...
		c.sendCall(sp, "call:hangup", reasonData{Reason: reason})
	}
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
	c.s.log.Info("call ended by the session", "peer", c.addr, "path", cl.sp.path, "reason", reason)
	c.sendCall(cl.sp, "call:hangup", reasonData{Reason: reason})
}

// dropCall forgets cl if it is still the current call with its server
// peer, reporting whether it was.
func (c *conn) dropCall(cl *call) bool {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	if c.calls[cl.sp] != cl {
		return false
	}
	delete(c.calls, cl.sp)
	return true
}

// endCall hangs up the call with sp, if any, with reason; notify also
// sends call:hangup to the peer.
func (c *conn) endCall(sp *serverPeer, reason string, notify bool) {
	c.cmu.Lock()
	cl := c.calls[sp]
	delete(c.calls, sp)
	c.cmu.Unlock()
	if cl != nil {
		c.hangup(cl, reason, notify)
	}
}

// endCalls hangs up every call of the peer.
func (c *conn) endCalls(reason string, notify bool) {
	for _, cl := range c.takeCalls() {
		c.hangup(cl, reason, notify)
	}
}

func (c *conn) hangup(cl *call, reason string, notify bool) {
	if cl.sess != nil {
		cl.sess.Close(reason)
		c.s.log.Info("call hung up", "peer", c.addr, "path", cl.sp.path, "session", cl.sess.ID(), "reason", reason)
	}
	if notify {
		c.sendCall(cl.sp, "call:hangup", reasonData{Reason: reason})
	}
}

// takeCalls forgets and returns every call of the peer.
func (c *conn) takeCalls() []*call {
	c.cmu.Lock()
	defer c.cmu.Unlock()
	list := make([]*call, 0, len(c.calls))
	for sp, cl := range c.calls {
		list = append(list, cl)
		delete(c.calls, sp)
	}
	return list
}

// detachCalls forgets the peer's calls without ending their sessions: the
// peer's signalling was dropped for slowness, but its PeerConnections may
// still be playing (or publishing). The sessions end by themselves
// (ICE/DTLS) or at shutdown of the session layer.
func (c *conn) detachCalls() {
	for _, cl := range c.takeCalls() {
		close(cl.detached)
		if cl.sess != nil {
			c.s.log.Info("signalling dropped; call left running", "peer", c.addr, "path", cl.sp.path, "session", cl.sess.ID())
		}
	}
}

func (c *conn) callCandidate(sp *serverPeer, data json.RawMessage) {
	ci, err := parseCandidate(data)
	if err != nil {
		c.sendError(400, "call:candidate needs data {\"candidate\":\"candidate:...\",\"sdpMid\":\"0\"}")
		return
	}
	if ci.Candidate == "" {
		return // end of candidates: nothing to do for ICE lite-style gathering here
	}
	c.cmu.Lock()
	cl := c.calls[sp]
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

// Roles of a call, as in signaling.SessionMeta.Role.
const (
	roleViewer    = "viewer"
	rolePublisher = "publisher"
)

// offerDirections summarizes the active audio/video sections of an offer.
type offerDirections struct {
	sendOnly bool // a section only sends
	sendRecv bool // a section sends and receives
	recv     bool // a section receives (recvonly or sendrecv)
	named    bool // a sending section's msid names a media stream (not "-")
}

func scanOffer(sdp string) offerDirections {
	var d offerDirections
	inMedia, active, started := false, false, false
	// A direction attribute before the first m= line is the sections'
	// default (RFC 8866 §6.7).
	sessionDir := "sendrecv"
	dir, named := sessionDir, false
	flush := func() {
		if !inMedia || !active {
			return
		}
		switch dir {
		case "sendonly":
			d.sendOnly = true
			d.named = d.named || named
		case "sendrecv":
			d.sendRecv, d.recv = true, true
			d.named = d.named || named
		case "recvonly":
			d.recv = true
		}
	}
	for _, line := range strings.Split(sdp, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "m="):
			flush()
			started = true
			f := strings.Fields(line[2:])
			inMedia = len(f) >= 2 && (f[0] == "audio" || f[0] == "video")
			active = inMedia && f[1] != "0"
			dir, named = sessionDir, false
		case !started && (line == "a=sendonly" || line == "a=recvonly" || line == "a=sendrecv" || line == "a=inactive"):
			sessionDir = line[2:]
		case !inMedia:
		case line == "a=sendonly" || line == "a=recvonly" || line == "a=sendrecv" || line == "a=inactive":
			dir = line[2:]
		case strings.HasPrefix(line, "a=msid:"):
			// a=msid:<stream id> <track id>; "-" is no stream.
			if f := strings.Fields(line[len("a=msid:"):]); len(f) > 0 && f[0] != "-" {
				named = true
			}
		}
	}
	flush()
	return d
}

// isPublishOffer reports whether an offer only sends media (a browser
// wanting to broadcast with sendonly transceivers).
func isPublishOffer(sdp string) bool {
	d := scanOffer(sdp)
	return d.sendOnly && !d.recv
}

// offerRole is the role an offer asks for on a path that accepts viewers
// (read) and/or a publisher (publish): an offer that only receives is a
// viewer, one that only sends is a publisher. A sendrecv offer is
// ambiguous, since browsers put sendrecv on transceivers that have no
// track: it publishes on a path that only accepts a publisher, or when it
// has a sending track of a named media stream (pc.addTrack(track, stream))
// or a sendonly section, and the path accepts a publisher; else it views,
// as such offers always did.
func offerRole(sdp string, read, publish bool) string {
	d := scanOffer(sdp)
	switch {
	case !d.sendOnly && !d.sendRecv:
		return roleViewer
	case !d.recv:
		return rolePublisher
	case publish && (!read || d.named || d.sendOnly):
		return rolePublisher
	default:
		return roleViewer
	}
}
