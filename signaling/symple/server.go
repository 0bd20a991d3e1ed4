// Package symple is the Symple v4 WebSocket signalling server
// (shared/spec/signaling.md): auth, welcome, presence (including the
// server's virtual peers, one per path: "icey|server" for the default path,
// "icey|<path>" for the others), rooms, routing, join/leave, the call:*
// protocol that turns a browser's offer into a viewer or publisher session
// on the called peer's path through the signaling session layer,
// server→browser icey:* events (icey:state for a path's callers), and
// admission limits (origin, token, message size, rate, connection cap, auth
// deadline).
//
// Every connection has one reader (the HTTP handler goroutine, which also
// runs the protocol for that peer, so a peer's frames are handled in order)
// and one writer goroutine (gorilla/websocket allows one concurrent writer).
// Everything sent to a peer goes through its outbound lanes (conn.go):
// server frames (bounded; overflow means the peer does not read), relayed
// frames (byte budgets per receiver and per sender→receiver; excess is shed,
// never a reason to disconnect), and coalesced presence. A peer is
// disconnected only for its own slowness, and that does not end its call.
//
// Peers reach only peers they share a room with, whatever form "to" takes;
// relayed frames carry the sender's real address and, for presence, its
// authenticated identity; shutdown and icey:* names come only from the
// server. Unauthenticated connections wait in a small pool of their own
// (MaxPending; when full, the oldest of the busiest remote host is evicted)
// with the auth deadline, and never take
// authenticated capacity (MaxConns).
package symple

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/auth"
	"github.com/icey/icey-server/signaling"
)

// Protocol is the value of "protocol" in the welcome frame.
const Protocol = "symple/4"

// The server's virtual peer.
const (
	ServerUser    = "icey"
	ServerID      = "server"
	ServerAddress = ServerUser + "|" + ServerID
	ServerName    = "Icey Server"
)

// Path is one path the server presents as a virtual server peer: the
// default path (signaling.DefaultPath, "main") as "icey|server", any other
// path p as "icey|p". Only paths that allow reading or publishing get one.
type Path struct {
	Name string
	// Read: the path accepts viewers (capability "view").
	Read bool
	// Publish: the path accepts a publisher (capability "publish").
	Publish bool
}

// Config of the Symple server. Zero values take the documented defaults.
type Config struct {
	// Mode is the legacy server mode: stream (default), record or relay.
	// When Paths is empty it defines the one path presented, the default
	// path: stream reads, record publishes, relay does both; the server
	// peer's capabilities are then ["view"], ["publish"], ["publish","view"].
	Mode string
	// Paths are the paths presented as server peers, in this order after
	// the default path (which always comes first when present). Empty: the
	// default path only, with its policy from Mode. Names that are empty,
	// contain "|", repeat, or are "server" (the default path's id) are
	// skipped with a warning.
	Paths []Path
	// Token is auth.token; empty leaves the server open. It is accepted in
	// the auth frame's "token", or on the upgrade request as ?token=,
	// "Authorization: Bearer" or "X-Icey-Token".
	Token string
	// AllowedOrigins are extra browser origins ("https://app.example.com",
	// or "*" for any). Same-origin requests, loopback origins on the same
	// port and requests without an Origin header are always allowed.
	AllowedOrigins []string
	// MaxMessageBytes bounds one frame (default 64 KiB); larger → 413.
	MaxMessageBytes int
	// RateLimit is the number of frames a connection may send per
	// RateWindow (default 100); one more → 429.
	RateLimit int
	// RateWindow is the rate-limit window (default 10 s).
	RateWindow time.Duration
	// MaxConns bounds authenticated peers (default 1000); beyond it → 503.
	// Connections that carry a valid token on the upgrade request count
	// against it from the upgrade on.
	MaxConns int
	// MaxPending bounds connections that have not authenticated yet
	// (default 64). When the pool is full, a new connection evicts the
	// oldest pending one of the remote host holding the most (503 to it),
	// so sockets that never authenticate cannot keep token holders out.
	MaxPending int
	// AuthTimeout is how long a new connection may take to authenticate
	// (default 10 s); then → 408.
	AuthTimeout time.Duration
	// PingInterval is the keepalive ping period (default 25 s); a peer that
	// sends nothing (not even a pong) for 2.5 intervals is dropped.
	PingInterval time.Duration
	// CallSetupTimeout bounds answering one offer (default 10 s).
	CallSetupTimeout time.Duration
	// SendQueue bounds the server's own frames queued for one peer (default
	// 1024): replies, call:*, icey:* events. A peer that lets them pile up
	// does not read and is disconnected (its media call keeps running).
	SendQueue int
	// RelayBudget bounds the bytes of frames relayed from other peers queued
	// for one receiver (default 1 MiB); RelaySenderBudget is one sender's
	// share of it (default 256 KiB). Frames over budget are shed (dropped
	// and counted); the receiver stays connected.
	RelayBudget       int
	RelaySenderBudget int
	// WriteTimeout bounds writing one frame to a peer (default 10 s); a
	// peer that does not read for that long is disconnected.
	WriteTimeout time.Duration
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = "stream"
	}
	if c.MaxMessageBytes <= 0 {
		c.MaxMessageBytes = 64 << 10
	}
	if c.RateLimit <= 0 {
		c.RateLimit = 100
	}
	if c.RateWindow <= 0 {
		c.RateWindow = 10 * time.Second
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 1000
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 64
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = 10 * time.Second
	}
	if c.PingInterval <= 0 {
		c.PingInterval = 25 * time.Second
	}
	if c.CallSetupTimeout <= 0 {
		c.CallSetupTimeout = 10 * time.Second
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 1024
	}
	if c.RelayBudget <= 0 {
		c.RelayBudget = 1 << 20
	}
	if c.RelayBudget < c.MaxMessageBytes+1024 {
		c.RelayBudget = c.MaxMessageBytes + 1024
	}
	if c.RelaySenderBudget <= 0 {
		c.RelaySenderBudget = c.RelayBudget / 4
	}
	if c.RelaySenderBudget < c.MaxMessageBytes+1024 {
		c.RelaySenderBudget = c.MaxMessageBytes + 1024
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
}

// Capabilities returns the server peer's capabilities for a mode.
func Capabilities(mode string) []string {
	switch mode {
	case "record":
		return []string{"publish"}
	case "relay":
		return []string{"publish", "view"}
	default:
		return []string{"view"}
	}
}

// Sessions creates WebRTC sessions; *signaling.Manager satisfies it.
// NewViewer answers a call whose offer receives (Watch), NewPublisher one
// whose offer sends (Broadcast); meta carries the call's path and token.
type Sessions interface {
	NewViewer(ctx context.Context, offer string, meta signaling.SessionMeta) (*signaling.Session, string, error)
	NewPublisher(ctx context.Context, offer string, meta signaling.SessionMeta) (*signaling.Session, string, error)
}

// pathMode is the legacy mode name of a path policy.
func pathMode(read, publish bool) string {
	switch {
	case read && publish:
		return "relay"
	case publish:
		return "record"
	default:
		return "stream"
	}
}

// pathCapabilities is a path policy's capabilities, in Capabilities' order.
func pathCapabilities(read, publish bool) []string {
	caps := []string{}
	if publish {
		caps = append(caps, "publish")
	}
	if read {
		caps = append(caps, "view")
	}
	return caps
}

// PeerAddress is the Symple address of a path's server peer: "icey|server"
// for the default path (or ""), "icey|<path>" for any other.
func PeerAddress(path string) string {
	if path == "" || path == signaling.DefaultPath {
		return ServerAddress
	}
	return ServerUser + "|" + path
}

// serverPeer is the virtual peer of one path.
type serverPeer struct {
	path          string // path name
	id, addr      string // "server" / "icey|server" for the default path
	name          string
	read, publish bool
	absent        bool   // the default address with no path behind it
	presence      []byte // its presence frame
}

// newServerPeer builds the peer of path p.
func newServerPeer(p Path) *serverPeer {
	sp := &serverPeer{path: p.Name, id: p.Name, name: p.Name, read: p.Read, publish: p.Publish}
	if p.Name == signaling.DefaultPath {
		sp.id, sp.name = ServerID, ServerName
	}
	sp.addr = ServerUser + "|" + sp.id
	sp.presence = mustJSON(frame{
		"type": "presence",
		"from": sp.addr,
		"data": map[string]any{
			"id": sp.id, "user": ServerUser, "name": sp.name, "type": "server",
			"online": true, "mode": pathMode(p.Read, p.Publish),
			"capabilities": pathCapabilities(p.Read, p.Publish), "path": p.Name,
		},
	})
	return sp
}

// Server is the Symple WebSocket server. It is an http.Handler.
type Server struct {
	cfg      Config
	sessions Sessions
	log      *slog.Logger
	upgrader websocket.Upgrader
	// speers are the virtual server peers, the default path's first;
	// byID finds them by the id part of their address, byPath by path.
	// Set by New, read-only after.
	speers []*serverPeer
	byID   map[string]*serverPeer
	byPath map[string]*serverPeer
	// noDefault stands for "icey|server" when the default path has no
	// peer: calls to it are refused with "not found".
	noDefault *serverPeer

	shed atomic.Int64 // relayed frames shed, all receivers

	mu      sync.Mutex
	closed  bool
	conns   map[*conn]struct{}            // every upgraded connection
	pending map[*conn]struct{}            // unauthenticated, in the MaxPending pool
	preauth int                           // unauthenticated with an upgrade token
	peers   map[string]*conn              // authenticated, by session id
	rooms   map[string]map[*conn]struct{} // room → members
	wg      sync.WaitGroup                // handlers, writers and call watchers
}

// New returns a server. sessions may be nil (calls are then rejected).
func New(cfg Config, sessions Sessions, log *slog.Logger) *Server {
	cfg.setDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg:      cfg,
		sessions: sessions,
		log:      log.With("module", "symple"),
		conns:    map[*conn]struct{}{},
		pending:  map[*conn]struct{}{},
		peers:    map[string]*conn{},
		rooms:    map[string]map[*conn]struct{}{},
		upgrader: websocket.Upgrader{
			ReadBufferSize:  4096,
			WriteBufferSize: 4096,
			// The origin was checked before the upgrade (see auth.AllowOrigin).
			CheckOrigin: func(*http.Request) bool { return true },
		},
	}
	s.buildPeers()
	return s
}

// buildPeers creates the server peers of cfg.Paths (or of the legacy Mode).
func (s *Server) buildPeers() {
	list := s.cfg.Paths
	if len(list) == 0 {
		mode := s.cfg.Mode
		list = []Path{{Name: signaling.DefaultPath, Read: mode != "record", Publish: mode == "record" || mode == "relay"}}
	}
	s.byID = map[string]*serverPeer{}
	s.byPath = map[string]*serverPeer{}
	var def *serverPeer
	for _, p := range list {
		switch {
		case !p.Read && !p.Publish:
			continue // nothing to call it for
		case p.Name == "" || strings.Contains(p.Name, "|") || p.Name == ServerID:
			s.log.Warn("path not presented over Symple: invalid peer id", "path", p.Name)
			continue
		case s.byPath[p.Name] != nil:
			s.log.Warn("path not presented over Symple: listed twice", "path", p.Name)
			continue
		}
		sp := newServerPeer(p)
		s.byID[sp.id] = sp
		s.byPath[sp.path] = sp
		if sp.path == signaling.DefaultPath {
			def = sp
		} else {
			s.speers = append(s.speers, sp)
		}
	}
	if def != nil {
		s.speers = append([]*serverPeer{def}, s.speers...)
	} else {
		s.noDefault = &serverPeer{path: signaling.DefaultPath, id: ServerID, name: ServerName, addr: ServerAddress, absent: true}
	}
	// Every server peer's presence is queued at each login as server
	// frames: keep room for them and the frames that follow.
	if min := 2*len(s.speers) + 64; s.cfg.SendQueue < min {
		s.cfg.SendQueue = min
	}
}

// serverPeerFor resolves a "to" naming a server peer: "icey|server" (also
// the bare "server" or "icey", as the seed accepted) is the default path,
// "icey|<p>" path p. nil: not a server peer.
func (s *Server) serverPeerFor(to string) *serverPeer {
	if to == ServerAddress || to == ServerID || to == ServerUser {
		if sp := s.byID[ServerID]; sp != nil {
			return sp
		}
		return s.noDefault
	}
	if user, id, ok := strings.Cut(to, "|"); ok && user == ServerUser {
		return s.byID[id]
	}
	return nil
}

// Peers returns the number of authenticated peers.
func (s *Server) Peers() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.peers)
}

// Shed returns the number of relayed frames shed so far because a
// receiver's relay budget was full.
func (s *Server) Shed() int64 { return s.shed.Load() }

// maxPresence bounds one receiver's pending presence entries: about one per
// peer that can exist at once (entries are coalesced per peer, and a peer
// that leaves before its arrival was written cancels it), with room for
// peers that left after their arrival was written.
func (s *Server) maxPresence() int { return 4*(s.cfg.MaxConns+s.cfg.MaxPending) + 4096 }

// admitLocked takes authenticated capacity for c at auth; false when full.
func (s *Server) admitLocked(c *conn) bool {
	if c.slot == slotPeer {
		return true
	}
	held := c.slot == slotPreauth
	n := len(s.peers) + s.preauth
	if held {
		n-- // its own reservation
	}
	if n >= s.cfg.MaxConns {
		return false
	}
	s.releaseLocked(c)
	c.slot = slotPeer
	return true
}

// evictionLocked picks the pending connection to evict for a new one: the
// oldest of the remote host holding the most pending connections, so one
// source of idle sockets evicts its own first.
func (s *Server) evictionLocked() *conn {
	per := map[string]int{}
	for o := range s.pending {
		per[remoteHost(o.remote)]++
	}
	var pick *conn
	for o := range s.pending {
		if pick == nil {
			pick = o
			continue
		}
		n, m := per[remoteHost(o.remote)], per[remoteHost(pick.remote)]
		if n > m || (n == m && o.created.Before(pick.created)) {
			pick = o
		}
	}
	return pick
}

func remoteHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// releaseLocked gives back the pending or pre-auth slot c holds.
func (s *Server) releaseLocked(c *conn) {
	switch c.slot {
	case slotPending:
		delete(s.pending, c)
	case slotPreauth:
		s.preauth--
	}
	c.slot = slotNone
}

// ServeHTTP accepts the WebSocket upgrade (on /ws, and on / when the
// caller routes upgrade requests there) and runs the connection until it
// ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, "this endpoint speaks Symple over WebSocket", http.StatusUpgradeRequired)
		return
	}
	if !auth.AllowOrigin(r, s.cfg.AllowedOrigins) {
		s.log.Warn("websocket origin refused", "origin", r.Header.Get("Origin"), "remote", r.RemoteAddr)
		http.Error(w, "origin not allowed", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(1)
	}
	s.mu.Unlock()
	if closed {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	defer s.wg.Done()

	ws, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		return // the upgrader has answered the request
	}
	c := newConn(s, ws, r)
	preauth := s.cfg.Token != "" && c.upToken != "" && s.tokenOK(c.upToken)

	var evicted *conn
	s.mu.Lock()
	full := false
	closed = s.closed
	switch {
	case closed:
	case preauth:
		if full = len(s.peers)+s.preauth >= s.cfg.MaxConns; !full {
			s.preauth++
			c.slot = slotPreauth
		}
	case len(s.peers)+s.preauth >= s.cfg.MaxConns:
		full = true // authenticating could not succeed
	default:
		if len(s.pending) >= s.cfg.MaxPending {
			evicted = s.evictionLocked()
			s.releaseLocked(evicted)
		}
		s.pending[c] = struct{}{}
		c.slot = slotPending
	}
	if !closed {
		s.conns[c] = struct{}{}
	}
	if evicted != nil {
		// Under s.mu, like the auth deadline: it cannot interleave with the
		// evicted connection's auth.
		s.log.Warn("unauthenticated websocket connection evicted: too many pending", "max", s.cfg.MaxPending, "remote", evicted.remote)
		evicted.fail(http.StatusServiceUnavailable, "Too many unauthenticated connections", websocket.CloseTryAgainLater)
	}
	s.mu.Unlock()

	s.wg.Add(1)
	go c.writeLoop()
	switch {
	case closed:
		c.fail(http.StatusServiceUnavailable, "Server shutting down", websocket.CloseGoingAway)
	case full:
		s.log.Warn("websocket connection refused: too many connections", "max", s.cfg.MaxConns, "remote", c.remote)
		c.fail(http.StatusServiceUnavailable, "Too many connections", websocket.CloseTryAgainLater)
	}
	c.readLoop()
	c.finish()
	if !closed {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}
}

// Broadcast sends a server event to every authenticated peer:
// {"type":"message","subtype":"icey:<kind>","from":"icey|server","data":...}.
// subtype may be given with or without the "icey:" prefix.
func (s *Server) Broadcast(subtype string, data any) {
	if !strings.HasPrefix(subtype, "icey:") {
		subtype = "icey:" + subtype
	}
	msg := frame{"type": "message", "subtype": subtype, "id": randomID(8), "from": ServerAddress}
	if data != nil {
		msg["data"] = data
	}
	b := mustJSON(msg)
	s.mu.Lock()
	for _, c := range s.peers {
		c.sendRaw(b)
	}
	s.mu.Unlock()
}

// Path states announced by NotifyPath (shared/spec/paths.md).
const (
	StateIdle             = "idle"
	StateStarting         = "starting"
	StateUp               = "up"
	StateReconnecting     = "reconnecting"
	StateDown             = "down"
	StateWaitingPublisher = "waiting-publisher"
	StatePublishing       = "publishing"
)

// NotifyPath tells every peer in a call (viewer or publisher, set up or
// still being set up) with path's server peer that the path changed state:
// {"type":"message","subtype":"icey:state","from":"icey|<p>",
// "data":{"path":p,"state":state,"detail":detail}}. It never blocks: the
// frame goes through each receiver's server lane. A path without a server
// peer has no callers; "" is the default path.
func (s *Server) NotifyPath(path, state, detail string) {
	if path == "" {
		path = signaling.DefaultPath
	}
	s.SendPath(path, "icey:state", map[string]string{"path": path, "state": state, "detail": detail})
}

// SendPath sends a message of subtype (icey:state, icey:vision,
// icey:speech) from path's server peer to every peer with a call on that
// path: the viewers and the publisher of the path, nobody else.
func (s *Server) SendPath(path, subtype string, data any) {
	if path == "" {
		path = signaling.DefaultPath
	}
	sp := s.byPath[path]
	if sp == nil {
		return
	}
	b := mustJSON(frame{"type": "message", "subtype": subtype, "id": randomID(8), "from": sp.addr, "data": data})
	s.mu.Lock()
	list := make([]*conn, 0, len(s.peers))
	for _, c := range s.peers {
		list = append(list, c)
	}
	s.mu.Unlock()
	for _, c := range list {
		if c.inCall(sp) {
			c.sendRaw(b)
		}
	}
}

// Shutdown tells every peer the server is going away, hangs up their calls
// (reason "shutdown"), closes the connections, refuses new ones and waits
// for every goroutine of the server. Idempotent.
func (s *Server) Shutdown() {
	s.mu.Lock()
	s.closed = true
	list := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		list = append(list, c)
	}
	s.mu.Unlock()
	for _, c := range list {
		c.endCalls("shutdown", true)
		c.send(frame{"type": "event", "name": "shutdown", "from": ServerAddress, "message": "Server shutting down"})
		c.closeWith(websocket.CloseGoingAway, "server shutting down")
	}
	s.wg.Wait()
}

// tokenOK checks a token in constant time; an unset server token admits all.
func (s *Server) tokenOK(got string) bool {
	if s.cfg.Token == "" {
		return true
	}
	return auth.TokenOK(s.cfg.Token, got)
}

// upgradeToken is the token given on the upgrade request, if any.
func upgradeToken(r *http.Request) string { return auth.QueryToken(r) }

// frame is an outgoing JSON object.
type frame map[string]any

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own frame maps reach here; failing is a programming error.
		panic("symple: marshal: " + err.Error())
	}
	return b
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
