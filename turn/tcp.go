package turn

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// tcpListener bounds pion's TCP side: it caps concurrent connections in
// total and per client address (so one address cannot shut others out),
// gives each an idle deadline while it holds no allocation, survives
// transient Accept errors (pion's accept loop would end on the first one)
// and closes the accepted connections on Close (pion leaves them open).
type tcpListener struct {
	net.Listener
	s *Server

	mu     sync.Mutex
	closed bool
	conns  map[string]*tcpConn  // by remote address
	perIP  map[netip.Prefix]int // live connections by clientPrefix
}

func newTCPListener(l net.Listener, s *Server) *tcpListener {
	return &tcpListener{Listener: l, s: s, conns: make(map[string]*tcpConn), perIP: make(map[netip.Prefix]int)}
}

func (l *tcpListener) Accept() (net.Conn, error) {
	var backoff time.Duration
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			retry := errors.As(err, &ne) && ne.Timeout() || isTemporary(err)
			if retry && !errors.Is(err, net.ErrClosed) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.s.log.Warn("TURN TCP accept failed; retrying", "err", err, "backoff", backoff)
				select {
				case <-time.After(backoff):
					continue
				case <-l.s.done:
				}
			}
			// pion's accept loop ends here: release its count.
			l.s.wg.Done()
			return nil, err
		}
		backoff = 0
		ip := clientPrefix(c.RemoteAddr())
		l.mu.Lock()
		reason := ""
		var evicted *tcpConn
		switch {
		case l.closed:
			l.mu.Unlock()
			_ = c.Close()
			continue // the next Accept fails with net.ErrClosed
		case l.s.cfg.MaxTCPConnsPerIP > 0 && l.perIP[ip] >= l.s.cfg.MaxTCPConnsPerIP:
			reason = reasonTCPCapIP
		case l.s.cfg.MaxTCPConns > 0 && len(l.conns) >= l.s.cfg.MaxTCPConns:
			if evicted = l.evictableLocked(ip); evicted != nil {
				evicted.releaseLocked()
			} else {
				reason = reasonTCPCap
			}
		}
		if reason != "" {
			l.mu.Unlock()
			l.s.refuse(reason, c.RemoteAddr().String()) // counted before the peer can see the close
			_ = c.Close()
			continue
		}
		tc := &tcpConn{Conn: c, l: l, key: c.RemoteAddr().String(), ip: ip, remote: c.RemoteAddr(), since: time.Now()}
		l.conns[tc.key] = tc
		l.perIP[ip]++
		l.s.wg.Add(1) // released when pion closes the connection
		l.mu.Unlock()
		if evicted != nil {
			l.s.refuse(reasonTCPEvicted, evicted.key)
			_ = evicted.Conn.Close() // pion's loop for it ends and calls its Close
		}
		return tc, nil
	}
}

// evictableLocked picks the connection to close so that a newcomer from ip
// fits under the global cap: the oldest connection without an allocation of
// the address holding the most connections, provided that address holds at
// least two more than ip does (so equals never displace each other). nil
// when there is none: connections that carry an allocation are never
// evicted. Only runs at the cap, so the linear scans cost nothing otherwise.
func (l *tcpListener) evictableLocked(ip netip.Prefix) *tcpConn {
	var top netip.Prefix
	most := 0
	for p, n := range l.perIP {
		if n > most {
			top, most = p, n
		}
	}
	if most < l.perIP[ip]+2 {
		return nil
	}
	var oldest *tcpConn
	for _, c := range l.conns {
		if c.ip == top && !c.allocated.Load() && (oldest == nil || c.since.Before(oldest.since)) {
			oldest = c
		}
	}
	return oldest
}

// isTemporary matches the accept errors worth retrying (EMFILE and friends
// report Temporary; the method is deprecated but still what net/http uses).
func isTemporary(err error) bool {
	var te interface{ Temporary() bool }
	return errors.As(err, &te) && te.Temporary()
}

// Close stops accepting and closes every accepted connection, which makes
// pion's per-connection loops return.
func (l *tcpListener) Close() error {
	l.mu.Lock()
	l.closed = true
	conns := make([]*tcpConn, 0, len(l.conns))
	for _, c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	err := l.Listener.Close()
	for _, c := range conns {
		_ = c.Conn.Close() // the inner conn: pion still calls tcpConn.Close at the end
	}
	return err
}

func (l *tcpListener) setAllocated(remote string, on bool) {
	l.mu.Lock()
	c := l.conns[remote]
	l.mu.Unlock()
	if c == nil {
		return
	}
	c.allocated.Store(on)
	if !on && l.s.cfg.TCPIdleTimeout > 0 {
		// The connection may sit in a Read without deadline: arm it now.
		_ = c.Conn.SetReadDeadline(time.Now().Add(l.s.cfg.TCPIdleTimeout))
	}
}

// tcpConn is one TURN control connection. Its Read splits the stream into
// TURN frames and hands pion one inspected frame at a time (see inspect), so
// a request with bad credentials is answered with 401 here and never
// reaches pion. pion reads from a single goroutine per connection.
type tcpConn struct {
	net.Conn
	l         *tcpListener
	key       string
	ip        netip.Prefix
	remote    net.Addr
	since     time.Time // accepted
	allocated atomic.Bool
	closeOnce sync.Once
	released  bool // removed from the listener's counts; guarded by l.mu

	in   []byte // bytes read, not yet framed
	out  []byte // inspected frames not yet handed to pion
	rbuf []byte
	rerr error // sticky read error, returned once in and out are drained
}

// tcpReadBuf is the size of one read from the socket.
const tcpReadBuf = 4096

// Read returns inspected frame bytes. While no complete frame is buffered it
// reads from the socket, arming the idle deadline before every read while
// the connection holds no allocation; with one, the allocation lifetime
// bounds it instead.
func (c *tcpConn) Read(b []byte) (int, error) {
	for len(c.out) == 0 {
		n, err := frameLen(c.in)
		if err != nil {
			// Not TURN: pion would close the connection on this too.
			c.in, c.rerr = nil, err
			return 0, err
		}
		if n > 0 {
			r := c.l.s.inspect(c.in[:n], c.remote)
			if r.reply != nil {
				_, _ = c.Conn.Write(r.reply)
			}
			c.out = append(c.out[:0], r.frame...)
			c.in = append(c.in[:0], c.in[n:]...)
			continue
		}
		if c.rerr != nil {
			return 0, c.rerr
		}
		if len(c.in) >= maxTURNFrameLen {
			return 0, errBadFrame // cannot happen: frameLen bounds frames
		}
		c.armDeadline()
		if c.rbuf == nil {
			c.rbuf = make([]byte, tcpReadBuf)
		}
		m, err := c.Conn.Read(c.rbuf)
		c.in = append(c.in, c.rbuf[:m]...)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.l.s.refuse(reasonTCPIdle, c.key)
			}
			c.rerr = err
		}
	}
	n := copy(b, c.out)
	c.out = c.out[n:]
	return n, nil
}

func (c *tcpConn) armDeadline() {
	idle := c.l.s.cfg.TCPIdleTimeout
	if idle <= 0 {
		return
	}
	if c.allocated.Load() {
		_ = c.Conn.SetReadDeadline(time.Time{})
		if !c.allocated.Load() { // deleted meanwhile: don't lose its deadline
			_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
		}
		return
	}
	_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
}

// Close is called by pion when its loop for this connection has ended.
func (c *tcpConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		c.releaseLocked()
		c.l.mu.Unlock()
		c.l.s.wg.Done()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil // we closed it first during shutdown
	}
	return err
}

// releaseLocked removes c from the listener's counts, once (at eviction or
// at Close, whichever comes first).
func (c *tcpConn) releaseLocked() {
	if c.released {
		return
	}
	c.released = true
	if c.l.conns[c.key] == c {
		delete(c.l.conns, c.key)
	}
	decr(c.l.perIP, c.ip)
}
