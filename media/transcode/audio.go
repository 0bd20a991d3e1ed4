package transcode

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
)

// AudioConfig configures an AudioPipe.
type AudioConfig struct {
	// AAC is the configuration of the AAC stream (from the SDP or container).
	AAC mpeg4audio.AudioSpecificConfig
	// OnOpus receives each Opus frame with its timestamp, on the same
	// timeline as the PTS given to WriteAAC. Called from one goroutine.
	OnOpus func(pts time.Duration, frame []byte)
	// FFmpegPath (default: "ffmpeg" from PATH).
	FFmpegPath string
	// Queue bounds the AAC writes waiting for ffmpeg (default 64); writes
	// beyond it are dropped and counted instead of blocking the caller.
	Queue int
}

// AudioPipe transcodes AAC to Opus with one ffmpeg child that only reads
// its stdin and writes its stdout: the server writes the AAC access units
// it pulled (RTSP, RTMP, ...) as MPEG-TS, and reads Opus in MPEG-TS back,
// with the input timestamps kept (-copyts). Video does not pass through
// ffmpeg. ffmpeg never sees a URL, a credential or the server's
// environment.
type AudioPipe struct {
	cfg     AudioConfig
	log     *slog.Logger
	cmd     *exec.Cmd
	cancel  context.CancelCauseFunc
	ctx     context.Context
	in      chan aacWrite
	dropped atomic.Uint64
	lastIn  atomic.Int64 // latest input timestamp, 90 kHz ticks, unwrapped
	frames  atomic.Uint64

	inEnd     chan struct{} // closed by CloseInput
	inEndOnce sync.Once

	done chan struct{}
	err  error
	wg   sync.WaitGroup
}

type aacWrite struct {
	ticks int64
	aus   [][]byte
}

// tsOffset keeps the fed timestamps (and the PCR, 0.1 s earlier) positive
// when the caller's first PTS is 0 or slightly negative.
const tsOffset = 10 * 90000

const mask33 = 1<<33 - 1

// StartAudio starts ffmpeg. The pipe stops when ctx is done, Close is
// called or ffmpeg fails; Done is closed then and Err says why.
func StartAudio(ctx context.Context, cfg AudioConfig, log *slog.Logger) (*AudioPipe, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.OnOpus == nil {
		return nil, errors.New("transcode: AudioConfig.OnOpus is nil")
	}
	if cfg.Queue <= 0 {
		cfg.Queue = 64
	}
	name := cfg.FFmpegPath
	if name == "" {
		name = "ffmpeg"
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return nil, fmt.Errorf("%w (%s)", ErrNoFFmpeg, name)
	}
	p := &AudioPipe{cfg: cfg, log: log.With("module", "transcode", "pipe", "aac-opus"),
		in: make(chan aacWrite, cfg.Queue), inEnd: make(chan struct{}), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancelCause(ctx)

	args := []string{"-hide_banner", "-nostdin", "-loglevel", "warning",
		"-probesize", "32", "-analyzeduration", "1",
		"-f", "mpegts", "-i", "pipe:0",
		"-map", "0:a:0", "-c:a", "libopus", "-b:a", strconv.Itoa(DefaultAudioBitrate),
		"-ar", "48000", "-ac", "2", "-copyts",
		"-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "-pes_payload_size", "0",
		"-flush_packets", "1", "pipe:1"}
	p.cmd = command(p.ctx, path, args)
	stderr := newTail(8, func(s string) string { return s }, p.log)
	p.cmd.Stderr = stderr
	stdin, err := p.cmd.StdinPipe()
	if err != nil {
		p.cancel(nil)
		return nil, err
	}
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		p.cancel(nil)
		return nil, err
	}
	if err := p.cmd.Start(); err != nil {
		p.cancel(nil)
		return nil, fmt.Errorf("start ffmpeg: %w", err)
	}
	p.log.Debug("ffmpeg started", "pid", p.cmd.Process.Pid)

	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := p.write(stdin)
		_ = stdin.Close()
		if err != nil && p.ctx.Err() == nil {
			p.cancel(fmt.Errorf("writing to ffmpeg: %w", err))
		}
	}()
	go func() {
		readErr := p.read(bufio.NewReaderSize(stdout, 16<<10))
		if readErr != nil && !errors.Is(readErr, io.EOF) {
			p.cancel(readErr)
		}
		_, _ = io.Copy(io.Discard, stdout)
		waitErr := p.cmd.Wait()
		p.cancel(nil)
		p.wg.Wait()
		stderr.flush()
		switch cause := context.Cause(p.ctx); {
		case ctx.Err() != nil:
			p.err = ctx.Err()
		case cause != nil && !errors.Is(cause, context.Canceled):
			p.err = fmt.Errorf("AAC to Opus: %v%s", cause, stderr.summary())
		case waitErr != nil:
			p.err = fmt.Errorf("AAC to Opus: ffmpeg: %v%s", waitErr, stderr.summary())
		default:
			p.err = fmt.Errorf("AAC to Opus: ffmpeg exited%s", stderr.summary())
		}
		if n := p.dropped.Load(); n > 0 {
			p.log.Warn("AAC writes dropped: ffmpeg fell behind", "count", n)
		}
		close(p.done)
	}()
	return p, nil
}

// Pid is the ffmpeg child's process id.
func (p *AudioPipe) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the pipe stopped.
func (p *AudioPipe) Done() <-chan struct{} { return p.done }

// Err is why the pipe stopped (valid after Done is closed).
func (p *AudioPipe) Err() error {
	<-p.done
	return p.err
}

// Frames is the number of Opus frames delivered so far.
func (p *AudioPipe) Frames() uint64 { return p.frames.Load() }

// Close stops ffmpeg and waits until it is reaped.
func (p *AudioPipe) Close() {
	p.cancel(nil)
	<-p.done
}

// CloseInput says no more AAC follows (a file ended): what is queued is
// still written, then ffmpeg's stdin is closed, ffmpeg flushes the last
// Opus frames and exits, and Done is closed. Writes after it may be lost.
func (p *AudioPipe) CloseInput() {
	p.inEndOnce.Do(func() { close(p.inEnd) })
}

// WriteAAC queues AAC access units with the PTS of the first; it never
// blocks (a full queue drops them).
func (p *AudioPipe) WriteAAC(pts time.Duration, aus [][]byte) {
	if len(aus) == 0 {
		return
	}
	ticks := tsOffset + int64(pts/time.Second)*90000 + int64(pts%time.Second)*90000/int64(time.Second)
	cp := make([][]byte, len(aus))
	for i, au := range aus {
		cp[i] = append([]byte(nil), au...)
	}
	select {
	case p.in <- aacWrite{ticks: ticks, aus: cp}:
	case <-p.done:
	default:
		p.dropped.Add(1)
	}
}

func (p *AudioPipe) write(w io.Writer) error {
	track := &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: p.cfg.AAC}}
	bw := bufio.NewWriterSize(w, 4096)
	tw := &mpegts.Writer{W: bw, Tracks: []*mpegts.Track{track}}
	if err := tw.Initialize(); err != nil {
		return err
	}
	put := func(a aacWrite) error {
		if p.lastIn.Swap(a.ticks) == 0 {
			p.log.Debug("first AAC write", "pts", time.Duration(a.ticks-tsOffset)*time.Second/90000, "aus", len(a.aus))
		}
		if err := tw.WriteMPEG4Audio(track, a.ticks&mask33, a.aus); err != nil {
			return err
		}
		return bw.Flush()
	}
	for {
		select {
		case <-p.ctx.Done():
			return nil
		case a := <-p.in:
			if err := put(a); err != nil {
				return err
			}
		case <-p.inEnd:
			for {
				select {
				case a := <-p.in:
					if err := put(a); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		}
	}
}

// unwrap maps a 33-bit timestamp from ffmpeg onto the input timeline: the
// value nearest the latest fed timestamp.
func (p *AudioPipe) unwrap(ts int64) int64 {
	last := p.lastIn.Load()
	diff := (ts - last) & mask33
	if diff > mask33/2 {
		diff -= mask33 + 1
	}
	return last + diff
}

func (p *AudioPipe) read(r io.Reader) error {
	tr := &mpegts.Reader{R: r}
	if err := tr.Initialize(); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return fmt.Errorf("no MPEG-TS from ffmpeg: %w", err)
	}
	var audio *mpegts.Track
	for _, t := range tr.Tracks() {
		if _, ok := t.Codec.(*tscodecs.Opus); ok {
			audio = t
			break
		}
	}
	if audio == nil {
		return errors.New("ffmpeg produced no Opus track")
	}
	tr.OnDecodeError(func(error) {})
	tr.OnDataOpus(audio, func(pts int64, packets [][]byte) error {
		ticks := p.unwrap(pts) - tsOffset
		t := time.Duration(ticks/90000)*time.Second + time.Duration(ticks%90000)*time.Second/90000
		for _, pk := range packets {
			if p.frames.Add(1) == 1 {
				p.log.Debug("first Opus frame", "pts", t)
			}
			p.cfg.OnOpus(t, pk)
			t += time.Duration(opus.PacketDuration2(pk)) * time.Second / 48000
		}
		return nil
	})
	for {
		if err := tr.Read(); err != nil {
			return err
		}
	}
}
