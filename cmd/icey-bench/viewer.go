package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"
)

// Errors a join can end with; they are counted by kind in the report.
var (
	errRejected     = errors.New("server at capacity (503)")
	errHTTP         = errors.New("WHEP POST failed")
	errNoConnect    = errors.New("not connected before the deadline")
	errConnFailed   = errors.New("peer connection failed")
	errNotLoopback  = errors.New("icey-bench: -loopback is set but the URL host is not a loopback address")
	errGatherFailed = errors.New("ICE gathering timed out")
)

// apiOptions are the receive-path features of the simulated viewers.
type apiOptions struct {
	vp8Only         bool // offer VP8 only
	loopback        bool
	receiverReports bool // RTCP receiver reports, as a browser sends
	nack            bool // NACK missing video packets, as a browser does
	rcvbuf          int  // SO_RCVBUF for each viewer's socket (0: OS default)
}

// newAPI returns the one webrtc.API every simulated viewer shares. Its
// interceptors are kept to what a browser's receive path costs the server
// (receiver reports, and NACKs unless disabled) and nothing else, so that
// the generator's own CPU stays low. rb, when not nil, records the receive
// buffer size the kernel granted.
func newAPI(o apiOptions, rb *atomic.Int64) (*webrtc.API, error) {
	se := webrtc.SettingEngine{}
	if o.rcvbuf > 0 {
		n, err := stdnet.NewNet()
		if err != nil {
			return nil, err
		}
		se.SetNet(&bufNet{Net: n, rcvbuf: o.rcvbuf, granted: rb})
	}
	loopback := o.loopback
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	if loopback {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetInterfaceFilter(func(name string) bool {
			ifc, err := net.InterfaceByName(name)
			return err == nil && ifc.Flags&net.FlagLoopback != 0
		})
	}

	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	// The H.264 variants a browser offers (packetization-mode=1), then VP8,
	// so that any WHEP server finds a codec it serves.
	video := []struct {
		pt   webrtc.PayloadType
		mime string
		fmtp string
	}{
		{102, webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		{104, webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"},
		{106, webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"},
		{108, webrtc.MimeTypeH264, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"},
		{96, webrtc.MimeTypeVP8, ""},
	}
	for _, c := range video {
		if o.vp8Only && c.mime != webrtc.MimeTypeVP8 {
			continue
		}
		err := me.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: c.mime, ClockRate: 90000, SDPFmtpLine: c.fmtp, RTCPFeedback: fb},
			PayloadType:        c.pt,
		}, webrtc.RTPCodecTypeVideo)
		if err != nil {
			return nil, err
		}
	}
	err := me.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType:        111,
	}, webrtc.RTPCodecTypeAudio)
	if err != nil {
		return nil, err
	}

	reg := &interceptor.Registry{}
	if o.nack {
		// pion's defaults: a 512-packet log, a NACK every 100 ms for
		// what is still missing, as long as it is in the log.
		g, err := nack.NewGeneratorInterceptor()
		if err != nil {
			return nil, err
		}
		reg.Add(g)
	}
	if o.receiverReports {
		rr, err := report.NewReceiverInterceptor()
		if err != nil {
			return nil, err
		}
		reg.Add(rr)
	}
	return webrtc.NewAPI(webrtc.WithSettingEngine(se), webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg)), nil
}

// bufNet is the standard network with a larger receive buffer on every
// UDP socket ICE opens: a new viewer is sent a whole cached GOP at several
// times real time, and the default buffer (208 KB) overflows before a
// generator busy with hundreds of viewers drains it. The kernel caps the
// size at net.core.rmem_max; granted records what it gave.
type bufNet struct {
	*stdnet.Net
	rcvbuf  int
	granted *atomic.Int64
}

func (n *bufNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		n.grow(c)
	}
	return c, err
}

func (n *bufNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		n.grow(c)
	}
	return c, err
}

func (n *bufNet) grow(c any) {
	u, ok := c.(*net.UDPConn)
	if !ok {
		return
	}
	_ = u.SetReadBuffer(n.rcvbuf)
	if n.granted == nil {
		return
	}
	if rc, err := u.SyscallConn(); err == nil {
		_ = rc.Control(func(fd uintptr) {
			// Linux reports twice the size asked for (its bookkeeping
			// overhead); the figure is what the socket can hold.
			if v, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF); err == nil {
				n.granted.Store(int64(v))
			}
		})
	}
}

// newHTTPClient returns a client that never consults proxy environment
// variables: the bench must talk to the URL it was given and nothing else.
func newHTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: timeout}).DialContext,
			MaxIdleConns:        128,
			MaxIdleConnsPerHost: 128,
			IdleConnTimeout:     30 * time.Second,
		},
	}
}

// client holds what every viewer of one run shares.
type client struct {
	url       *url.URL
	token     string
	videoOnly bool
	api       *webrtc.API
	http      *http.Client
	gather    time.Duration // ICE gathering deadline
}

// ssrcCount is the sequence accounting of one incoming SSRC.
type ssrcCount struct {
	ssrc uint32
	seqCounter
	gaps gapTracker
}

// viewerSnap is a consistent copy of a viewer's counters.
type viewerSnap struct {
	packets, bytes   int64
	expected, lost   int64
	gaps             gapCounts
	connected, ended bool
}

// gapCounts are a gapTracker's counters, summed over SSRCs.
type gapCounts struct {
	gaps, recovered, unrecovered, late, duplicates int64
}

func (c gapCounts) minus(o gapCounts) gapCounts {
	return gapCounts{c.gaps - o.gaps, c.recovered - o.recovered, c.unrecovered - o.unrecovered,
		c.late - o.late, c.duplicates - o.duplicates}
}

func (c gapCounts) plus(o gapCounts) gapCounts {
	return gapCounts{c.gaps + o.gaps, c.recovered + o.recovered, c.unrecovered + o.unrecovered,
		c.late + o.late, c.duplicates + o.duplicates}
}

// viewer is one simulated WHEP viewer: one PeerConnection, receive only.
type viewer struct {
	c *client

	pc       *webrtc.PeerConnection
	location string // resource URL for DELETE, empty if the POST failed

	settled     chan struct{} // closed when connected or failed
	settleOnce  sync.Once
	readers     sync.WaitGroup
	mu          sync.Mutex
	joinAt      time.Time
	connected   bool
	ended       bool // connection failed/closed after connecting
	leaving     bool
	err         error
	packets     int64
	bytes       int64
	ssrcs       []ssrcCount // usually one per track
	firstPacket time.Duration
	firstIDR    time.Duration
}

func newViewer(c *client) *viewer {
	return &viewer{c: c, settled: make(chan struct{})}
}

func (v *viewer) settle(err error) {
	v.settleOnce.Do(func() {
		v.mu.Lock()
		if err != nil && !v.connected {
			v.err = err
		}
		v.mu.Unlock()
		close(v.settled)
	})
}

// fail records the reason a viewer never connected.
func (v *viewer) fail(err error) { v.settle(err) }

// join creates the PeerConnection, POSTs the offer and applies the answer.
// It returns once the answer is applied; connection completes later and
// is signalled on v.settled.
func (v *viewer) join(ctx context.Context) error {
	err := v.doJoin(ctx)
	if err != nil {
		v.fail(err)
	}
	return err
}

func (v *viewer) doJoin(ctx context.Context) error {
	pc, err := v.c.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return err
	}
	v.pc = pc
	recv := webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, recv); err != nil {
		return err
	}
	if !v.c.videoOnly {
		if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeAudio, recv); err != nil {
			return err
		}
	}
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			v.mu.Lock()
			v.connected = true
			v.mu.Unlock()
			v.settle(nil)
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			v.mu.Lock()
			if v.connected {
				v.ended = true
			}
			v.mu.Unlock()
			v.settle(errConnFailed)
		}
	})
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		v.mu.Lock()
		if v.leaving { // Add must not race with leave's Wait
			v.mu.Unlock()
			return
		}
		v.readers.Add(1)
		v.mu.Unlock()
		defer v.readers.Done()
		v.read(t)
	})

	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	select {
	case <-gathered:
	case <-time.After(v.c.gather):
		return errGatherFailed
	case <-ctx.Done():
		return ctx.Err()
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.c.url.String(), strings.NewReader(pc.LocalDescription().SDP))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if v.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.c.token)
	}
	v.mu.Lock()
	v.joinAt = time.Now() // "join" is the moment the POST goes out
	v.mu.Unlock()
	resp, err := v.c.http.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %v", errHTTP, err)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		return errRejected
	case resp.StatusCode/100 != 2:
		return fmt.Errorf("%w: %s: %s", errHTTP, resp.Status, firstLine(body))
	case err != nil:
		return fmt.Errorf("%w: reading answer: %v", errHTTP, err)
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		if u, err := v.c.url.Parse(loc); err == nil {
			v.location = u.String()
		}
	}
	return pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)})
}

func firstLine(b []byte) string {
	b, _, _ = bytes.Cut(bytes.TrimSpace(b), []byte{'\n'})
	if len(b) > 120 {
		b = b[:120]
	}
	return string(b)
}

// read consumes one track until it ends. Packets are read raw into one
// reused buffer and only the RTP header and the first payload bytes are
// looked at, to keep the generator's per-packet cost far below the
// server's.
func (v *viewer) read(t *webrtc.TrackRemote) {
	video := t.Kind() == webrtc.RTPCodecTypeVideo
	var keyframe func([]byte) bool
	switch strings.ToLower(t.Codec().MimeType) {
	case strings.ToLower(webrtc.MimeTypeH264):
		keyframe = h264KeyframeStart
	case strings.ToLower(webrtc.MimeTypeVP8):
		keyframe = vp8KeyframeStart
	}
	buf := make([]byte, 1600)
	for {
		n, _, err := t.Read(buf)
		if err != nil {
			return
		}
		h, err := parseRTP(buf[:n])
		if err != nil {
			continue
		}
		v.mu.Lock()
		v.packets++
		v.bytes += int64(n)
		v.count(h.ssrc, h.seq)
		if video && (v.firstPacket == 0 || v.firstIDR == 0) {
			since := time.Since(v.joinAt)
			if v.firstPacket == 0 {
				v.firstPacket = since
			}
			if v.firstIDR == 0 && keyframe != nil && keyframe(h.payload) {
				v.firstIDR = since
			}
		}
		v.mu.Unlock()
	}
}

// count must be called with v.mu held.
func (v *viewer) count(ssrc uint32, seq uint16) {
	for i := range v.ssrcs {
		if v.ssrcs[i].ssrc == ssrc {
			v.ssrcs[i].add(seq)
			v.ssrcs[i].gaps.add(seq)
			return
		}
	}
	v.ssrcs = append(v.ssrcs, ssrcCount{ssrc: ssrc})
	v.ssrcs[len(v.ssrcs)-1].add(seq)
	v.ssrcs[len(v.ssrcs)-1].gaps.add(seq)
}

func (v *viewer) snap() viewerSnap {
	v.mu.Lock()
	defer v.mu.Unlock()
	s := viewerSnap{packets: v.packets, bytes: v.bytes, connected: v.connected, ended: v.ended}
	now := time.Now()
	for i := range v.ssrcs {
		s.expected += v.ssrcs[i].expected()
		s.lost += v.ssrcs[i].lost()
		g := &v.ssrcs[i].gaps
		g.expire(now) // gaps older than recoverWithin are settled now
		s.gaps = s.gaps.plus(gapCounts{g.gaps, g.recovered, g.unrecovered, g.late, g.duplicates})
	}
	return s
}

// leave sends the WHEP DELETE (if the POST created a resource) and closes
// the PeerConnection, waiting for its track readers to stop.
func (v *viewer) leave(ctx context.Context) error {
	v.mu.Lock()
	v.leaving = true
	v.mu.Unlock()
	var err error
	if v.location != "" {
		err = v.delete(ctx)
	}
	if v.pc != nil {
		if cerr := v.pc.Close(); err == nil {
			err = cerr
		}
	}
	v.readers.Wait()
	v.settle(errConnFailed)
	return err
}

func (v *viewer) delete(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, v.location, nil)
	if err != nil {
		return err
	}
	if v.c.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.c.token)
	}
	resp, err := v.c.http.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("DELETE %s: %s", v.location, resp.Status)
	}
	return nil
}
