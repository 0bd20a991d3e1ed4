package symple

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	closeGrace = 2 * time.Second // how long we wait for the peer's close reply
	maxRooms   = 64              // rooms per peer
	maxRoomLen = 128
	maxUserLen = 128
	maxNameLen = 256
	// maxPresenceBytes bounds a peer's presence frame (its auth data):
	// every other peer holds it while it is pending.
	maxPresenceBytes = 8 << 10
)

// reserved keys of the peer object that auth "data" may not override.
var reserved = map[string]bool{"id": true, "user": true, "name": true, "online": true, "type": true,
	"token": true, "rooms": true, "host": true}

// Outbound frames of one peer travel in two lanes, written by the peer's
// writer goroutine:
//
//   - the main lane, in order: frames the server addresses to this peer
//     (welcome, errors, replies, call:*, icey:* events, shutdown) and frames
//     other peers route to it. Server frames are bounded by SendQueue frames:
//     they are caused by the peer itself (its requests, its call) or by the
//     server, so overflowing them means the peer does not read, and it is
//     dropped. Relayed frames are bounded by byte budgets (per receiver and
//     per sender→receiver); traffic over budget is shed (dropped and
//     counted), never a reason to disconnect the receiver.
//   - the presence lane: at most one pending entry per other peer, holding
//     that peer's latest presence, coalesced and materialized only when
//     written. A snapshot of thousands of peers is therefore paced by the
//     receiver's own reading, not dumped into a fixed queue. A relayed frame
//     from a peer whose presence is still pending is preceded by it.
//
// A peer is dropped only for its own slowness: a server-lane overflow, or a
// write that does not complete within writeWait. Such a drop does not tear
// down its media call (see finish).
type outKind uint8

const (
	outServer outKind = iota
	outRelay
	outClose
)

type outItem struct {
	kind      outKind
	data      []byte
	from      *conn // outRelay: the sender
	closeCode int   // outClose
	closeText string
}

// conn is one WebSocket connection and, once authenticated, one peer.
type conn struct {
	s          *Server
	ws         *websocket.Conn
	remote     string
	upToken    string // token given on the upgrade request
	ctx        context.Context
	cancel     context.CancelFunc
	quit       chan struct{} // closed by finish: the writer stops
	writerDone chan struct{}
	wake       chan struct{} // cap 1: something was queued
	closing    atomic.Bool   // a close frame is queued: send nothing more, drain reads
	authed     atomic.Bool
	slow       atomic.Bool // dropped for its own slowness
	authTimer  *time.Timer
	dropOnce   sync.Once
	shed       atomic.Int64 // relayed frames shed for this receiver

	// slot is the capacity this connection holds; guarded by s.mu.
	slot    slot
	created time.Time

	// Outbound lanes, guarded by omu.
	omu        sync.Mutex
	main       []outItem
	mainHead   int
	serverN    int // server frames queued in main
	relayBytes int
	relayFrom  map[*conn]int
	pres       []*conn
	presHead   int
	presState  map[*conn]pendingPresence

	// Reader goroutine only.
	rate     []time.Time
	rateNext int

	// Set once at auth, before the peer is visible to others.
	id, user, name, addr string
	presenceOn           []byte
	presenceOff          []byte
	// rooms is guarded by s.mu.
	rooms map[string]struct{}

	// token is what the peer authenticated with (auth frame or upgrade
	// request); set at auth. A Broadcast call presents it unless its
	// call:offer carries its own.
	token string

	// calls: at most one per server peer (path), guarded by cmu.
	cmu   sync.Mutex
	calls map[*serverPeer]*call
}

// slot is the admission class of a connection.
type slot uint8

const (
	slotNone    slot = iota
	slotPending      // unauthenticated: the small MaxPending pool
	slotPreauth      // valid token on the upgrade request, auth frame still due
	slotPeer         // authenticated
)

func newConn(s *Server, ws *websocket.Conn, r *http.Request) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		s: s, ws: ws, remote: r.RemoteAddr, upToken: upgradeToken(r),
		ctx: ctx, cancel: cancel,
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		wake:       make(chan struct{}, 1),
		rooms:      map[string]struct{}{},
		relayFrom:  map[*conn]int{},
		presState:  map[*conn]pendingPresence{},
		calls:      map[*serverPeer]*call{},
		created:    time.Now(),
	}
}

// send queues a JSON frame from the server.
func (c *conn) send(f frame) { c.sendRaw(mustJSON(f)) }

func (c *conn) signal() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// sendRaw queues an encoded frame from the server without blocking. A peer
// with SendQueue server frames unwritten does not read its socket: it is
// disconnected rather than allowed to hold memory or the sender.
func (c *conn) sendRaw(b []byte) {
	if c.closing.Load() {
		return
	}
	c.omu.Lock()
	if c.serverN >= c.s.cfg.SendQueue {
		c.omu.Unlock()
		c.dropSlow("send queue full")
		return
	}
	c.serverN++
	c.main = append(c.main, outItem{kind: outServer, data: b})
	c.omu.Unlock()
	c.signal()
}

// relay queues a frame routed from another peer. Over the receiver's byte
// budget, or the sender's share of it, the frame is shed: the receiver is
// not punished for what others send it.
func (c *conn) relay(from *conn, b []byte) {
	if c.closing.Load() {
		return
	}
	n := len(b)
	c.omu.Lock()
	if c.relayBytes+n > c.s.cfg.RelayBudget || c.relayFrom[from]+n > c.s.cfg.RelaySenderBudget {
		c.omu.Unlock()
		if c.shed.Add(1) == 1 {
			c.s.log.Info("shedding relayed frames for a busy receiver", "peer", c.addr, "from", from.addr)
		}
		c.s.shed.Add(1)
		return
	}
	c.relayBytes += n
	c.relayFrom[from] += n
	c.main = append(c.main, outItem{kind: outRelay, data: b, from: from})
	c.omu.Unlock()
	c.signal()
}

// pendingPresence is a peer's latest presence not yet written; fresh: this
// receiver has not been told anything about that peer before.
type pendingPresence struct {
	b     []byte
	fresh bool
}

// presence queues o's latest presence (b) for this peer, coalescing with
// one still pending. first: o was never announced to this peer before (o's
// or this peer's auth).
func (c *conn) presence(o *conn, b []byte, first bool) {
	if c.closing.Load() {
		return
	}
	c.omu.Lock()
	p, pending := c.presState[o]
	if !pending {
		if len(c.presState) >= c.s.maxPresence() {
			c.omu.Unlock()
			c.dropSlow("presence backlog full")
			return
		}
		c.pres = append(c.pres, o)
		p.fresh = first
	}
	p.b = b
	c.presState[o] = p
	c.omu.Unlock()
	c.signal()
}

// presenceGone tells this peer that o went offline. When it was never told
// o was online, it is told nothing: a peer that connects and leaves before
// a receiver catches up costs that receiver nothing.
func (c *conn) presenceGone(o *conn) {
	c.omu.Lock()
	if p, pending := c.presState[o]; pending && p.fresh {
		delete(c.presState, o) // its lane entry is skipped
		c.omu.Unlock()
		return
	}
	c.omu.Unlock()
	c.presence(o, o.presenceOff, false)
}

// next pops the next frame to write (ok false: nothing queued).
func (c *conn) next() (it outItem, ok bool) {
	c.omu.Lock()
	defer c.omu.Unlock()
	if c.mainHead < len(c.main) {
		head := c.main[c.mainHead]
		if head.kind == outRelay {
			if p, pending := c.presState[head.from]; pending {
				delete(c.presState, head.from) // its lane entry is skipped later
				return outItem{kind: outServer, data: p.b}, true
			}
			c.relayBytes -= len(head.data)
			if c.relayFrom[head.from] -= len(head.data); c.relayFrom[head.from] <= 0 {
				delete(c.relayFrom, head.from)
			}
		} else if head.kind == outServer {
			c.serverN--
		}
		c.main[c.mainHead] = outItem{}
		c.mainHead++
		if c.mainHead == len(c.main) {
			c.main, c.mainHead = c.main[:0], 0
		} else if c.mainHead > 1024 && c.mainHead*2 > len(c.main) {
			c.main = append(c.main[:0], c.main[c.mainHead:]...)
			c.mainHead = 0
		}
		return head, true
	}
	for c.presHead < len(c.pres) {
		o := c.pres[c.presHead]
		c.pres[c.presHead] = nil
		c.presHead++
		if c.presHead == len(c.pres) {
			c.pres, c.presHead = c.pres[:0], 0
		}
		if p, pending := c.presState[o]; pending {
			delete(c.presState, o)
			return outItem{kind: outServer, data: p.b}, true
		}
	}
	return outItem{}, false
}

// dropSlow disconnects a peer that does not keep up with its own traffic.
// Its media call survives (see finish).
func (c *conn) dropSlow(why string) {
	c.slow.Store(true)
	c.drop(why)
}

func (c *conn) drop(why string) {
	c.dropOnce.Do(func() {
		c.s.log.Warn("dropping websocket peer", "reason", why, "peer", c.addr, "remote", c.remote)
		_ = c.ws.Close() // the reader fails and finishes the connection
	})
}

// fail sends an error frame and closes the connection.
func (c *conn) fail(status int, message string, closeCode int) {
	if c.closing.Load() {
		return
	}
	c.s.log.Info("websocket peer refused", "status", status, "message", message, "peer", c.addr, "remote", c.remote)
	c.send(frame{"type": "error", "status": status, "message": message})
	c.closeWith(closeCode, message)
}

// closeWith queues a close frame (nothing is sent after it) and bounds how
// long the reader waits for the peer to answer it.
func (c *conn) closeWith(code int, text string) {
	if c.closing.Swap(true) {
		return
	}
	c.omu.Lock()
	c.main = append(c.main, outItem{kind: outClose, closeCode: code, closeText: text})
	c.omu.Unlock()
	c.signal()
	_ = c.ws.SetReadDeadline(time.Now().Add(closeGrace))
}

func (c *conn) sendError(status int, message string) {
	c.send(frame{"type": "error", "status": status, "message": message})
}

// writeLoop is the connection's only writer: queued frames and pings.
func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	defer close(c.writerDone)
	ping := time.NewTicker(c.s.cfg.PingInterval)
	defer ping.Stop()
	fail := func(what string, err error) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			c.dropSlow(what + " timed out")
		} else {
			c.drop(what + " failed: " + err.Error())
		}
		<-c.quit
	}
	for {
		select {
		case <-ping.C:
			_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
			if err := c.ws.WriteMessage(websocket.PingMessage, nil); err != nil {
				fail("ping", err)
				return
			}
		case <-c.quit:
			return
		default:
		}
		f, ok := c.next()
		if !ok {
			select {
			case <-c.wake:
			case <-ping.C:
				_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
				if err := c.ws.WriteMessage(websocket.PingMessage, nil); err != nil {
					fail("ping", err)
					return
				}
			case <-c.quit:
				return
			}
			continue
		}
		_ = c.ws.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
		if f.kind == outClose {
			_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(f.closeCode, f.closeText))
			<-c.quit
			return
		}
		if err := c.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
			fail("write", err)
			return
		}
	}
}

// extendRead pushes the idle deadline out, unless we are closing (then the
// short close deadline must stay).
func (c *conn) extendRead() {
	_ = c.ws.SetReadDeadline(time.Now().Add(c.s.cfg.PingInterval * 5 / 2))
	if c.closing.Load() {
		_ = c.ws.SetReadDeadline(time.Now().Add(closeGrace))
	}
}

// readLoop reads and handles frames until the connection fails or closes.
// After a close frame was queued it only drains, so the peer's close reply
// is read and our frames are not lost to a TCP reset.
func (c *conn) readLoop() {
	max := c.s.cfg.MaxMessageBytes
	c.extendRead()
	c.ws.SetPongHandler(func(string) error { c.extendRead(); return nil })
	c.authTimer = time.AfterFunc(c.s.cfg.AuthTimeout, func() {
		// Under s.mu so that it cannot interleave with a succeeding auth.
		c.s.mu.Lock()
		defer c.s.mu.Unlock()
		if !c.authed.Load() {
			c.fail(http.StatusRequestTimeout, "Authentication timeout", websocket.ClosePolicyViolation)
		}
	})
	defer c.authTimer.Stop()
	for {
		_, r, err := c.ws.NextReader()
		if err != nil {
			return
		}
		if c.closing.Load() {
			continue // NextReader discards the unread rest
		}
		data, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
		if err != nil {
			return
		}
		if len(data) > max {
			c.fail(http.StatusRequestEntityTooLarge, "Message too large", websocket.CloseMessageTooBig)
			continue
		}
		if !c.allowRate(time.Now()) {
			c.fail(http.StatusTooManyRequests, "Too many messages", websocket.ClosePolicyViolation)
			continue
		}
		c.extendRead()
		c.handle(data)
	}
}

// allowRate is a sliding-window limiter: at most RateLimit frames in any
// RateWindow.
func (c *conn) allowRate(now time.Time) bool {
	limit := c.s.cfg.RateLimit
	if len(c.rate) < limit {
		c.rate = append(c.rate, now)
		return true
	}
	if now.Sub(c.rate[c.rateNext]) < c.s.cfg.RateWindow {
		return false
	}
	c.rate[c.rateNext] = now
	c.rateNext = (c.rateNext + 1) % limit
	return true
}

// finish runs once the reader has stopped: stop the writer, close the
// socket, end the call, leave the rooms and tell the others. A peer dropped
// for its own slowness keeps its media call: a signalling overflow is no
// reason to stop the video it is watching; the session then ends by itself
// when its PeerConnection goes away.
func (c *conn) finish() {
	c.closing.Store(true)
	close(c.quit)
	// Closing the socket first unblocks a writer stuck on a peer that does
	// not read. The reader has stopped: the peer answered our close frame,
	// sent its own, went away or missed the close deadline.
	_ = c.ws.Close()
	<-c.writerDone
	if c.slow.Load() {
		c.detachCalls()
	} else {
		c.endCalls("disconnected", false)
	}
	c.cancel()
	if n := c.shed.Load(); n > 0 {
		c.s.log.Info("relayed frames shed for this receiver", "peer", c.addr, "frames", n)
	}
	s := c.s
	s.mu.Lock()
	s.releaseLocked(c)
	if !c.authed.Load() {
		s.mu.Unlock()
		return
	}
	others := s.sharingLocked(c)
	for room := range c.rooms {
		s.leaveLocked(c, room)
	}
	delete(s.peers, c.id)
	for o := range others {
		o.presenceGone(c)
	}
	s.mu.Unlock()
	s.log.Debug("peer left", "peer", c.addr, "remote", c.remote)
}

// msg is an incoming frame; raw values are kept so that fields we do not
// know pass through unchanged.
type msg map[string]json.RawMessage

func (m msg) str(key string) string {
	var s string
	if v, ok := m[key]; ok {
		_ = json.Unmarshal(v, &s)
	}
	return s
}

func (m msg) bool(key string) bool {
	var b bool
	if v, ok := m[key]; ok {
		_ = json.Unmarshal(v, &b)
	}
	return b
}

func (c *conn) handle(data []byte) {
	var m msg
	if err := json.Unmarshal(data, &m); err != nil || m == nil {
		if !c.authed.Load() {
			c.fail(http.StatusUnauthorized, "Not authenticated", websocket.ClosePolicyViolation)
		} else {
			c.sendError(http.StatusBadRequest, "Malformed message: expected a JSON object")
		}
		return
	}
	typ := m.str("type")
	if !c.authed.Load() {
		if typ != "auth" {
			c.fail(http.StatusUnauthorized, "Not authenticated", websocket.ClosePolicyViolation)
			return
		}
		c.auth(data)
		return
	}
	switch typ {
	case "message", "presence", "command", "event":
		c.route(typ, m)
	case "join":
		c.join(m.str("room"))
	case "leave":
		c.leave(m.str("room"))
	case "auth":
		c.sendError(http.StatusBadRequest, "Already authenticated")
	default:
		c.sendError(http.StatusBadRequest, "Unknown message type")
	}
}

type authFrame struct {
	User  string         `json:"user"`
	Name  string         `json:"name"`
	Token string         `json:"token"`
	Data  map[string]any `json:"data"`
	Rooms []string       `json:"rooms"`
}

func (c *conn) auth(data []byte) {
	var a authFrame
	if err := json.Unmarshal(data, &a); err != nil {
		c.fail(http.StatusUnauthorized, "Not authenticated", websocket.ClosePolicyViolation)
		return
	}
	s := c.s
	if a.User == "" {
		c.sendError(http.StatusUnauthorized, "Missing user field")
		return
	}
	if !s.tokenOK(a.Token) && !(c.upToken != "" && s.tokenOK(c.upToken)) {
		c.fail(http.StatusUnauthorized, "Authentication failed", websocket.ClosePolicyViolation)
		return
	}
	if len(a.User) > maxUserLen || strings.Contains(a.User, "|") {
		c.sendError(http.StatusBadRequest, "Invalid user field")
		return
	}
	if a.Name == "" {
		a.Name = a.User
	}
	if len(a.Name) > maxNameLen {
		c.sendError(http.StatusBadRequest, "Invalid name field")
		return
	}
	c.id, c.user, c.name = randomID(8), a.User, a.Name
	c.token = a.Token
	if c.token == "" || !s.tokenOK(c.token) {
		c.token = c.upToken // it was the upgrade request's token that passed
	}
	c.addr = c.user + "|" + c.id
	peer := map[string]any{}
	for k, v := range a.Data {
		if !reserved[k] {
			peer[k] = v
		}
	}
	peer["id"], peer["user"], peer["name"], peer["type"] = c.id, c.user, a.Name, "Peer"
	peer["online"] = true
	c.presenceOn = mustJSON(frame{"type": "presence", "from": c.addr, "data": peer})
	if len(c.presenceOn) > maxPresenceBytes {
		c.sendError(http.StatusRequestEntityTooLarge, "Peer data too large")
		return
	}
	peer["online"] = false
	c.presenceOff = mustJSON(frame{"type": "presence", "from": c.addr, "data": peer})
	peer["online"] = true

	rooms := []string{c.user}
	for _, r := range a.Rooms {
		if validRoom(r) && len(rooms) < maxRooms-1 {
			rooms = append(rooms, r)
		}
	}
	rooms = append(rooms, "public")

	s.mu.Lock()
	if c.closing.Load() || c.slot == slotNone { // e.g. the auth deadline fired meanwhile, or evicted
		s.mu.Unlock()
		return
	}
	if !s.admitLocked(c) {
		s.mu.Unlock()
		s.log.Warn("websocket peer refused: too many connections", "max", s.cfg.MaxConns, "remote", c.remote)
		c.fail(http.StatusServiceUnavailable, "Too many connections", websocket.CloseTryAgainLater)
		return
	}
	c.authTimer.Stop()
	c.authed.Store(true)
	s.peers[c.id] = c
	joined := make([]string, 0, len(rooms))
	for _, r := range rooms {
		if _, dup := c.rooms[r]; !dup {
			s.joinLocked(c, r)
			joined = append(joined, r)
		}
	}
	c.send(frame{"type": "welcome", "protocol": Protocol, "status": http.StatusOK, "peer": peer, "rooms": joined})
	for _, sp := range s.speers {
		c.sendRaw(sp.presence)
	}
	for o := range s.sharingLocked(c) {
		c.presence(o, o.presenceOn, true)
		o.presence(c, c.presenceOn, true)
	}
	s.mu.Unlock()
	s.log.Debug("peer authenticated", "peer", c.addr, "remote", c.remote, "rooms", len(joined))
}

func validRoom(r string) bool {
	return r != "" && len(r) <= maxRoomLen && !strings.Contains(r, "|")
}

func (c *conn) join(room string) {
	if !validRoom(room) {
		c.sendError(http.StatusBadRequest, "Invalid room")
		return
	}
	s := c.s
	s.mu.Lock()
	if _, in := c.rooms[room]; !in {
		if len(c.rooms) >= maxRooms {
			s.mu.Unlock()
			c.sendError(http.StatusBadRequest, "Too many rooms")
			return
		}
		before := s.sharingLocked(c)
		s.joinLocked(c, room)
		// Peers met for the first time learn about each other.
		for o := range s.rooms[room] {
			if _, known := before[o]; !known && o != c {
				c.presence(o, o.presenceOn, false)
				o.presence(c, c.presenceOn, false)
			}
		}
	}
	s.mu.Unlock()
	c.send(frame{"type": "join:ok", "room": room})
}

func (c *conn) leave(room string) {
	s := c.s
	s.mu.Lock()
	s.leaveLocked(c, room)
	s.mu.Unlock()
	c.send(frame{"type": "leave:ok", "room": room})
}

func (s *Server) joinLocked(c *conn, room string) {
	members := s.rooms[room]
	if members == nil {
		members = map[*conn]struct{}{}
		s.rooms[room] = members
	}
	members[c] = struct{}{}
	c.rooms[room] = struct{}{}
}

func (s *Server) leaveLocked(c *conn, room string) {
	delete(c.rooms, room)
	if members := s.rooms[room]; members != nil {
		delete(members, c)
		if len(members) == 0 {
			delete(s.rooms, room)
		}
	}
}

// sharingLocked returns the other peers that share a room with c.
func (s *Server) sharingLocked(c *conn) map[*conn]struct{} {
	out := map[*conn]struct{}{}
	for room := range c.rooms {
		for o := range s.rooms[room] {
			if o != c {
				out[o] = struct{}{}
			}
		}
	}
	return out
}

func (s *Server) sharesRoomLocked(a, b *conn) bool {
	for room := range a.rooms {
		if _, ok := b.rooms[room]; ok {
			return true
		}
	}
	return false
}

// route delivers a message/presence/command/event frame to peers sharing a
// room with the sender: "from" is rewritten to the sender's address,
// presence identity fields come from its authenticated identity, and
// server-only names are refused.
func (c *conn) route(typ string, m msg) {
	target, targets, hasTo, err := parseTo(m["to"])
	if err != nil {
		c.sendError(http.StatusBadRequest, "Invalid to field")
		return
	}
	if hasTo && targets == nil && target == "" {
		hasTo = false // "to":"" is no "to", as before
	}
	if hasTo && targets == nil {
		if sp := c.s.serverPeerFor(target); sp != nil {
			m["from"] = json.RawMessage(mustJSON(c.addr))
			c.toServer(sp, typ, m)
			return
		}
	}
	if why := sanitize(typ, m, c.identity()); why != "" {
		c.sendError(http.StatusForbidden, why)
		return
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	to := map[*conn]struct{}{}
	switch {
	case !hasTo:
		to = s.sharingLocked(c)
	case targets != nil:
		for _, t := range targets {
			s.resolveLocked(c, t, to)
		}
	default:
		s.resolveLocked(c, target, to)
	}
	for o := range to {
		o.relay(c, b)
	}
}

// resolveLocked adds the receivers one "to" entry names, all of which share
// a room with the sender c: a peer address "user|id" or a bare session id
// (a peer sharing a room), a room c is a member of, or a bare user name
// (that user's peers sharing a room with c). A room c is not in reaches
// nobody, whatever its name.
func (s *Server) resolveLocked(c *conn, to string, out map[*conn]struct{}) {
	if to == "" {
		return
	}
	if user, id, ok := strings.Cut(to, "|"); ok {
		if o := s.peers[id]; o != nil && o != c && o.user == user && s.sharesRoomLocked(c, o) {
			out[o] = struct{}{}
		}
		return
	}
	if o := s.peers[to]; o != nil && o != c && s.sharesRoomLocked(c, o) {
		out[o] = struct{}{}
		return
	}
	if _, member := c.rooms[to]; member {
		for o := range s.rooms[to] {
			if o != c {
				out[o] = struct{}{}
			}
		}
		return
	}
	for o := range s.rooms[to] {
		if o != c && o.user == to && s.sharesRoomLocked(c, o) {
			out[o] = struct{}{}
		}
	}
}

// identity is the peer's authenticated presence identity.
func (c *conn) identity() peerIdentity {
	return peerIdentity{id: c.id, user: c.user, name: c.name, addr: c.addr}
}
