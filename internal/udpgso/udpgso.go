// Package udpgso wraps the shared WebRTC media socket so that one sender's
// consecutive datagrams to one destination leave in one system call, with
// UDP generic segmentation offload (UDP_SEGMENT, Linux >= 4.18) where the
// kernel has it.
//
// The WebRTC fan-out writes every packet of every viewer through pion's SRTP
// and ICE layers, which end in one write on the shared socket per packet. A
// viewer's packets of one video frame are FU-A fragments of equal size (the
// last of each NAL unit may be shorter), so after SRTP they are runs of
// equal-sized datagrams to one address: what one GSO message carries. The
// session's pump brackets the writes of each batch it reads from the hub with
// a Batch's Begin and Flush; the Conn holds a copy of every datagram written
// to that Batch's destination in between (whichever goroutine writes it) and
// Flush sends them in order with one sendmmsg(2), one message per run of
// equal sizes. Nothing waits for a later frame: Flush runs at the end of
// every pump batch.
//
// Writes to destinations without an open Batch (ICE, DTLS, RTCP outside a
// batch, peers the caller does not batch, such as TURN-relayed ones) go out
// at once with one sendto, as without the wrapper. Where the kernel has no
// UDP_SEGMENT, or a GSO send fails with an error that means this route
// cannot segment (EIO, EINVAL, ENOPROTOOPT, EOPNOTSUPP), the Conn falls back
// for good to one message per datagram and says why in Stats.
package udpgso

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Modes: how a Conn sends.
const (
	// ModeGSO: what one batch holds for a destination leaves in one
	// sendmmsg(2) whose messages are runs of equal-sized datagrams, a run
	// of more than one with UDP_SEGMENT.
	ModeGSO = "gso"
	// ModeSendmmsg: the same batches, one message per datagram (kernels
	// without UDP_SEGMENT, routes that cannot segment, or configured).
	ModeSendmmsg = "sendmmsg"
	// ModeSendto: no batches; one sendto(2) per datagram.
	ModeSendto = "sendto"
)

const (
	modeSendto int32 = iota
	modeSendmmsg
	modeGSO
)

var modeNames = [...]string{ModeSendto, ModeSendmmsg, ModeGSO}

const (
	// maxSegments is the kernel's UDP_MAX_SEGMENTS on every kernel with
	// UDP_SEGMENT (64; newer kernels allow more).
	maxSegments = 64
	// maxPayload bounds one GSO message's UDP payload (an IPv4 datagram is
	// at most 65535 bytes with its 20-byte IP and 8-byte UDP headers; the
	// same bound keeps IPv6 without jumbograms).
	maxPayload = 65535 - 20 - 8
	// maxHeld bounds the bytes one Batch holds between Begin and Flush; a
	// write beyond it sends what is held first (in order), so memory stays
	// bounded whatever the caller does.
	maxHeld = 64 << 10
	// maxMsgs bounds the messages of one sendmmsg (and the datagrams held:
	// more sends what is held first).
	maxMsgs = 64
	// spares bounds the idle pending buffers kept for reuse: only batches
	// being written at this moment hold one (a few per CPU), not every
	// viewer.
	spares = 16
)

// Stats are a Conn's cumulative counters.
type Stats struct {
	// Mode is "gso", "sendmmsg" or "sendto" (what the Conn does now).
	Mode string `json:"mode"`
	// Reason says why Mode is not "gso" ("" when it is).
	Reason string `json:"reason,omitempty"`
	// Datagrams the kernel accepted, and the system calls that sent them.
	Datagrams uint64 `json:"datagrams"`
	Syscalls  uint64 `json:"syscalls"`
	// Segmented counts the datagrams that left as segments of a GSO
	// message (more than one datagram in one message).
	Segmented uint64 `json:"segmented"`
	// Errors counts datagrams the kernel refused (each lost, not retried).
	Errors uint64 `json:"errors"`
	// Batches is the number of destinations registered with Open.
	Batches int `json:"batches"`
}

// Conn is a net.PacketConn over a *net.UDPConn whose writes to a destination
// with an open Batch are held and sent together. Reads, deadlines and
// LocalAddr pass through. It implements ReadFromAddrPort/WriteToAddrPort,
// which pion's ICE UDP mux uses to avoid an allocation per packet.
type Conn struct {
	udp *net.UDPConn
	raw syscall.RawConn
	v6  bool // the socket is AF_INET6 (IPv4 peers as mapped addresses)

	mode   atomic.Int32
	reason atomic.Pointer[string]

	// batches maps a destination to its Batch; copied on write (Open and
	// Close are rare, lookups are per packet and take no lock).
	mu      sync.Mutex
	batches atomic.Pointer[map[netip.AddrPort]*Batch]

	datagrams, syscalls, segmented, errs atomic.Uint64

	sendmmsg func(fd uintptr, msgs []mmsghdr) (int, unix.Errno)
}

// New wraps udp. mode is ModeGSO (the default for ""; falls back to
// ModeSendmmsg where the kernel has no UDP_SEGMENT), ModeSendmmsg or
// ModeSendto.
func New(udp *net.UDPConn, mode string) (*Conn, error) {
	raw, err := udp.SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &Conn{udp: udp, raw: raw, sendmmsg: sendmmsg}
	empty := map[netip.AddrPort]*Batch{}
	c.batches.Store(&empty)
	var domain int
	var derr, perr error
	if err := raw.Control(func(fd uintptr) {
		domain, derr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_DOMAIN)
		// Reading the option fails (ENOPROTOOPT) on kernels without it.
		_, perr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_SEGMENT)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	c.v6 = domain == unix.AF_INET6
	switch mode {
	case "", ModeGSO:
		if perr != nil {
			c.setMode(modeSendmmsg, "the kernel has no UDP_SEGMENT (Linux 4.18 or later): "+perr.Error())
		} else {
			c.setMode(modeGSO, "")
		}
	case ModeSendmmsg:
		c.setMode(modeSendmmsg, "configured")
	case ModeSendto:
		c.setMode(modeSendto, "configured")
	default:
		return nil, errors.New(`udpgso: mode must be "gso", "sendmmsg" or "sendto", not "` + mode + `"`)
	}
	return c, nil
}

func (c *Conn) setMode(m int32, reason string) {
	c.reason.Store(&reason)
	c.mode.Store(m)
}

// Stats returns the counters.
func (c *Conn) Stats() Stats {
	return Stats{
		Mode:      modeNames[c.mode.Load()],
		Reason:    *c.reason.Load(),
		Datagrams: c.datagrams.Load(),
		Syscalls:  c.syscalls.Load(),
		Segmented: c.segmented.Load(),
		Errors:    c.errs.Load(),
		Batches:   len(*c.batches.Load()),
	}
}

// Mode is "gso", "sendmmsg" or "sendto".
func (c *Conn) Mode() string { return modeNames[c.mode.Load()] }

func key(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

// Open registers a Batch for datagrams to dst. It returns nil (a valid Batch
// that holds nothing) in ModeSendto, or when dst already has a Batch (two
// sessions never share a remote address on one ICE mux; if they did, the
// second would simply not be batched). Close the Batch when done.
func (c *Conn) Open(dst netip.AddrPort) *Batch {
	if c.mode.Load() == modeSendto || !dst.IsValid() {
		return nil
	}
	k := key(dst)
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.batches.Load()
	if _, ok := old[k]; ok {
		return nil
	}
	b := &Batch{c: c, dst: k}
	if !b.setAddr(k, c.v6) {
		return nil
	}
	b.send = b.sendRaw
	next := make(map[netip.AddrPort]*Batch, len(old)+1)
	for a, x := range old {
		next[a] = x
	}
	next[k] = b
	c.batches.Store(&next)
	return b
}

func (c *Conn) unregister(b *Batch) {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := *c.batches.Load()
	if old[b.dst] != b {
		return
	}
	next := make(map[netip.AddrPort]*Batch, len(old))
	for a, x := range old {
		if x != b {
			next[a] = x
		}
	}
	c.batches.Store(&next)
}

// WriteToAddrPort sends p to addr, or holds a copy of it in addr's open
// Batch until the Batch is flushed.
func (c *Conn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	if m := *c.batches.Load(); len(m) != 0 {
		if b := m[key(addr)]; b != nil && b.hold(p) {
			return len(p), nil
		}
	}
	n, err := c.udp.WriteToUDPAddrPort(p, addr)
	c.syscalls.Add(1)
	if err != nil {
		c.errs.Add(1)
		return n, err
	}
	c.datagrams.Add(1)
	return n, nil
}

// WriteTo is WriteToAddrPort for a net.Addr (a *net.UDPAddr).
func (c *Conn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, &net.OpError{Op: "write", Net: "udp", Addr: addr, Err: net.InvalidAddrError("not a UDP address")}
	}
	return c.WriteToAddrPort(p, ua.AddrPort())
}

// ReadFromAddrPort reads one datagram.
func (c *Conn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	return c.udp.ReadFromUDPAddrPort(p)
}

// ReadFrom reads one datagram.
func (c *Conn) ReadFrom(p []byte) (int, net.Addr, error) { return c.udp.ReadFrom(p) }

// Close closes the socket. Batches still open send nothing more.
func (c *Conn) Close() error { return c.udp.Close() }

// LocalAddr is the socket's address.
func (c *Conn) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// SetDeadline sets both deadlines of the socket.
func (c *Conn) SetDeadline(t time.Time) error { return c.udp.SetDeadline(t) }

// SetReadDeadline sets the socket's read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.udp.SetReadDeadline(t) }

// SetWriteDeadline sets the socket's write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.udp.SetWriteDeadline(t) }

// mmsghdr is struct mmsghdr: a msghdr and the bytes the kernel sent.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
}

// pending is what a Batch holds between Begin and Flush (the datagrams back
// to back in buf, their lengths in lens) and the scratch of its sendmmsg.
// Pooled: only the batches being written at this moment hold one, not every
// viewer.
type pending struct {
	buf   []byte
	lens  []uint16
	msgs  [maxMsgs]mmsghdr
	iovs  [maxMsgs]unix.Iovec
	count [maxMsgs]uint8     // datagrams in each message
	cmsg  [maxMsgs][3]uint64 // CmsgSpace(2) bytes each (one cmsghdr and a uint16), 8-byte aligned
}

// free keeps up to spares idle pendings (a bounded free list rather than a
// sync.Pool, whose per-CPU caches kept many times more alive under load).
var free = make(chan *pending, spares)

func getPending() *pending {
	select {
	case p := <-free:
		return p
	default:
		// A P-frame fits; a keyframe grows it (up to maxHeld).
		return &pending{buf: make([]byte, 0, 16<<10), lens: make([]uint16, 0, maxMsgs)}
	}
}

func putPending(p *pending) {
	p.buf, p.lens = p.buf[:0], p.lens[:0]
	select {
	case free <- p:
	default: // enough spares; the collector takes it
	}
}

func init() {
	// cmsg slots hold CmsgSpace(2) bytes.
	if unix.CmsgSpace(2) > int(unsafe.Sizeof([3]uint64{})) {
		panic("udpgso: cmsg slot too small")
	}
}

// Batch collects the datagrams written to one destination between Begin and
// Flush. Begin and Flush are called by one goroutine (a session's pump);
// writes may come from any goroutine. Its methods do nothing on a nil Batch.
type Batch struct {
	c     *Conn
	dst   netip.AddrPort
	sa    *byte // raw sockaddr of dst
	salen uint32
	saBuf unix.RawSockaddrInet6

	mu     sync.Mutex
	open   bool
	closed bool
	p      *pending
	// The sendmmsg in progress (read by sendRaw).
	msgs    []mmsghdr
	sent    int
	sendErr error
	send    func(fd uintptr) bool
}

// Begin starts holding the datagrams written to the Batch's destination.
func (b *Batch) Begin() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = !b.closed
	b.mu.Unlock()
}

// Flush sends what was held since Begin and stops holding.
func (b *Batch) Flush() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = false
	b.flushLocked()
	b.mu.Unlock()
}

// Close flushes and unregisters the Batch; later writes to its destination
// are sent at once.
func (b *Batch) Close() {
	if b == nil {
		return
	}
	b.mu.Lock()
	b.open = false
	b.closed = true
	b.flushLocked()
	b.mu.Unlock()
	b.c.unregister(b)
}

// hold copies p into the batch if it is open; false means send it now.
func (b *Batch) hold(p []byte) bool {
	if len(p) == 0 || len(p) > 0xffff {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return false
	}
	if b.p != nil && (len(b.p.buf)+len(p) > maxHeld || len(b.p.lens) == maxMsgs) {
		b.flushLocked()
	}
	if b.p == nil {
		b.p = getPending()
	}
	b.p.buf = append(b.p.buf, p...)
	b.p.lens = append(b.p.lens, uint16(len(p)))
	return true
}

// flushLocked sends the held datagrams in one sendmmsg: in GSO mode each
// run of equal sizes (a shorter datagram may end a run) is one message with
// UDP_SEGMENT, otherwise every datagram is a message of its own.
func (b *Batch) flushLocked() {
	p := b.p
	if p == nil {
		return
	}
	b.p = nil
	defer putPending(p)
	gso := b.c.mode.Load() == modeGSO
	off, first := 0, 0
	for first < len(p.lens) {
		nmsg := 0
		for i, o := first, off; i < len(p.lens) && nmsg < maxMsgs; nmsg++ {
			j, size := runEnd(p.lens, i, gso)
			m := &p.msgs[nmsg]
			iov := &p.iovs[nmsg]
			iov.Base = &p.buf[o]
			iov.SetLen(size)
			m.hdr = unix.Msghdr{Name: b.sa, Namelen: b.salen, Iov: iov}
			m.hdr.SetIovlen(1)
			if j-i > 1 {
				cm := unsafe.Slice((*byte)(unsafe.Pointer(&p.cmsg[nmsg][0])), unix.CmsgSpace(2))
				h := (*unix.Cmsghdr)(unsafe.Pointer(&cm[0]))
				h.Level = unix.IPPROTO_UDP
				h.Type = unix.UDP_SEGMENT
				h.SetLen(unix.CmsgLen(2))
				*(*uint16)(unsafe.Pointer(&cm[unix.CmsgLen(0)])) = p.lens[i] // native byte order
				m.hdr.Control = &cm[0]
				m.hdr.SetControllen(len(cm))
			}
			m.n = 0
			p.count[nmsg] = uint8(j - i)
			o += size
			i = j
		}
		consumed, fallback := b.sendMsgs(p.msgs[:nmsg])
		for k := 0; k < consumed; k++ {
			if p.count[k] > 1 {
				b.c.segmented.Add(uint64(p.count[k]))
			}
			first += int(p.count[k])
			off += int(p.iovs[k].Len)
		}
		if fallback {
			gso = false // the rest one message per datagram
		}
	}
}

// runEnd returns the end j (exclusive) and the byte size of the message
// that starts at datagram i of lens: in GSO mode the run of datagrams of
// lens[i]'s size (a shorter one ends it, as its last), bounded by the
// kernel's segment count and payload size; otherwise datagram i alone.
func runEnd(lens []uint16, i int, gso bool) (j, size int) {
	seg := int(lens[i])
	j, size = i+1, seg
	for gso && j < len(lens) && j-i < maxSegments && size+int(lens[j]) <= maxPayload {
		l := int(lens[j])
		if l > seg {
			break
		}
		size += l
		j++
		if l < seg {
			break // a shorter datagram ends a GSO run
		}
	}
	return j, size
}

// sendMsgs sends msgs with sendmmsg, going on after a partial send. It
// returns how many messages it consumed (sent, or refused by the kernel and
// counted as errors: lost, as with separate sendto calls). fallback reports
// that a GSO message was refused as unsupported: the Conn has switched to one
// message per datagram and that message and the rest were not consumed.
func (b *Batch) sendMsgs(msgs []mmsghdr) (consumed int, fallback bool) {
	c := b.c
	defer func() { b.msgs = nil }()
	for consumed < len(msgs) {
		rest := msgs[consumed:]
		b.msgs, b.sent, b.sendErr = rest, 0, nil
		err := c.raw.Write(b.send)
		c.syscalls.Add(1)
		if err == nil {
			err = b.sendErr
		}
		for k := 0; k < b.sent; k++ {
			c.datagrams.Add(uint64(segments(&rest[k])))
		}
		consumed += b.sent
		if err == nil {
			continue
		}
		m := &msgs[consumed]
		if m.hdr.Controllen != 0 && (errors.Is(err, unix.EIO) || errors.Is(err, unix.EINVAL) ||
			errors.Is(err, unix.ENOPROTOOPT) || errors.Is(err, unix.EOPNOTSUPP)) {
			// e.g. a device without checksum offload cannot segment.
			c.setMode(modeSendmmsg, "a GSO send failed ("+err.Error()+"); one message per datagram since")
			return consumed, true
		}
		c.errs.Add(uint64(segments(m)))
		consumed++
	}
	return consumed, false
}

// segments is how many datagrams message m carries.
func segments(m *mmsghdr) int {
	if m.hdr.Controllen == 0 {
		return 1
	}
	cm := unsafe.Slice(m.hdr.Control, m.hdr.Controllen)
	seg := int(*(*uint16)(unsafe.Pointer(&cm[unix.CmsgLen(0)])))
	size := int((*unix.Iovec)(m.hdr.Iov).Len)
	return (size + seg - 1) / seg
}

// sendRaw is the RawConn.Write callback of a sendmmsg (a method value made
// once per Batch, so a send allocates nothing).
func (b *Batch) sendRaw(fd uintptr) bool {
	n, e := b.c.sendmmsg(fd, b.msgs)
	if e == unix.EAGAIN {
		return false // wait until the socket is writable
	}
	if e != 0 {
		b.sendErr = e
		return true
	}
	b.sent = int(n)
	return true
}

// sendmmsg is the system call (a variable of the Conn only so that tests
// can make the kernel refuse GSO).
func sendmmsg(fd uintptr, msgs []mmsghdr) (int, unix.Errno) {
	n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&msgs[0])), uintptr(len(msgs)), 0, 0, 0)
	return int(n), e
}

// setAddr stores dst in the Batch as the socket's family expects it
// (IPv4 peers of an IPv6 socket as mapped addresses); false if the socket
// cannot reach dst (an IPv6 peer of an IPv4 socket).
func (b *Batch) setAddr(dst netip.AddrPort, v6 bool) bool {
	port := dst.Port()
	if v6 {
		sa := &b.saBuf
		sa.Family = unix.AF_INET6
		pb := (*[2]byte)(unsafe.Pointer(&sa.Port))
		pb[0], pb[1] = byte(port>>8), byte(port) // network byte order
		sa.Addr = dst.Addr().As16()
		if z := dst.Addr().Zone(); z != "" {
			if ifi, err := net.InterfaceByName(z); err == nil {
				sa.Scope_id = uint32(ifi.Index)
			}
		}
		b.sa, b.salen = (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet6
		return true
	}
	if !dst.Addr().Unmap().Is4() {
		return false
	}
	sa := (*unix.RawSockaddrInet4)(unsafe.Pointer(&b.saBuf))
	sa.Family = unix.AF_INET
	pb := (*[2]byte)(unsafe.Pointer(&sa.Port))
	pb[0], pb[1] = byte(port>>8), byte(port)
	sa.Addr = dst.Addr().Unmap().As4()
	b.sa, b.salen = (*byte)(unsafe.Pointer(sa)), unix.SizeofSockaddrInet4
	return true
}
