// Package turn is the embedded TURN/STUN server (spec/turn.md): pion/turn
// with TURN REST credentials, a peer policy that keeps relays away from
// internal destinations, allocation quotas and a bounded TCP listener.
package turn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	pionturn "github.com/pion/turn/v4"
)

// Defaults of Config fields left zero.
const (
	DefaultRealm                 = "icey"
	DefaultStaticUsername        = "icey"
	DefaultStaticPassword        = "icey"
	DefaultCredentialTTL         = time.Hour
	DefaultMaxTTL                = 24 * time.Hour
	DefaultMaxAllocationsPerUser = 10
	DefaultMaxAllocationsPerIP   = 10
	DefaultMaxAllocations        = 1000
	DefaultMaxTCPConns           = 1000
	DefaultMaxTCPConnsPerIP      = 16
	DefaultTCPIdleTimeout        = 10 * time.Second
	// DefaultMaxLifetime is the longest allocation lifetime granted. pion/turn
	// honours a requested LIFETIME only below one hour (and falls back to 10
	// minutes at or above it), so an hour minus a second is the ceiling.
	DefaultMaxLifetime = time.Hour - time.Second
)

// Refusal reasons, the keys of Stats.Refusals.
const (
	reasonAuth       = "auth"           // unknown user, malformed username, wrong realm or bad MESSAGE-INTEGRITY
	reasonExpired    = "expired"        // REST username whose expiry has passed
	reasonTooFar     = "expiry_too_far" // REST username expiring later than now+MaxTTL
	reasonQuotaUser  = "quota_user"
	reasonQuotaIP    = "quota_ip"
	reasonQuotaTotal = "quota_total"
	reasonPeer       = "peer_denied"      // CreatePermission / ChannelBind to a denied IP
	reasonPeerPort   = "peer_port_denied" // datagram to a non-media port of an own IP (or otherwise denied)
	reasonTCPCap     = "tcp_conn_cap"     // global TCP connection cap
	reasonTCPCapIP   = "tcp_conn_cap_ip"  // per-address TCP connection cap
	reasonTCPEvicted = "tcp_evicted"      // at the global cap, an idle connection of the biggest holder closed for another address
	reasonTCPIdle    = "tcp_idle"         // TCP control connection closed after TCPIdleTimeout without allocation
)

// Sentinel errors of New.
var (
	ErrNoListener          = errors.New("turn: neither a UDP nor a TCP listener given")
	ErrNoRelayIP           = errors.New("turn: RelayIP is required")
	ErrRelayIPNotIPv4      = errors.New("turn: RelayIP and RelayBindIP must be IPv4 (pion/turn relays are udp4)")
	errNotUDP              = errors.New("turn: relay socket is not UDP")
	errTCPRelayUnsupported = errors.New("turn: TCP relay allocations (RFC 6062) are not supported")
)

// Config configures the server. Zero values take the documented defaults.
type Config struct {
	Realm  string // default "icey"
	Secret string // TURN REST (coturn use-auth-secret) HMAC secret; empty = static demo credentials
	// UsernameSuffix is the optional ":<suffix>" part of minted usernames. With
	// a Secret, only usernames carrying exactly this suffix (or none when it is
	// empty) are accepted.
	UsernameSuffix string
	StaticUsername string        // demo username when Secret is empty; default "icey"
	StaticPassword string        // demo password when Secret is empty; default "icey"
	RelayIP        net.IP        // IPv4 put in XOR-RELAYED-ADDRESS; required (the caller picks externalIp, bind host or primary interface)
	RelayBindIP    net.IP        // IPv4 address relay sockets bind to; nil or unspecified = 0.0.0.0
	CredentialTTL  time.Duration // lifetime of minted credentials; default 1h, clamped to MaxTTL
	MaxTTL         time.Duration // usernames expiring later than now+MaxTTL are refused; default 24h
	// AllowLocalRelay lifts the internal-destination deny list (spec/turn.md).
	// The own-media-port restriction below stays in force.
	AllowLocalRelay bool
	// OwnMediaAddrs are the server's own WebRTC media endpoints (concrete IPs,
	// not wildcards). Their IPs are always allowed, even in a denied range, but
	// relayed datagrams to those IPs may only go to these ports.
	OwnMediaAddrs []netip.AddrPort
	// Allocation quotas (refusal: 486 Allocation Quota Reached). 0 = default
	// (10 per username, 10 per client IP, 1000 in total); negative = unlimited.
	// Per-IP limits count an IPv6 client by its /64. Slots come back when the
	// client sends Refresh with LIFETIME 0, its TCP connection closes, or the
	// lifetime it asked for (at most MaxLifetime) runs out.
	// With REST credentials each minted username is its own "user"; with the
	// static demo pair every client shares one username, so the per-user
	// quota does not apply (per IP and total still do).
	MaxAllocationsPerUser int
	MaxAllocationsPerIP   int
	MaxAllocations        int
	MaxTCPConns           int              // concurrent TCP control connections; 0 = 1000, negative = unlimited
	MaxTCPConnsPerIP      int              // concurrent TCP connections per client address (IPv6: per /64); 0 = 16, negative = unlimited
	MaxLifetime           time.Duration    // longest allocation lifetime granted; 0 or more than DefaultMaxLifetime = DefaultMaxLifetime
	TCPIdleTimeout        time.Duration    // closes TCP connections idle this long without an allocation; 0 = 10s, negative = never
	Now                   func() time.Time // clock for credentials; default time.Now
}

func (c *Config) setDefaults() {
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.StaticUsername == "" {
		c.StaticUsername = DefaultStaticUsername
	}
	if c.StaticPassword == "" {
		c.StaticPassword = DefaultStaticPassword
	}
	if c.MaxTTL <= 0 {
		c.MaxTTL = DefaultMaxTTL
	}
	if c.CredentialTTL <= 0 {
		c.CredentialTTL = DefaultCredentialTTL
	}
	if c.CredentialTTL > c.MaxTTL {
		c.CredentialTTL = c.MaxTTL
	}
	defInt := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	defInt(&c.MaxAllocationsPerUser, DefaultMaxAllocationsPerUser)
	defInt(&c.MaxAllocationsPerIP, DefaultMaxAllocationsPerIP)
	defInt(&c.MaxAllocations, DefaultMaxAllocations)
	defInt(&c.MaxTCPConns, DefaultMaxTCPConns)
	defInt(&c.MaxTCPConnsPerIP, DefaultMaxTCPConnsPerIP)
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = DefaultTCPIdleTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	Allocations      int               // live allocations
	AllocationsTotal uint64            // allocations created since start
	Refusals         map[string]uint64 // reason -> count (see the reason* constants)
}

// Server is a running TURN/STUN server.
type Server struct {
	cfg    Config
	log    *slog.Logger
	policy *peerPolicy
	pion   *pionturn.Server
	udp    *udpConn     // nil without a UDP listener
	tcp    *tcpListener // nil without a TCP listener

	// wg counts the goroutines pion runs for us: each listener loop, each TCP
	// connection and each allocation's relay reader. pion's Close does not
	// wait for them, so the wrappers and the allocation events keep score.
	wg    sync.WaitGroup
	logWG sync.WaitGroup
	done  chan struct{}

	closeOnce sync.Once
	closeErr  error

	mu       sync.Mutex
	allocs   map[string]allocInfo // by tupleKey
	byUser   map[string]int
	byIP     map[netip.Prefix]int // by clientPrefix
	pending  []pendingAlloc
	total    uint64
	refusals map[string]uint64
	window   map[string]uint64 // refusals since the last log line
	lastPeer map[string]string // reason -> last client/peer, for the log line
}

type allocInfo struct {
	src, user string
	ip        netip.Prefix // clientPrefix of src
}

// pendingAlloc is a quota slot granted by the quota check but not yet turned
// into an allocation. TCP connections are served concurrently, so without it
// two requests could both pass the check for the last slot.
type pendingAlloc struct {
	src, user string
	ip        netip.Prefix
	at        time.Time
}

// pendingTTL drops slots of allocations that failed after the quota check.
const pendingTTL = 5 * time.Second

// refusalLogInterval bounds refusal logging to one line per interval.
const refusalLogInterval = time.Second

// New starts serving TURN and STUN on the given pre-bound sockets (either may
// be nil, not both) until Close. Once New is called with valid arguments the
// server owns the sockets and closes them (also when it fails).
func New(cfg Config, udp net.PacketConn, tcp net.Listener, log *slog.Logger) (*Server, error) {
	if udp == nil && tcp == nil {
		return nil, ErrNoListener
	}
	if cfg.RelayIP == nil {
		return nil, ErrNoRelayIP
	}
	if cfg.RelayIP.To4() == nil {
		return nil, ErrRelayIPNotIPv4
	}
	if b := cfg.RelayBindIP; b != nil && !b.IsUnspecified() && b.To4() == nil {
		return nil, ErrRelayIPNotIPv4
	}
	cfg.setDefaults()
	if log == nil {
		log = slog.Default()
	}
	log = log.With("module", "turn")

	s := &Server{
		cfg:      cfg,
		log:      log,
		policy:   newPeerPolicy(cfg.AllowLocalRelay, cfg.OwnMediaAddrs),
		done:     make(chan struct{}),
		allocs:   make(map[string]allocInfo),
		byUser:   make(map[string]int),
		byIP:     make(map[netip.Prefix]int),
		refusals: make(map[string]uint64),
		window:   make(map[string]uint64),
		lastPeer: make(map[string]string),
	}

	bindIP := "0.0.0.0"
	if cfg.RelayBindIP != nil && !cfg.RelayBindIP.IsUnspecified() {
		bindIP = cfg.RelayBindIP.String()
	}
	gen := &relayGenerator{s: s, bindIP: bindIP, relayIP: cfg.RelayIP.To4()}
	perm := func(client net.Addr, peer net.IP) bool {
		a, ok := unmapIP(peer)
		if ok && s.policy.allowIP(a) {
			return true
		}
		s.refuse(reasonPeer, peer.String())
		return false
	}

	pc := pionturn.ServerConfig{
		Realm:         cfg.Realm,
		AuthHandler:   s.authenticate,
		QuotaHandler:  s.quota,
		LoggerFactory: &slogFactory{log: log},
		EventHandler: pionturn.EventHandler{
			OnAuth:              s.onAuth,
			OnAllocationCreated: s.onAllocationCreated,
			OnAllocationDeleted: s.onAllocationDeleted,
		},
	}
	if udp != nil {
		s.udp = &udpConn{PacketConn: udp, s: s}
		pc.PacketConnConfigs = []pionturn.PacketConnConfig{{
			PacketConn: s.udp, RelayAddressGenerator: gen, PermissionHandler: perm,
		}}
	}
	if tcp != nil {
		s.tcp = newTCPListener(tcp, s)
		pc.ListenerConfigs = []pionturn.ListenerConfig{{
			Listener: s.tcp, RelayAddressGenerator: gen, PermissionHandler: perm,
		}}
	}

	// One count per pion listener loop, released when the loop's read fails.
	if udp != nil {
		s.wg.Add(1)
	}
	if tcp != nil {
		s.wg.Add(1)
	}
	srv, err := pionturn.NewServer(pc)
	if err != nil {
		if udp != nil {
			_ = udp.Close()
		}
		if tcp != nil {
			_ = tcp.Close()
		}
		return nil, fmt.Errorf("turn: %w", err)
	}
	s.pion = srv

	s.logWG.Add(1)
	go s.logRefusals()

	mode := "static demo credentials"
	if cfg.Secret != "" {
		mode = "TURN REST credentials"
	}
	attrs := []any{"realm", cfg.Realm, "relay_ip", cfg.RelayIP.String(), "auth", mode, "allow_local_relay", cfg.AllowLocalRelay}
	if udp != nil {
		attrs = append(attrs, "udp", udp.LocalAddr().String())
	}
	if tcp != nil {
		attrs = append(attrs, "tcp", tcp.Addr().String())
	}
	log.Info("TURN server listening", attrs...)
	return s, nil
}

// Close stops the server, closes every connection and allocation and waits
// for all goroutines. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		close(s.done)
		// Closes our UDP wrapper and TCP listener wrapper (which also closes
		// the accepted connections pion would leave open).
		s.closeErr = s.pion.Close()
		s.wg.Wait()
		s.logWG.Wait()
	})
	return s.closeErr
}

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := make(map[string]uint64, len(s.refusals))
	for k, v := range s.refusals {
		r[k] = v
	}
	return Stats{Allocations: len(s.allocs), AllocationsTotal: s.total, Refusals: r}
}

// refuse counts a refusal; the log line is aggregated by logRefusals.
// who is a client or peer address, never a credential.
func (s *Server) refuse(reason, who string) {
	s.mu.Lock()
	s.refuseLocked(reason, who)
	s.mu.Unlock()
}

func (s *Server) refuseLocked(reason, who string) {
	s.refusals[reason]++
	s.window[reason]++
	s.lastPeer[reason] = who
}

func (s *Server) logRefusals() {
	defer s.logWG.Done()
	t := time.NewTicker(refusalLogInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			s.flushRefusals()
			return
		case <-t.C:
			s.flushRefusals()
		}
	}
}

func (s *Server) flushRefusals() {
	s.mu.Lock()
	if len(s.window) == 0 {
		s.mu.Unlock()
		return
	}
	reasons := make([]string, 0, len(s.window))
	for r := range s.window {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	attrs := make([]any, 0, 2*len(reasons))
	for _, r := range reasons {
		attrs = append(attrs, slog.Group(r, "count", s.window[r], "last", s.lastPeer[r]))
	}
	clear(s.window)
	clear(s.lastPeer)
	s.mu.Unlock()
	s.log.Info("TURN requests refused", attrs...)
}

// quota is pion's QuotaHandler, called before each new allocation.
func (s *Server) quota(username, _ string, src net.Addr) bool {
	ip := clientPrefix(src)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()

	kept := s.pending[:0]
	for _, p := range s.pending {
		if now.Sub(p.at) < pendingTTL {
			kept = append(kept, p)
		}
	}
	s.pending = kept

	users, ips := s.byUser[username], s.byIP[ip]
	for _, p := range s.pending {
		if p.user == username {
			users++
		}
		if p.ip == ip {
			ips++
		}
	}
	total := len(s.allocs) + len(s.pending)
	reason := ""
	switch {
	case s.cfg.Secret != "" && s.cfg.MaxAllocationsPerUser > 0 && users >= s.cfg.MaxAllocationsPerUser:
		reason = reasonQuotaUser
	case s.cfg.MaxAllocationsPerIP > 0 && ips >= s.cfg.MaxAllocationsPerIP:
		reason = reasonQuotaIP
	case s.cfg.MaxAllocations > 0 && total >= s.cfg.MaxAllocations:
		reason = reasonQuotaTotal
	}
	if reason != "" {
		s.refuseLocked(reason, src.String())
		return false
	}
	s.pending = append(s.pending, pendingAlloc{src: src.String(), user: username, ip: ip, at: now})
	return true
}

func tupleKey(src, dst net.Addr) string {
	return dst.Network() + "|" + src.String() + "|" + dst.String()
}

func addrIP(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		ip, _ := unmapIP(v.IP)
		return ip
	case *net.TCPAddr:
		ip, _ := unmapIP(v.IP)
		return ip
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// clientPrefix is the unit of per-address limits: the client's IPv4
// address, or its IPv6 /64 (one subscriber usually holds a whole /64, so
// per-address limits on IPv6 addresses would be no limit at all).
func clientPrefix(a net.Addr) netip.Prefix {
	ip := addrIP(a)
	bits := 32
	if ip.Is6() {
		bits = 64
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}
	}
	return p
}

func (s *Server) onAllocationCreated(src, dst net.Addr, _, username, _ string, _ net.Addr, _ int) {
	// Allocations are only created by goroutines that hold a wg count
	// themselves, so this Add never races a Wait that saw zero.
	s.wg.Add(1)
	info := allocInfo{src: src.String(), user: username, ip: clientPrefix(src)}
	s.mu.Lock()
	for i, p := range s.pending {
		if p.src == info.src && p.user == username {
			s.pending = append(s.pending[:i], s.pending[i+1:]...)
			break
		}
	}
	s.allocs[tupleKey(src, dst)] = info
	s.byUser[username]++
	s.byIP[info.ip]++
	s.total++
	s.mu.Unlock()
	if _, ok := dst.(*net.TCPAddr); ok && s.tcp != nil {
		s.tcp.setAllocated(src.String(), true)
	}
}

func (s *Server) onAllocationDeleted(src, dst net.Addr, _, _, _ string) {
	s.mu.Lock()
	info, ok := s.allocs[tupleKey(src, dst)]
	if ok {
		delete(s.allocs, tupleKey(src, dst))
		decr(s.byUser, info.user)
		decr(s.byIP, info.ip)
	}
	s.mu.Unlock()
	if _, isTCP := dst.(*net.TCPAddr); isTCP && s.tcp != nil {
		s.tcp.setAllocated(src.String(), false)
	}
	if ok {
		s.wg.Done()
	}
}

func decr[K comparable](m map[K]int, k K) {
	if m[k] <= 1 {
		delete(m, k)
		return
	}
	m[k]--
}

// hasAllocation reports whether src holds an allocation made with username.
func (s *Server) hasAllocation(src net.Addr, username string) bool {
	key := src.String()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.allocs {
		if a.src == key && a.user == username {
			return true
		}
	}
	return false
}

// udpConn wraps the UDP listener to learn when pion's read loop has ended.
type udpConn struct {
	net.PacketConn
	s    *Server
	once sync.Once
}

// ReadFrom hands pion the next datagram that passes inspect (which may
// answer it itself or rewrite it).
func (c *udpConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			// pion's read loop returns on any error; this is its last read.
			c.once.Do(func() {
				select {
				case <-c.s.done:
				default:
					c.s.log.Error("TURN UDP listener stopped", "err", err)
				}
				c.s.wg.Done()
			})
			return n, addr, err
		}
		if n > len(p) || n == 0 {
			return n, addr, nil
		}
		r := c.s.inspect(p[:n], addr)
		if r.reply != nil {
			_, _ = c.PacketConn.WriteTo(r.reply, addr)
		}
		switch {
		case r.frame == nil:
			continue // answered (or dropped) here
		case len(r.frame) > len(p):
			continue // cannot happen: a rewrite never grows
		case &r.frame[0] != &p[0]:
			n = copy(p, r.frame)
		}
		return n, addr, nil
	}
}
