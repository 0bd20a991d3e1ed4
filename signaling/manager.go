// Package signaling is the WebRTC session layer (one shared pion API and UDP
// socket for every session) and its HTTP front doors: WHEP for viewers and
// WHIP for publishers. The Symple WebSocket server shares the session layer
// through Manager.NewViewer and Manager.NewPublisher. Sessions attach to
// named paths through a Router.
package signaling

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/udpgso"
)

// Sentinel errors. The HTTP edge maps them to status codes.
var (
	// ErrCapacity: no room for another session (HTTP 503). Admission
	// refusals are *AdmissionError values that match ErrCapacity with
	// errors.Is and carry the reason.
	ErrCapacity = errors.New("signaling: too many sessions")
	// ErrBadOffer: the offer is malformed or has nothing we can send (HTTP 400).
	ErrBadOffer = errors.New("signaling: bad offer")
	// ErrNoSource: the stream has not declared any track yet (HTTP 503).
	ErrNoSource = errors.New("signaling: source unavailable")
	// ErrWrongMode: the request does not fit the server's mode (HTTP 409).
	ErrWrongMode = errors.New("signaling: wrong mode")
	// ErrClosed: the manager is shutting down (HTTP 503).
	ErrClosed = errors.New("signaling: shutting down")
)

// Admission refusal reasons (the "reason" label of
// icey_session_refusals_total and the reason in a 503 body).
const (
	// RefusedCapacity: active plus pending sessions reached MaxSessions.
	RefusedCapacity = "capacity"
	// RefusedPending: MaxPending sessions are connecting already.
	RefusedPending = "pending"
	// RefusedClientPending: this client address (an IPv4 address or an
	// IPv6 /64) has MaxPendingPerClient sessions connecting already.
	RefusedClientPending = "client_pending"
)

// RefusalReasons lists every admission refusal reason.
var RefusalReasons = []string{RefusedCapacity, RefusedPending, RefusedClientPending}

// AdmissionError is a refused session: errors.Is(err, ErrCapacity) holds.
type AdmissionError struct{ Reason string }

func (e *AdmissionError) Error() string {
	switch e.Reason {
	case RefusedPending:
		return "signaling: too many sessions connecting (reason: pending)"
	case RefusedClientPending:
		return "signaling: too many sessions connecting from this address (reason: client_pending)"
	}
	return "signaling: too many sessions (reason: capacity)"
}

// Is makes an admission refusal match ErrCapacity.
func (e *AdmissionError) Is(target error) bool { return target == ErrCapacity }

// Reasons a session ends by itself, returned by Session.Err. Their messages
// are short reasons fit for a Symple call:hangup.
var (
	ErrHandshakeTimeout = errors.New("handshake timeout")
	ErrConnectionFailed = errors.New("connection failed")
	ErrPeerClosed       = errors.New("peer closed")
	ErrSourceClosed     = errors.New("source closed")
)

// Config of the session layer. Zero values take the documented defaults.
type Config struct {
	// UDPConn is the one shared media socket (webrtc.port), bound by the
	// caller; every session is multiplexed on it by ICE ufrag. Required.
	// Manager.Close closes it. A *net.UDPConn is wrapped so that what a
	// viewer's pump reads in one go leaves in one system call, a frame's
	// packets as UDP GSO segments (internal/udpgso).
	UDPConn net.PacketConn
	// SendMode is how that socket sends (webrtc.sendMode): "gso" (default;
	// falls back to "sendmmsg" where the kernel cannot segment),
	// "sendmmsg" or "sendto" (one system call per packet).
	SendMode string
	// PerViewerPumps keeps a goroutine per viewer writing its packets for
	// the whole session instead of handing live viewers over to the
	// stream's shared writers (for comparison; webrtc.fanout "per-viewer").
	PerViewerPumps bool
	// PublicIPs replace the host candidate addresses (NAT 1:1), e.g. the
	// elastic IP of a cloud VM. Default none.
	PublicIPs []string
	// LoopbackOnly gathers loopback candidates only (the bind host is a
	// loopback address); IPv4 only.
	LoopbackOnly bool
	// MaxSessions bounds concurrent sessions, connected plus pending
	// (default 200); beyond it NewViewer returns ErrCapacity. Pending
	// sessions take at most MaxPending of it.
	MaxSessions int
	// MaxPending bounds sessions that have not connected yet (ICE and
	// DTLS), over all clients (default 64).
	MaxPending int
	// MaxPendingPerClient bounds pending sessions per client address: one
	// IPv4 address or one IPv6 /64 (default 8). Behind a reverse proxy
	// every client has the proxy's address: raise it there.
	MaxPendingPerClient int
	// HandshakeTimeout is the pending deadline: a session that has not
	// connected (ICE and DTLS) in time is closed (default 10 s).
	HandshakeTimeout time.Duration
	// ICEServers, when set, are advertised to WHEP clients in Link headers
	// (e.g. the embedded TURN server with fresh credentials).
	ICEServers func() []webrtc.ICEServer
	// PublicURL, when set (an http(s) origin such as
	// https://node-3.example.com), makes the Location of every WHEP/WHIP
	// resource absolute on it, so a PATCH or DELETE behind a load balancer
	// reaches the node that holds the session. Default: relative.
	PublicURL string
	// MaxBodyBytes bounds SDP request bodies (default 64 KiB).
	MaxBodyBytes int64
	// CacheBurstSpeed paces the cached GOP a new viewer starts with: at most
	// this many times faster than real time (default 8; negative: unpaced).
	CacheBurstSpeed float64
	// SubscriberQueue is the live queue bound of each viewer's hub
	// subscription in packets (default: the hub's, 1024).
	SubscriberQueue int
	// Observer, when set, is told about session lifecycles (events and
	// metrics). Calls come from session goroutines and must not block.
	Observer Observer
}

// Observer receives session lifecycle callbacks.
type Observer interface {
	// SessionStarted: the session connected (ICE+DTLS) and media starts.
	SessionStarted(info SessionInfo)
	// FirstKeyframe: the first video keyframe was handed to the peer,
	// sinceCreate after the session was created (the offer arrived).
	FirstKeyframe(id string, sinceCreate time.Duration)
	// SessionEnded: the session is gone; reason is why.
	SessionEnded(info SessionInfo, reason string)
}

// Totals are cumulative counters over every session since start.
type Totals struct {
	PacketsSent, BytesSent, Dropped uint64
	ActiveByRole                    map[string]int64
	// ActiveByPath counts connected sessions by path, then role.
	ActiveByPath map[string]map[string]int64
	// Pending: sessions created but not connected yet (now).
	Pending int64
	// Refusals counts refused sessions by reason (every RefusalReasons key).
	Refusals map[string]uint64
}

func (c *Config) setDefaults() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 200
	}
	if c.MaxPending <= 0 {
		c.MaxPending = 64
	}
	if c.MaxPendingPerClient <= 0 {
		c.MaxPendingPerClient = 8
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 64 << 10
	}
	if c.CacheBurstSpeed == 0 {
		c.CacheBurstSpeed = 8
	}
}

// SessionMeta describes who asked for a session.
type SessionMeta struct {
	Role   string // "viewer" (default) or "publisher"; set by NewViewer / NewPublisher
	Remote string // client address for logs and status
	// Path names the path the session attaches to ("" = DefaultPath).
	Path string
	// Token is what the client presented (a bearer token), checked by the
	// Router against a path's publish policy.
	Token string
}

// SessionInfo is one session's snapshot for /api/status. ID is the opaque
// session id: safe to show, useless for acting on the session.
type SessionInfo struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"`
	Path      string    `json:"path"`
	Remote    string    `json:"remote"`
	State     string    `json:"state"` // connecting | connected | closing
	CreatedAt time.Time `json:"createdAt"`
	Sent      uint64    `json:"sent"`  // packets handed to this viewer by the hub
	Drops     uint64    `json:"drops"` // packets the hub dropped for this viewer
	// EndReason is set when the session has ended (Observer.SessionEnded).
	EndReason EndReason `json:"endReason,omitempty"`
}

// Manager owns the shared WebRTC API and every session.
type Manager struct {
	cfg   Config
	paths Router
	log   *slog.Logger
	api   *webrtc.API
	mux   ice.UDPMux
	// gso is the media socket's coalescing wrapper (nil when UDPConn was
	// not a *net.UDPConn).
	gso *udpgso.Conn
	// fan holds the shared fan-out of each stream (see fanout.go).
	fan fanouts
	// The sender report loop (reports.go): closed to stop it, closed by it.
	stopReports, reportsDone chan struct{}

	mu       sync.Mutex
	closed   bool
	sessions map[string]*Session // by opaque id
	byRes    map[string]*Session // by resource selector (see Session.resource)
	wg       sync.WaitGroup      // one per session (its run goroutine)
	// Admission (under mu): sessions not connected yet, in total and per
	// client key; active is changed under mu too, so checks are exact.
	pending         int64
	pendingByClient map[string]int
	refusals        [3]atomic.Uint64 // indexed like RefusalReasons

	active atomic.Int64
	total  atomic.Int64
	// Counters of ended sessions; live ones are summed on demand so the
	// per-packet path touches only its own session's counters.
	endedPackets, endedBytes, endedDrops atomic.Uint64
}

// NewManager builds the shared pion API on cfg.UDPConn. paths resolves the
// path a session asks for to its stream.
func NewManager(cfg Config, paths Router, log *slog.Logger) (*Manager, error) {
	cfg.setDefaults()
	if cfg.UDPConn == nil {
		return nil, errors.New("signaling: Config.UDPConn is required")
	}
	if paths == nil {
		return nil, errors.New("signaling: nil Router")
	}
	for _, ip := range cfg.PublicIPs {
		if net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("signaling: public IP %q is not an IP address", ip)
		}
	}
	if cfg.LoopbackOnly {
		// The UDP mux advertises what the socket is bound to (every
		// interface for 0.0.0.0) without applying ICE's IP filter.
		if a, ok := cfg.UDPConn.LocalAddr().(*net.UDPAddr); !ok || !a.IP.IsLoopback() {
			return nil, fmt.Errorf("signaling: LoopbackOnly needs a UDP socket bound to a loopback address, not %v", cfg.UDPConn.LocalAddr())
		}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	log = log.With("module", "signaling")
	lf := &pionLogFactory{log: log}

	me, err := newMediaEngine(true)
	if err != nil {
		return nil, fmt.Errorf("signaling: media engine: %w", err)
	}
	reg, err := newInterceptors()
	if err != nil {
		return nil, fmt.Errorf("signaling: interceptors: %w", err)
	}
	conn := cfg.UDPConn
	var gso *udpgso.Conn
	if udp, ok := conn.(*net.UDPConn); ok {
		if gso, err = udpgso.New(udp, cfg.SendMode); err != nil {
			return nil, fmt.Errorf("signaling: media socket: %w", err)
		}
		conn = gso
		if st := gso.Stats(); st.Mode == udpgso.ModeGSO {
			log.Info("media socket sends with UDP GSO: one system call per viewer and frame")
		} else {
			log.Info("media socket sends without UDP GSO", "mode", st.Mode, "reason", st.Reason)
		}
	}
	mux := webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), conn)
	se, err := newSettingEngine(&cfg, mux, lf)
	if err != nil {
		_ = mux.Close()
		return nil, err
	}
	m := &Manager{
		cfg: cfg, paths: paths, log: log, mux: mux, gso: gso,
		api:      webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)),
		sessions: map[string]*Session{}, byRes: map[string]*Session{}, pendingByClient: map[string]int{},
		stopReports: make(chan struct{}), reportsDone: make(chan struct{}),
	}
	go m.reportLoop()
	return m, nil
}

// SendStats reports how the media socket sends (UDP GSO or one sendto per
// datagram, and why) with its counters; ok is false when the socket is not
// a UDP socket this package wraps.
func (m *Manager) SendStats() (st udpgso.Stats, ok bool) {
	if m.gso == nil {
		return st, false
	}
	return m.gso.Stats(), true
}

// Capacity reports the session bound (Config.MaxSessions) and the sessions
// still connecting, which count against it.
func (m *Manager) Capacity() (max, pending int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return int64(m.cfg.MaxSessions), m.pending
}

// Counts reports sessions connected now and sessions created since start.
func (m *Manager) Counts() (active, total int64) {
	return m.active.Load(), m.total.Load()
}

// Totals sums the counters of ended and live sessions.
func (m *Manager) Totals() Totals {
	t := Totals{PacketsSent: m.endedPackets.Load(), BytesSent: m.endedBytes.Load(),
		Dropped: m.endedDrops.Load(), ActiveByRole: map[string]int64{}, ActiveByPath: map[string]map[string]int64{}}
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	t.Pending = m.pending
	m.mu.Unlock()
	t.Refusals = m.Refusals()
	for _, s := range list {
		pkts, bytes := s.sentCounts()
		t.PacketsSent += pkts
		t.BytesSent += bytes
		info := s.info()
		t.Dropped += info.Drops
		if info.State == "connected" {
			t.ActiveByRole[info.Role]++
			if t.ActiveByPath[info.Path] == nil {
				t.ActiveByPath[info.Path] = map[string]int64{}
			}
			t.ActiveByPath[info.Path][info.Role]++
		}
	}
	return t
}

// Pending reports sessions created but not connected yet.
func (m *Manager) Pending() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.pending
}

// Refusals counts refused sessions since start by reason; every
// RefusalReasons key is present.
func (m *Manager) Refusals() map[string]uint64 {
	out := make(map[string]uint64, len(RefusalReasons))
	for i, r := range RefusalReasons {
		out[r] = m.refusals[i].Load()
	}
	return out
}

// Session returns a live session by its opaque id or by its resource
// capability (the last element of its WHEP Location), or nil (also while
// it is still being set up). It is for in-process callers; the HTTP
// handler accepts the capability only.
func (m *Manager) Session(id string) *Session {
	m.mu.Lock()
	s := m.sessions[id]
	m.mu.Unlock()
	if s == nil {
		s = m.byResource(id)
	}
	if s == nil || !s.live.Load() {
		return nil
	}
	return s
}

// byResource finds a session by its resource capability: the selector
// half is a map key, the verifier half is compared in constant time.
func (m *Manager) byResource(res string) *Session {
	sel, ver, ok := splitResource(res)
	if !ok {
		return nil
	}
	m.mu.Lock()
	s := m.byRes[sel]
	m.mu.Unlock()
	if s == nil || subtle.ConstantTimeCompare(ver, s.verifier) != 1 {
		return nil
	}
	return s
}

// Sessions snapshots every live session.
func (m *Manager) Sessions() []SessionInfo {
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	out := make([]SessionInfo, 0, len(list))
	for _, s := range list {
		out = append(out, s.info())
	}
	return out
}

// Close hangs up every session with reason, waits for their goroutines and
// closes the UDP mux (and with it Config.UDPConn). Idempotent.
func (m *Manager) Close(reason string) {
	m.mu.Lock()
	wasClosed := m.closed
	m.closed = true
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	for _, s := range list {
		s.Close(reason)
	}
	m.wg.Wait()
	if !wasClosed {
		close(m.stopReports)
		<-m.reportsDone
		_ = m.mux.Close()
	}
}

// add registers a new, pending session unless closed or refused by
// admission. The session's run goroutine (or the failed setup) must call
// m.wg.Done.
func (m *Manager) add(s *Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	refuse := func(i int) error {
		m.refusals[i].Add(1)
		return &AdmissionError{Reason: RefusalReasons[i]}
	}
	switch {
	case m.pendingByClient[s.client] >= m.cfg.MaxPendingPerClient:
		return refuse(2)
	case m.pending >= int64(m.cfg.MaxPending):
		return refuse(1)
	case m.active.Load()+m.pending >= int64(m.cfg.MaxSessions):
		return refuse(0)
	}
	m.sessions[s.id] = s
	m.byRes[s.selector] = s
	m.pending++
	m.pendingByClient[s.client]++
	s.pending = true
	m.wg.Add(1)
	return nil
}

// promote turns a pending session into an active one. It returns false if
// the session already left.
func (m *Manager) promote(s *Session) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !s.pending {
		return false
	}
	m.unpend(s)
	s.activeCounted = true
	m.active.Add(1)
	return true
}

// unpend drops s from the pending counts (m.mu held).
func (m *Manager) unpend(s *Session) {
	s.pending = false
	m.pending--
	if n := m.pendingByClient[s.client] - 1; n > 0 {
		m.pendingByClient[s.client] = n
	} else {
		delete(m.pendingByClient, s.client)
	}
}

// remove forgets s and releases its admission counts.
func (m *Manager) remove(s *Session) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.sessions[s.id] == s {
		delete(m.sessions, s.id)
	}
	if m.byRes[s.selector] == s {
		delete(m.byRes, s.selector)
	}
	if s.pending {
		m.unpend(s)
	}
	if s.activeCounted {
		s.activeCounted = false
		m.active.Add(-1)
	}
}

// clientKey groups client addresses for the per-client pending limit: an
// IPv4 address, or the /64 of an IPv6 address (one subscriber's prefix).
// Anything unparsable is its own key.
func clientKey(remote string) string {
	host := remote
	if h, _, err := net.SplitHostPort(remote); err == nil {
		host = h
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return remote
	}
	a = a.Unmap().WithZone("")
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// Resource capabilities: the last element of a session's WHEP Location is
// hex(selector) + hex(verifier), 16 random bytes each. The selector finds
// the session in a map; the verifier (128 bits from crypto/rand) is what
// proves the caller was given the Location, compared in constant time. No
// part of it is the opaque session id shown in status, events, metrics and
// logs.
const resourceHalf = 16

func newResource() (selector string, verifier []byte) {
	b := make([]byte, 2*resourceHalf)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b[:resourceHalf]), b[resourceHalf:]
}

func splitResource(res string) (selector string, verifier []byte, ok bool) {
	if len(res) != 4*resourceHalf {
		return "", nil, false
	}
	v, err := hex.DecodeString(res[2*resourceHalf:])
	if err != nil {
		return "", nil, false
	}
	return res[:2*resourceHalf], v, true
}
