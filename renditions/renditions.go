// Package renditions serves viewers that cannot play a path's video as it
// is: one transcode per source stream and target codec (H.264 constrained
// baseline, or VP8 for browsers without H.264), started by the first viewer
// that needs it, shared by every such viewer and stopped a little after the
// last one left. Cost grows with renditions, never with viewers.
//
// A rendition is an ffmpeg child fed by the server: the source stream's
// video units are written to its stdin as MPEG-TS (mediacommon), so ffmpeg
// never opens a camera and never sees a credential; its output (MPEG-TS
// H.264, or IVF VP8) is written into a media.Stream of its own, with its
// own GOP cache and NACK history, so its viewers start at once and recover
// losses like any other. The source's audio (already browser-playable:
// sources turn AAC into Opus on ingest) is copied into the rendition's
// stream untouched, on the same timeline. A dying ffmpeg is restarted with
// backoff and counted; the rendition's viewers keep their sessions.
package renditions

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
)

// Errors.
var (
	// ErrNoFFmpeg: renditions need ffmpeg, which is not installed.
	ErrNoFFmpeg = errors.New("renditions: ffmpeg is not installed")
	// ErrTarget: the codec asked for is not a rendition target.
	ErrTarget = errors.New("renditions: unsupported target codec")
	// ErrClosed: the set was closed.
	ErrClosed = errors.New("renditions: closed")
	// ErrSource: the source's video cannot be fed to a rendition.
	ErrSource = errors.New("renditions: source video cannot be transcoded")
)

// Defaults of Config.
const (
	DefaultH264Bitrate  = 1_500_000
	DefaultVP8Bitrate   = 1_200_000
	DefaultLinger       = 5 * time.Second
	DefaultStartTimeout = 10 * time.Second
	DefaultMinBackoff   = 500 * time.Millisecond
	DefaultMaxBackoff   = 10 * time.Second
	DefaultStallTimeout = 10 * time.Second
)

// Config configures the renditions of a server; the zero value is usable.
type Config struct {
	// FFmpegPath is the ffmpeg binary. It defaults to "ffmpeg" from PATH.
	FFmpegPath string
	// H264Bitrate and VP8Bitrate are the target video bitrates in bits/s.
	// They default to 1.5 Mb/s and 1.2 Mb/s.
	H264Bitrate, VP8Bitrate int
	// Linger is how long a rendition without viewers keeps running, so a
	// viewer who reloads finds it warm. It defaults to 5 s.
	Linger time.Duration
	// StartTimeout bounds how long Acquire waits for a new rendition's
	// first keyframe. It defaults to 10 s.
	StartTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait before restarting a dead
	// ffmpeg. They default to 500 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
	// StallTimeout restarts an ffmpeg that produced nothing for this long
	// while it was being fed. It defaults to 10 s.
	StallTimeout time.Duration
}

func (c Config) withDefaults() Config {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&c.H264Bitrate, DefaultH264Bitrate)
	def(&c.VP8Bitrate, DefaultVP8Bitrate)
	defd(&c.Linger, DefaultLinger)
	defd(&c.StartTimeout, DefaultStartTimeout)
	defd(&c.MinBackoff, DefaultMinBackoff)
	defd(&c.MaxBackoff, DefaultMaxBackoff)
	defd(&c.StallTimeout, DefaultStallTimeout)
	return c
}

// Available reports whether renditions can run (ffmpeg is installed).
func (c Config) Available() bool {
	_, err := transcode.FFmpegPath(c.FFmpegPath)
	return err == nil
}

// Targets are the codecs a rendition can produce, in order of preference.
var Targets = []string{media.CodecH264, media.CodecVP8}

// Set is the renditions of one source stream.
type Set struct {
	cfg  Config
	name string
	src  *media.Stream
	log  *slog.Logger

	mu     sync.Mutex
	closed bool
	byCode map[string]*rendition
	wg     sync.WaitGroup
}

// New returns the (empty) set of renditions of src, named name in logs
// and stats. log may be nil.
func New(name string, src *media.Stream, cfg Config, log *slog.Logger) *Set {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Set{cfg: cfg.withDefaults(), name: name, src: src,
		log: log.With("module", "renditions", "path", name), byCode: map[string]*rendition{}}
}

// Acquire returns the stream of the rendition of the source in codec
// (media.CodecH264 or media.CodecVP8), starting it if needed and waiting,
// bounded by ctx and Config.StartTimeout, until it has a keyframe. release
// must be called exactly once when the viewer is gone.
func (s *Set) Acquire(ctx context.Context, codec string) (*media.Stream, func(), error) {
	if codec != media.CodecH264 && codec != media.CodecVP8 {
		return nil, nil, fmt.Errorf("%w %q", ErrTarget, codec)
	}
	ffmpeg, err := transcode.FFmpegPath(s.cfg.FFmpegPath)
	if err != nil {
		return nil, nil, ErrNoFFmpeg
	}
	if v := s.src.Tracks().Video; v == nil {
		return nil, nil, fmt.Errorf("%w: it has no video", ErrSource)
	} else if c := v.VideoCodec(); c != media.CodecH264 && c != media.CodecH265 {
		return nil, nil, fmt.Errorf("%w: %s", ErrSource, c)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, ErrClosed
	}
	r := s.byCode[codec]
	if r == nil {
		r = s.startLocked(codec, ffmpeg)
	}
	r.refs++
	r.stopLinger()
	s.mu.Unlock()

	var once sync.Once
	release := func() { once.Do(func() { s.release(r) }) }
	wait, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	select {
	case <-r.keyed:
		return r.out, release, nil
	case <-r.done:
		release()
		return nil, nil, fmt.Errorf("renditions: %s of %s stopped before its first picture: %s", codec, s.name, r.lastErr())
	case <-wait.Done():
		release()
		why := r.lastErr()
		if why == "" {
			why = "no picture yet"
		}
		if ctx.Err() != nil {
			return nil, nil, fmt.Errorf("renditions: %s of %s: %w (%s)", codec, s.name, ctx.Err(), why)
		}
		return nil, nil, fmt.Errorf("renditions: %s of %s gave no picture within %s: %s", codec, s.name, s.cfg.StartTimeout, why)
	}
}

func (s *Set) startLocked(codec, ffmpeg string) *rendition {
	ctx, cancel := context.WithCancel(context.Background())
	r := &rendition{set: s, codec: codec, ffmpeg: ffmpeg, cancel: cancel,
		keyed: make(chan struct{}), done: make(chan struct{}), since: time.Now(),
		out: media.NewStream(media.StreamConfig{Name: s.name + "~" + strings.ToLower(codec)}, s.log)}
	s.byCode[codec] = r
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		r.run(ctx)
	}()
	s.log.Info("rendition started", "codec", codec)
	return r
}

func (s *Set) release(r *rendition) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.refs--
	if r.refs > 0 || s.closed {
		return
	}
	r.linger = time.AfterFunc(s.cfg.Linger, func() {
		s.mu.Lock()
		if r.refs > 0 || s.byCode[r.codec] != r {
			s.mu.Unlock()
			return
		}
		delete(s.byCode, r.codec)
		s.mu.Unlock()
		r.stop()
		s.log.Info("rendition stopped: no viewers", "codec", r.codec)
	})
}

// Close stops every rendition and waits for them.
func (s *Set) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	all := s.byCode
	s.byCode = map[string]*rendition{}
	s.mu.Unlock()
	for _, r := range all {
		r.stopLinger()
		r.stop()
	}
	s.wg.Wait()
}

// Stats is one running rendition, for /api/status and /metrics.
type Stats struct {
	Codec    string    `json:"codec"`
	Viewers  int       `json:"viewers"`
	State    string    `json:"state"` // starting | up | restarting
	Since    time.Time `json:"since"`
	Restarts uint64    `json:"restarts"`
	// CPUSeconds is the CPU time its ffmpeg children used.
	CPUSeconds float64 `json:"cpuSeconds"`
	FPS        float64 `json:"fps"`
	LastError  string  `json:"lastError,omitempty"`
	// Pid of the current ffmpeg (0 between runs).
	Pid int `json:"-"`
}

// Stats returns the running renditions, sorted by codec.
func (s *Set) Stats() []Stats {
	s.mu.Lock()
	rs := make([]*rendition, 0, len(s.byCode))
	refs := map[*rendition]int{}
	for _, r := range s.byCode {
		rs = append(rs, r)
		refs[r] = r.refs
	}
	s.mu.Unlock()
	out := make([]Stats, 0, len(rs))
	for _, c := range Targets {
		for _, r := range rs {
			if r.codec == c {
				out = append(out, r.stats(refs[r]))
			}
		}
	}
	return out
}

// rendition is one running transcode.
type rendition struct {
	set    *Set
	codec  string
	ffmpeg string
	out    *media.Stream
	cancel context.CancelFunc
	since  time.Time

	refs   int         // under set.mu
	linger *time.Timer // under set.mu

	keyed     chan struct{} // closed at the first keyframe written to out
	keyedOnce sync.Once
	done      chan struct{} // closed when run returned

	restarts atomic.Uint64
	pid      atomic.Int64
	cpuDone  atomic.Int64 // CPU nanoseconds of finished children
	up       atomic.Bool
	errMu    sync.Mutex
	err      string
}

func (r *rendition) stopLinger() {
	if r.linger != nil {
		r.linger.Stop()
		r.linger = nil
	}
}

func (r *rendition) stop() {
	r.cancel()
	<-r.done
	r.out.Close()
}

func (r *rendition) setErr(err error) {
	r.errMu.Lock()
	r.err = err.Error()
	r.errMu.Unlock()
}

func (r *rendition) lastErr() string {
	r.errMu.Lock()
	defer r.errMu.Unlock()
	return r.err
}

func (r *rendition) stats(viewers int) Stats {
	st := Stats{Codec: r.codec, Viewers: viewers, Since: r.since, Restarts: r.restarts.Load(),
		FPS: r.out.Stats().FPS, LastError: r.lastErr(), Pid: int(r.pid.Load())}
	switch {
	case r.up.Load():
		st.State = "up"
	case st.Restarts > 0:
		st.State = "restarting"
	default:
		st.State = "starting"
	}
	cpu := time.Duration(r.cpuDone.Load())
	if st.Pid > 0 {
		cpu += transcode.ProcessCPU(st.Pid)
	}
	st.CPUSeconds = cpu.Seconds()
	return st
}

// run keeps an ffmpeg running until ctx ends, restarting it with backoff.
func (r *rendition) run(ctx context.Context) {
	defer close(r.done)
	backoff := r.set.cfg.MinBackoff
	for {
		began := time.Now()
		err := r.runOnce(ctx)
		r.up.Store(false)
		if ctx.Err() != nil {
			return
		}
		r.restarts.Add(1)
		r.setErr(err)
		if time.Since(began) > 30*time.Second {
			backoff = r.set.cfg.MinBackoff
		}
		r.set.log.Warn("rendition failed; restarting", "codec", r.codec, "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, r.set.cfg.MaxBackoff)
	}
}
