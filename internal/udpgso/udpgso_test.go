package udpgso

import (
	"bytes"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// pair is a wrapped sender socket and a plain receiver on loopback.
func pair(t *testing.T, network, mode string) (*Conn, *net.UDPConn, netip.AddrPort) {
	t.Helper()
	var laddr *net.UDPAddr
	var raddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	switch network {
	case "udp4":
		laddr = &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	case "udp": // dual-stack wildcard socket, as the server binds by default
		laddr = &net.UDPAddr{}
	case "udp6":
		laddr = &net.UDPAddr{IP: net.IPv6loopback}
		raddr = &net.UDPAddr{IP: net.IPv6loopback}
	}
	s, err := net.ListenUDP(network, laddr)
	if err != nil {
		t.Fatalf("listen %s: %v", network, err)
	}
	rnet := "udp4"
	if network == "udp6" {
		rnet = "udp6"
	}
	r, err := net.ListenUDP(rnet, raddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	c, err := New(s, mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); r.Close() })
	return c, r, r.LocalAddr().(*net.UDPAddr).AddrPort()
}

// datagram i of a test stream: size bytes, every byte tagged with i.
func datagram(i, size int) []byte {
	b := bytes.Repeat([]byte{byte(i)}, size)
	b[0] = byte(i >> 8)
	return b
}

// receive reads n datagrams (or fails after a second without one).
func receive(t *testing.T, r *net.UDPConn, n int) [][]byte {
	t.Helper()
	var out [][]byte
	buf := make([]byte, 70000)
	for len(out) < n {
		if err := r.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		k, err := r.Read(buf)
		if err != nil {
			t.Fatalf("received %d of %d datagrams: %v", len(out), n, err)
		}
		out = append(out, append([]byte(nil), buf[:k]...))
	}
	return out
}

func expectNone(t *testing.T, r *net.UDPConn) {
	t.Helper()
	buf := make([]byte, 70000)
	if err := r.SetReadDeadline(time.Now().Add(100 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if k, err := r.Read(buf); err == nil {
		t.Fatalf("unexpected datagram of %d bytes", k)
	}
}

// A frame's packets (equal sizes, a shorter last, then another NALU's, an
// odd-sized one and a larger one) written between Begin and Flush arrive as
// the same datagrams in the same order, sent with one system call, and
// nothing leaves before Flush.
func TestBatchArrivesWholeInOrder(t *testing.T) {
	for _, network := range []string{"udp4", "udp", "udp6"} {
		for _, mode := range []string{ModeGSO, ModeSendmmsg} {
			t.Run(network+"/"+mode, func(t *testing.T) {
				c, r, dst := pair(t, network, mode)
				if mode == ModeGSO && c.Mode() != ModeGSO {
					t.Fatalf("this kernel cannot GSO (%s): %s", c.Mode(), c.Stats().Reason)
				}
				b := c.Open(dst)
				if b == nil {
					t.Fatal("Open returned nil")
				}
				defer b.Close()
				sizes := []int{1236, 1236, 1236, 400, 1236, 1236, 900, 77, 1300, 1300, 1300, 1300}
				var want [][]byte
				b.Begin()
				before := c.Stats()
				for i, n := range sizes {
					d := datagram(i, n)
					want = append(want, d)
					if k, err := c.WriteToAddrPort(d, dst); err != nil || k != n {
						t.Fatalf("write %d: %d, %v", i, k, err)
					}
					clear(d[1:]) // the Conn must have kept its own copy
				}
				expectNone(t, r)
				b.Flush()
				got := receive(t, r, len(sizes))
				for i := range want {
					w := datagram(i, sizes[i])
					if !bytes.Equal(got[i], w) {
						t.Fatalf("datagram %d: got %d bytes starting %v, want %d bytes starting %v", i, len(got[i]), got[i][:2], len(w), w[:2])
					}
				}
				st := c.Stats()
				if d := st.Syscalls - before.Syscalls; d != 1 {
					t.Errorf("%d system calls for one batch, want 1", d)
				}
				if d := st.Datagrams - before.Datagrams; d != uint64(len(sizes)) {
					t.Errorf("datagrams counted %d, want %d", d, len(sizes))
				}
				wantSeg := uint64(0)
				if mode == ModeGSO {
					// runs: [1236 x3, 400] [1236 x2, 900] [77] [1300 x4]
					wantSeg = 4 + 3 + 4
				}
				if st.Segmented != wantSeg {
					t.Errorf("segmented %d, want %d", st.Segmented, wantSeg)
				}
				if st.Errors != 0 {
					t.Errorf("errors %d", st.Errors)
				}
			})
		}
	}
}

// More than one sendmmsg's worth (messages and bytes) held at once goes
// out in order, early, without loss.
func TestBatchOverflowSendsEarly(t *testing.T) {
	for _, mode := range []string{ModeGSO, ModeSendmmsg} {
		t.Run(mode, func(t *testing.T) {
			c, r, dst := pair(t, "udp4", mode)
			b := c.Open(dst)
			defer b.Close()
			const n = 300 // > maxMsgs datagrams and > maxHeld bytes
			b.Begin()
			for i := 0; i < n; i++ {
				size := 1200
				if i%7 == 6 {
					size = 300 + i // uneven runs
				}
				if _, err := c.WriteToAddrPort(datagram(i, size), dst); err != nil {
					t.Fatal(err)
				}
			}
			b.Flush()
			got := receive(t, r, n)
			for i, g := range got {
				if g[0] != byte(i>>8) || g[1] != byte(i) {
					t.Fatalf("datagram %d arrived as %d", i, int(g[0])<<8|int(g[1]))
				}
			}
			if st := c.Stats(); st.Datagrams != n || st.Errors != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

// Writes outside Begin/Flush, to other destinations, after Close, and in
// sendto mode leave at once.
func TestUnbatchedWritesLeaveAtOnce(t *testing.T) {
	c, r, dst := pair(t, "udp4", ModeGSO)
	if _, err := c.WriteToAddrPort(datagram(1, 100), dst); err != nil {
		t.Fatal(err)
	}
	receive(t, r, 1)
	b := c.Open(dst)
	if c.Open(dst) != nil {
		t.Fatal("a second Batch for one destination")
	}
	if st := c.Stats(); st.Batches != 1 {
		t.Fatalf("batches %d", st.Batches)
	}
	// Open but not begun: at once.
	if _, err := c.WriteTo(datagram(2, 100), net.UDPAddrFromAddrPort(dst)); err != nil {
		t.Fatal(err)
	}
	receive(t, r, 1)
	// Begun: another destination is not held.
	r2, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer r2.Close()
	b.Begin()
	if _, err := c.WriteToAddrPort(datagram(3, 100), r2.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	receive(t, r2, 1)
	// Held, then Close flushes it.
	if _, err := c.WriteToAddrPort(datagram(4, 100), dst); err != nil {
		t.Fatal(err)
	}
	expectNone(t, r)
	b.Close()
	if g := receive(t, r, 1); g[0][1] != 4 {
		t.Fatalf("got datagram %d", g[0][1])
	}
	b.Begin() // after Close: holds nothing
	if _, err := c.WriteToAddrPort(datagram(5, 100), dst); err != nil {
		t.Fatal(err)
	}
	receive(t, r, 1)
	if st := c.Stats(); st.Batches != 0 {
		t.Fatalf("batches %d after Close", st.Batches)
	}
	// A nil Batch is valid and inert.
	var nb *Batch
	nb.Begin()
	nb.Flush()
	nb.Close()

	cs, rs, dsts := pair(t, "udp4", ModeSendto)
	if cs.Open(dsts) != nil {
		t.Fatal("sendto mode opened a Batch")
	}
	if _, err := cs.WriteToAddrPort(datagram(6, 100), dsts); err != nil {
		t.Fatal(err)
	}
	receive(t, rs, 1)
	if st := cs.Stats(); st.Mode != ModeSendto || st.Reason == "" {
		t.Fatalf("stats %+v", st)
	}
	if _, err := New(cs.udp, "fast"); err == nil {
		t.Fatal("an unknown mode was accepted")
	}
}

// Writers on other goroutines (RTCP, retransmissions) may write to a
// destination while its pump holds a batch: every datagram arrives intact.
func TestConcurrentWriters(t *testing.T) {
	c, r, dst := pair(t, "udp4", ModeGSO)
	b := c.Open(dst)
	defer b.Close()
	const rounds, per, others = 200, 8, 3
	var wg sync.WaitGroup
	for w := 0; w < others; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				if _, err := c.WriteToAddrPort(bytes.Repeat([]byte{0xee}, 90), dst); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for i := 0; i < rounds; i++ {
		b.Begin()
		for k := 0; k < per; k++ {
			if _, err := c.WriteToAddrPort(datagram(i*per+k, 1200), dst); err != nil {
				t.Fatal(err)
			}
		}
		b.Flush()
	}
	wg.Wait()
	got := receive(t, r, rounds*per+others*rounds)
	next := 0
	for _, g := range got {
		if len(g) == 90 {
			if !bytes.Equal(g, bytes.Repeat([]byte{0xee}, 90)) {
				t.Fatal("a concurrent datagram was corrupted")
			}
			continue
		}
		if want := datagram(next, 1200); !bytes.Equal(g, want) {
			t.Fatalf("pump datagram %d out of order or corrupted", next)
		}
		next++
	}
	if next != rounds*per {
		t.Fatalf("%d pump datagrams, want %d", next, rounds*per)
	}
}

func BenchmarkFlush(b *testing.B) {
	for _, mode := range []string{ModeGSO, ModeSendmmsg, ModeSendto} {
		b.Run(mode, func(b *testing.B) {
			s, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			r, _ := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			defer r.Close()
			go func() {
				buf := make([]byte, 2048)
				for {
					if _, err := r.Read(buf); err != nil {
						return
					}
				}
			}()
			c, err := New(s, mode)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			dst := r.LocalAddr().(*net.UDPAddr).AddrPort()
			bt := c.Open(dst)
			pkt := make([]byte, 1236)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				bt.Begin()
				for k := 0; k < 8; k++ {
					_, _ = c.WriteToAddrPort(pkt, dst)
				}
				bt.Flush()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*8), "ns/datagram")
		})
	}
}

// A route that cannot segment (the kernel answers a GSO message with EIO,
// as for a device without checksum offload) switches the Conn to one
// message per datagram for good, says why, and loses nothing: the refused
// batch is sent again that way.
func TestGSORefusedFallsBack(t *testing.T) {
	c, r, dst := pair(t, "udp4", ModeGSO)
	refused := 0
	c.sendmmsg = func(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
		if msgs[0].hdr.Controllen != 0 {
			refused++
			return 0, unix.EIO
		}
		return sendmmsg(fd, msgs)
	}
	b := c.Open(dst)
	defer b.Close()
	for round := 0; round < 2; round++ {
		b.Begin()
		for i := 0; i < 6; i++ {
			if _, err := c.WriteToAddrPort(datagram(round*6+i, 1200), dst); err != nil {
				t.Fatal(err)
			}
		}
		b.Flush()
		for i, g := range receive(t, r, 6) {
			if !bytes.Equal(g, datagram(round*6+i, 1200)) {
				t.Fatalf("round %d datagram %d wrong", round, i)
			}
		}
	}
	st := c.Stats()
	if refused != 1 || st.Mode != ModeSendmmsg || !strings.Contains(st.Reason, "GSO send failed") ||
		st.Datagrams != 12 || st.Segmented != 0 || st.Errors != 0 {
		t.Fatalf("refused %d times; stats %+v", refused, st)
	}
}
