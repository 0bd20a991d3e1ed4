// Package transcode is the source for inputs the hub cannot carry as they
// are (MP4 with AAC, other codecs and containers, V4L2 devices, rtmp/srt/http
// URLs): one ffmpeg process per stream converts them to H.264 Constrained
// Baseline and Opus in MPEG-TS on its stdout, which is demuxed here and
// written into the media.Stream. Encoding happens once per source, never
// per viewer.
//
// No secret reaches a child process's command line or environment: inputs
// the server can pull itself are written to ffmpeg's stdin (Config.Feed),
// a URL ffmpeg must open itself travels in a 0600 file in a private
// directory (see oob.go), and the child's environment is built from an
// allow-list (ChildEnv).
package transcode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/media"
)

// Input kinds (Config.Kind, Source.Kind).
const (
	KindFile   = "file"
	KindDevice = "device"
	KindURL    = "url"
)

// Defaults of Config.
const (
	DefaultVideoBitrate = 1_500_000
	DefaultAudioBitrate = 64_000
	DefaultStallTimeout = 10 * time.Second
)

// ErrNoFFmpeg is returned by New when ffmpeg cannot be found.
var ErrNoFFmpeg = errors.New("transcode: ffmpeg not found")

// Available reports whether ffmpeg is in PATH.
func Available() bool {
	_, err := exec.LookPath("ffmpeg")
	return err == nil
}

// Config configures a Source. Only Input is required.
type Config struct {
	// Input is a file path, "v4l2:/dev/videoN", or a URL (rtmp://, srt://,
	// http(s)://, ...). Credentials in a URL never reach logs or errors.
	Input string
	// Kind is "file", "device" or "url" (default: inferred from Input).
	Kind string
	// Loop restarts a file at its end (files only; others run until they end).
	Loop bool
	// VideoBitrate in bits/s (default 1.5 Mb/s).
	VideoBitrate int
	// Width, Height and FPS are optional targets; 0 keeps the input's. With
	// only one of Width/Height the other follows the aspect ratio.
	Width, Height, FPS int
	// FFmpegPath (default: "ffmpeg" from PATH).
	FFmpegPath string
	// StallTimeout ends a run when no media came out of ffmpeg for this
	// long (a dead URL that ffmpeg keeps waiting on) (default 10 s).
	StallTimeout time.Duration
	// Feed, when set, writes the input to ffmpeg's stdin, which is all
	// ffmpeg reads (pipe:0): the server pulls the input (and keeps its
	// credentials). Input is then only a label. Feed must return when ctx
	// is done or a write fails; nil means the input ended.
	Feed func(ctx context.Context, w io.Writer) error
	// FeedFormat is ffmpeg's input format for Feed (e.g. "mpegts"); empty
	// lets ffmpeg probe.
	FeedFormat string
}

// Source runs ffmpeg on one input. It implements media.Source. Run may be
// called again after it returns, but not concurrently.
type Source struct {
	cfg    Config
	ffmpeg string
	safe   string // Input without credentials
	secret string // password of a URL input, scrubbed from texts
	log    *slog.Logger

	pid atomic.Int64 // ffmpeg of the current run, for tests
}

// New validates cfg and finds ffmpeg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Input == "" {
		return nil, errors.New("transcode: no input")
	}
	if cfg.Kind == "" {
		cfg.Kind = inferKind(cfg.Input)
	}
	switch {
	case cfg.Feed != nil:
		// Any kind label: the input arrives on stdin.
	case cfg.Kind == KindFile, cfg.Kind == KindURL:
	case cfg.Kind == KindDevice:
		if !strings.HasPrefix(cfg.Input, "v4l2:") {
			return nil, fmt.Errorf("transcode: device %q: want v4l2:/dev/videoN", cfg.Input)
		}
	default:
		return nil, fmt.Errorf("transcode: kind %q: want file, device or url", cfg.Kind)
	}
	if cfg.VideoBitrate <= 0 {
		cfg.VideoBitrate = DefaultVideoBitrate
	}
	if cfg.Width < 0 || cfg.Height < 0 || cfg.FPS < 0 {
		return nil, errors.New("transcode: negative width, height or fps")
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = DefaultStallTimeout
	}
	name := cfg.FFmpegPath
	if name == "" {
		name = "ffmpeg"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%w (%s): install it or configure another source", ErrNoFFmpeg, name)
	}
	s := &Source{cfg: cfg, ffmpeg: path, safe: media.RedactURL(cfg.Input)}
	if u, err := url.Parse(cfg.Input); err == nil && u.User != nil {
		s.secret, _ = u.User.Password()
	}
	s.log = log.With("module", "transcode", "source", s.safe)
	return s, nil
}

func inferKind(in string) string {
	switch {
	case strings.HasPrefix(in, "v4l2:"):
		return KindDevice
	case strings.Contains(in, "://"):
		return KindURL
	}
	return KindFile
}

// Kind implements media.Source: file, device or url.
func (s *Source) Kind() string { return s.cfg.Kind }

// String implements media.Source: the input without credentials.
func (s *Source) String() string { return s.safe }

// args builds the ffmpeg command line. listFile is the out-of-band input
// list of a URL input (see oob.go); the URL itself is never an argument.
func (s *Source) args(listFile string) []string {
	c := s.cfg
	a := []string{"-hide_banner", "-nostdin", "-loglevel", "warning"}
	switch {
	case c.Feed != nil:
		// Start decoding without a long probe: the feeder writes live media.
		a = append(a, "-probesize", "500000", "-analyzeduration", "1000000")
		if c.FeedFormat != "" {
			a = append(a, "-f", c.FeedFormat)
		}
		a = append(a, "-i", "pipe:0")
	case c.Kind == KindFile:
		a = append(a, "-re") // pace a file in real time, like a camera
		if c.Loop {
			a = append(a, "-stream_loop", "-1")
		}
		a = append(a, "-i", c.Input)
	case c.Kind == KindDevice:
		a = append(a, "-f", "v4l2", "-i", strings.TrimPrefix(c.Input, "v4l2:"))
	case c.Kind == KindURL:
		// The concat demuxer opens the URL named in the list file; the
		// whitelist lets it use the URL's protocol and what that needs.
		a = append(a, "-protocol_whitelist", protocolWhitelist(c.Input),
			"-f", "concat", "-safe", "0", "-i", listFile)
	}

	var vf []string
	if c.FPS > 0 {
		vf = append(vf, "fps="+strconv.Itoa(c.FPS))
	}
	if c.Width > 0 || c.Height > 0 {
		w, h := c.Width, c.Height
		if w == 0 {
			w = -2
		}
		if h == 0 {
			h = -2
		}
		vf = append(vf, fmt.Sprintf("scale=%d:%d", w, h))
	}
	br := strconv.Itoa(c.VideoBitrate)
	a = append(a, "-map", "0:v:0", "-map", "0:a:0?")
	if len(vf) > 0 {
		a = append(a, "-vf", strings.Join(vf, ","))
	}
	a = append(a,
		// Constrained Baseline, no B-frames: every browser decodes it and
		// PTS == DTS. A keyframe every second bounds a new viewer's wait.
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-tune", "zerolatency",
		"-bf", "0", "-pix_fmt", "yuv420p", "-force_key_frames", "expr:gte(t,n_forced*1)",
		"-sc_threshold", "0", "-b:v", br, "-maxrate", br, "-bufsize", strconv.Itoa(2*c.VideoBitrate),
		"-c:a", "libopus", "-b:a", strconv.Itoa(DefaultAudioBitrate), "-ar", "48000", "-ac", "2",
		// Emit each packet as soon as it is muxed: latency over throughput.
		"-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "-pes_payload_size", "0",
		"-flush_packets", "1", "pipe:1")
	return a
}

// Run implements media.Source. It returns ctx.Err() when cancelled, nil when
// a file without Loop ended, and an error wrapping media.ErrSourceUnavailable
// (with ffmpeg's last stderr lines) when ffmpeg fails or stalls.
func (s *Source) Run(ctx context.Context, st media.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var listFile string
	if s.cfg.Feed == nil && s.cfg.Kind == KindURL {
		lf, cleanup, err := writeInputList(s.cfg.Input, s.cfg.StallTimeout)
		if err != nil {
			return fmt.Errorf("%w: %s: %s", media.ErrSourceUnavailable, s.safe, s.scrub(err.Error()))
		}
		defer cleanup()
		listFile = lf
	}

	stderr := newTail(8, s.scrub, s.log)
	cmd := command(runCtx, s.ffmpeg, s.args(listFile))
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, s.safe, err)
	}
	var stdin io.WriteCloser
	if s.cfg.Feed != nil {
		if stdin, err = cmd.StdinPipe(); err != nil {
			return fmt.Errorf("%w: %s: %v", media.ErrSourceUnavailable, s.safe, err)
		}
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%w: %s: start ffmpeg: %s", media.ErrSourceUnavailable, s.safe, s.scrub(err.Error()))
	}
	s.pid.Store(int64(cmd.Process.Pid))
	s.log.Debug("ffmpeg started", "pid", cmd.Process.Pid)

	var lastMedia atomic.Int64
	lastMedia.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	if stdin != nil {
		wg.Add(1)
		go func() { // the server pulls the input and writes it to ffmpeg
			defer wg.Done()
			err := s.cfg.Feed(runCtx, stdin)
			_ = stdin.Close() // EOF: ffmpeg flushes and exits
			if err != nil && runCtx.Err() == nil {
				cancel(fmt.Errorf("input: %s", s.scrub(err.Error())))
			}
		}()
	}
	wg.Add(1)
	go func() { // stall watchdog
		defer wg.Done()
		t := time.NewTicker(min(s.cfg.StallTimeout/4, time.Second))
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case now := <-t.C:
				if idle := now.Sub(time.Unix(0, lastMedia.Load())); idle >= s.cfg.StallTimeout {
					cancel(fmt.Errorf("no media from ffmpeg for %s", idle.Round(100*time.Millisecond)))
					return
				}
			}
		}
	}()

	readErr := s.demux(bufio.NewReaderSize(stdout, 64<<10), st, &lastMedia)
	// Unblock ffmpeg if we stopped reading early, then reap it: no zombie.
	if readErr != nil && !errors.Is(readErr, io.EOF) {
		cancel(nil)
	}
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	cancel(nil)
	wg.Wait()
	s.pid.Store(0)
	stderr.flush()

	if err := ctx.Err(); err != nil {
		return err
	}
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w: %s: %v%s", media.ErrSourceUnavailable, s.safe, cause, stderr.summary())
	}
	if waitErr == nil && errors.Is(readErr, io.EOF) && s.cfg.Kind == KindFile && !s.cfg.Loop {
		return nil // the file ended
	}
	why := "ffmpeg exited"
	if waitErr != nil {
		why = "ffmpeg: " + waitErr.Error()
	} else if readErr != nil && !errors.Is(readErr, io.EOF) {
		why = "reading ffmpeg output: " + s.scrub(readErr.Error())
	}
	return fmt.Errorf("%w: %s: %s%s", media.ErrSourceUnavailable, s.safe, why, stderr.summary())
}

// demux reads MPEG-TS until an error (io.EOF when ffmpeg closed stdout).
func (s *Source) demux(r io.Reader, st media.Writer, lastMedia *atomic.Int64) error {
	tr := &mpegts.Reader{R: r}
	if err := tr.Initialize(); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return fmt.Errorf("no MPEG-TS from ffmpeg: %w", err)
	}
	var video, audio *mpegts.Track
	for _, t := range tr.Tracks() {
		switch t.Codec.(type) {
		case *tscodecs.H264:
			if video == nil {
				video = t
			}
		case *tscodecs.Opus:
			if audio == nil {
				audio = t
			}
		}
	}
	if video == nil {
		return errors.New("ffmpeg produced no H.264 track")
	}
	tracks := media.Tracks{Video: &media.VideoParams{}}
	if audio != nil {
		tracks.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}
	st.SetTracks(tracks)

	// One decoder for both tracks: they share the 33-bit 90 kHz clock,
	// which it unwraps.
	var td mpegts.TimeDecoder
	toDur := func(ts int64) time.Duration {
		v := td.Decode(ts)
		return time.Duration(v/90000)*time.Second + time.Duration(v%90000)*time.Second/90000
	}
	var decodeErrs int
	tr.OnDecodeError(func(error) { decodeErrs++ })
	tr.OnDataH264(video, func(pts, _ int64, au [][]byte) error {
		lastMedia.Store(time.Now().UnixNano())
		st.WriteH264(toDur(pts), au)
		return nil
	})
	if audio != nil {
		tr.OnDataOpus(audio, func(pts int64, packets [][]byte) error {
			lastMedia.Store(time.Now().UnixNano())
			t := toDur(pts)
			for _, p := range packets {
				st.WriteAudio(t, p)
				t += time.Duration(opus.PacketDuration2(p)) * time.Second / 48000
			}
			return nil
		})
	}
	defer func() {
		if decodeErrs > 0 {
			s.log.Warn("MPEG-TS decode errors", "count", decodeErrs)
		}
	}()
	for {
		if err := tr.Read(); err != nil {
			return err
		}
	}
}

func (s *Source) scrub(text string) string {
	text = media.RedactURL(text)
	if s.secret != "" {
		text = strings.ReplaceAll(text, s.secret, "***")
	}
	return text
}

// tail keeps ffmpeg's last stderr lines for the error message and logs
// them at most once per second (with a count of the lines in between).
type tail struct {
	max   int
	scrub func(string) string
	log   *slog.Logger

	mu      sync.Mutex
	partial []byte
	lines   []string
	limit   logging.Limiter // logged lines: one per second
}

func newTail(max int, scrub func(string) string, log *slog.Logger) *tail {
	return &tail{max: max, scrub: scrub, log: log}
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.partial = append(t.partial, p...)
	for {
		i := strings.IndexAny(string(t.partial), "\r\n")
		if i < 0 {
			break
		}
		t.addLocked(string(t.partial[:i]))
		t.partial = t.partial[i+1:]
	}
	if len(t.partial) > 4096 { // a line without end: keep memory bounded
		t.addLocked(string(t.partial))
		t.partial = t.partial[:0]
	}
	return len(p), nil
}

func (t *tail) addLocked(line string) {
	line = strings.TrimSpace(line)
	if line == "" {
		return
	}
	line = t.scrub(line)
	t.lines = append(t.lines, line)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
	if ok, held := t.limit.Allow(time.Now()); ok {
		t.log.Warn("ffmpeg: "+line, "suppressed", held)
	}
}

func (t *tail) flush() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.partial) > 0 {
		t.addLocked(string(t.partial))
		t.partial = nil
	}
	if held := t.limit.Flush(); held > 0 {
		t.log.Warn("ffmpeg: more stderr lines", "suppressed", held)
	}
}

// summary is ": line1 | line2 ..." or "" when ffmpeg said nothing.
func (t *tail) summary() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return ""
	}
	return ": " + strings.Join(t.lines, " | ")
}
