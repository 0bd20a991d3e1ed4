package renditions

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
	"github.com/icey/icey-server/media/tsfeed"
)

// args is ffmpeg's command line: MPEG-TS video on stdin, timestamps kept
// (-copyts, no mux delay), every input frame encoded once (passthrough),
// low-latency encoder settings, the result on stdout.
func (r *rendition) args(fps float64) []string {
	c := r.set.cfg
	gop := 60
	if fps > 1 && fps < 120 {
		gop = int(2*fps + 0.5) // a keyframe every 2 s
	}
	a := []string{"-hide_banner", "-nostats", "-loglevel", "error",
		// Start on the first packets: the stream's parameters are in the
		// keyframe it starts with. (Not -fflags nobuffer: it drops the
		// packets read while probing, i.e. that keyframe.)
		"-probesize", "32", "-analyzeduration", "1",
		// One decoding thread: frame threads add a frame of latency each
		// and cost more CPU than they save at camera sizes.
		"-threads", "1",
		"-copyts", "-f", "mpegts", "-i", "pipe:0",
		"-map", "0:v:0", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
		"-g", strconv.Itoa(gop), "-keyint_min", strconv.Itoa(gop), "-pix_fmt", "yuv420p"}
	switch r.codec {
	case media.CodecH264:
		br := strconv.Itoa(c.H264Bitrate)
		a = append(a, "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-tune", "zerolatency",
			"-bf", "0", "-sc_threshold", "0", "-b:v", br, "-maxrate", br, "-bufsize", br,
			"-f", "mpegts", "-muxdelay", "0", "-muxpreload", "0", "-pes_payload_size", "0",
			"-flush_packets", "1", "pipe:1")
	case media.CodecVP8:
		// -cpu-used 16 (libvpx's fastest) on one thread: at 720p30 about a
		// third of a core, where -cpu-used 8 with its default threads
		// takes more than two thirds.
		br := strconv.Itoa(c.VP8Bitrate)
		a = append(a, "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "16", "-threads", "1", "-lag-in-frames", "0",
			"-error-resilient", "1", "-auto-alt-ref", "0", "-b:v", br, "-maxrate", br, "-bufsize", br,
			"-enc_time_base:v", "1:90000", "-flush_packets", "1", "-f", "ivf", "pipe:1")
	}
	return a
}

// runOnce runs one ffmpeg until it fails or ctx ends.
func (r *rendition) runOnce(ctx context.Context) error {
	src := r.set.src
	tracks := src.Tracks()
	if tracks.Video == nil {
		return fmt.Errorf("%w: it has no video", ErrSource)
	}
	inCodec := tracks.Video.VideoCodec()
	if inCodec != media.CodecH264 && inCodec != media.CodecH265 {
		return fmt.Errorf("%w: %s", ErrSource, inCodec)
	}
	// The subscriber starts with the source's cached GOP: ffmpeg gets a
	// keyframe at once, so the first picture comes out within the
	// encoder's start-up time.
	sub, err := src.Subscribe("rendition-"+strings.ToLower(r.codec), media.SubscribeOptions{QueuePackets: 8192})
	if err != nil {
		return err
	}
	defer sub.Close()
	out := media.Tracks{Video: &media.VideoParams{Codec: r.codec}}
	if tracks.Audio != nil {
		a := *tracks.Audio
		out.Audio = &a
	}
	if r.restarts.Load() > 0 {
		r.out.Discontinuity() // the cached GOP is fed again: earlier times
	}
	r.out.SetTracks(out)

	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stderr := transcode.NewStderr(8, nil, r.set.log)
	cmd := transcode.Command(runCtx, r.ffmpeg, r.args(src.Stats().FPS))
	cmd.Stderr = stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start ffmpeg: %w", err)
	}
	r.pid.Store(int64(cmd.Process.Pid))
	defer r.pid.Store(0)

	var lastIn, lastOut atomic.Int64
	now := time.Now().UnixNano()
	lastIn.Store(now)
	lastOut.Store(now)
	fed := make(chan struct{})
	go func() {
		defer close(fed)
		err := r.feed(runCtx, sub, inCodec, stdin, &lastIn)
		_ = stdin.Close()
		if err != nil && runCtx.Err() == nil {
			cancel(fmt.Errorf("feeding ffmpeg: %w", err))
		}
	}()
	go r.watchStall(runCtx, cancel, &lastIn, &lastOut)

	var readErr error
	if r.codec == media.CodecVP8 {
		readErr = r.readIVF(stdout, &lastOut)
	} else {
		readErr = r.readTS(stdout, &lastOut)
	}
	cancel(nil)
	_, _ = io.Copy(io.Discard, stdout)
	waitErr := cmd.Wait()
	<-fed
	if ps := cmd.ProcessState; ps != nil {
		r.cpuDone.Add(int64(ps.UserTime() + ps.SystemTime()))
	}
	stderr.Flush()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return fmt.Errorf("%w%s", cause, stderr.Summary())
	}
	why := "ffmpeg exited"
	switch {
	case waitErr != nil:
		why = "ffmpeg: " + waitErr.Error()
	case readErr != nil && !errors.Is(readErr, io.EOF):
		why = "reading ffmpeg's output: " + readErr.Error()
	}
	return fmt.Errorf("%s%s", why, stderr.Summary())
}

// feed writes the source's video units to ffmpeg as MPEG-TS and copies
// its audio units into the rendition's stream.
func (r *rendition) feed(ctx context.Context, sub *media.Subscriber, inCodec string, w io.Writer, lastIn *atomic.Int64) error {
	tw, err := tsfeed.New(w, inCodec, false)
	if err != nil {
		return err
	}
	return sub.ReadBatches(ctx, func(units []*media.Unit) error {
		for _, u := range units {
			if u.Kind == media.KindAudio {
				if len(u.Payload) == 1 {
					r.out.WriteAudio(u.PTS, u.Payload[0])
				}
				continue
			}
			if err := tw.Write(u); err != nil {
				return err
			}
			lastIn.Store(tw.LastVideo.UnixNano())
		}
		return tw.Flush()
	})
}

// watchStall cancels a run whose ffmpeg, though fed, produced nothing
// for StallTimeout.
func (r *rendition) watchStall(ctx context.Context, cancel context.CancelCauseFunc, lastIn, lastOut *atomic.Int64) {
	limit := r.set.cfg.StallTimeout
	t := time.NewTicker(min(limit/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			in, out := time.Unix(0, lastIn.Load()), time.Unix(0, lastOut.Load())
			if in.After(out) && now.Sub(out) >= limit {
				cancel(fmt.Errorf("ffmpeg produced nothing for %s", now.Sub(out).Round(100*time.Millisecond)))
				return
			}
		}
	}
}

// wrote records an output picture: the first keyframe makes the
// rendition ready.
func (r *rendition) wrote(key bool, lastOut *atomic.Int64) {
	lastOut.Store(time.Now().UnixNano())
	if key {
		r.up.Store(true)
		r.keyedOnce.Do(func() { close(r.keyed) })
	}
}

func (r *rendition) readTS(out io.Reader, lastOut *atomic.Int64) error {
	tr := &mpegts.Reader{R: bufio.NewReaderSize(out, 64<<10)}
	if err := tr.Initialize(); err != nil {
		return fmt.Errorf("no MPEG-TS from ffmpeg: %w", err)
	}
	var vt *mpegts.Track
	for _, t := range tr.Tracks() {
		if _, ok := t.Codec.(*tscodecs.H264); ok {
			vt = t
		}
	}
	if vt == nil {
		return errors.New("ffmpeg produced no H.264")
	}
	var td mpegts.TimeDecoder
	first := int64(-1)
	tr.OnDecodeError(func(error) {})
	tr.OnDataH264(vt, func(pts, _ int64, au [][]byte) error {
		if first < 0 {
			first = pts
		}
		r.out.WriteH264(tsfeed.Time(first+td.Decode(pts)), au)
		r.wrote(h264.IsRandomAccess(au), lastOut)
		return nil
	})
	for {
		if err := tr.Read(); err != nil {
			return err
		}
	}
}

func (r *rendition) readIVF(out io.Reader, lastOut *atomic.Int64) error {
	rd, hdr, err := ivfreader.NewWith(bufio.NewReaderSize(out, 64<<10))
	if err != nil {
		return fmt.Errorf("no IVF from ffmpeg: %w", err)
	}
	num, den := uint64(hdr.TimebaseNumerator), uint64(hdr.TimebaseDenominator)
	for {
		frame, fh, err := rd.ParseNextFrame()
		if err != nil {
			return err
		}
		if len(frame) == 0 || fh == nil {
			continue
		}
		// pion scales the frame's pts by den/num; undo it, then seconds = pts*num/den.
		pts := fh.Timestamp * num / den
		r.out.WriteVP8(tsfeed.Time(int64(pts*num*90000/den)), frame)
		r.wrote(frame[0]&0x01 == 0, lastOut)
	}
}
