// Package signaling is the WebRTC session layer (one shared pion API and UDP
// socket for every session) and its HTTP front doors: WHEP for viewers and
// WHIP for publishers. The Symple WebSocket server shares the session layer
// through Manager.NewViewer.
package signaling

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
)

// Sentinel errors. The HTTP edge maps them to status codes.
var (
	// ErrCapacity: MaxSessions sessions exist already (HTTP 503).
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
	// Mode is the server mode: "stream" (default), "record" or "relay".
	// Viewers are served in stream and relay modes.
	Mode string
	// UDPConn is the one shared media socket (webrtc.port), bound by the
	// caller; every session is multiplexed on it by ICE ufrag. Required.
	// Manager.Close closes it.
	UDPConn net.PacketConn
	// PublicIPs replace the host candidate addresses (NAT 1:1), e.g. the
	// elastic IP of a cloud VM. Default none.
	PublicIPs []string
	// LoopbackOnly gathers loopback candidates only (the bind host is a
	// loopback address); IPv4 only.
	LoopbackOnly bool
	// MaxSessions bounds concurrent sessions (default 200); beyond it
	// NewViewer returns ErrCapacity.
	MaxSessions int
	// HandshakeTimeout closes a session that has not connected (ICE and
	// DTLS) in time (default 15 s).
	HandshakeTimeout time.Duration
	// ICEServers, when set, are advertised to WHEP clients in Link headers
	// (e.g. the embedded TURN server with fresh credentials).
	ICEServers func() []webrtc.ICEServer
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
}

func (c *Config) setDefaults() {
	if c.Mode == "" {
		c.Mode = "stream"
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = 200
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 15 * time.Second
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
	Role   string // "viewer" (default), later "publisher" / "recorder"
	Remote string // client address for logs and status
}

// SessionInfo is one session's snapshot for /api/status.
type SessionInfo struct {
	ID        string    `json:"id"`
	Role      string    `json:"role"`
	Remote    string    `json:"remote"`
	State     string    `json:"state"` // connecting | connected | closing
	CreatedAt time.Time `json:"createdAt"`
	Sent      uint64    `json:"sent"`  // packets handed to this viewer by the hub
	Drops     uint64    `json:"drops"` // packets the hub dropped for this viewer
}

// Manager owns the shared WebRTC API and every session.
type Manager struct {
	cfg Config
	st  *media.Stream
	log *slog.Logger
	api *webrtc.API
	mux ice.UDPMux

	mu       sync.Mutex
	closed   bool
	sessions map[string]*Session
	wg       sync.WaitGroup // one per session (its run goroutine)

	active atomic.Int64
	total  atomic.Int64
	// Counters of ended sessions; live ones are summed on demand so the
	// per-packet path touches only its own session's counters.
	endedPackets, endedBytes, endedDrops atomic.Uint64
}

// NewManager builds the shared pion API on cfg.UDPConn. st is the stream
// viewers subscribe to.
func NewManager(cfg Config, st *media.Stream, log *slog.Logger) (*Manager, error) {
	cfg.setDefaults()
	if cfg.UDPConn == nil {
		return nil, errors.New("signaling: Config.UDPConn is required")
	}
	if st == nil {
		return nil, errors.New("signaling: nil stream")
	}
	switch cfg.Mode {
	case "stream", "record", "relay":
	default:
		return nil, fmt.Errorf("signaling: unknown mode %q", cfg.Mode)
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

	me, err := newMediaEngine()
	if err != nil {
		return nil, fmt.Errorf("signaling: media engine: %w", err)
	}
	reg, err := newInterceptors(lf)
	if err != nil {
		return nil, fmt.Errorf("signaling: interceptors: %w", err)
	}
	mux := webrtc.NewICEUDPMux(lf.NewLogger("udpmux"), cfg.UDPConn)
	se, err := newSettingEngine(&cfg, mux, lf)
	if err != nil {
		_ = mux.Close()
		return nil, err
	}
	m := &Manager{
		cfg: cfg, st: st, log: log, mux: mux,
		api:      webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)),
		sessions: map[string]*Session{},
	}
	return m, nil
}

// Counts reports sessions connected now and sessions created since start.
func (m *Manager) Counts() (active, total int64) {
	return m.active.Load(), m.total.Load()
}

// Totals sums the counters of ended and live sessions.
func (m *Manager) Totals() Totals {
	t := Totals{PacketsSent: m.endedPackets.Load(), BytesSent: m.endedBytes.Load(),
		Dropped: m.endedDrops.Load(), ActiveByRole: map[string]int64{}}
	m.mu.Lock()
	list := make([]*Session, 0, len(m.sessions))
	for _, s := range m.sessions {
		list = append(list, s)
	}
	m.mu.Unlock()
	for _, s := range list {
		t.PacketsSent += s.packetsOut.Load()
		t.BytesSent += s.bytesOut.Load()
		info := s.info()
		t.Dropped += info.Drops
		if info.State == "connected" {
			t.ActiveByRole[info.Role]++
		}
	}
	return t
}

// Session returns a live session by id, or nil (also while it is still
// being set up).
func (m *Manager) Session(id string) *Session {
	m.mu.Lock()
	s := m.sessions[id]
	m.mu.Unlock()
	if s == nil || !s.live.Load() {
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
		_ = m.mux.Close()
	}
}

// add registers a new session unless closed or full. The session's run
// goroutine (or the failed setup) must call m.wg.Done.
func (m *Manager) add(s *Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if len(m.sessions) >= m.cfg.MaxSessions {
		return ErrCapacity
	}
	m.sessions[s.id] = s
	m.wg.Add(1)
	return nil
}

func (m *Manager) remove(s *Session) {
	m.mu.Lock()
	if m.sessions[s.id] == s {
		delete(m.sessions, s.id)
	}
	m.mu.Unlock()
}

func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}
