package turn

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/icey/icey-server/internal/testenv"
)

// restCreds builds a REST username expiring at exp and its password under secret.
func restCreds(exp int64, suffix, secret string) (string, string) {
	u := strconv.FormatInt(exp, 10)
	if suffix != "" {
		u += ":" + suffix
	}
	return u, restPassword(secret, u)
}

// TestBadCredentials401: wrong, expired, forged or malformed credentials get
// 401 Unauthenticated (RFC 8489 §9.2.4), with REALM and NONCE, on both
// transports, from a real pion client; good credentials still allocate.
func TestBadCredentials401(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	rest := startServer(t, Config{Secret: testSecret, UsernameSuffix: "viewer", MaxTTL: 2 * time.Hour})
	static := startServer(t, Config{})
	now := time.Now().Unix()
	valid, _ := restCreds(now+600, "viewer", testSecret)
	type tc struct {
		name       string
		srv        *testServer
		user, pass string
		reason     string
	}
	mk := func(name string, srv *testServer, reason string, up func() (string, string)) tc {
		u, p := up()
		return tc{name, srv, u, p, reason}
	}
	tests := []tc{
		mk("forged", rest, reasonAuth, func() (string, string) { return valid, restPassword("not-the-secret", valid) }),
		mk("expired", rest, reasonExpired, func() (string, string) { return restCreds(now-60, "viewer", testSecret) }),
		mk("too far", rest, reasonTooFar, func() (string, string) { return restCreds(now+3*3600, "viewer", testSecret) }),
		mk("wrong suffix", rest, reasonAuth, func() (string, string) { return restCreds(now+600, "admin", testSecret) }),
		mk("malformed", rest, reasonAuth, func() (string, string) { return "abc:viewer", restPassword(testSecret, "abc:viewer") }),
		mk("static wrong password", static, reasonAuth, func() (string, string) { return "icey", "wrong" }),
		mk("static wrong user", static, reasonAuth, func() (string, string) { return "admin", "icey" }),
	}
	for _, tr := range transports {
		for _, tt := range tests {
			t.Run(tr+"/"+tt.name, func(t *testing.T) {
				before := tt.srv.Stats().Refusals[tt.reason]
				_, err := allocate(t, newClient(t, tr, tt.srv.addr(tr), tt.user, tt.pass))
				if code := turnCode(err); code != 401 {
					t.Fatalf("Allocate: %v (code %d), want 401", err, code)
				}
				if d := tt.srv.Stats().Refusals[tt.reason] - before; d != 1 {
					t.Fatalf("refusal %q counted %d times, want once", tt.reason, d)
				}

				// The same over raw STUN: the 401 carries REALM and NONCE
				// and no MESSAGE-INTEGRITY (RFC 8489 §9.2.4).
				r := dialRaw(t, tr, "127.0.0.1", tt.srv.addr(tr))
				r.challenge(tt.user, tt.pass)
				res := r.authed(stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransportUDP)
				var code stun.ErrorCodeAttribute
				if res.Type.Class != stun.ClassErrorResponse || code.GetFrom(res) != nil || code.Code != stun.CodeUnauthorized {
					t.Fatalf("raw Allocate answered %v (%v), want a 401 error response", res, code)
				}
				var realm stun.Realm
				var nonce stun.Nonce
				if realm.GetFrom(res) != nil || realm.String() != DefaultRealm || nonce.GetFrom(res) != nil {
					t.Errorf("401 without REALM/NONCE: %v", res)
				}
				if res.Contains(stun.AttrMessageIntegrity) {
					t.Error("401 carries MESSAGE-INTEGRITY")
				}
			})
		}
		t.Run(tr+"/valid", func(t *testing.T) {
			user, pass := rest.Credentials()
			if _, err := allocate(t, newClient(t, tr, rest.addr(tr), user, pass)); err != nil {
				t.Fatalf("valid REST credentials: %v", err)
			}
			if _, err := allocate(t, newClient(t, tr, static.addr(tr), "icey", "icey")); err != nil {
				t.Fatalf("valid static credentials: %v", err)
			}
		})
	}
	// Integrity over every other authenticated method: a Refresh or
	// CreatePermission with a forged key on a live allocation is a 401 too
	// and changes nothing.
	for _, tr := range transports {
		t.Run(tr+"/forged refresh", func(t *testing.T) {
			user, pass := rest.Credentials()
			r := newRawSession(t, tr, rest.addr(tr), user, pass)
			good := r.integrty
			r.integrty = stun.NewLongTermIntegrity(user, DefaultRealm, "forged")
			res := r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(0))
			var code stun.ErrorCodeAttribute
			if code.GetFrom(res) != nil || code.Code != stun.CodeUnauthorized {
				t.Fatalf("forged Refresh answered %v, want 401", res)
			}
			r.integrty = good
			res = r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(60))
			if res.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("allocation gone after a forged Refresh(0): %v", res)
			}
			_ = r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(0))
		})
	}
	waitFor(t, "allocations released", func() bool {
		return rest.Stats().Allocations == 0 && static.Stats().Allocations == 0
	})
}

func lifetimeAttr(secs uint32) stun.RawAttribute {
	v := make([]byte, 4)
	binary.BigEndian.PutUint32(v, secs)
	return stun.RawAttribute{Type: stun.AttrLifetime, Value: v}
}

func lifetimeOf(t *testing.T, res *stun.Message) time.Duration {
	t.Helper()
	v, err := res.Get(stun.AttrLifetime)
	if err != nil || len(v) != 4 {
		t.Fatalf("no LIFETIME in %v", res)
	}
	return time.Duration(binary.BigEndian.Uint32(v)) * time.Second
}

// openIdle dials n TCP connections from localIP that never send anything.
// A refused connection may already fail in connect (the server resets it at
// once); those are counted in reset.
func openIdle(t *testing.T, localIP, server string, n int) (conns []net.Conn, reset int) {
	t.Helper()
	conns = make([]net.Conn, 0, n)
	for i := range n {
		c, err := dialTCPFrom(localIP, server)
		if errors.Is(err, syscall.ECONNRESET) {
			reset++
			continue
		}
		if err != nil {
			t.Fatalf("dial %d from %s: %v", i, localIP, err)
		}
		conns = append(conns, c)
	}
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})
	return conns, reset
}

// closedByServer reports which of conns the server has closed (EOF or reset
// within wait).
func closedByServer(conns []net.Conn, wait time.Duration) (closed int) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.SetReadDeadline(time.Now().Add(wait))
			_, err := c.Read(make([]byte, 1))
			if errors.Is(err, io.EOF) || isReset(err) {
				mu.Lock()
				closed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return closed
}

// TestTCPPerAddressCap: one address opening many idle TCP connections hits
// its own cap; a client from another address still connects and
// allocates; the idle connections are closed after the idle bound, and then
// the first address can connect again.
func TestTCPPerAddressCap(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	const perIP, total, flood = 8, 40, 60
	idle := time.Second
	ts := startServer(t, Config{Secret: testSecret, MaxTCPConns: total, MaxTCPConnsPerIP: perIP, TCPIdleTimeout: idle})

	start := time.Now()
	attacker, reset := openIdle(t, "127.0.0.1", ts.tcpAddr, flood)
	waitFor(t, "per-address refusals", func() bool { return ts.Stats().Refusals[reasonTCPCapIP] == flood-perIP })

	// The victim from another address: a real pion client over TCP allocates.
	user, pass := ts.Credentials()
	victim := newClientFrom(t, "tcp", "127.0.0.2", ts.tcpAddr, user, pass)
	if _, err := allocate(t, victim); err != nil {
		t.Fatalf("client from 127.0.0.2 during the flood: %v", err)
	}
	if n := ts.Stats().Refusals[reasonTCPCap]; n != 0 {
		t.Errorf("global cap hit %d times by one address", n)
	}

	// Every attacker connection is closed: the over-cap ones at once, the
	// accepted ones after the idle bound.
	if n := closedByServer(attacker, 10*time.Second) + reset; n != flood {
		t.Fatalf("%d of %d idle connections closed by the server", n, flood)
	}
	t.Logf("all %d idle connections from one address closed %v after the flood started (idle bound %v)", flood, time.Since(start).Round(time.Millisecond), idle)
	if n := ts.Stats().Refusals[reasonTCPIdle]; n != perIP {
		t.Errorf("tcp_idle refusals = %d, want %d", n, perIP)
	}
	// The victim's allocated connection is not idle-closed.
	if err := victim.CreatePermission(&net.UDPAddr{IP: net.IPv4(8, 8, 8, 8), Port: 9}); err != nil {
		t.Fatalf("victim's allocated TCP connection did not survive: %v", err)
	}
	// Its slots are free again: the first address gets a TCP binding.
	if _, err := newClient(t, "tcp", ts.tcpAddr, "", "").SendBindingRequest(); err != nil {
		t.Fatalf("binding from 127.0.0.1 after its idle connections were closed: %v", err)
	}
}

// TestTCPFloodDefaults is the reported attack with the default limits: more
// idle TCP connections from one address than the global cap. Another address
// still gets TURN over TCP.
func TestTCPFloodDefaults(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	ts := startServer(t, Config{Secret: testSecret})
	flood := DefaultMaxTCPConns + 100
	start := time.Now()
	attacker, _ := openIdle(t, "127.0.0.1", ts.tcpAddr, flood)
	waitFor(t, "per-address refusals", func() bool {
		return ts.Stats().Refusals[reasonTCPCapIP] == uint64(flood-DefaultMaxTCPConnsPerIP)
	})
	t.Logf("%d connections from one address: %d accepted, %d refused in %v", flood, DefaultMaxTCPConnsPerIP,
		flood-DefaultMaxTCPConnsPerIP, time.Since(start).Round(time.Millisecond))
	user, pass := ts.Credentials()
	if _, err := allocate(t, newClientFrom(t, "tcp", "127.0.0.2", ts.tcpAddr, user, pass)); err != nil {
		t.Fatalf("client from 127.0.0.2 during the flood: %v", err)
	}
	for _, c := range attacker {
		_ = c.Close()
	}
}

// burst allocates n times concurrently from localIP with distinct REST users.
func burst(t *testing.T, ts *testServer, tr, localIP string, n int, seq *int64) (relays []net.PacketConn, refused int) {
	t.Helper()
	type result struct {
		relay net.PacketConn
		err   error
	}
	results := make(chan result, n)
	now := time.Now().Unix()
	for range n {
		*seq++
		u, p := restCreds(now+600+*seq, "", testSecret)
		c := newClientFrom(t, tr, localIP, ts.addr(tr), u, p)
		go func() {
			relay, err := c.Allocate()
			results <- result{relay, err}
		}()
	}
	for range n {
		r := <-results
		switch {
		case r.err == nil:
			relays = append(relays, r.relay)
			t.Cleanup(func() { _ = r.relay.Close() })
		case turnCode(r.err) == 486:
			refused++
		default:
			t.Errorf("Allocate from %s: %v", localIP, r.err)
		}
	}
	return relays, refused
}

// TestAllocationBurst: a burst from one IP is refused (486) beyond the
// per-IP quota; another IP still allocates; the global quota holds; and once
// the first IP's clients close, it can allocate again at once.
func TestAllocationBurst(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	const perIP, total = 4, 6
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			ts := startServer(t, Config{Secret: testSecret, MaxAllocationsPerIP: perIP, MaxAllocations: total})
			var seq int64
			relays, refused := burst(t, ts, tr, "127.0.0.1", 2*perIP, &seq)
			if len(relays) != perIP || refused != perIP {
				t.Fatalf("burst of %d from one IP: %d allocated, %d refused; want %d and %d", 2*perIP, len(relays), refused, perIP, perIP)
			}
			if n := ts.Stats().Refusals[reasonQuotaIP]; n != perIP {
				t.Fatalf("quota_ip refusals = %d, want %d", n, perIP)
			}
			// Another IP is not affected by the first one's quota...
			other, refused := burst(t, ts, tr, "127.0.0.2", total-perIP, &seq)
			if len(other) != total-perIP || refused != 0 {
				t.Fatalf("other IP: %d allocated, %d refused", len(other), refused)
			}
			// ...but the global quota holds for a third.
			if _, refused := burst(t, ts, tr, "127.0.0.3", 1, &seq); refused != 1 {
				t.Fatal("allocation beyond the global quota was not refused")
			}
			if n := ts.Stats().Refusals[reasonQuotaTotal]; n != 1 {
				t.Fatalf("quota_total refusals = %d, want 1", n)
			}
			if st := ts.Stats(); st.Allocations != total {
				t.Fatalf("Stats().Allocations = %d, want %d", st.Allocations, total)
			}

			// The first IP's clients close (Refresh lifetime 0): its slots
			// come back promptly, not after the allocation lifetime.
			closed := time.Now()
			for _, r := range relays {
				_ = r.Close()
			}
			waitFor(t, "slots released", func() bool { return ts.Stats().Allocations == total-perIP })
			again, refused := burst(t, ts, tr, "127.0.0.1", perIP, &seq)
			if len(again) != perIP || refused != 0 {
				t.Fatalf("after closing: %d allocated, %d refused; want %d and 0", len(again), refused, perIP)
			}
			t.Logf("%s: the same IP allocated %d again %v after its clients closed", tr, perIP, time.Since(closed).Round(time.Millisecond))
			st := ts.Stats()
			if st.Allocations != total || st.AllocationsTotal != uint64(2*perIP+total-perIP) {
				t.Fatalf("Stats() = %+v", st)
			}
		})
	}
}

// rawAllocate allocates over raw STUN with a LIFETIME attribute and returns
// the session and the granted lifetime.
func rawAllocate(t *testing.T, ts *testServer, tr string, lifetime uint32) (*rawSession, time.Duration) {
	t.Helper()
	user, pass := ts.Credentials()
	r := dialRaw(t, tr, "127.0.0.1", ts.addr(tr))
	r.challenge(user, pass)
	res := r.authed(stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransportUDP, lifetimeAttr(lifetime))
	if res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Allocate with LIFETIME %d: %v", lifetime, res)
	}
	return r, lifetimeOf(t, res)
}

// TestRequestedLifetime: the lifetime a client asks for is granted up to the
// maximum (pion alone falls back to 10 minutes for anything >= 1 h), on
// Allocate and Refresh, and the allocation really ends then.
func TestRequestedLifetime(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	for _, tr := range transports {
		t.Run(tr+"/short max", func(t *testing.T) {
			const maxLife = 3 * time.Second
			ts := startServer(t, Config{Secret: testSecret, MaxLifetime: maxLife})
			for _, req := range []uint32{2, 7200} {
				start := time.Now()
				_, got := rawAllocate(t, ts, tr, req)
				want := min(time.Duration(req)*time.Second, maxLife)
				if got != want {
					t.Fatalf("requested %ds: granted %v, want %v", req, got, want)
				}
				waitFor(t, "allocation expiry", func() bool { return ts.Stats().Allocations == 0 })
				if el := time.Since(start); el < want-500*time.Millisecond {
					t.Fatalf("allocation of %v ended after %v", want, el)
				}
				t.Logf("requested %ds: granted %v, expired after %v", req, got, time.Since(start).Round(10*time.Millisecond))
			}
			// Refresh is clamped the same way.
			r, _ := rawAllocate(t, ts, tr, 1)
			res := r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(7200))
			if res.Type.Class != stun.ClassSuccessResponse || lifetimeOf(t, res) != maxLife {
				t.Fatalf("Refresh(7200): %v, want LIFETIME %v", res, maxLife)
			}
			res = r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(0))
			if res.Type.Class != stun.ClassSuccessResponse {
				t.Fatalf("Refresh(0): %v", res)
			}
			waitFor(t, "released", func() bool { return ts.Stats().Allocations == 0 })
		})
		t.Run(tr+"/default max", func(t *testing.T) {
			ts := startServer(t, Config{Secret: testSecret})
			for _, tt := range []struct {
				req  uint32
				want time.Duration
			}{{1800, 30 * time.Minute}, {3600, DefaultMaxLifetime}, {86400, DefaultMaxLifetime}} {
				r, got := rawAllocate(t, ts, tr, tt.req)
				if got != tt.want {
					t.Errorf("requested %ds: granted %v, want %v", tt.req, got, tt.want)
				}
				_ = r.authed(stun.NewType(stun.MethodRefresh, stun.ClassRequest), lifetimeAttr(0))
			}
			waitFor(t, "released", func() bool { return ts.Stats().Allocations == 0 })
		})
	}
}

// TestTCPGlobalCapFairness: when several addresses fill the global TCP cap
// with idle connections, a newcomer from another address displaces an idle
// connection of the biggest holder; connections carrying an allocation are
// never displaced, and equals do not displace each other.
func TestTCPGlobalCapFairness(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	t.Run("idle flood from two addresses", func(t *testing.T) {
		ts := startServer(t, Config{Secret: testSecret, MaxTCPConns: 10, MaxTCPConnsPerIP: 8, TCPIdleTimeout: -1})
		big, _ := openIdle(t, "127.0.0.1", ts.tcpAddr, 8)
		openIdle(t, "127.0.0.3", ts.tcpAddr, 2)
		waitFor(t, "10 connections", func() bool {
			ts.tcp.mu.Lock()
			defer ts.tcp.mu.Unlock()
			return len(ts.tcp.conns) == 10
		})
		user, pass := ts.Credentials()
		if _, err := allocate(t, newClientFrom(t, "tcp", "127.0.0.2", ts.tcpAddr, user, pass)); err != nil {
			t.Fatalf("client from 127.0.0.2 at the global cap: %v", err)
		}
		st := ts.Stats().Refusals
		if st[reasonTCPEvicted] != 1 || st[reasonTCPCap] != 0 {
			t.Fatalf("refusals = %v, want one %s", st, reasonTCPEvicted)
		}
		if n := closedByServer(big, 2*time.Second); n != 1 {
			t.Fatalf("%d connections of the biggest holder closed, want 1", n)
		}
	})
	t.Run("allocated connections stay", func(t *testing.T) {
		ts := startServer(t, Config{Secret: testSecret, MaxTCPConns: 3, MaxTCPConnsPerIP: 3, TCPIdleTimeout: -1})
		var clients []interface{ SendBindingRequest() (net.Addr, error) }
		for range 3 {
			user, pass := ts.Credentials()
			c := newClientFrom(t, "tcp", "127.0.0.1", ts.tcpAddr, user, pass)
			if _, err := allocate(t, c); err != nil {
				t.Fatal(err)
			}
			clients = append(clients, c)
		}
		late, err := dialTCPFrom("127.0.0.2", ts.tcpAddr)
		if err == nil {
			defer late.Close()
			if n := closedByServer([]net.Conn{late}, 10*time.Second); n != 1 {
				t.Fatal("connection over the cap was not closed")
			}
		}
		st := ts.Stats().Refusals
		if st[reasonTCPCap] != 1 || st[reasonTCPEvicted] != 0 {
			t.Fatalf("refusals = %v, want one %s", st, reasonTCPCap)
		}
		for i, c := range clients {
			if _, err := c.SendBindingRequest(); err != nil {
				t.Fatalf("allocated client %d lost its connection: %v", i, err)
			}
		}
	})
}

// TestQuotaReleasedOnTCPClose: a TCP client that just drops its connection
// (no Refresh) gives its allocation, and its quota slot, back at once.
func TestQuotaReleasedOnTCPClose(t *testing.T) {
	testenv.LoopbackOnly(t)
	leakCheck(t)
	const perIP = 3
	ts := startServer(t, Config{Secret: testSecret, MaxAllocationsPerIP: perIP})
	alloc := func() (*rawSession, *stun.Message) {
		user, pass := ts.Credentials()
		r := dialRaw(t, "tcp", "127.0.0.1", ts.tcpAddr)
		r.challenge(user, pass)
		return r, r.authed(stun.NewType(stun.MethodAllocate, stun.ClassRequest), reqTransportUDP)
	}
	var sessions []*rawSession
	for range perIP {
		r, res := alloc()
		if res.Type.Class != stun.ClassSuccessResponse {
			t.Fatalf("Allocate: %v", res)
		}
		sessions = append(sessions, r)
	}
	_, res := alloc()
	var code stun.ErrorCodeAttribute
	if code.GetFrom(res) != nil || code.Code != stun.CodeAllocQuotaReached {
		t.Fatalf("Allocate over the per-IP quota: %v, want 486", res)
	}
	closed := time.Now()
	_ = sessions[0].conn.Close()
	waitFor(t, "allocation released", func() bool { return ts.Stats().Allocations == perIP-1 })
	if _, res := alloc(); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Allocate after a connection closed: %v", res)
	}
	t.Logf("slot reusable %v after the TCP connection closed", time.Since(closed).Round(time.Millisecond))
}
