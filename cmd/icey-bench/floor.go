package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/pion/srtp/v3"
)

// The floor is the cost an ideal WebRTC fan-out cannot go below on this
// machine: one goroutine sends every packet of a paced stream to N loopback
// receivers owned by another process, each receiver with its own SRTP
// context (AEAD_AES_128_GCM, what pion peers negotiate) and one sendto per
// packet; with -gso, each receiver's packets of one frame leave in one
// sendmsg with UDP_SEGMENT. The sender's CPU time (getrusage) per packet and
// per viewer-second is what a server's figures compare with: everything a
// real server spends above it is its own overhead (demuxing, per-viewer
// state, interceptors, RTCP, goroutines, copies).

// floorRecvArg is the hidden first argument that turns icey-bench into the
// floor's receiver process: bind N sockets on 127.0.0.1, print their ports
// on one line, drain them, and when stdin closes print how many datagrams
// arrived and exit.
const floorRecvArg = "-floor-receivers"

// floorFPS is the frame rate the packets are paced at: they go out in
// bursts of one frame, as a server forwards them.
const floorFPS = 30

// udpSegment is the UDP_SEGMENT socket option (linux/udp.h), sent as a
// cmsg at level IPPROTO_UDP with the segment size as a uint16.
const udpSegment = 103

// floorOptions are the settings of one floor measurement.
type floorOptions struct {
	viewers  int
	duration time.Duration
	rate     float64 // packets per second per viewer
	size     int     // RTP payload bytes
	gso      bool
}

// floorResult is the outcome of one floor measurement.
type floorResult struct {
	Profile           string  `json:"profile"`
	GSO               bool    `json:"gso"`
	PayloadBytes      int     `json:"payload_bytes"`
	PacketBytes       int     `json:"packet_bytes"` // on the wire: RTP header + payload + SRTP tag
	PacketsPerFrame   int     `json:"packets_per_frame"`
	PacketsPerViewerS float64 `json:"packets_per_viewer_s"` // achieved, over the window
	Sends             int64   `json:"sends"`                // sendto/sendmsg calls in the window
	SentRun           int64   `json:"sent_run"`             // packets sent, warm-up included
	ReceivedRun       int64   `json:"received_run"`         // of those, read by the receivers
}

// runFloor measures the floor and returns it as a result whose Server
// figures are the sender's (it is the ideal server) so that the summary
// lists it next to the real ones.
func runFloor(ctx context.Context, o floorOptions, label string, logw io.Writer) (*result, error) {
	if o.viewers < 1 || o.rate <= 0 || o.size < 1 || o.size > 1400 {
		return nil, errors.New("floor: -viewers >= 1, -floor-rate > 0 and 1 <= -floor-size <= 1400 are required")
	}
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := exec.Command(exe, floorRecvArg, strconv.Itoa(o.viewers))
	cmd.Stderr = logw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("floor: starting the receivers: %w", err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	out := bufio.NewReader(stdout)
	line, err := out.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("floor: reading the receivers' ports: %w", err)
	}
	addrs, err := parsePorts(line)
	if err != nil {
		return nil, err
	}
	if len(addrs) != o.viewers {
		return nil, fmt.Errorf("floor: %d receiver ports for %d viewers", len(addrs), o.viewers)
	}

	s, err := newFloorSender(addrs, o)
	if err != nil {
		return nil, err
	}
	defer s.conn.Close()

	tick := time.NewTicker(time.Second / floorFPS)
	defer tick.Stop()
	if _, err := s.sendFrames(ctx, tick, floorFPS); err != nil { // 1 s warm-up
		return nil, err
	}
	frames := max(1, int(o.duration.Seconds()*floorFPS))
	sends0 := s.sends
	cpu0 := selfCPU()
	t0 := time.Now()
	sent, err := s.sendFrames(ctx, tick, frames)
	window := time.Since(t0)
	cpu := selfCPU() - cpu0
	if err != nil {
		return nil, err
	}

	// Let the receivers drain, then ask them how much arrived.
	time.Sleep(200 * time.Millisecond)
	stdin.Close()
	var received int64
	if l, err := out.ReadString('\n'); err == nil {
		received, _ = strconv.ParseInt(strings.TrimSpace(l), 10, 64)
	}

	fr := &floorResult{
		Profile:           s.profile.String(),
		GSO:               o.gso,
		PayloadBytes:      o.size,
		PacketBytes:       s.wireSize,
		PacketsPerFrame:   s.perFrame,
		PacketsPerViewerS: round(float64(sent)/float64(o.viewers)/window.Seconds(), 1),
		Sends:             s.sends - sends0,
		SentRun:           s.sent,
		ReceivedRun:       received,
	}
	res := &result{
		Label: label, URL: "floor", Time: time.Now().UTC().Format(time.RFC3339),
		Viewers: o.viewers, VideoOnly: true, Connected: o.viewers,
		WindowS: round(window.Seconds(), 3), Packets: sent, Bytes: sent * int64(s.wireSize),
		Floor: fr,
	}
	res.Expected = sent
	res.RunLossPct = pct(max(s.sent-received, 0), s.sent)
	res.MbpsTotal = round(float64(res.Bytes)*8/window.Seconds()/1e6, 3)
	res.MbpsPerViewer = round(res.MbpsTotal/float64(o.viewers), 3)
	srv := &serverResult{PID: os.Getpid()}
	srv.cpuResult = cpuUse(cpu, window, float64(o.viewers)*window.Seconds(), sent)
	res.Server = srv
	res.Generator = srv.cpuResult
	return res, nil
}

func parsePorts(line string) ([]netip.AddrPort, error) {
	var addrs []netip.AddrPort
	for _, f := range strings.Fields(line) {
		p, err := strconv.ParseUint(f, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("floor: bad receiver port %q", f)
		}
		addrs = append(addrs, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(p)))
	}
	return addrs, nil
}

// floorSender is the ideal fan-out: one socket, one SRTP context per
// receiver, one packet template.
type floorSender struct {
	conn     *net.UDPConn
	raw      syscall.RawConn
	addrs    []netip.AddrPort
	sas      []*syscall.SockaddrInet4 // for sendmsg (GSO)
	ctxs     []*srtp.Context
	profile  srtp.ProtectionProfile
	gso      bool
	perFrame int
	wireSize int

	pkt    []byte // RTP header + payload, rewritten per packet
	enc    []byte // one SRTP packet
	gsoBuf []byte // one receiver's packets of one frame
	oob    []byte // the UDP_SEGMENT cmsg
	seq    uint16
	ts     uint32

	sends int64 // send calls
	sent  int64 // packets, whole run
}

func newFloorSender(addrs []netip.AddrPort, o floorOptions) (*floorSender, error) {
	s := &floorSender{
		addrs:    addrs,
		profile:  srtp.ProtectionProfileAeadAes128Gcm,
		gso:      o.gso,
		perFrame: max(1, int(o.rate/floorFPS+0.5)),
		pkt:      make([]byte, 12+o.size),
		enc:      make([]byte, 0, 12+o.size+64),
	}
	kl, err := s.profile.KeyLen()
	if err != nil {
		return nil, err
	}
	sl, err := s.profile.SaltLen()
	if err != nil {
		return nil, err
	}
	key := make([]byte, kl+sl)
	for range addrs {
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		c, err := srtp.CreateContext(key[:kl], key[kl:], s.profile)
		if err != nil {
			return nil, err
		}
		s.ctxs = append(s.ctxs, c)
	}
	if _, err := rand.Read(s.pkt[12:]); err != nil { // an incompressible payload
		return nil, err
	}
	s.pkt[0] = 0x80 // V=2
	s.pkt[1] = 102  // PT
	binary.BigEndian.PutUint32(s.pkt[8:], 0x1ce1be4c)
	s.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = s.conn.SetWriteBuffer(4 << 20)
	if s.raw, err = s.conn.SyscallConn(); err != nil {
		s.conn.Close()
		return nil, err
	}
	if s.gso {
		if s.perFrame > 64 { // the kernel's UDP_MAX_SEGMENTS
			s.conn.Close()
			return nil, errors.New("floor: -gso sends at most 64 packets per frame")
		}
		for _, a := range addrs {
			s.sas = append(s.sas, &syscall.SockaddrInet4{Port: int(a.Port()), Addr: a.Addr().As4()})
		}
		s.gsoBuf = make([]byte, 0, s.perFrame*(12+o.size+64))
		s.oob = make([]byte, syscall.CmsgSpace(2))
		h := (*syscall.Cmsghdr)(unsafe.Pointer(&s.oob[0]))
		h.Level = syscall.IPPROTO_UDP
		h.Type = udpSegment
		h.SetLen(syscall.CmsgLen(2))
	}
	return s, nil
}

// stamp writes the next sequence number and timestamp into the template.
func (s *floorSender) stamp(k int) {
	s.pkt[1] = 102
	if k == s.perFrame-1 {
		s.pkt[1] |= 0x80 // marker: last packet of the frame
	}
	binary.BigEndian.PutUint16(s.pkt[2:], s.seq)
	binary.BigEndian.PutUint32(s.pkt[4:], s.ts)
	s.seq++
}

// sendFrames sends frames frames, one per tick, and returns the packets
// sent.
func (s *floorSender) sendFrames(ctx context.Context, tick *time.Ticker, frames int) (int64, error) {
	var sent int64
	for range frames {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return sent, ctx.Err()
		}
		if s.gso {
			seq0 := s.seq
			for i := range s.addrs {
				s.seq = seq0
				s.gsoBuf = s.gsoBuf[:0]
				for k := range s.perFrame {
					s.stamp(k)
					b, err := s.ctxs[i].EncryptRTP(s.enc[:0], s.pkt, nil)
					if err != nil {
						return sent, err
					}
					s.wireSize = len(b)
					s.gsoBuf = append(s.gsoBuf, b...)
				}
				if err := s.sendGSO(i); err != nil {
					return sent, err
				}
				s.sends++
				sent += int64(s.perFrame)
			}
		} else {
			for k := range s.perFrame {
				s.stamp(k)
				for i, a := range s.addrs {
					b, err := s.ctxs[i].EncryptRTP(s.enc[:0], s.pkt, nil)
					if err != nil {
						return sent, err
					}
					s.wireSize = len(b)
					if _, err := s.conn.WriteToUDPAddrPort(b, a); err != nil {
						return sent, fmt.Errorf("floor: sendto: %w", err)
					}
					s.sends++
					sent++
				}
			}
		}
		s.ts += 90000 / floorFPS
	}
	s.sent += sent
	return sent, nil
}

// sendGSO sends receiver i's packets of one frame (s.gsoBuf, equal sizes)
// in one sendmsg with UDP_SEGMENT (Linux >= 4.18).
func (s *floorSender) sendGSO(i int) error {
	*(*uint16)(unsafe.Pointer(&s.oob[syscall.CmsgLen(0)])) = uint16(s.wireSize)
	var serr error
	err := s.raw.Write(func(fd uintptr) bool {
		serr = syscall.Sendmsg(int(fd), s.gsoBuf, s.oob, s.sas[i], 0)
		return serr != syscall.EAGAIN
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("floor: sendmsg with UDP_SEGMENT: %w", err)
	}
	return nil
}

// floorReceivers is the receiver process: see floorRecvArg.
func floorReceivers(arg string, stdin io.Reader, stdout, stderr io.Writer) int {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 {
		fmt.Fprintf(stderr, "icey-bench: %s wants a positive count\n", floorRecvArg)
		return 2
	}
	var got atomic.Int64
	ports := make([]string, 0, n)
	conns := make([]*net.UDPConn, 0, n)
	for range n {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Fprintf(stderr, "icey-bench: floor receivers: %v\n", err)
			return 1
		}
		_ = c.SetReadBuffer(4 << 20)
		conns = append(conns, c)
		ports = append(ports, strconv.Itoa(c.LocalAddr().(*net.UDPAddr).Port))
		go func() {
			b := make([]byte, 2048)
			for {
				if _, err := c.Read(b); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	fmt.Fprintln(stdout, strings.Join(ports, " "))
	_, _ = io.Copy(io.Discard, stdin) // until the sender closes it (or dies)
	fmt.Fprintln(stdout, got.Load())
	for _, c := range conns {
		c.Close()
	}
	return 0
}
