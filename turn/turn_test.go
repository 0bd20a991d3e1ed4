package turn

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icey/icey-server/internal/testenv"
)

const testSecret = "s3cret-hmac-key"

func TestIsDeniedPeer(t *testing.T) {
	testenv.LoopbackOnly(t)
	// First and last address of every listed range, and the neighbours
	// just outside it where those are public.
	tests := []struct {
		ip     string
		denied bool
	}{
		{"0.0.0.0", true}, {"0.255.255.255", true}, {"1.0.0.0", false},
		{"9.255.255.255", false}, {"10.0.0.0", true}, {"10.255.255.255", true}, {"11.0.0.0", false},
		{"100.63.255.255", false}, {"100.64.0.0", true}, {"100.127.255.255", true}, {"100.128.0.0", false},
		{"126.255.255.255", false}, {"127.0.0.0", true}, {"127.0.0.53", true}, {"127.255.255.255", true}, {"128.0.0.0", false},
		{"169.253.255.255", false}, {"169.254.0.0", true}, {"169.254.169.254", true}, {"169.254.255.255", true}, {"169.255.0.0", false},
		{"172.15.255.255", false}, {"172.16.0.0", true}, {"172.31.255.255", true}, {"172.32.0.0", false},
		{"191.255.255.255", false}, {"192.0.0.0", true}, {"192.0.0.255", true}, {"192.0.1.0", false},
		{"192.0.2.0", true}, {"192.0.2.255", true}, {"192.0.3.0", false},
		{"192.88.98.255", false}, {"192.88.99.0", true}, {"192.88.99.255", true}, {"192.88.100.0", false},
		{"192.167.255.255", false}, {"192.168.0.0", true}, {"192.168.255.255", true}, {"192.169.0.0", false},
		{"198.17.255.255", false}, {"198.18.0.0", true}, {"198.19.255.255", true}, {"198.20.0.0", false},
		{"198.51.99.255", false}, {"198.51.100.0", true}, {"198.51.100.255", true}, {"198.51.101.0", false},
		{"203.0.112.255", false}, {"203.0.113.0", true}, {"203.0.113.255", true}, {"203.0.114.0", false},
		{"223.255.255.255", false}, {"224.0.0.0", true}, {"239.255.255.255", true},
		{"240.0.0.0", true}, {"255.255.255.255", true},
		{"8.8.8.8", false}, {"1.1.1.1", false},

		{"::", true}, {"::1", true}, {"::2", true}, {"::ffff:ffff", true}, {"::1:0:0", false},
		{"::ffff:127.0.0.53", true}, {"::ffff:10.0.0.1", true}, {"::ffff:0.0.0.0", true}, {"::ffff:8.8.8.8", false},
		{"64:ff9a:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"64:ff9b::", true}, {"64:ff9b::ffff:ffff", true}, {"64:ff9b::1:0:0", false},
		{"2001:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"2002::", true}, {"2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"2003::", false},
		{"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"fc00::", true}, {"fd00::1", true}, {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true}, {"fe00::", false},
		{"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false}, {"fe80::", true}, {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"fec0::", true}, {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"ff00::", true}, {"ff02::1", true}, {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true},
		{"2001:4860:4860::8888", false}, {"2a00:1450::1", false},
	}
	for _, tt := range tests {
		ip := net.ParseIP(tt.ip)
		if ip == nil {
			t.Fatalf("bad test IP %q", tt.ip)
		}
		if got := IsDeniedPeer(ip); got != tt.denied {
			t.Errorf("IsDeniedPeer(%s) = %v, want %v", tt.ip, got, tt.denied)
		}
		if v4 := ip.To4(); v4 != nil && IsDeniedPeer(v4) != tt.denied {
			t.Errorf("IsDeniedPeer(4-byte %s) differs", tt.ip)
		}
	}
	if !IsDeniedPeer(nil) || !IsDeniedPeer(net.IP{1, 2, 3}) {
		t.Error("invalid IPs must be denied")
	}
}

func TestCredentials(t *testing.T) {
	testenv.LoopbackOnly(t)
	now := time.Unix(1700000000, 0)
	udp, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(Config{
		Secret: "s3cret", UsernameSuffix: "icey", RelayIP: net.IPv4(127, 0, 0, 1),
		CredentialTTL: 48 * time.Hour, // clamped to MaxTTL
		MaxTTL:        time.Hour,
		Now:           func() time.Time { return now },
	}, udp, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	user, cred := s.Credentials()
	// coturn's use-auth-secret value, computed independently:
	// base64(HMAC-SHA1("s3cret", "1700003600:icey")).
	if user != "1700003600:icey" || cred != "1i35Phti8+zK56P9KXF1R7/5VtM=" {
		t.Fatalf("Credentials() = %q, %q", user, cred)
	}

	udp2, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	static, err := New(Config{RelayIP: net.IPv4(127, 0, 0, 1)}, udp2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer static.Close()
	if u, p := static.Credentials(); u != "icey" || p != "icey" {
		t.Fatalf("static Credentials() = %q, %q", u, p)
	}

	if _, err := New(Config{RelayIP: net.IPv4(127, 0, 0, 1)}, nil, nil, nil); !errors.Is(err, ErrNoListener) {
		t.Errorf("no listener: %v", err)
	}
	udp3, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	defer udp3.Close()
	if _, err := New(Config{}, udp3, nil, nil); !errors.Is(err, ErrNoRelayIP) {
		t.Errorf("no relay IP: %v", err)
	}
	if _, err := New(Config{RelayIP: net.ParseIP("::1")}, udp3, nil, nil); !errors.Is(err, ErrRelayIPNotIPv4) {
		t.Errorf("IPv6 relay IP: %v", err)
	}
}

func TestSTUNBinding(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	ts := startServer(t, Config{Secret: testSecret})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			c := newClient(t, tr, ts.addr(tr), "", "")
			mapped, err := c.SendBindingRequest()
			if err != nil {
				t.Fatal(err)
			}
			ua, ok := mapped.(*net.UDPAddr)
			if !ok || !ua.IP.Equal(net.IPv4(127, 0, 0, 1)) || ua.Port == 0 {
				t.Fatalf("XOR-MAPPED-ADDRESS = %v", mapped)
			}
		})
	}
}

func TestAllocateWithMintedCredentials(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	ts := startServer(t, Config{Secret: testSecret, UsernameSuffix: "viewer"})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			user, pass := ts.Credentials()
			c := newClient(t, tr, ts.addr(tr), user, pass)
			relay, err := allocate(t, c)
			if err != nil {
				t.Fatalf("Allocate: %v", err)
			}
			ra := relay.LocalAddr().(*net.UDPAddr)
			if !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) || ra.Port == 0 {
				t.Fatalf("relayed address %v", ra)
			}
			if n := ts.Stats().Allocations; n != 1 {
				t.Fatalf("Stats().Allocations = %d, want 1", n)
			}
			_ = relay.Close()
			waitFor(t, "allocation released", func() bool { return ts.Stats().Allocations == 0 })
		})
	}
	if st := ts.Stats(); st.AllocationsTotal != 2 || len(st.Refusals) != 0 {
		t.Fatalf("Stats() = %+v", st)
	}
}

func TestStaticCredentials(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	// Every demo client shares the username, so the per-user quota is off.
	ts := startServer(t, Config{MaxAllocationsPerUser: 1})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			if _, err := allocate(t, newClient(t, tr, ts.addr(tr), "icey", "wrong")); err == nil {
				t.Fatal("wrong static password accepted")
			}
			for range 2 {
				if _, err := allocate(t, newClient(t, tr, ts.addr(tr), "icey", "icey")); err != nil {
					t.Fatalf("static credentials refused: %v", err)
				}
			}
		})
	}
}

func TestRejectedCredentials(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	ts := startServer(t, Config{Secret: testSecret, UsernameSuffix: "viewer", MaxTTL: 2 * time.Hour})
	now := time.Now().Unix()
	rest := func(exp int64, suffix string) (string, string) {
		u := strconv.FormatInt(exp, 10)
		if suffix != "" {
			u += ":" + suffix
		}
		return u, restPassword(testSecret, u)
	}
	type creds struct{ user, pass string }
	mk := func(u, p string) creds { return creds{u, p} }
	validUser, _ := rest(now+600, "viewer")
	tests := []struct {
		name   string
		c      creds
		reason string
	}{
		{"expired", mk(rest(now-60, "viewer")), reasonExpired},
		{"forged", mk(validUser, restPassword("not-the-secret", validUser)), reasonAuth},
		{"wrong suffix", mk(rest(now+600, "admin")), reasonAuth},
		{"missing suffix", mk(rest(now+600, "")), reasonAuth},
		{"malformed", mk("abc:viewer", restPassword(testSecret, "abc:viewer")), reasonAuth},
		{"signed expiry", mk("-5:viewer", restPassword(testSecret, "-5:viewer")), reasonAuth},
		{"too far", mk(rest(now+3*3600, "viewer")), reasonTooFar},
		{"static user", mk("icey", "icey"), reasonAuth},
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				before := ts.Stats().Refusals[tt.reason]
				c := newClient(t, tr, ts.addr(tr), tt.c.user, tt.c.pass)
				if _, err := allocate(t, c); err == nil {
					t.Fatal("allocation succeeded")
				}
				if after := ts.Stats().Refusals[tt.reason]; after <= before {
					t.Fatalf("refusal %q not counted (%d -> %d)", tt.reason, before, after)
				}
			})
		}
	}
	if n := ts.Stats().Allocations; n != 0 {
		t.Fatalf("%d allocations after refusals", n)
	}
	// The refusal log line is aggregated; it must never carry a credential.
	waitFor(t, "refusal log line", func() bool { return bytes.Contains([]byte(ts.logs.String()), []byte("TURN requests refused")) })
	logs := ts.logs.String()
	mustNotContain(t, logs, "secret", testSecret)
	for _, tt := range tests[:len(tests)-1] { // the last one is the public demo pair
		mustNotContain(t, logs, "credential of "+tt.name, tt.c.pass)
	}
}

// TestExpiredCredentialKeepsAllocation: an allocation outlives its
// credential's expiry (refreshes still authenticate), but no new allocation
// can be made with it.
func TestExpiredCredentialKeepsAllocation(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	var mu sync.Mutex
	clockNow := time.Now()
	clock := clockNow
	now := func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }
	setNow := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	ts := startServer(t, Config{Secret: testSecret, CredentialTTL: time.Minute, Now: now})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			setNow(clockNow)
			user, pass := ts.Credentials()
			r := newRawSession(t, tr, ts.addr(tr), user, pass)
			setNow(clockNow.Add(time.Hour)) // the credential has expired
			refresh := r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest))
			if refresh.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("refresh of a live allocation with an aged credential: %v", refresh)
			}
			if _, err := allocate(t, newClient(t, tr, ts.addr(tr), user, pass)); err == nil {
				t.Fatal("new allocation with an expired credential succeeded")
			}
		})
	}
}

func TestPeerPolicy(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	media := listenUDP(t)
	other := listenUDP(t)
	mediaAddr := media.LocalAddr().(*net.UDPAddr)
	otherAddr := other.LocalAddr().(*net.UDPAddr)
	ts := startServer(t, Config{Secret: testSecret, OwnMediaAddrs: []netip.AddrPort{addrPort(mediaAddr)}})

	denied := []string{"10.0.0.1", "169.254.169.254", "100.64.0.1", "198.18.0.1", "0.1.2.3",
		"fd00::1", "::1", "127.0.0.53", "::ffff:127.0.0.53"}
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			user, pass := ts.Credentials()
			c := newClient(t, tr, ts.addr(tr), user, pass)
			relay, err := allocate(t, c)
			if err != nil {
				t.Fatal(err)
			}
			for _, ip := range denied {
				before := ts.Stats().Refusals[reasonPeer]
				if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(ip), Port: 9}); err == nil {
					t.Errorf("CreatePermission(%s) allowed", ip)
				}
				if ts.Stats().Refusals[reasonPeer] <= before {
					t.Errorf("CreatePermission(%s): refusal not counted", ip)
				}
			}
			// ChannelBind is policed the same way (raw STUN: the client only binds
			// channels to peers it already has a permission for).
			r := newRawSession(t, tr, ts.addr(tr), user, pass)
			if r.channelBind(0x4000, &net.UDPAddr{IP: net.ParseIP("10.0.0.1"), Port: 9}) {
				t.Error("ChannelBind to 10.0.0.1 allowed")
			}
			if r.channelBind(0x4001, &net.UDPAddr{IP: net.ParseIP("::ffff:127.0.0.53"), Port: 9}) {
				t.Error("ChannelBind to ::ffff:127.0.0.53 allowed")
			}
			if !r.channelBind(0x4002, mediaAddr) {
				t.Error("ChannelBind to the own media address refused")
			}

			if err := c.CreatePermission(mediaAddr); err != nil {
				t.Fatalf("CreatePermission(own media %v): %v", mediaAddr, err)
			}
			// Same (allowed) IP, another port: dropped at the relay socket. Sent
			// first so that by the time the media packet arrives the server
			// has already handled (dropped) it.
			portDrops := ts.Stats().Refusals[reasonPeerPort]
			if _, err := relay.WriteTo([]byte("to-other-"+tr), otherAddr); err != nil {
				t.Fatal(err)
			}
			if _, err := relay.WriteTo([]byte("to-media-"+tr), mediaAddr); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			_ = media.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, from, err := media.ReadFrom(buf)
			if err != nil {
				t.Fatalf("media socket got nothing through the relay: %v", err)
			}
			if string(buf[:n]) != "to-media-"+tr || from.(*net.UDPAddr).Port != relay.LocalAddr().(*net.UDPAddr).Port {
				t.Fatalf("media socket got %q from %v", buf[:n], from)
			}
			if ts.Stats().Refusals[reasonPeerPort] <= portDrops {
				t.Error("datagram to another port of the own IP was not dropped")
			}
			_ = other.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, _, err := other.ReadFrom(buf); err == nil {
				t.Errorf("other port received %q through the relay", buf[:n])
			}

			// Reverse direction: the media endpoint reaches the client, another
			// port of the same IP does not.
			if _, err := other.WriteTo([]byte("from-other"), from); err != nil {
				t.Fatal(err)
			}
			if _, err := media.WriteTo([]byte("from-media"), from); err != nil {
				t.Fatal(err)
			}
			_ = relay.SetReadDeadline(time.Now().Add(10 * time.Second))
			n, src, err := relay.ReadFrom(buf)
			if err != nil || string(buf[:n]) != "from-media" || src.String() != mediaAddr.String() {
				t.Fatalf("client read %q from %v (%v), want from-media from %v", buf[:n], src, err, mediaAddr)
			}
			_ = relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			if n, src, err := relay.ReadFrom(buf); err == nil {
				t.Errorf("client received %q from %v", buf[:n], src)
			}
		})
	}
}

func TestAllowLocalRelay(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	ts := startServer(t, Config{Secret: testSecret, AllowLocalRelay: true})
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			user, pass := ts.Credentials()
			c := newClient(t, tr, ts.addr(tr), user, pass)
			if _, err := allocate(t, c); err != nil {
				t.Fatal(err)
			}
			for _, ip := range []string{"127.0.0.53", "::ffff:127.0.0.53", "10.0.0.1"} {
				if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(ip), Port: 9}); err != nil {
					t.Errorf("CreatePermission(%s) with AllowLocalRelay: %v", ip, err)
				}
			}
		})
	}
}

func TestQuotas(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	now := time.Now().Unix()
	// distinct REST usernames: each expiry second is its own user
	userN := func(i int) (string, string) {
		u := strconv.FormatInt(now+600+int64(i), 10)
		return u, restPassword(testSecret, u)
	}
	tests := []struct {
		name   string
		cfg    Config
		users  func(i int) (string, string)
		reason string
	}{
		{"per user", Config{MaxAllocationsPerUser: 2, MaxAllocationsPerIP: -1, MaxAllocations: -1},
			func(int) (string, string) { return userN(0) }, reasonQuotaUser},
		{"per IP", Config{MaxAllocationsPerUser: -1, MaxAllocationsPerIP: 2, MaxAllocations: -1}, userN, reasonQuotaIP},
		{"total", Config{MaxAllocationsPerUser: -1, MaxAllocationsPerIP: -1, MaxAllocations: 2}, userN, reasonQuotaTotal},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			t.Run(tt.name+"/"+tr, func(t *testing.T) {
				cfg := tt.cfg
				cfg.Secret = testSecret
				ts := startServer(t, cfg)
				var relays []net.PacketConn
				for i := range 2 {
					u, p := tt.users(i)
					relay, err := allocate(t, newClient(t, tr, ts.addr(tr), u, p))
					if err != nil {
						t.Fatalf("allocation %d: %v", i, err)
					}
					relays = append(relays, relay)
				}
				u, p := tt.users(2)
				_, err := allocate(t, newClient(t, tr, ts.addr(tr), u, p))
				if code := turnCode(err); code != 486 {
					t.Fatalf("third allocation: %v (code %d), want 486", err, code)
				}
				if ts.Stats().Refusals[tt.reason] != 1 {
					t.Fatalf("refusals = %v, want one %q", ts.Stats().Refusals, tt.reason)
				}
				// Releasing an allocation frees its slot.
				_ = relays[0].Close()
				waitFor(t, "slot freed", func() bool { return ts.Stats().Allocations == 1 })
				u, p = tt.users(3)
				if _, err := allocate(t, newClient(t, tr, ts.addr(tr), u, p)); err != nil {
					t.Fatalf("allocation after release: %v", err)
				}
			})
		}
	}
}

func TestTCPLimits(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	t.Run("connection cap", func(t *testing.T) {
		ts := startServer(t, Config{Secret: testSecret, MaxTCPConns: 2, TCPIdleTimeout: -1})
		var conns []net.Conn
		for range 2 {
			c, err := net.Dial("tcp4", ts.tcpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			conns = append(conns, c)
		}
		// The two accepted connections still work as TURN control channels
		// once the server has seen them; the third is closed at once.
		extra, err := net.Dial("tcp4", ts.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer extra.Close()
		_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("connection over the cap: read = %v, want EOF", err)
		}
		if ts.Stats().Refusals[reasonTCPCap] != 1 {
			t.Fatalf("refusals = %v", ts.Stats().Refusals)
		}
		_ = conns[0].Close()
		// A freed slot is reusable: a full client over TCP gets a binding.
		waitFor(t, "slot freed", func() bool {
			ts.tcp.mu.Lock()
			defer ts.tcp.mu.Unlock()
			return len(ts.tcp.conns) == 1
		})
		c := newClient(t, "tcp", ts.tcpAddr, "", "")
		if _, err := c.SendBindingRequest(); err != nil {
			t.Fatalf("binding after a slot was freed: %v", err)
		}
	})
	t.Run("idle timeout", func(t *testing.T) {
		idle := 300 * time.Millisecond
		ts := startServer(t, Config{Secret: testSecret, TCPIdleTimeout: idle})
		c, err := net.Dial("tcp4", ts.tcpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("idle connection: read = %v, want EOF", err)
		}
		if ts.Stats().Refusals[reasonTCPIdle] != 1 {
			t.Fatalf("refusals = %v", ts.Stats().Refusals)
		}
		// A connection holding an allocation is not idle-closed.
		user, pass := ts.Credentials()
		cl := newClient(t, "tcp", ts.tcpAddr, user, pass)
		if _, err := allocate(t, cl); err != nil {
			t.Fatal(err)
		}
		time.Sleep(4 * idle)
		if err := cl.CreatePermission(&net.UDPAddr{IP: net.IPv4(8, 8, 8, 8), Port: 9}); err != nil {
			t.Fatalf("allocated TCP connection did not survive the idle timeout: %v", err)
		}
	})
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// TestCloseWithLiveClients: Close tears down allocations and connections that
// clients still hold open, and returns with every goroutine gone.
func TestCloseWithLiveClients(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	udp, _ := net.ListenPacket("udp4", "127.0.0.1:0")
	tcp, _ := net.Listen("tcp4", "127.0.0.1:0")
	s, err := New(Config{Secret: testSecret, RelayIP: net.IPv4(127, 0, 0, 1), RelayBindIP: net.IPv4(127, 0, 0, 1)},
		udp, tcp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range transports {
		addr := udp.LocalAddr().String()
		if tr == "tcp" {
			addr = tcp.Addr().String()
		}
		for range 3 {
			user, pass := s.Credentials()
			if _, err := allocate(t, newClient(t, tr, addr, user, pass)); err != nil {
				t.Fatal(err)
			}
		}
	}
	idle, err := net.Dial("tcp4", tcp.Addr().String()) // no request at all
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if n := s.Stats().Allocations; n != 6 {
		t.Fatalf("%d allocations, want 6", n)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close did not return")
	}
	if n := s.Stats().Allocations; n != 0 {
		t.Fatalf("%d allocations after Close", n)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// TestQuotaConcurrentTCP: TCP connections are served concurrently, yet the
// total quota admits exactly its size.
func TestQuotaConcurrentTCP(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	const limit, clients = 3, 8
	ts := startServer(t, Config{Secret: testSecret, MaxAllocations: limit, MaxAllocationsPerIP: -1})
	now := time.Now().Unix()
	type result struct {
		relay net.PacketConn
		err   error
	}
	results := make(chan result, clients)
	for i := range clients {
		u := strconv.FormatInt(now+600+int64(i), 10)
		c := newClient(t, "tcp", ts.tcpAddr, u, restPassword(testSecret, u))
		go func() {
			relay, err := c.Allocate()
			results <- result{relay, err}
		}()
	}
	ok, quota := 0, 0
	for range clients {
		r := <-results
		switch {
		case r.err == nil:
			ok++
			t.Cleanup(func() { _ = r.relay.Close() })
		case turnCode(r.err) == 486:
			quota++
		default:
			t.Errorf("Allocate: %v", r.err)
		}
	}
	if ok != limit || quota != clients-limit {
		t.Fatalf("%d allocated, %d refused with 486; want %d and %d", ok, quota, limit, clients-limit)
	}
}
