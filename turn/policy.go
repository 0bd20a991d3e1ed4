package turn

import (
	"net"
	"net/netip"
	"strconv"

	pionturn "github.com/pion/turn/v4"
)

// deniedPrefixes is the deny list of spec/turn.md: destinations a relay must
// not reach unless AllowLocalRelay is set, because they are this host, its
// private network, or not routable on the Internet at all.
var deniedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("127.0.0.0/8"),
	netip.MustParsePrefix("169.254.0.0/16"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("192.88.99.0/24"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("224.0.0.0/4"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("::/128"),
	netip.MustParsePrefix("::1/128"),
	netip.MustParsePrefix("::/96"),
	netip.MustParsePrefix("64:ff9b::/96"),
	netip.MustParsePrefix("2002::/16"),
	netip.MustParsePrefix("fc00::/7"),
	netip.MustParsePrefix("fe80::/10"),
	netip.MustParsePrefix("fec0::/10"),
	netip.MustParsePrefix("ff00::/8"),
}

// IsDeniedPeer reports whether ip is an internal or non-routable destination
// that the relay refuses by default. IPv4-mapped IPv6 addresses are unmapped
// first so ::ffff:127.0.0.1 cannot sneak past the IPv4 rules. An invalid IP is
// denied.
func IsDeniedPeer(ip net.IP) bool {
	a, ok := unmapIP(ip)
	if !ok {
		return true
	}
	return isDeniedAddr(a)
}

func isDeniedAddr(a netip.Addr) bool {
	for _, p := range deniedPrefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// unmapIP converts a net.IP (4- or 16-byte form) to a netip.Addr without the
// IPv4-in-IPv6 mapping and without a zone.
func unmapIP(ip net.IP) (netip.Addr, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

// peerPolicy decides which peers allocations may talk to. It is immutable
// after construction, so it is safe to share between both listeners.
type peerPolicy struct {
	allowLocal bool
	// own maps each of the server's own media IPs to its media ports. An own
	// IP is always allowed (even when it is in a denied range), but only its
	// media ports may be reached through a relay: the relay exists to reach
	// the media endpoint, not the ops API or anything else on this host.
	own map[netip.Addr]map[uint16]struct{}
}

func newPeerPolicy(allowLocal bool, ownMedia []netip.AddrPort) *peerPolicy {
	p := &peerPolicy{allowLocal: allowLocal, own: make(map[netip.Addr]map[uint16]struct{})}
	for _, ap := range ownMedia {
		ip := ap.Addr().Unmap().WithZone("")
		if p.own[ip] == nil {
			p.own[ip] = make(map[uint16]struct{})
		}
		p.own[ip][ap.Port()] = struct{}{}
	}
	return p
}

// allowIP is the per-IP decision used for CreatePermission and ChannelBind
// (TURN permissions are per IP, not per port).
func (p *peerPolicy) allowIP(a netip.Addr) bool {
	if _, ok := p.own[a]; ok {
		return true
	}
	return p.allowLocal || !isDeniedAddr(a)
}

// allowAddr is the per-datagram decision on the relay socket: allowIP plus
// the own-IP port restriction.
func (p *peerPolicy) allowAddr(addr net.Addr) bool {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return false
	}
	a, ok := unmapIP(ua.IP)
	if !ok {
		return false
	}
	if ports, own := p.own[a]; own {
		_, ok := ports[uint16(ua.Port)]
		return ok
	}
	return p.allowLocal || !isDeniedAddr(a)
}

// relayGenerator allocates relay sockets bound to bindIP, advertises relayIP
// and wraps every socket so the peer policy is enforced per datagram.
type relayGenerator struct {
	s       *Server
	bindIP  string
	relayIP net.IP
}

var _ pionturn.RelayAddressGenerator = (*relayGenerator)(nil)

func (g *relayGenerator) Validate() error { return nil }

func (g *relayGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	conn, err := net.ListenPacket(network, net.JoinHostPort(g.bindIP, strconv.Itoa(requestedPort)))
	if err != nil {
		return nil, nil, err
	}
	la, ok := conn.LocalAddr().(*net.UDPAddr)
	if !ok {
		_ = conn.Close()
		return nil, nil, errNotUDP
	}
	relayAddr := &net.UDPAddr{IP: g.relayIP, Port: la.Port}
	return &relayConn{PacketConn: conn, s: g.s}, relayAddr, nil
}

// AllocateConn refuses RFC 6062 TCP relays: browsers never ask for them and
// they would need their own peer policy.
func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelayUnsupported
}

// relayConn is a relay socket that drops datagrams the policy forbids. The
// permission check of pion already gates peers by IP; this adds the port
// restriction for the server's own IPs and a second, independent check.
type relayConn struct {
	net.PacketConn
	s *Server
}

func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	if !c.s.policy.allowAddr(addr) {
		c.s.refuse(reasonPeerPort, addr.String())
		return len(p), nil // silently dropped, like a firewall would
	}
	return c.PacketConn.WriteTo(p, addr)
}

func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil || c.s.policy.allowAddr(addr) {
			return n, addr, err
		}
		// A datagram from another port of our own IP: never hand it to a client.
	}
}
