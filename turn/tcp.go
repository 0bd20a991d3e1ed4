package turn

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// tcpListener bounds pion's TCP side: it caps concurrent connections, gives
// each an idle deadline while it holds no allocation, survives transient
// Accept errors (pion's accept loop would end on the first one) and closes
// the accepted connections on Close (pion leaves them open).
type tcpListener struct {
	net.Listener
	s *Server

	mu     sync.Mutex
	closed bool
	conns  map[string]*tcpConn // by remote address
}

func newTCPListener(l net.Listener, s *Server) *tcpListener {
	return &tcpListener{Listener: l, s: s, conns: make(map[string]*tcpConn)}
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
		l.mu.Lock()
		switch {
		case l.closed:
			l.mu.Unlock()
			_ = c.Close()
			continue // the next Accept fails with net.ErrClosed
		case l.s.cfg.MaxTCPConns > 0 && len(l.conns) >= l.s.cfg.MaxTCPConns:
			l.mu.Unlock()
			l.s.refuse(reasonTCPCap, c.RemoteAddr().String()) // counted before the peer can see the close
			_ = c.Close()
			continue
		}
		tc := &tcpConn{Conn: c, l: l, key: c.RemoteAddr().String()}
		l.conns[tc.key] = tc
		l.s.wg.Add(1) // released when pion closes the connection
		l.mu.Unlock()
		return tc, nil
	}
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

// tcpConn is one TURN control connection.
type tcpConn struct {
	net.Conn
	l         *tcpListener
	key       string
	allocated atomic.Bool
	closeOnce sync.Once
}

// Read arms the idle deadline before every read while the connection holds
// no allocation; with one, the allocation lifetime bounds it instead.
func (c *tcpConn) Read(b []byte) (int, error) {
	if idle := c.l.s.cfg.TCPIdleTimeout; idle > 0 {
		if c.allocated.Load() {
			_ = c.Conn.SetReadDeadline(time.Time{})
			if !c.allocated.Load() { // deleted meanwhile: don't lose its deadline
				_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
			}
		} else {
			_ = c.Conn.SetReadDeadline(time.Now().Add(idle))
		}
	}
	n, err := c.Conn.Read(b)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		c.l.s.refuse(reasonTCPIdle, c.key)
	}
	return n, err
}

// Close is called by pion when its loop for this connection has ended.
func (c *tcpConn) Close() error {
	err := c.Conn.Close()
	c.closeOnce.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.key] == c {
			delete(c.l.conns, c.key)
		}
		c.l.mu.Unlock()
		c.l.s.wg.Done()
	})
	if errors.Is(err, net.ErrClosed) {
		err = nil // we closed it first during shutdown
	}
	return err
}
