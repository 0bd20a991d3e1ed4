package transcode

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/opus"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
)

// AudioCodec is the codec an AudioPipe is fed with.
type AudioCodec int

// Input codecs of an AudioPipe.
const (
	// AudioAAC (the zero value): MPEG-4 AAC access units, WriteAAC, fed
	// as MPEG-TS.
	AudioAAC AudioCodec = iota
	// AudioMPEG1: MPEG-1/2 Audio layer II or III frames (MP2, MP3; the
	// MPEG-2 low sampling rates too), WriteMPEG1Audio, fed as MPEG-TS.
	AudioMPEG1
	// AudioG722: G.722 (16 kHz mono, 64 kbit/s) frames, WriteG722, fed as
	// Matroska (MPEG-TS does not carry G.722).
	AudioG722
)

func (c AudioCodec) String() string {
	switch c {
	case AudioAAC:
		return "AAC"
	case AudioMPEG1:
		return "MPEG audio"
	case AudioG722:
		return "G.722"
	}
	return "audio " + strconv.Itoa(int(c))
}

// AudioConfig configures an AudioPipe.
type AudioConfig struct {
	// Codec is the input codec (default AudioAAC).
	Codec AudioCodec
	// AAC is the configuration of the AAC stream (from the SDP or
	// container); only for AudioAAC.
	AAC mpeg4audio.AudioSpecificConfig
	// OnOpus receives each Opus frame with its timestamp, on the same
	// timeline as the PTS given to WriteAAC (WriteMPEG1Audio, WriteG722).
	// Called from one goroutine.
	OnOpus func(pts time.Duration, frame []byte)
	// FFmpegPath (default: "ffmpeg" from PATH).
	FFmpegPath string
	// Queue bounds the AAC writes waiting for ffmpeg (default 64); writes
	// beyond it are dropped and counted instead of blocking the caller.
	Queue int
}

// AudioPipe transcodes AAC (or MP3/MP2, or G.722: AudioConfig.Codec) to
// Opus with one ffmpeg child that only reads its stdin and writes its
// stdout: the server writes the access units it pulled (RTSP, RTMP, ...)
// as MPEG-TS (Matroska for G.722), and reads Opus in MPEG-TS back,
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
	pipeName, inFormat := "aac-opus", "mpegts"
	switch cfg.Codec {
	case AudioAAC:
	case AudioMPEG1:
		pipeName = "mpa-opus"
	case AudioG722:
		pipeName, inFormat = "g722-opus", "matroska"
	default:
		return nil, fmt.Errorf("transcode: unknown audio codec %d", cfg.Codec)
	}
	p := &AudioPipe{cfg: cfg, log: log.With("module", "transcode", "pipe", pipeName),
		in: make(chan aacWrite, cfg.Queue), inEnd: make(chan struct{}), done: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancelCause(ctx)

	args := []string{"-hide_banner", "-nostdin", "-loglevel", "warning",
		"-probesize", "32", "-analyzeduration", "1",
		"-f", inFormat, "-i", "pipe:0",
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
		what := cfg.Codec.String()
		switch cause := context.Cause(p.ctx); {
		case ctx.Err() != nil:
			p.err = ctx.Err()
		case errors.Is(cause, ErrPipeClosed):
			p.err = ErrPipeClosed // the caller's Close: ffmpeg's kill is no failure
		case cause != nil && !errors.Is(cause, context.Canceled):
			p.err = fmt.Errorf("%s to Opus: %v%s", what, cause, stderr.summary())
		case waitErr != nil:
			p.err = fmt.Errorf("%s to Opus: ffmpeg: %v%s", what, waitErr, stderr.summary())
		default:
			p.err = fmt.Errorf("%s to Opus: ffmpeg exited%s", what, stderr.summary())
		}
		if n := p.dropped.Load(); n > 0 {
			p.log.Warn(what+" writes dropped: ffmpeg fell behind", "count", n)
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
	p.cancel(ErrPipeClosed)
	<-p.done
}

// ErrPipeClosed is Err after Close stopped a pipe that was still running.
var ErrPipeClosed = errors.New("audio pipe closed")

// CloseInput says no more AAC follows (a file ended): what is queued is
// still written, then ffmpeg's stdin is closed, ffmpeg flushes the last
// Opus frames and exits, and Done is closed. Writes after it may be lost.
func (p *AudioPipe) CloseInput() {
	p.inEndOnce.Do(func() { close(p.inEnd) })
}

// WriteAAC queues AAC access units with the PTS of the first; it never
// blocks (a full queue drops them). Only for AudioAAC.
func (p *AudioPipe) WriteAAC(pts time.Duration, aus [][]byte) {
	if p.cfg.Codec != AudioAAC {
		return
	}
	p.queue(pts, aus)
}

// WriteMPEG1Audio queues MPEG-1/2 Audio frames (MP2, MP3) with the PTS of
// the first, like WriteAAC. Only for AudioMPEG1.
func (p *AudioPipe) WriteMPEG1Audio(pts time.Duration, frames [][]byte) {
	if p.cfg.Codec != AudioMPEG1 {
		return
	}
	p.queue(pts, frames)
}

// WriteG722 queues G.722 data (one RTP payload: 16 kHz samples, two per
// byte at 64 kbit/s) with its PTS, like WriteAAC. Only for AudioG722.
func (p *AudioPipe) WriteG722(pts time.Duration, frame []byte) {
	if p.cfg.Codec != AudioG722 || len(frame) == 0 {
		return
	}
	p.queue(pts, [][]byte{frame})
}

func (p *AudioPipe) queue(pts time.Duration, aus [][]byte) {
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
	bw := bufio.NewWriterSize(w, 4096)
	var feed func(a aacWrite) error
	switch p.cfg.Codec {
	case AudioG722:
		mw := &mkvAudio{w: bw}
		if err := mw.header(); err != nil {
			return err
		}
		feed = func(a aacWrite) error {
			// ms on the Matroska timeline; ffmpeg (-copyts) gives them
			// back in 90 kHz ticks.
			return mw.block(a.ticks/90, a.aus[0])
		}
	case AudioMPEG1:
		track := &mpegts.Track{Codec: &tscodecs.MPEG1Audio{}}
		tw := &mpegts.Writer{W: bw, Tracks: []*mpegts.Track{track}}
		if err := tw.Initialize(); err != nil {
			return err
		}
		checked, mpeg2 := false, false
		feed = func(a aacWrite) error {
			if !checked {
				var h mpeg1audio.FrameHeader
				if err := h.Unmarshal(a.aus[0]); err != nil {
					return nil // not a frame start: wait for one
				}
				checked, mpeg2 = true, h.MPEG2
				p.log.Debug("MPEG audio", "mpeg2", h.MPEG2, "layer", h.Layer, "rate", h.SampleRate, "bitrate", h.Bitrate)
			}
			if !mpeg2 {
				return tw.WriteMPEG1Audio(track, a.ticks&mask33, a.aus)
			}
			// mediacommon's WriteMPEG1Audio refuses MPEG-2 (the low
			// sampling rates), which MPEG-TS carries the same way
			// (ISO 13818-1 stream type 3 or 4, ffmpeg reads both as
			// MP2/MP3): write the PES with the plain audio writer.
			var data []byte
			for _, f := range a.aus {
				data = append(data, f...)
			}
			return tw.WriteAC3(track, a.ticks&mask33, data)
		}
	default:
		track := &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: p.cfg.AAC}}
		tw := &mpegts.Writer{W: bw, Tracks: []*mpegts.Track{track}}
		if err := tw.Initialize(); err != nil {
			return err
		}
		feed = func(a aacWrite) error { return tw.WriteMPEG4Audio(track, a.ticks&mask33, a.aus) }
	}
	put := func(a aacWrite) error {
		if p.lastIn.Swap(a.ticks) == 0 {
			p.log.Debug("first write", "codec", p.cfg.Codec.String(), "pts", time.Duration(a.ticks-tsOffset)*time.Second/90000, "aus", len(a.aus))
		}
		if err := feed(a); err != nil {
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

// mkvAudio writes a live Matroska stream of one G.722 track, the subset
// ffmpeg's demuxer reads (like media/rtsp's mkvWriter): an EBML header, a
// Segment and Clusters of unknown size, SimpleBlocks in milliseconds.
type mkvAudio struct {
	w         io.Writer
	inCluster bool
	clusterTS int64 // ms
	buf       []byte
}

// mkvUnknownSize marks a live Segment or Cluster.
var mkvUnknownSize = []byte{0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}

func mkvID(b []byte, id uint32) []byte {
	for sh := 24; sh >= 0; sh -= 8 {
		if id>>sh != 0 || sh == 0 {
			b = append(b, byte(id>>sh))
		}
	}
	return b
}

func mkvElem(b []byte, id uint32, body []byte) []byte {
	b = mkvID(b, id)
	b = append(b, 0x01, 0, byte(len(body)>>40), byte(len(body)>>32), byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body)))
	return append(b, body...)
}

func mkvUint(b []byte, id uint32, v uint64) []byte {
	return mkvElem(b, id, binary.BigEndian.AppendUint64(nil, v))
}

// header writes the EBML header, opens the Segment and declares the G.722
// track: A_MS/ACM with a WAVEFORMATEX of format tag 0x028F (G.722 in
// ffmpeg's RIFF tags), 16 kHz mono, 4 bits per sample.
func (m *mkvAudio) header() error {
	var h []byte
	h = mkvUint(h, 0x4286, 1)                               // EBMLVersion
	h = mkvUint(h, 0x42F7, 1)                               // EBMLReadVersion
	h = mkvUint(h, 0x42F2, 4)                               // EBMLMaxIDLength
	h = mkvUint(h, 0x42F3, 8)                               // EBMLMaxSizeLength
	h = mkvElem(h, 0x4282, []byte("matroska"))              // DocType
	h = mkvUint(h, 0x4287, 4)                               // DocTypeVersion
	h = mkvUint(h, 0x4285, 2)                               // DocTypeReadVersion
	out := mkvElem(nil, 0x1A45DFA3, h)                      // EBML
	out = append(mkvID(out, 0x18538067), mkvUnknownSize...) // Segment

	var info []byte
	info = mkvUint(info, 0x2AD7B1, 1_000_000) // TimestampScale: ms
	info = mkvElem(info, 0x4D80, []byte("icey"))
	info = mkvElem(info, 0x5741, []byte("icey"))
	out = mkvElem(out, 0x1549A966, info) // Info

	var wf []byte
	wf = binary.LittleEndian.AppendUint16(wf, 0x028F) // WAVE_FORMAT_G722
	wf = binary.LittleEndian.AppendUint16(wf, 1)      // channels
	wf = binary.LittleEndian.AppendUint32(wf, 16000)  // samples/s
	wf = binary.LittleEndian.AppendUint32(wf, 8000)   // bytes/s
	wf = binary.LittleEndian.AppendUint16(wf, 1)      // block align
	wf = binary.LittleEndian.AppendUint16(wf, 4)      // bits per sample
	wf = binary.LittleEndian.AppendUint16(wf, 0)      // extra size
	var e []byte
	e = mkvUint(e, 0xD7, 1)                  // TrackNumber
	e = mkvUint(e, 0x73C5, 1)                // TrackUID
	e = mkvUint(e, 0x83, 2)                  // TrackType: audio
	e = mkvUint(e, 0x9C, 0)                  // FlagLacing
	e = mkvElem(e, 0x86, []byte("A_MS/ACM")) // CodecID
	e = mkvElem(e, 0x63A2, wf)               // CodecPrivate
	var a []byte
	a = mkvElem(a, 0xB5, binary.BigEndian.AppendUint64(nil, math.Float64bits(16000))) // SamplingFrequency
	a = mkvUint(a, 0x9F, 1)                                                           // Channels
	e = mkvElem(e, 0xE1, a)                                                           // Audio
	out = mkvElem(out, 0x1654AE6B, mkvElem(nil, 0xAE, e))                             // Tracks, TrackEntry
	_, err := m.w.Write(out)
	return err
}

// block writes one frame at ts milliseconds; a Cluster starts every
// second and whenever the relative timestamp would not fit.
func (m *mkvAudio) block(ts int64, data []byte) error {
	rel := ts - m.clusterTS
	b := m.buf[:0]
	if !m.inCluster || rel < 0 || rel >= 1000 {
		m.inCluster, m.clusterTS, rel = true, ts, 0
		b = append(mkvID(b, 0x1F43B675), mkvUnknownSize...) // Cluster
		b = mkvUint(b, 0xE7, uint64(max(ts, 0)))            // Timestamp
	}
	b = mkvID(b, 0xA3) // SimpleBlock
	n := 4 + len(data)
	b = append(b, 0x01, 0, byte(n>>40), byte(n>>32), byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	b = append(b, 0x81, byte(uint16(int16(rel))>>8), byte(uint16(int16(rel))), 0x80)
	m.buf = b
	if _, err := m.w.Write(b); err != nil {
		return err
	}
	_, err := m.w.Write(data)
	return err
}

// MPEGAudioFrameLen is the length in bytes of the MPEG-1/2 Audio frame of
// header h (ISO 11172-3 2.4.3.1, ISO 13818-3 2.4.3.1): mediacommon's
// FrameLen counts 1152 samples per layer III frame, which is twice the
// length of an MPEG-2 (low sampling rate, 576 samples) one.
func MPEGAudioFrameLen(h mpeg1audio.FrameHeader) int {
	if h.SampleRate <= 0 {
		return 0
	}
	pad := 0
	if h.Padding {
		pad = 1
	}
	switch {
	case h.Layer == 1:
		return (12*h.Bitrate/h.SampleRate + pad) * 4
	case h.Layer == 3 && h.MPEG2:
		return 72*h.Bitrate/h.SampleRate + pad
	}
	return 144*h.Bitrate/h.SampleRate + pad
}

// StartAudioForRun is StartAudio for one run of a source: onPid (if set)
// is told the ffmpeg process id, and 0 when the pipe is stopped; died is
// called with the pipe's error if it ends before runCtx (the caller ends
// the run). Call stop when the run ends.
func StartAudioForRun(runCtx context.Context, cfg AudioConfig, died func(error),
	onPid func(int), log *slog.Logger) (pipe *AudioPipe, stop func(), err error) {
	pipe, err = StartAudio(runCtx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if onPid != nil {
		onPid(pipe.Pid())
	}
	go func() {
		select {
		case <-pipe.Done():
			died(pipe.Err())
		case <-runCtx.Done():
		}
	}()
	return pipe, func() {
		pipe.Close()
		if onPid != nil {
			onPid(0)
		}
	}, nil
}
