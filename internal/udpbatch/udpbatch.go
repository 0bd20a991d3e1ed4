// Package udpbatch wraps a UDP socket so that datagrams written to it by many
// goroutines leave in batches: WriteTo copies the datagram into a queue and
// returns, and one flusher goroutine drains the queue with sendmmsg(2)
// (golang.org/x/net's WriteBatch). Batches form by themselves under load,
// while the flusher is inside the previous system call; a lone datagram goes
// out as soon as the flusher wakes, with no timer.
//
// It exists for the WebRTC fan-out: pion writes every RTP packet of every
// viewer with its own sendto on the one shared media socket, and that system
// call was a third of the server's CPU (docs/performance.md).
package udpbatch

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Config tunes a Conn. Zero values take the documented defaults.
type Config struct {
	// QueueLen bounds the datagrams waiting for the flusher (default
	// 4096, ~5 MB of 1200-byte packets). A writer that finds the queue full
	// waits for room, as a blocking sendto waits for send-buffer space.
	QueueLen int
	// MaxBatch bounds the datagrams per sendmmsg call (default 64).
	MaxBatch int
}

func (c *Config) setDefaults() {
	if c.QueueLen <= 0 {
		c.QueueLen = 4096
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 64
	}
}

// Stats are cumulative counters of a Conn.
type Stats struct {
	Sent    uint64 // datagrams the kernel accepted
	Batches uint64 // sendmmsg calls that sent at least one datagram
	Errors  uint64 // datagrams the kernel refused (each skipped, not retried)
	Waits   uint64 // WriteTo calls that found the queue full and waited
	// LastError is the most recent send error, or nil.
	LastError error
}

// item is one queued datagram; buf is owned by the Conn.
type item struct {
	buf  []byte
	addr netip.AddrPort
}

// batchWriter is what ipv4.PacketConn and ipv6.PacketConn have in common.
type batchWriter interface {
	WriteBatch(ms []ipv4.Message, flags int) (int, error)
}

// Conn is a net.PacketConn whose writes are batched. Reads, deadlines on
// reads and LocalAddr pass through to the wrapped socket. It also implements
// ReadFromAddrPort/WriteToAddrPort, which pion's ICE UDP mux uses to avoid an
// allocation per packet.
type Conn struct {
	udp *net.UDPConn
	bw  batchWriter
	cfg Config

	mu            sync.Mutex
	pending       []item
	spare         []item   // the flusher's last batch, recycled
	free          [][]byte // recycled datagram buffers
	closed        bool
	waiters       int
	space         chan struct{} // closed (and replaced) when the flusher takes the queue
	writeDeadline time.Time

	wake chan struct{} // cap 1: the queue went from empty to not empty
	done chan struct{} // closed when the flusher has drained and exited

	sent, batches, errs, waits atomic.Uint64
	lastErr                    atomic.Pointer[error]
	closeOnce                  sync.Once
	closeErr                   error

	hookSend func() // tests: runs in the flusher before each batch
}

// New wraps c and starts its flusher. Close the returned Conn (not c).
func New(c *net.UDPConn, cfg Config) *Conn {
	return newConn(c, cfg, nil)
}

func newConn(c *net.UDPConn, cfg Config, hookSend func()) *Conn {
	cfg.setDefaults()
	b := &Conn{
		udp:   c,
		cfg:   cfg,
		space: make(chan struct{}),
		wake:  make(chan struct{}, 1),
		done:  make(chan struct{}),

		hookSend: hookSend,
	}
	// Both wrap the same sendmmsg; the family only matters for options,
	// but pick the matching one.
	if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.IP.To4() == nil && len(a.IP) == net.IPv6len {
		b.bw = v6Writer{ipv6.NewPacketConn(c)}
	} else {
		b.bw = ipv4.NewPacketConn(c)
	}
	go b.flush()
	return b
}

// v6Writer adapts ipv6.PacketConn (whose Message type is the same
// socket.Message) to batchWriter.
type v6Writer struct{ p *ipv6.PacketConn }

func (w v6Writer) WriteBatch(ms []ipv4.Message, flags int) (int, error) {
	return w.p.WriteBatch(ms, flags)
}

// WriteTo queues a copy of p for addr (a *net.UDPAddr) and returns len(p).
// Send errors are not returned (the datagram is already queued): they are
// counted in Stats.
func (b *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: errors.New("udpbatch: not a *net.UDPAddr")}
	}
	return b.WriteToAddrPort(p, ua.AddrPort())
}

// WriteToAddrPort is WriteTo without the net.Addr.
func (b *Conn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	b.mu.Lock()
	if len(b.pending) >= b.cfg.QueueLen && !b.closed {
		b.waits.Add(1)
	}
	for len(b.pending) >= b.cfg.QueueLen && !b.closed {
		if err := b.waitForSpace(); err != nil {
			b.mu.Unlock()
			return 0, err
		}
	}
	if b.closed {
		b.mu.Unlock()
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: net.UDPAddrFromAddrPort(addr), Err: net.ErrClosed}
	}
	var buf []byte
	if n := len(b.free); n > 0 {
		buf = b.free[n-1]
		b.free = b.free[:n-1]
	}
	if cap(buf) < len(p) {
		buf = make([]byte, 0, max(len(p), 1500))
	}
	// The copy is what lets the caller reuse p at once (pion's SRTP does).
	buf = append(buf[:0], p...)
	wasEmpty := len(b.pending) == 0
	b.pending = append(b.pending, item{buf: buf, addr: addr})
	b.mu.Unlock()
	if wasEmpty {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// waitForSpace waits, with b.mu held on entry and exit, until the flusher
// takes the queue, the Conn closes or the write deadline passes.
func (b *Conn) waitForSpace() error {
	b.waiters++
	ch, dl := b.space, b.writeDeadline
	b.mu.Unlock()
	var err error
	if dl.IsZero() {
		<-ch
	} else if d := time.Until(dl); d <= 0 {
		err = os.ErrDeadlineExceeded
	} else {
		t := time.NewTimer(d)
		select {
		case <-ch:
		case <-t.C:
			err = os.ErrDeadlineExceeded
		}
		t.Stop()
	}
	b.mu.Lock()
	b.waiters--
	if err != nil {
		return &net.OpError{Op: "write", Net: "udp", Err: err}
	}
	return nil
}

// flush is the one goroutine that writes to the socket.
func (b *Conn) flush() {
	defer close(b.done)
	msgs := make([]ipv4.Message, b.cfg.MaxBatch)
	for i := range msgs {
		msgs[i].Buffers = make([][]byte, 1)
	}
	// x/net wants a net.Addr per message; a *net.UDPAddr per peer is kept
	// so that the steady state allocates nothing. Peers come and go, so
	// the cache is dropped when it grows large.
	addrs := map[netip.AddrPort]*net.UDPAddr{}
	for {
		b.mu.Lock()
		for len(b.pending) == 0 && !b.closed {
			b.mu.Unlock()
			<-b.wake
			b.mu.Lock()
		}
		if len(b.pending) == 0 { // closed and drained
			b.mu.Unlock()
			return
		}
		batch := b.pending
		b.pending = b.spare[:0]
		b.spare = nil
		if b.waiters > 0 {
			close(b.space)
			b.space = make(chan struct{})
		}
		b.mu.Unlock()

		if len(addrs) > 4096 {
			clear(addrs)
		}
		for off := 0; off < len(batch); off += len(msgs) {
			chunk := batch[off:min(off+len(msgs), len(batch))]
			for i, it := range chunk {
				ua := addrs[it.addr]
				if ua == nil {
					ua = net.UDPAddrFromAddrPort(it.addr)
					addrs[it.addr] = ua
				}
				msgs[i].Buffers[0] = it.buf
				msgs[i].Addr = ua
			}
			if b.hookSend != nil {
				b.hookSend()
			}
			b.send(msgs[:len(chunk)])
		}

		b.mu.Lock()
		for i := range batch {
			b.free = append(b.free, batch[i].buf)
			batch[i] = item{}
		}
		b.spare = batch[:0]
		b.mu.Unlock()
	}
}

// send writes ms, skipping (and counting) any datagram the kernel refuses.
func (b *Conn) send(ms []ipv4.Message) {
	for len(ms) > 0 {
		n, err := b.bw.WriteBatch(ms, 0)
		if n > 0 {
			b.sent.Add(uint64(n))
			b.batches.Add(1)
			ms = ms[n:]
		}
		if err != nil {
			// sendmmsg reports the error of the first datagram it could
			// not send; drop that one and go on with the rest.
			b.errs.Add(1)
			b.lastErr.Store(&err)
			if len(ms) > 0 {
				ms = ms[1:]
			}
		} else if n == 0 {
			return // nothing sent and no error: do not spin
		}
	}
}

// Stats returns the counters so far.
func (b *Conn) Stats() Stats {
	s := Stats{Sent: b.sent.Load(), Batches: b.batches.Load(), Errors: b.errs.Load(), Waits: b.waits.Load()}
	if e := b.lastErr.Load(); e != nil {
		s.LastError = *e
	}
	return s
}

// Close stops accepting writes, waits until every queued datagram has been
// handed to the kernel, then closes the socket. Idempotent.
func (b *Conn) Close() error {
	b.closeOnce.Do(func() {
		b.mu.Lock()
		b.closed = true
		close(b.space) // release writers waiting for room; they see closed
		b.space = make(chan struct{})
		b.mu.Unlock()
		select {
		case b.wake <- struct{}{}:
		default:
		}
		<-b.done
		b.closeErr = b.udp.Close()
	})
	return b.closeErr
}

// ReadFrom reads from the socket.
func (b *Conn) ReadFrom(p []byte) (int, net.Addr, error) { return b.udp.ReadFrom(p) }

// ReadFromAddrPort reads from the socket without allocating an address.
func (b *Conn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	return b.udp.ReadFromUDPAddrPort(p)
}

// LocalAddr is the socket's address.
func (b *Conn) LocalAddr() net.Addr { return b.udp.LocalAddr() }

// SetDeadline sets the read and write deadlines.
func (b *Conn) SetDeadline(t time.Time) error {
	_ = b.SetWriteDeadline(t)
	return b.udp.SetReadDeadline(t)
}

// SetReadDeadline applies to the socket's reads.
func (b *Conn) SetReadDeadline(t time.Time) error { return b.udp.SetReadDeadline(t) }

// SetWriteDeadline bounds how long WriteTo waits for room in a full queue
// (and interrupts such a wait when set in the past, which is how pion's UDP
// mux cancels a write). It does not touch the socket: the flusher's
// writes serve every writer and must not fail for one of them.
func (b *Conn) SetWriteDeadline(t time.Time) error {
	b.mu.Lock()
	b.writeDeadline = t
	if b.waiters > 0 && !t.IsZero() && !t.After(time.Now()) {
		// Wake the waiters so they see the expired deadline; those whose
		// queue is still full fail, the rest proceed.
		close(b.space)
		b.space = make(chan struct{})
	}
	b.mu.Unlock()
	return nil
}
