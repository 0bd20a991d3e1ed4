// Package rtmptest runs a real RTMP server on 127.0.0.1 for tests, built
// on gortmplib's server side: every player gets a looping 2 s clip
// (320x240 H.264 Constrained Baseline at 25 fps, 1 s GOP, and AAC-LC
// 48 kHz stereo) generated once per test binary by ffmpeg, in real time.
// With User set, players must pass Adobe authentication; with Token set,
// the URL's query must carry token=<Token>.
package rtmptest

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
)

// Options of a Server.
type Options struct {
	User, Pass string
	Token      string
}

// Server is a running RTMP test server.
type Server struct {
	opts Options
	ln   net.Listener
	clip *clip
	wg   sync.WaitGroup

	// Played and Rejected count accepted and refused players.
	Played, Rejected atomic.Int64
	mu               sync.Mutex
	conns            map[net.Conn]struct{}
}

type event struct {
	t     time.Duration
	video bool
	pts   time.Duration
	dts   time.Duration
	au    [][]byte // video AU, or one AAC AU
}

type clip struct {
	sps, pps []byte
	aac      *mpeg4audio.AudioSpecificConfig
	events   []event
	dur      time.Duration
}

var (
	clipOnce sync.Once
	clipVal  *clip
	clipErr  error
)

// Start starts a server; t.Cleanup stops it.
func Start(t testing.TB, opts Options) *Server {
	t.Helper()
	clipOnce.Do(func() { clipVal, clipErr = makeClip() })
	if clipErr != nil {
		t.Fatalf("rtmptest: clip: %v", clipErr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{opts: opts, ln: ln, clip: clipVal, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(s.Close)
	return s
}

// URL for a player: rtmp://user:pass@127.0.0.1:port/live/<name>?token=...
func (s *Server) URL(name string) string {
	return s.URLWith(name, s.opts.User, s.opts.Pass, s.opts.Token)
}

// URLWith builds a URL with other credentials.
func (s *Server) URLWith(name, user, pass, token string) string {
	u := url.URL{Scheme: "rtmp", Host: s.ln.Addr().String(), Path: "/live/" + name}
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	if token != "" {
		u.RawQuery = "token=" + url.QueryEscape(token)
	}
	return u.String()
}

// Addr is host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the server and drops every player.
func (s *Server) Close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *Server) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.handle(c)
			c.Close()
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

func (s *Server) handle(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	sc := &gortmplib.ServerConn{RW: c}
	if err := sc.Initialize(); err != nil {
		return err
	}
	var err error
	if s.opts.User != "" {
		err = sc.AcceptConnIfCredentialsMatch(s.opts.User, s.opts.Pass)
	} else {
		err = sc.AcceptConn()
	}
	if err != nil {
		s.Rejected.Add(1)
		return err
	}
	if sc.Publish {
		return fmt.Errorf("publishing is not supported")
	}
	if s.opts.Token != "" && (sc.URL == nil || sc.URL.Query().Get("token") != s.opts.Token) {
		s.Rejected.Add(1)
		_ = sc.RejectAction()
		return fmt.Errorf("bad token")
	}
	vt := &gortmplib.Track{Codec: &codecs.H264{SPS: s.clip.sps, PPS: s.clip.pps}}
	at := &gortmplib.Track{Codec: &codecs.MPEG4Audio{Config: s.clip.aac}}
	w := &gortmplib.Writer{Conn: sc, Tracks: []*gortmplib.Track{vt, at}}
	if err := w.Initialize(); err != nil {
		return err
	}
	s.Played.Add(1)
	_ = c.SetDeadline(time.Time{})
	go func() { // notice the player leaving
		buf := make([]byte, 1024)
		for {
			if _, err := c.Read(buf); err != nil {
				c.Close()
				return
			}
		}
	}()
	start := time.Now()
	for loop := time.Duration(0); ; loop += s.clip.dur {
		for _, e := range s.clip.events {
			time.Sleep(time.Until(start.Add(loop + e.t)))
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			var err error
			if e.video {
				err = w.WriteH264(vt, loop+e.pts, loop+e.dts, e.au)
			} else {
				err = w.WriteMPEG4Audio(at, loop+e.pts, e.au[0])
			}
			if err != nil {
				return err
			}
		}
	}
}

func makeClip() (*clip, error) {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return nil, fmt.Errorf("ffmpeg not found (apt-get install -y ffmpeg): %w", err)
	}
	dir, err := os.MkdirTemp("", "rtmptest-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "clip.ts")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "2",
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-bf", "0", "-g", "25",
		"-keyint_min", "25", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-ac", "2", "-f", "mpegts", "-y", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ffmpeg: %v: %s", err, b)
	}
	f, err := os.Open(out)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := &mpegts.Reader{R: bufio.NewReader(f)}
	if err := r.Initialize(); err != nil {
		return nil, err
	}
	c := &clip{}
	var td mpegts.TimeDecoder
	dur := func(v int64) time.Duration { return time.Duration(v) * time.Second / 90000 }
	for _, tr := range r.Tracks() {
		switch cd := tr.Codec.(type) {
		case *tscodecs.H264:
			r.OnDataH264(tr, func(pts, dts int64, au [][]byte) error {
				p, d := td.Decode(pts), td.Decode(dts)
				for _, n := range au {
					switch h264.NALUType(n[0] & 0x1f) {
					case h264.NALUTypeSPS:
						c.sps = append([]byte(nil), n...)
					case h264.NALUTypePPS:
						c.pps = append([]byte(nil), n...)
					}
				}
				c.events = append(c.events, event{t: dur(d), video: true, pts: dur(p), dts: dur(d), au: au})
				return nil
			})
		case *tscodecs.MPEG4Audio:
			cfg := cd.Config
			c.aac = &cfg
			r.OnDataMPEG4Audio(tr, func(pts int64, aus [][]byte) error {
				p := dur(td.Decode(pts))
				for i, au := range aus {
					t := p + time.Duration(i*1024)*time.Second/time.Duration(cfg.SampleRate)
					c.events = append(c.events, event{t: t, pts: t, au: [][]byte{au}})
				}
				return nil
			})
		}
	}
	for r.Read() == nil {
	}
	if c.sps == nil || c.pps == nil || c.aac == nil || len(c.events) == 0 {
		return nil, fmt.Errorf("clip: sps %v pps %v aac %v events %d", c.sps != nil, c.pps != nil, c.aac != nil, len(c.events))
	}
	sort.SliceStable(c.events, func(i, j int) bool { return c.events[i].t < c.events[j].t })
	// Start at 0 and loop every 2 s.
	t0 := c.events[0].t
	for i := range c.events {
		c.events[i].t -= t0
		c.events[i].pts -= t0
		c.events[i].dts -= t0
	}
	c.dur = 2 * time.Second
	return c, nil
}

// SPS is the clip's H.264 SPS (what a pass-through keeps).
func (s *Server) SPS() []byte { return s.clip.sps }
