package symple

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

const (
	writeWait  = 10 * time.Second
	closeGrace = 2 * time.Second // how long we wait for the peer's close reply
	maxRooms   = 64              // rooms per peer
	maxRoomLen = 128
	maxUserLen = 128
)

// reserved keys of the peer object that auth "data" may not override.
var reserved = map[string]bool{"id": true, "user": true, "name": true, "online": true, "type": true,
	"token": true, "rooms": true, "host": true}

type outFrame struct {
	data      []byte
	closeCode int // non-zero: a close frame with closeText; the last frame
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
	out        chan outFrame
	quit       chan struct{} // closed by finish: the writer stops
	writerDone chan struct{}
	closing    atomic.Bool // a close frame is queued: send nothing more, drain reads
	authed     atomic.Bool
	authTimer  *time.Timer
	dropOnce   sync.Once

	// Reader goroutine only.
	rate     []time.Time
	rateNext int

	// Set once at auth, before the peer is visible to others.
	id, user, addr string
	presenceOn     []byte
	presenceOff    []byte
	// rooms is guarded by s.mu.
	rooms map[string]struct{}

	cmu  sync.Mutex
	call *call
}

func newConn(s *Server, ws *websocket.Conn, r *http.Request) *conn {
	ctx, cancel := context.WithCancel(context.Background())
	return &conn{
		s: s, ws: ws, remote: r.RemoteAddr, upToken: upgradeToken(r),
		ctx: ctx, cancel: cancel,
		out:        make(chan outFrame, s.cfg.SendQueue),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		rooms:      map[string]struct{}{},
	}
}

// send queues a JSON frame.
func (c *conn) send(f frame) { c.sendRaw(mustJSON(f)) }

// sendRaw queues an encoded frame without blocking. A peer whose queue is
// full is too slow to keep up: it is disconnected rather than allowed to
// hold up the sender (often another peer's reader).
func (c *conn) sendRaw(b []byte) {
	if c.closing.Load() {
		return
	}
	select {
	case <-c.quit:
		return
	default:
	}
	select {
	case c.out <- outFrame{data: b}:
	default:
		c.drop("send queue full")
	}
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
	select {
	case c.out <- outFrame{closeCode: code, closeText: text}:
	default:
		c.drop("send queue full")
	}
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
	for {
		select {
		case f := <-c.out:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if f.closeCode != 0 {
				_ = c.ws.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(f.closeCode, f.closeText))
				<-c.quit
				return
			}
			if err := c.ws.WriteMessage(websocket.TextMessage, f.data); err != nil {
				c.drop("write failed: " + err.Error())
				<-c.quit
				return
			}
		case <-ping.C:
			_ = c.ws.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.ws.WriteMessage(websocket.PingMessage, nil); err != nil {
				c.drop("ping failed: " + err.Error())
				<-c.quit
				return
			}
		case <-c.quit:
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
// socket, hang up the call, leave the rooms and tell the others.
func (c *conn) finish() {
	c.closing.Store(true)
	close(c.quit)
	<-c.writerDone
	_ = c.ws.Close()
	c.cancel()
	c.endCall("disconnected", false)
	if !c.authed.Load() {
		return
	}
	s := c.s
	s.mu.Lock()
	others := s.sharingLocked(c)
	for room := range c.rooms {
		s.leaveLocked(c, room)
	}
	delete(s.peers, c.id)
	for o := range others {
		o.sendRaw(c.presenceOff)
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
	c.id, c.user = randomID(8), a.User
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
	if c.closing.Load() { // e.g. the auth deadline fired meanwhile
		s.mu.Unlock()
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
	c.sendRaw(s.serverPresence)
	for o := range s.sharingLocked(c) {
		c.sendRaw(o.presenceOn)
		o.sendRaw(c.presenceOn)
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
				c.sendRaw(o.presenceOn)
				o.sendRaw(c.presenceOn)
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

// route delivers a message/presence/command/event frame. "from" is always
// rewritten to the sender's real address.
func (c *conn) route(typ string, m msg) {
	m["from"] = json.RawMessage(mustJSON(c.addr))
	to, hasTo := m["to"]
	var target string
	var targets []string
	if hasTo && string(to) != "null" {
		if err := json.Unmarshal(to, &target); err != nil {
			if err := json.Unmarshal(to, &targets); err != nil {
				c.sendError(http.StatusBadRequest, "Invalid to field")
				return
			}
		}
	}
	if target == ServerAddress || target == ServerID || target == ServerUser {
		c.toServer(typ, m)
		return
	}
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	deliver := func(set map[*conn]struct{}) {
		for o := range set {
			if o != c {
				o.sendRaw(b)
			}
		}
	}
	switch {
	case targets != nil:
		seen := map[*conn]struct{}{}
		for _, r := range targets {
			for o := range s.rooms[r] {
				seen[o] = struct{}{}
			}
		}
		deliver(seen)
	case target == "":
		deliver(s.sharingLocked(c))
	case strings.Contains(target, "|"):
		user, id, _ := strings.Cut(target, "|")
		if o := s.peers[id]; o != nil && o != c && o.user == user && s.sharesRoomLocked(c, o) {
			o.sendRaw(b)
		}
	default:
		// A bare session id (older clients answer probes that way) or a room.
		if o := s.peers[target]; o != nil && o != c && s.sharesRoomLocked(c, o) {
			o.sendRaw(b)
			return
		}
		deliver(s.rooms[target])
	}
}
