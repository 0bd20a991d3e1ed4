package turn

import (
	"bytes"
	"errors"
	"github.com/icey/icey-server/internal/testenv"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/stun/v3"
	pionturn "github.com/pion/turn/v4"
)

var transports = []string{"udp", "tcp"}

// syncBuffer collects the server's log output for assertions.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// testServer is a server on 127.0.0.1 with both listeners.
type testServer struct {
	*Server
	udpAddr, tcpAddr string
	logs             *syncBuffer
}

func (ts *testServer) addr(transport string) string {
	if transport == "tcp" {
		return ts.tcpAddr
	}
	return ts.udpAddr
}

// leakCheck: see testenv.CheckGoroutines.
func leakCheck(t *testing.T) { t.Helper(); testenv.CheckGoroutines(t) }

func startServer(t *testing.T, cfg Config) *testServer {
	t.Helper()
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tcp, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RelayIP == nil {
		cfg.RelayIP = net.IPv4(127, 0, 0, 1)
	}
	if cfg.RelayBindIP == nil {
		cfg.RelayBindIP = net.IPv4(127, 0, 0, 1)
	}
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := New(cfg, udp, tcp, log)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: s, udpAddr: udp.LocalAddr().String(), tcpAddr: tcp.Addr().String(), logs: logs}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if t.Failed() {
			t.Logf("server log:\n%s", logs.String())
		}
	})
	return ts
}

func quietLogger() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}

// newClient connects a real pion/turn client over transport ("udp"/"tcp").
func newClient(t *testing.T, transport, server, user, pass string) *pionturn.Client {
	t.Helper()
	return newClientFrom(t, transport, "127.0.0.1", server, user, pass)
}

// newClientFrom is newClient from another local address (any of 127/8 works
// in the loopback-only namespace), so tests can play several client IPs.
func newClientFrom(t *testing.T, transport, localIP, server, user, pass string) *pionturn.Client {
	t.Helper()
	var conn net.PacketConn
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", net.JoinHostPort(localIP, "0"))
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	case "tcp":
		c, err := dialTCPFrom(localIP, server)
		if err != nil {
			t.Fatal(err)
		}
		conn = pionturn.NewSTUNConn(c)
	}
	c, err := pionturn.NewClient(&pionturn.ClientConfig{
		STUNServerAddr: server,
		TURNServerAddr: server,
		Conn:           conn,
		Username:       user,
		Password:       pass,
		Realm:          DefaultRealm,
		LoggerFactory:  quietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		_ = conn.Close()
	})
	return c
}

// allocate allocates and registers the relay's release (Refresh lifetime 0).
func allocate(t *testing.T, c *pionturn.Client) (net.PacketConn, error) {
	t.Helper()
	relay, err := c.Allocate()
	if err == nil {
		t.Cleanup(func() { _ = relay.Close() })
	}
	return relay, err
}

func turnCode(err error) int {
	var te *stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	return 0
}

// waitFor polls cond with a generous deadline (no timing assertions).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func listenUDP(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func addrPort(a net.Addr) netip.AddrPort {
	return a.(*net.UDPAddr).AddrPort()
}

// rawSession speaks raw STUN to the server, for requests the pion client
// does not let us issue directly (a ChannelBind to an arbitrary peer).
type rawSession struct {
	t        *testing.T
	conn     net.PacketConn
	server   net.Addr
	user     string
	realm    stun.Realm
	nonce    stun.Nonce
	integrty stun.MessageIntegrity
}

func newRawSession(t *testing.T, transport, server, user, pass string) *rawSession {
	t.Helper()
	r := dialRaw(t, transport, "127.0.0.1", server)
	r.challenge(user, pass)
	res := r.authed(stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransportUDP)
	if res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("raw allocate: %v", res)
	}
	return r
}

// reqTransportUDP is REQUESTED-TRANSPORT: UDP.
var reqTransportUDP = stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}

// dialRaw opens a raw STUN session from localIP without sending anything.
func dialRaw(t *testing.T, transport, localIP, server string) *rawSession {
	t.Helper()
	r := &rawSession{t: t}
	switch transport {
	case "udp":
		c, err := net.ListenPacket("udp4", net.JoinHostPort(localIP, "0"))
		if err != nil {
			t.Fatal(err)
		}
		r.conn = c
		r.server, _ = net.ResolveUDPAddr("udp4", server)
	case "tcp":
		c, err := dialTCPFrom(localIP, server)
		if err != nil {
			t.Fatal(err)
		}
		r.conn = pionturn.NewSTUNConn(c)
		r.server = c.RemoteAddr()
	}
	t.Cleanup(func() { _ = r.conn.Close() })
	return r
}

// challenge sends an unauthenticated Allocate to learn the realm and nonce
// (the 401 challenge) and sets up the long-term credential for user/pass.
func (r *rawSession) challenge(user, pass string) {
	r.t.Helper()
	res := r.roundTrip(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransportUDP)
	if err := r.nonce.GetFrom(res); err != nil {
		r.t.Fatalf("no nonce in %v", res)
	}
	if err := r.realm.GetFrom(res); err != nil {
		r.t.Fatalf("no realm in %v", res)
	}
	r.user = user
	r.integrty = stun.NewLongTermIntegrity(user, r.realm.String(), pass)
}

func (r *rawSession) authed(typ stun.MessageType, attrs ...stun.Setter) *stun.Message {
	setters := append([]stun.Setter{stun.TransactionID, typ}, attrs...)
	setters = append(setters, stun.NewUsername(r.user), r.realm, r.nonce, r.integrty, stun.Fingerprint)
	return r.roundTrip(setters...)
}

func (r *rawSession) roundTrip(setters ...stun.Setter) *stun.Message {
	r.t.Helper()
	req := stun.MustBuild(setters...)
	if _, err := r.conn.WriteTo(req.Raw, r.server); err != nil {
		r.t.Fatal(err)
	}
	_ = r.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 1600)
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			r.t.Fatalf("waiting for response to %v: %v", req.Type, err)
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if res.Decode() != nil || res.TransactionID != req.TransactionID {
			continue
		}
		return res
	}
}

// channelBind issues a ChannelBind for peer and reports whether it succeeded.
func (r *rawSession) channelBind(number uint16, peer *net.UDPAddr) bool {
	ch := stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(number >> 8), byte(number), 0, 0}}
	res := r.authed(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), ch, xorPeer{IP: peer.IP, Port: peer.Port})
	return res.Type.Class == stun.ClassSuccessResponse
}

// xorPeer is an XOR-PEER-ADDRESS attribute.
type xorPeer stun.XORMappedAddress

func (x xorPeer) AddTo(m *stun.Message) error {
	return stun.XORMappedAddress(x).AddToAs(m, stun.AttrXORPeerAddress)
}

func mustNotContain(t *testing.T, logs, what, secret string) {
	t.Helper()
	if secret != "" && strings.Contains(logs, secret) {
		t.Errorf("log contains the %s", what)
	}
}

// dialTCPFrom dials server over TCP from localIP.
func dialTCPFrom(localIP, server string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 10 * time.Second}
	return d.Dial("tcp4", server)
}
