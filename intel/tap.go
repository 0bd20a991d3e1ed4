package intel

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
	"github.com/icey/icey-server/media/tsfeed"
)

// TapConfig configures a Tap.
type TapConfig struct {
	// Video decodes the video to GridWidth x GridHeight grey frames (the
	// luma point-sampled on that lattice).
	Video                 bool
	GridWidth, GridHeight int
	// Audio decodes the audio to mono 16-bit PCM (16 kHz for Opus, 8 kHz
	// for G.711, which is decoded here without ffmpeg).
	Audio bool
	// FrameQueue and AudioQueue bound the decoded frames and audio blocks
	// waiting for the analysers; more are dropped and counted. They
	// default to 8 and 32.
	FrameQueue, AudioQueue int
	// FFmpegPath defaults to "ffmpeg" from PATH.
	FFmpegPath string
	// MinBackoff and MaxBackoff bound the wait before restarting a dead
	// decoder. They default to 500 ms and 10 s.
	MinBackoff, MaxBackoff time.Duration
}

// TapFrame is one decoded grey frame.
type TapFrame struct {
	PTS  time.Duration // on the stream's timeline
	Luma []byte        // GridWidth x GridHeight, one byte per cell
	// FedAt is when the unit it was decoded from was given to the decoder
	// (zero when unknown): analysis latency is measured from it.
	FedAt    time.Time
	Keyframe bool
	ID       uint64
}

// AudioBlock is a block of decoded mono samples.
type AudioBlock struct {
	PTS        time.Duration
	Samples    []int16
	SampleRate int
	Sequence   uint64
}

// TapStats are the decoder's counters.
type TapStats struct {
	Restarts      uint64
	Frames        uint64 // decoded frames delivered
	FramesDropped uint64 // decoded frames dropped (analysis behind)
	Blocks        uint64
	BlocksDropped uint64
	CPUSeconds    float64 // the decoder's children
	Pid           int
	LastError     string
}

// Tap is the decode tap of one stream: one decoder (an ffmpeg child fed
// the stream's units as MPEG-TS, never a URL) however many analysers and
// viewers there are. Its output queues are bounded and drop under load
// (counted): analysis never slows the media to viewers or recorders, which
// read the stream on their own.
type Tap struct {
	cfg TapConfig
	st  *media.Stream
	log *slog.Logger

	frames chan TapFrame
	audio  chan AudioBlock

	restarts, nFrames, dFrames, nBlocks, dBlocks atomic.Uint64
	pid                                          atomic.Int64
	cpuDone                                      atomic.Int64
	errMu                                        sync.Mutex
	lastErr                                      string
	frameID                                      atomic.Uint64
	blockSeq                                     atomic.Uint64
}

// NewTap returns the tap of st; Run starts it.
func NewTap(st *media.Stream, cfg TapConfig, log *slog.Logger) *Tap {
	if cfg.FrameQueue <= 0 {
		cfg.FrameQueue = 8
	}
	if cfg.AudioQueue <= 0 {
		cfg.AudioQueue = 32
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 10 * time.Second
	}
	if cfg.GridWidth <= 0 || cfg.GridHeight <= 0 {
		cfg.GridWidth, cfg.GridHeight = 32, 18
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Tap{cfg: cfg, st: st, log: log, frames: make(chan TapFrame, cfg.FrameQueue), audio: make(chan AudioBlock, cfg.AudioQueue)}
}

// Frames delivers decoded frames (closed when Run returns).
func (t *Tap) Frames() <-chan TapFrame { return t.frames }

// Audio delivers decoded audio blocks (closed when Run returns).
func (t *Tap) Audio() <-chan AudioBlock { return t.audio }

// Stats snapshots the counters.
func (t *Tap) Stats() TapStats {
	s := TapStats{Restarts: t.restarts.Load(), Frames: t.nFrames.Load(), FramesDropped: t.dFrames.Load(),
		Blocks: t.nBlocks.Load(), BlocksDropped: t.dBlocks.Load(), Pid: int(t.pid.Load())}
	cpu := time.Duration(t.cpuDone.Load())
	if s.Pid > 0 {
		cpu += transcode.ProcessCPU(s.Pid)
	}
	s.CPUSeconds = cpu.Seconds()
	t.errMu.Lock()
	s.LastError = t.lastErr
	t.errMu.Unlock()
	return s
}

// Run decodes until ctx ends, restarting a dead decoder with backoff.
func (t *Tap) Run(ctx context.Context) {
	defer close(t.frames)
	defer close(t.audio)
	backoff := t.cfg.MinBackoff
	for {
		began := time.Now()
		err := t.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("decoder ended")
		}
		t.restarts.Add(1)
		t.errMu.Lock()
		t.lastErr = err.Error()
		t.errMu.Unlock()
		if time.Since(began) > 30*time.Second {
			backoff = t.cfg.MinBackoff
		}
		t.log.Warn("analysis decoder failed; restarting", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, t.cfg.MaxBackoff)
	}
}

func (t *Tap) pushFrame(f TapFrame) {
	select {
	case t.frames <- f:
		t.nFrames.Add(1)
	default:
		t.dFrames.Add(1)
	}
}

func (t *Tap) pushAudio(b AudioBlock) {
	select {
	case t.audio <- b:
		t.nBlocks.Add(1)
	default:
		t.dBlocks.Add(1)
	}
}

// waitTracks waits for the stream's tracks (a publish path before its
// publisher, an on-demand path before its first reader).
func (t *Tap) waitTracks(ctx context.Context) (media.Tracks, error) {
	for {
		tr, err := t.st.WaitTracks(ctx)
		if err != nil {
			return tr, err
		}
		if tr.Video != nil || tr.Audio != nil {
			return tr, nil
		}
		select {
		case <-ctx.Done():
			return tr, ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// runOnce runs one decoder until it fails or ctx ends.
func (t *Tap) runOnce(ctx context.Context) error {
	tracks, err := t.waitTracks(ctx)
	if err != nil {
		return err
	}
	video := ""
	if t.cfg.Video && tracks.Video != nil {
		switch c := tracks.Video.VideoCodec(); c {
		case media.CodecH264, media.CodecH265:
			video = c
		default:
			return fmt.Errorf("video %s cannot be analysed", c)
		}
	}
	audioCodec := ""
	if t.cfg.Audio && tracks.Audio != nil {
		audioCodec = tracks.Audio.Codec
	}
	opus := audioCodec == media.CodecOpus
	sub, err := t.st.Subscribe("intel", media.SubscribeOptions{QueuePackets: 4096})
	if err != nil {
		return err
	}
	defer sub.Close()
	if video == "" && !opus {
		// Nothing for ffmpeg: G.711 is decoded here.
		return t.feedUnits(ctx, sub, nil, video, audioCodec, nil)
	}
	ffmpeg, err := transcode.FFmpegPath(t.cfg.FFmpegPath)
	if err != nil {
		return err
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	args := []string{"-hide_banner", "-nostats", "-loglevel", "info", "-threads", "1",
		"-probesize", "32", "-analyzeduration", "1", "-copyts", "-f", "mpegts", "-i", "pipe:0"}
	if video != "" {
		// Nearest-neighbour scaling to the grid samples the luma plane on
		// the lattice; showinfo reports each frame's timestamp on stderr.
		args = append(args, "-map", "0:v:0", "-vf",
			fmt.Sprintf("scale=%d:%d:flags=neighbor,format=gray,showinfo", t.cfg.GridWidth, t.cfg.GridHeight),
			"-fps_mode", "passthrough", "-flush_packets", "1", "-f", "rawvideo", "pipe:1")
	}
	var audioR, audioW *os.File
	if opus {
		if audioR, audioW, err = os.Pipe(); err != nil {
			return err
		}
		defer audioR.Close()
		args = append(args, "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-flush_packets", "1", "-f", "s16le", "pipe:3")
	}
	cmd := transcode.Command(runCtx, ffmpeg, args)
	if audioW != nil {
		cmd.ExtraFiles = []*os.File{audioW}
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		if audioW != nil {
			audioW.Close()
		}
		return fmt.Errorf("start ffmpeg: %w", err)
	}
	if audioW != nil {
		audioW.Close() // the child has it
	}
	t.pid.Store(int64(cmd.Process.Pid))
	defer t.pid.Store(0)

	fed := newFedTimes()
	var audioStart atomic.Int64 // first Opus PTS fed + 1 (0: none yet)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := t.feedUnits(runCtx, sub, stdin, video, audioCodec, func(u *media.Unit) {
			if u.Kind == media.KindVideo {
				fed.add(u.PTS, time.Now(), u.Keyframe)
			} else if opus {
				audioStart.CompareAndSwap(0, int64(u.PTS)+1)
			}
		})
		_ = stdin.Close()
		if err != nil && runCtx.Err() == nil {
			cancel(fmt.Errorf("feeding the decoder: %w", err))
		}
	}()
	ptsCh := make(chan time.Duration, 256)
	tail := &lines{max: 8}
	wg.Add(1)
	go func() { // stderr: showinfo's timestamps, the rest kept for errors
		defer wg.Done()
		defer close(ptsCh)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if p, ok := showinfoPTS(line); ok {
				select {
				case ptsCh <- p:
				case <-runCtx.Done():
				}
				continue
			}
			if strings.Contains(line, "Error") || strings.Contains(line, "error") || strings.HasPrefix(line, "[") && strings.Contains(line, "Invalid") {
				tail.add(line)
			}
		}
	}()
	if opus {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t.readPCM(runCtx, audioR, &audioStart)
		}()
	}
	var readErr error
	if video != "" {
		readErr = t.readFrames(runCtx, stdout, ptsCh, fed)
	} else {
		_, readErr = io.Copy(io.Discard, stdout)
	}
	cancel(nil)
	waitErr := cmd.Wait()
	wg.Wait()
	if ps := cmd.ProcessState; ps != nil {
		t.cpuDone.Add(int64(ps.UserTime() + ps.SystemTime()))
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w%s", cause, tail.summary())
	}
	switch {
	case waitErr != nil:
		return fmt.Errorf("ffmpeg: %w%s", waitErr, tail.summary())
	case readErr != nil && !errors.Is(readErr, io.EOF):
		return fmt.Errorf("reading the decoder: %w%s", readErr, tail.summary())
	}
	return fmt.Errorf("decoder exited%s", tail.summary())
}

// feedUnits writes the subscriber's units to w as MPEG-TS (when w is set)
// and decodes G.711 audio itself. seen, when set, is told of every unit fed.
func (t *Tap) feedUnits(ctx context.Context, sub *media.Subscriber, w io.Writer, video, audioCodec string, seen func(*media.Unit)) error {
	var tw *tsfeed.Writer
	if w != nil {
		var err error
		if tw, err = tsfeed.New(w, video, audioCodec == media.CodecOpus); err != nil {
			return err
		}
	}
	g711 := audioCodec == media.CodecPCMU || audioCodec == media.CodecPCMA
	return sub.ReadBatches(ctx, func(units []*media.Unit) error {
		for _, u := range units {
			if u.Kind == media.KindAudio && g711 && u.Codec == audioCodec && len(u.Payload) == 1 {
				t.pushAudio(AudioBlock{PTS: u.PTS, Samples: decodeG711(u.Payload[0], u.Codec == media.CodecPCMA),
					SampleRate: 8000, Sequence: t.blockSeq.Add(1)})
				continue
			}
			if tw == nil {
				continue
			}
			if u.Kind == media.KindVideo && video == "" {
				continue
			}
			if err := tw.Write(u); err != nil {
				return err
			}
			if seen != nil {
				seen(u)
			}
		}
		if tw != nil {
			return tw.Flush()
		}
		return nil
	})
}

// readFrames reads grey frames from the decoder and pairs each with its
// timestamp from showinfo (same order).
func (t *Tap) readFrames(ctx context.Context, r io.Reader, ptsCh <-chan time.Duration, fed *fedTimes) error {
	size := t.cfg.GridWidth * t.cfg.GridHeight
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		buf := make([]byte, size)
		if _, err := io.ReadFull(br, buf); err != nil {
			return err
		}
		var pts time.Duration
		select {
		case p, ok := <-ptsCh:
			if !ok {
				return io.EOF
			}
			pts = p
		case <-time.After(5 * time.Second):
			return errors.New("a frame without its timestamp")
		case <-ctx.Done():
			return ctx.Err()
		}
		at, key := fed.lookup(pts)
		t.pushFrame(TapFrame{PTS: pts, Luma: buf, FedAt: at, Keyframe: key, ID: t.frameID.Add(1)})
	}
}

// readPCM reads 20 ms blocks of 16 kHz mono samples; their time is the
// first Opus unit's plus the samples read (the decoder's output is
// continuous).
func (t *Tap) readPCM(ctx context.Context, r io.Reader, start *atomic.Int64) {
	const rate, block = 16000, 320
	br := bufio.NewReaderSize(r, 16<<10)
	raw := make([]byte, 2*block)
	var read int64
	for ctx.Err() == nil {
		if _, err := io.ReadFull(br, raw); err != nil {
			return
		}
		s := make([]int16, block)
		for i := range s {
			s[i] = int16(binary.LittleEndian.Uint16(raw[2*i:]))
		}
		base := time.Duration(start.Load() - 1)
		pts := base + time.Duration(read)*time.Second/rate
		read += block
		t.pushAudio(AudioBlock{PTS: pts, Samples: s, SampleRate: rate, Sequence: t.blockSeq.Add(1)})
	}
}

// showinfoPTS reads the pts_time of a showinfo line (ffmpeg's
// "[Parsed_showinfo_2 @ 0x...] n:   3 pts: 903600 pts_time:10.04 ..."),
// with tsfeed's base taken off.
func showinfoPTS(line string) (time.Duration, bool) {
	if !strings.Contains(line, "showinfo") {
		return 0, false
	}
	i := strings.Index(line, "pts_time:")
	if i < 0 {
		return 0, false
	}
	f := strings.Fields(line[i+len("pts_time:"):])
	if len(f) == 0 {
		return 0, false
	}
	sec, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return 0, false
	}
	return time.Duration(sec*float64(time.Second)) - time.Duration(tsfeed.Base)*time.Second/90000, true
}

// fedTimes remembers when recent video units were fed, by PTS.
type fedTimes struct {
	mu   sync.Mutex
	ring [256]struct {
		pts time.Duration
		at  time.Time
		key bool
	}
	next int
}

func newFedTimes() *fedTimes { return &fedTimes{} }

func (f *fedTimes) add(pts time.Duration, at time.Time, key bool) {
	f.mu.Lock()
	f.ring[f.next%len(f.ring)] = struct {
		pts time.Duration
		at  time.Time
		key bool
	}{pts, at, key}
	f.next++
	f.mu.Unlock()
}

// lookup finds the unit nearest pts (within 5 ms: timestamps pass 90 kHz).
func (f *fedTimes) lookup(pts time.Duration) (time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.ring {
		if d := e.pts - pts; !e.at.IsZero() && d > -5*time.Millisecond && d < 5*time.Millisecond {
			return e.at, e.key
		}
	}
	return time.Time{}, false
}

// lines keeps the last max lines of interest for an error message.
type lines struct {
	mu  sync.Mutex
	max int
	l   []string
}

func (l *lines) add(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.l = append(l.l, strings.TrimSpace(s))
	if len(l.l) > l.max {
		l.l = l.l[len(l.l)-l.max:]
	}
}

func (l *lines) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.l) == 0 {
		return ""
	}
	var b bytes.Buffer
	b.WriteString(": ")
	b.WriteString(strings.Join(l.l, " | "))
	return b.String()
}

// decodeG711 expands G.711 mu-law (or A-law) to 16-bit linear PCM
// (ITU-T G.711; the usual table-free formulas).
func decodeG711(b []byte, alaw bool) []int16 {
	out := make([]int16, len(b))
	for i, c := range b {
		if alaw {
			out[i] = alawToLinear(c)
		} else {
			out[i] = ulawToLinear(c)
		}
	}
	return out
}

func ulawToLinear(u byte) int16 {
	u = ^u
	t := (int(u&0x0f) << 3) + 0x84
	t <<= (u & 0x70) >> 4
	if u&0x80 != 0 {
		return int16(0x84 - t)
	}
	return int16(t - 0x84)
}

func alawToLinear(a byte) int16 {
	a ^= 0x55
	t := int(a&0x0f) << 4
	seg := (a & 0x70) >> 4
	switch seg {
	case 0:
		t += 8
	case 1:
		t += 0x108
	default:
		t += 0x108
		t <<= seg - 1
	}
	if a&0x80 != 0 {
		return int16(t)
	}
	return int16(-t)
}
