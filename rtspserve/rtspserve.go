// Package rtspserve re-serves every path of the server over RTSP
// (rtsp://host:port/<path>, DESCRIBE/SETUP/PLAY, TCP interleaved and
// optionally UDP), for edges, NVRs, VLC and ffplay.
//
// One gortsplib ServerStream per path is shared by all RTSP readers of the
// path and fed by one hub subscriber: each unit's RTP packets are forwarded
// as they are (no re-packetization), only the payload type is mapped to the
// session description's and gortsplib sets its own SSRC on a copy of the
// header. The path is opened (Router.View, so an on-demand source starts
// for an RTSP reader as for a WebRTC viewer) on the first DESCRIBE or SETUP
// and closed (subscriber closed, release called) when its last RTSP
// reader leaves.
package rtspserve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/headers"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/signaling"
)

// Payload types of the session description.
const (
	ptH264 = 96
	ptOpus = 111
	ptPCMU = 0
	ptPCMA = 8
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("rtspserve: closed")

// Config configures a Server.
type Config struct {
	// Addr is the RTSP TCP listen address, host:port (e.g. ":8554").
	Addr string
	// UDP also offers the UDP transport. gortsplib needs an even RTP port
	// and RTCP on the next one: unless UDPRTPAddress/UDPRTCPAddress are
	// set, they are the first even port above Addr's port and the next
	// (8556 and 8557 for 8554) on Addr's host.
	UDP                           bool
	UDPRTPAddress, UDPRTCPAddress string
	// Router resolves path names to streams (required).
	Router signaling.Router
	// Token, when set, is required as the RTSP password (any user name,
	// digest or basic). Missing credentials get 401 with a challenge;
	// wrong ones get 401 and the connection is closed.
	Token string
	// ReadTimeout and WriteTimeout of RTSP connections (default 10 s).
	ReadTimeout, WriteTimeout time.Duration
	// DescribeTimeout bounds resolving a path at DESCRIBE: waiting for an
	// on-demand source and for its tracks (default 10 s).
	DescribeTimeout time.Duration
	// WriteQueueSize is gortsplib's per-reader packet queue (default 1024,
	// a power of two).
	WriteQueueSize int
}

// Stats is a snapshot of the RTSP server.
type Stats struct {
	// Readers are RTSP sessions set up on a path now.
	Readers       int
	ReadersByPath map[string]int
	// SessionsTotal counts sessions ever set up.
	SessionsTotal uint64
	// AuthFailures counts requests with wrong credentials (a request
	// without credentials is the normal first step of authentication and
	// is not counted).
	AuthFailures uint64
}

// Server is the RTSP re-serve.
type Server struct {
	cfg Config
	log *slog.Logger

	srv *gortsplib.Server
	// ctx ends at Close: it bounds path resolutions in progress.
	ctx       context.Context
	cancelAll context.CancelFunc

	mu        sync.Mutex
	ln        net.Listener
	started   bool
	closed    bool
	paths     map[string]*pathState
	conns     map[*gortsplib.ServerConn]map[string]*pathState // paths DESCRIBEd on a connection
	sessions  map[*gortsplib.ServerSession]*pathState         // sessions set up on a path
	sessTotal uint64
	authFail  uint64
	wg        sync.WaitGroup // feeders
}

// New validates cfg and returns a Server; Start binds it.
func New(cfg Config, log *slog.Logger) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Router == nil {
		return nil, errors.New("rtspserve: Router is required")
	}
	if cfg.Addr == "" {
		return nil, errors.New("rtspserve: Addr is required")
	}
	host, portS, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("rtspserve: Addr %q: %w", cfg.Addr, err)
	}
	port, err := strconv.Atoi(portS)
	if err != nil || port < 0 || port > 65535 {
		return nil, fmt.Errorf("rtspserve: Addr %q: bad port", cfg.Addr)
	}
	if cfg.UDP && (cfg.UDPRTPAddress == "" || cfg.UDPRTCPAddress == "") {
		if port == 0 {
			return nil, errors.New("rtspserve: UDP with port 0 needs UDPRTPAddress and UDPRTCPAddress")
		}
		rtp := port + 1
		if rtp%2 != 0 {
			rtp++
		}
		if rtp+1 > 65535 {
			return nil, fmt.Errorf("rtspserve: no UDP port pair above %d", port)
		}
		cfg.UDPRTPAddress = net.JoinHostPort(host, strconv.Itoa(rtp))
		cfg.UDPRTCPAddress = net.JoinHostPort(host, strconv.Itoa(rtp+1))
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.DescribeTimeout <= 0 {
		cfg.DescribeTimeout = 10 * time.Second
	}
	if cfg.WriteQueueSize <= 0 {
		cfg.WriteQueueSize = 1024
	}
	s := &Server{
		cfg: cfg, log: log,
		paths:    map[string]*pathState{},
		conns:    map[*gortsplib.ServerConn]map[string]*pathState{},
		sessions: map[*gortsplib.ServerSession]*pathState{},
	}
	s.ctx, s.cancelAll = context.WithCancel(context.Background())
	s.srv = &gortsplib.Server{
		Handler:        &handler{s: s},
		RTSPAddress:    cfg.Addr,
		ReadTimeout:    cfg.ReadTimeout,
		WriteTimeout:   cfg.WriteTimeout,
		WriteQueueSize: cfg.WriteQueueSize,
		Listen: func(network, address string) (net.Listener, error) {
			l, err := net.Listen(network, address)
			if err == nil {
				s.ln = l // under s.mu: Start holds it
			}
			return l, err
		},
	}
	if cfg.UDP {
		s.srv.UDPRTPAddress = cfg.UDPRTPAddress
		s.srv.UDPRTCPAddress = cfg.UDPRTCPAddress
	}
	return s, nil
}

// Start binds the listeners. A bind error names the address.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.started {
		return nil
	}
	if err := s.srv.Start(); err != nil {
		if s.cfg.UDP {
			return fmt.Errorf("rtspserve: listen on %s (UDP %s, %s): %w", s.cfg.Addr, s.cfg.UDPRTPAddress, s.cfg.UDPRTCPAddress, err)
		}
		return fmt.Errorf("rtspserve: listen on %s: %w", s.cfg.Addr, err)
	}
	s.started = true
	s.log.Info("rtsp server listening", "addr", s.addrLocked(), "udp", s.cfg.UDP)
	return nil
}

// Addr is the bound TCP address once started (the configured one before).
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addrLocked()
}

func (s *Server) addrLocked() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Addr
}

// Close closes every connection and path and waits for the goroutines.
// Idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	s.cancelAll()
	if started {
		// Closes connections and sessions and waits for their goroutines:
		// their close callbacks release the paths.
		s.srv.Close()
	}
	// Paths still referenced (none should be once every connection closed).
	s.mu.Lock()
	var ps []*pathState
	for _, p := range s.paths {
		select {
		case <-p.ready:
			if p.err == nil {
				ps = append(ps, p)
			}
		default: // opening: acquire sees closed and cleans up
		}
	}
	s.mu.Unlock()
	for _, p := range ps {
		s.teardown(p, "server closed")
	}
	s.wg.Wait()
}

// Stats returns a snapshot.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := Stats{ReadersByPath: map[string]int{}, SessionsTotal: s.sessTotal, AuthFailures: s.authFail}
	for _, p := range s.sessions {
		st.Readers++
		st.ReadersByPath[p.name]++
	}
	return st
}

// pathState is one path read over RTSP: its shared ServerStream and the hub
// subscriber feeding it.
type pathState struct {
	name    string
	ready   chan struct{} // closed when opening finished (err set on failure)
	err     error
	refs    int // DESCRIBEs held by connections + sessions set up
	torn    bool
	st      *media.Stream
	release func()
	stream  *gortsplib.ServerStream
	video   *description.Media
	audio   *description.Media
	vFormat *format.H264
	tracks  media.Tracks
	playing chan struct{} // closed at the first PLAY: the feeder subscribes then
	played  bool
	cancel  context.CancelFunc
	done    chan struct{} // feeder ended
}

// acquire returns the path's state with one more reference, opening it
// (Router.View, description, ServerStream, feeder) when it is not open.
func (s *Server) acquire(ctx context.Context, name string) (*pathState, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		p := s.paths[name]
		if p != nil {
			select {
			case <-p.ready:
				if p.err == nil && !p.torn {
					p.refs++
					s.mu.Unlock()
					return p, nil
				}
				delete(s.paths, name)
			default:
				s.mu.Unlock()
				select {
				case <-p.ready:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				continue
			}
		}
		p = &pathState{name: name, ready: make(chan struct{}), playing: make(chan struct{}), done: make(chan struct{})}
		s.paths[name] = p
		s.mu.Unlock()

		err := s.open(ctx, p)
		s.mu.Lock()
		if err == nil && s.closed {
			err = ErrClosed
		}
		if err != nil {
			p.err = err
			if s.paths[name] == p {
				delete(s.paths, name)
			}
			close(p.ready)
			s.mu.Unlock()
			if p.stream != nil {
				p.stream.Close()
			}
			if p.release != nil {
				p.release()
			}
			return nil, err
		}
		p.refs = 1
		fctx, cancel := context.WithCancel(context.Background())
		p.cancel = cancel
		s.wg.Add(1)
		close(p.ready)
		s.mu.Unlock()
		go s.feed(fctx, p)
		return p, nil
	}
}

// open resolves the path and builds its ServerStream.
func (s *Server) open(ctx context.Context, p *pathState) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DescribeTimeout)
	defer cancel()
	st, release, err := s.cfg.Router.View(ctx, p.name)
	if err != nil {
		return err
	}
	p.st, p.release = st, release
	tracks, err := st.WaitTracks(ctx)
	if err != nil {
		return fmt.Errorf("%w: %v", paths.ErrUnavailable, err)
	}
	p.tracks = tracks
	desc := &description.Session{}
	if tracks.Video != nil {
		sps, pps := tracks.Video.SPS, tracks.Video.PPS
		if sps == nil || pps == nil {
			// Learn them in-band from the cached GOP (its IDR starts with them).
			for _, u := range st.Ring().GOP() {
				if u.Keyframe {
					sps, pps = paramSets(u.Payload)
					break
				}
			}
		}
		p.vFormat = &format.H264{PayloadTyp: ptH264, PacketizationMode: 1, SPS: sps, PPS: pps}
		p.video = &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{p.vFormat}}
		desc.Medias = append(desc.Medias, p.video)
	}
	if a := tracks.Audio; a != nil {
		var f format.Format
		switch a.Codec {
		case media.CodecOpus:
			f = &format.Opus{PayloadTyp: ptOpus, ChannelCount: 2}
		case media.CodecPCMU:
			f = &format.G711{PayloadTyp: ptPCMU, MULaw: true, SampleRate: 8000, ChannelCount: 1}
		case media.CodecPCMA:
			f = &format.G711{PayloadTyp: ptPCMA, MULaw: false, SampleRate: 8000, ChannelCount: 1}
		}
		if f != nil {
			p.audio = &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{f}}
			desc.Medias = append(desc.Medias, p.audio)
		}
	}
	if len(desc.Medias) == 0 {
		return fmt.Errorf("%w: path %q has no track RTSP can carry", paths.ErrUnavailable, p.name)
	}
	p.stream = &gortsplib.ServerStream{Server: s.srv, Desc: desc}
	if err := p.stream.Initialize(); err != nil {
		p.stream = nil
		return err
	}
	return nil
}

// paramSets returns the SPS and PPS among NALUs (nil when absent).
func paramSets(nalus [][]byte) (sps, pps []byte) {
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch n[0] & 0x1f {
		case 7:
			if sps == nil {
				sps = n
			}
		case 8:
			if pps == nil {
				pps = n
			}
		}
	}
	return sps, pps
}

// unref drops one reference; the last one tears the path down.
func (s *Server) unref(p *pathState) {
	s.mu.Lock()
	p.refs--
	last := p.refs <= 0
	s.mu.Unlock()
	if last {
		s.teardown(p, "last reader left")
	}
}

// teardown closes the path once: ServerStream (its readers are
// disconnected), feeder and subscriber, then release().
func (s *Server) teardown(p *pathState, why string) {
	s.mu.Lock()
	if p.torn {
		s.mu.Unlock()
		return
	}
	p.torn = true
	if s.paths[p.name] == p {
		delete(s.paths, p.name)
	}
	s.mu.Unlock()
	p.cancel()
	<-p.done
	p.stream.Close()
	p.release()
	s.log.Debug("rtsp path closed", "path", p.name, "reason", why)
}

// goTeardown tears p down from its own feeder, which teardown waits for.
func (s *Server) goTeardown(p *pathState, why string) {
	s.wg.Add(1) // the feeder still holds its count: Close's Wait cannot have returned
	go func() {
		defer s.wg.Done()
		s.teardown(p, why)
	}()
}

// feed forwards the hub's units to the ServerStream from the first PLAY on
// (so that the first reader gets the cached GOP burst and starts at once;
// later readers join the shared stream at the next keyframe).
func (s *Server) feed(ctx context.Context, p *pathState) {
	defer s.wg.Done()
	defer close(p.done)
	select {
	case <-ctx.Done():
		return
	case <-p.playing:
	}
	// gortsplib activates the reader only after OnPlay returns: give it a
	// moment so that the cached GOP burst reaches the first reader.
	select {
	case <-ctx.Done():
		return
	case <-time.After(100 * time.Millisecond):
	}
	sub, err := p.st.Subscribe("rtsp:"+p.name, media.SubscribeOptions{AudioOnly: p.video == nil, VideoOnly: p.audio == nil})
	if err != nil {
		s.log.Warn("rtsp subscribe failed", "path", p.name, "err", err)
		s.goTeardown(p, "subscribe failed")
		return
	}
	defer sub.Close()
	buf := make([]*media.Unit, 64)
	for {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			if ctx.Err() == nil {
				// The stream closed (path removed): disconnect the readers.
				s.goTeardown(p, "stream closed")
			}
			return
		}
		for _, u := range buf[:n] {
			if reason := s.changed(p, u); reason != "" {
				// Track or parameter changes (an SPS change, a new
				// publisher with other tracks): the description the
				// readers set up is stale. The simplest correct thing is
				// to close the path's ServerStream; readers reconnect and
				// DESCRIBE the new tracks.
				s.log.Info("rtsp path tracks changed, closing readers", "path", p.name, "reason", reason)
				s.goTeardown(p, reason)
				return
			}
			s.write(p, u)
		}
		clear(buf[:n])
	}
}

// changed reports why the stream no longer matches the description ("" if it does).
func (s *Server) changed(p *pathState, u *media.Unit) string {
	if u.Kind != media.KindVideo || !u.Keyframe {
		return ""
	}
	t := p.st.Tracks()
	if (t.Video != nil) != (p.video != nil) {
		return "video track added or removed"
	}
	if (t.Audio != nil) != (p.tracks.Audio != nil) || (t.Audio != nil && t.Audio.Codec != p.tracks.Audio.Codec) {
		return "audio track changed"
	}
	sps, pps := paramSets(u.Payload)
	if p.vFormat.SPS == nil && p.vFormat.PPS == nil {
		return "" // none announced: the in-band ones are all readers know
	}
	if (sps != nil && string(sps) != string(p.vFormat.SPS)) || (pps != nil && string(pps) != string(p.vFormat.PPS)) {
		return "SPS/PPS changed"
	}
	return ""
}

func (s *Server) write(p *pathState, u *media.Unit) {
	var medi *description.Media
	var pt uint8
	if u.Kind == media.KindVideo {
		medi, pt = p.video, ptH264
	} else {
		medi = p.audio
		switch u.Codec {
		case media.CodecOpus:
			pt = ptOpus
		case media.CodecPCMU:
			pt = ptPCMU
		case media.CodecPCMA:
			pt = ptPCMA
		}
		if medi == nil || medi.Formats[0].PayloadType() != pt {
			return
		}
	}
	if medi == nil {
		return
	}
	for _, pk := range u.Packets {
		// The packet is shared and immutable; gortsplib sets the SSRC on
		// what it is given, so hand it a copy of the header.
		cp := pk.RTP
		cp.PayloadType = pt
		// An error only means the stream closed or no reader plays yet.
		_ = p.stream.WritePacketRTP(medi, &cp)
	}
}

// statusFor maps a Router error to an RTSP status.
func statusFor(err error) base.StatusCode {
	switch {
	case errors.Is(err, paths.ErrNotFound), errors.Is(err, paths.ErrNotAllowed):
		return base.StatusNotFound
	case errors.Is(err, paths.ErrUnauthorized):
		return base.StatusForbidden
	default:
		return base.StatusServiceUnavailable
	}
}

func cleanPath(p string) string { return strings.Trim(p, "/") }

type handler struct{ s *Server }

// authorized checks the token as the password (any user name). It never
// logs credentials.
func (h *handler) authorized(c *gortsplib.ServerConn, req *base.Request) bool {
	s := h.s
	if s.cfg.Token == "" {
		return true
	}
	var a headers.Authorization
	user := "rtsp"
	provided := false
	if v, ok := req.Header["Authorization"]; ok && a.Unmarshal(v) == nil && a.Username != "" {
		user, provided = a.Username, true
	}
	// Called even without credentials: it sets up the nonce of the challenge.
	if c.VerifyCredentials(req, user, s.cfg.Token) {
		return true
	}
	if provided {
		s.mu.Lock()
		s.authFail++
		s.mu.Unlock()
		s.log.Info("rtsp authentication failed", "remote", c.NetConn().RemoteAddr().String(), "url", redactURL(req.URL))
	}
	return false
}

func redactURL(u *base.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.RawQuery = ""
	return c.String()
}

func unauthorized() (*base.Response, *gortsplib.ServerStream, error) {
	return &base.Response{StatusCode: base.StatusUnauthorized}, nil, liberrors.ErrServerAuth{}
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose: drops the
// connection's DESCRIBE references.
func (h *handler) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s := h.s
	s.mu.Lock()
	refs := s.conns[ctx.Conn]
	delete(s.conns, ctx.Conn)
	s.mu.Unlock()
	for _, p := range refs {
		s.unref(p)
	}
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose.
func (h *handler) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s := h.s
	s.mu.Lock()
	p := s.sessions[ctx.Session]
	delete(s.sessions, ctx.Session)
	s.mu.Unlock()
	if p != nil {
		s.unref(p)
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe.
func (h *handler) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := h.s
	if !h.authorized(ctx.Conn, ctx.Request) {
		return unauthorized()
	}
	name := cleanPath(ctx.Path)
	s.mu.Lock()
	if p := s.conns[ctx.Conn][name]; p != nil && !p.torn {
		s.mu.Unlock()
		return &base.Response{StatusCode: base.StatusOK}, p.stream, nil
	}
	s.mu.Unlock()
	p, err := s.acquire(s.ctx, name)
	if err != nil {
		s.log.Info("rtsp describe refused", "path", name, "err", err)
		return &base.Response{StatusCode: statusFor(err)}, nil, nil
	}
	s.mu.Lock()
	m := s.conns[ctx.Conn]
	if m == nil {
		m = map[string]*pathState{}
		s.conns[ctx.Conn] = m
	}
	old := m[name]
	m[name] = p
	s.mu.Unlock()
	if old != nil {
		s.unref(old)
	}
	return &base.Response{StatusCode: base.StatusOK}, p.stream, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup.
func (h *handler) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s := h.s
	if !h.authorized(ctx.Conn, ctx.Request) {
		return unauthorized()
	}
	name := cleanPath(ctx.Path)
	s.mu.Lock()
	if p := s.sessions[ctx.Session]; p != nil {
		// A further media of the same session.
		s.mu.Unlock()
		if p.name != name {
			return &base.Response{StatusCode: base.StatusBadRequest}, nil, nil
		}
		return &base.Response{StatusCode: base.StatusOK}, p.stream, nil
	}
	s.mu.Unlock()
	p, err := s.acquire(s.ctx, name)
	if err != nil {
		s.log.Info("rtsp setup refused", "path", name, "err", err)
		return &base.Response{StatusCode: statusFor(err)}, nil, nil
	}
	s.mu.Lock()
	s.sessions[ctx.Session] = p
	s.sessTotal++
	s.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, p.stream, nil
}

// OnPlay implements gortsplib.ServerHandlerOnPlay.
func (h *handler) OnPlay(ctx *gortsplib.ServerHandlerOnPlayCtx) (*base.Response, error) {
	s := h.s
	s.mu.Lock()
	p := s.sessions[ctx.Session]
	if p != nil && !p.played {
		p.played = true
		close(p.playing)
	}
	s.mu.Unlock()
	if p == nil {
		return &base.Response{StatusCode: base.StatusSessionNotFound}, nil
	}
	return &base.Response{StatusCode: base.StatusOK}, nil
}
