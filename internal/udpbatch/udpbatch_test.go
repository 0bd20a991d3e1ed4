package udpbatch

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"
)

func listen(t testing.TB) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// checkNoLeak fails if goroutines started by the test are still running
// after a settle loop.
func checkNoLeak(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("goroutines: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestConcurrentWritersArriveIntactInOrder: several writers each send a
// numbered sequence while overwriting their buffer right after every
// WriteTo; the reader must get every datagram, intact, in each writer's
// order.
func TestConcurrentWritersArriveIntactInOrder(t *testing.T) {
	base := runtime.NumGoroutine()
	rx := listen(t)
	defer rx.Close()
	if err := rx.SetReadBuffer(4 << 20); err != nil {
		t.Fatal(err)
	}
	b := New(listen(t), Config{QueueLen: 256, MaxBatch: 16})
	const writers, perWriter, size = 8, 500, 1200
	dst := rx.LocalAddr().(*net.UDPAddr)

	type got struct {
		next  int
		count int
	}
	seen := make([]got, writers)
	readDone := make(chan error, 1)
	go func() {
		buf := make([]byte, 2048)
		for n := 0; n < writers*perWriter; n++ {
			_ = rx.SetReadDeadline(time.Now().Add(10 * time.Second))
			m, _, err := rx.ReadFromUDP(buf)
			if err != nil {
				readDone <- err
				return
			}
			if m != size {
				readDone <- errors.New("wrong size")
				return
			}
			w, i := int(buf[0]), int(binary.BigEndian.Uint32(buf[1:]))
			for k := 5; k < size; k++ {
				if buf[k] != byte(w+i+k) {
					readDone <- errors.New("corrupt payload")
					return
				}
			}
			if i != seen[w].next {
				readDone <- errors.New("out of order")
				return
			}
			seen[w].next++
			seen[w].count++
		}
		readDone <- nil
	}()

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			buf := make([]byte, size)
			for i := range perWriter {
				buf[0] = byte(w)
				binary.BigEndian.PutUint32(buf[1:], uint32(i))
				for k := 5; k < size; k++ {
					buf[k] = byte(w + i + k)
				}
				var err error
				if i%2 == 0 {
					_, err = b.WriteTo(buf, dst)
				} else {
					_, err = b.WriteToAddrPort(buf, dst.AddrPort())
				}
				if err != nil {
					t.Error(err)
					return
				}
				// The caller reuses its buffer at once, as pion does.
				for k := range buf {
					buf[k] = 0xEE
				}
				if i%50 == 0 {
					time.Sleep(time.Millisecond) // let the receiver keep up
				}
			}
		})
	}
	wg.Wait()
	if err := <-readDone; err != nil {
		t.Fatalf("reader: %v (seen %+v)", err, seen)
	}
	st := b.Stats()
	if st.Sent != writers*perWriter || st.Errors != 0 {
		t.Fatalf("stats %+v", st)
	}
	if st.Batches == 0 || st.Batches > st.Sent {
		t.Fatalf("batches %d for %d datagrams", st.Batches, st.Sent)
	}
	t.Logf("%d datagrams in %d sendmmsg calls", st.Sent, st.Batches)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	checkNoLeak(t, base)
}

// TestCloseFlushesQueued: everything written before Close reaches the
// peer; writes after Close fail with net.ErrClosed; Close is idempotent
// and closes the socket (reads end).
func TestCloseFlushesQueued(t *testing.T) {
	base := runtime.NumGoroutine()
	rx := listen(t)
	defer rx.Close()
	_ = rx.SetReadBuffer(4 << 20)
	b := New(listen(t), Config{})
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	const n = 1000
	p := make([]byte, 100)
	for i := range n {
		binary.BigEndian.PutUint32(p, uint32(i))
		if _, err := b.WriteToAddrPort(p, dst); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if b.Stats().Sent != n {
		t.Fatalf("sent %d of %d before Close returned", b.Stats().Sent, n)
	}
	buf := make([]byte, 200)
	for i := range n {
		_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := rx.ReadFromUDP(buf); err != nil {
			t.Fatalf("datagram %d: %v", i, err)
		}
		if got := binary.BigEndian.Uint32(buf); got != uint32(i) {
			t.Fatalf("datagram %d carries %d", i, got)
		}
	}
	if _, err := b.WriteToAddrPort(p, dst); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("write after close: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := b.ReadFrom(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	checkNoLeak(t, base)
}

// TestFullQueueWaitsAndDeadline: while the flusher is stuck in a send, a
// full queue makes WriteTo wait; a write deadline turns the wait into a
// timeout (also when set in the past during the wait, as pion's mux does to
// cancel); Close releases waiters with net.ErrClosed and still flushes.
func TestFullQueueWaitsAndDeadline(t *testing.T) {
	base := runtime.NumGoroutine()
	rx := listen(t)
	defer rx.Close()
	inSend := make(chan struct{}, 1)
	release := make(chan struct{})
	var once sync.Once
	b := newConn(listen(t), Config{QueueLen: 4}, func() {
		once.Do(func() { // only the first batch is held up
			inSend <- struct{}{}
			<-release
		})
	})
	dst := rx.LocalAddr().(*net.UDPAddr).AddrPort()
	p := make([]byte, 10)
	if _, err := b.WriteToAddrPort(p, dst); err != nil {
		t.Fatal(err)
	}
	<-inSend // the flusher holds datagram 0 and is stuck
	for i := range 4 {
		if _, err := b.WriteToAddrPort(p, dst); err != nil {
			t.Fatalf("write %d into a queue with room: %v", i, err)
		}
	}
	// Full: a deadline bounds the wait.
	_ = b.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	var ne net.Error
	if _, err := b.WriteToAddrPort(p, dst); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("write into a full queue with a deadline: %v", err)
	}
	// Without one it waits; a deadline in the past cancels the wait.
	_ = b.SetWriteDeadline(time.Time{})
	waiting := make(chan error, 1)
	go func() { _, err := b.WriteToAddrPort(p, dst); waiting <- err }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters == 1 })
	_ = b.SetWriteDeadline(time.Now().Add(-time.Second))
	if err := <-waiting; !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("cancelled wait: %v", err)
	}
	_ = b.SetWriteDeadline(time.Time{})
	// Close releases a waiter, then flushes once the send completes.
	go func() { _, err := b.WriteToAddrPort(p, dst); waiting <- err }()
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return b.waiters == 1 })
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	if err := <-waiting; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("waiter after Close: %v", err)
	}
	close(release)
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if st := b.Stats(); st.Sent != 5 || st.Waits != 3 {
		t.Fatalf("stats %+v, want 5 sent and 3 waits", st)
	}
	checkNoLeak(t, base)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(time.Millisecond)
	}
}

func TestWriteToRejectsNonUDPAddr(t *testing.T) {
	b := New(listen(t), Config{})
	defer b.Close()
	if _, err := b.WriteTo([]byte{1}, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}); err == nil {
		t.Fatal("want an error for a TCP address")
	}
}

func TestIPv6(t *testing.T) {
	rx, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer rx.Close()
	tx, err := net.ListenUDP("udp6", &net.UDPAddr{IP: net.IPv6loopback})
	if err != nil {
		t.Fatal(err)
	}
	b := New(tx, Config{})
	if _, err := b.WriteToAddrPort([]byte("hello"), rx.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := rx.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	if from.Port() != b.LocalAddr().(*net.UDPAddr).AddrPort().Port() {
		t.Fatalf("from %v", from)
	}
	// Reads pass through, allocation-free variant included.
	if _, err := rx.WriteToUDPAddrPort([]byte("back"), from); err != nil {
		t.Fatal(err)
	}
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err = b.ReadFromAddrPort(buf)
	if err != nil || string(buf[:n]) != "back" {
		t.Fatalf("read %q, %v", buf[:n], err)
	}
	_ = b.Close()
}

// The benchmarks compare a plain sendto per datagram with the batched
// Conn, 8 writers sending 1200-byte datagrams to 16 loopback receivers
// (that drain their sockets), as the fan-out does.
func benchSend(b *testing.B, batched bool) {
	const receivers = 16
	var dsts []netip.AddrPort
	var wg sync.WaitGroup
	for range receivers {
		rx := listen(b)
		_ = rx.SetReadBuffer(4 << 20)
		dsts = append(dsts, rx.LocalAddr().(*net.UDPAddr).AddrPort())
		wg.Go(func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := rx.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
			}
		})
		defer rx.Close()
	}
	udp := listen(b)
	_ = udp.SetWriteBuffer(4 << 20)
	var w interface {
		WriteToAddrPort([]byte, netip.AddrPort) (int, error)
	} = udpWriter{udp}
	var bc *Conn
	if batched {
		bc = New(udp, Config{})
		w = bc
	}
	b.SetBytes(1200)
	cpu0 := cpuTime()
	b.ResetTimer()
	b.SetParallelism(4) // 4 × GOMAXPROCS writers
	var idx sync.Mutex
	next := 0
	b.RunParallel(func(pb *testing.PB) {
		idx.Lock()
		dst := dsts[next%receivers]
		next++
		idx.Unlock()
		p := make([]byte, 1200)
		for pb.Next() {
			if _, err := w.WriteToAddrPort(p, dst); err != nil {
				b.Error(err)
				return
			}
		}
	})
	if bc != nil {
		_ = bc.Close() // flushes: the queued datagrams are part of the cost
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		st := bc.Stats()
		if st.Batches > 0 {
			b.ReportMetric(float64(st.Sent)/float64(st.Batches), "datagrams/batch")
		}
	} else {
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		_ = udp.Close()
	}
}

// cpuTime is the process's user+system CPU (receivers included: on
// loopback the receive path runs in the sender's system call).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type udpWriter struct{ c *net.UDPConn }

func (u udpWriter) WriteToAddrPort(p []byte, a netip.AddrPort) (int, error) {
	return u.c.WriteToUDPAddrPort(p, a)
}

func BenchmarkSendto(b *testing.B)  { benchSend(b, false) }
func BenchmarkBatched(b *testing.B) { benchSend(b, true) }
