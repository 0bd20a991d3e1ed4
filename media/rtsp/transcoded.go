package rtsp

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmjpeg"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/media"
)

// FeedFunc writes the camera's media to an ffmpeg's stdin
// (transcode.Config.Feed).
type FeedFunc func(ctx context.Context, w io.Writer) error

// FeedFormat is ffmpeg's input format of what a FeedFunc writes
// (transcode.Config.FeedFormat): Matroska, which carries M-JPEG and its
// audio with their timestamps.
const FeedFormat = "matroska"

// tsOffset (ms) keeps the timestamps written to ffmpeg positive.
const tsOffset = 10_000

// runTranscoded plays an M-JPEG camera: the server depacketizes the JPEG
// frames (and the audio) with gortsplib, writes them as Matroska to
// ffmpeg's stdin through Config.VideoTranscode, and the transcode source
// writes H.264 + Opus into st. ffmpeg never sees the camera's URL or
// credentials.
func (s *Source) runTranscoded(ctx context.Context, c *gortsplib.Client, sel *selection,
	waitDone chan error, st media.Writer, agg *aggregator,
) error {
	tracks := []mkvTrack{{codecID: "V_MJPEG"}}
	if sel.audio != nil {
		t, err := mkvAudioTrack(sel.audioFormat)
		if err != nil {
			return s.unavailable("audio for the transcode", err)
		}
		tracks = append(tracks, t)
	}
	queue := make(chan func(*mkvWriter) error, 512)
	feed := func(fctx context.Context, w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		mw := &mkvWriter{w: bw}
		if err := mw.header(tracks); err != nil {
			return err
		}
		for {
			select {
			case <-fctx.Done():
				return nil
			case fn := <-queue:
				if err := fn(mw); err != nil {
					return err
				}
				if len(queue) == 0 {
					if err := bw.Flush(); err != nil {
						return err
					}
				}
			}
		}
	}
	// Never block gortsplib's reader on ffmpeg: drop (and count) instead.
	enqueue := func(fn func(*mkvWriter) error) {
		select {
		case queue <- fn:
		default:
			agg.add("transcoder input queue full: media dropped", 1)
		}
	}
	src, err := s.cfg.VideoTranscode(feed)
	if err != nil {
		return s.unavailable("transcode", err)
	}
	ms := func(pts int64, rate int) int64 { return pts*1000/int64(rate) + tsOffset }

	vdec, err := sel.mjpeg.CreateDecoder()
	if err != nil {
		return s.unavailable("M-JPEG decoder", err)
	}
	c.OnPacketRTP(sel.video, sel.mjpeg, func(pkt *rtp.Packet) {
		pts, ok := c.PacketPTS2(sel.video, pkt)
		if !ok {
			return
		}
		img, err := vdec.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtpmjpeg.ErrMorePacketsNeeded) && !errors.Is(err, rtpmjpeg.ErrNonStartingPacketAndNoPrevious) {
				agg.add("M-JPEG depacketization error: "+err.Error(), 1)
			}
			return
		}
		t := ms(pts, sel.mjpeg.ClockRate())
		enqueue(func(mw *mkvWriter) error { return mw.block(1, t, true, img) })
	})
	if sel.audio != nil {
		rate := sel.audioFormat.ClockRate()
		if sel.aac != nil {
			adec, err := sel.aac.CreateDecoder()
			if err != nil {
				return s.unavailable("AAC decoder", err)
			}
			c.OnPacketRTP(sel.audio, sel.aac, func(pkt *rtp.Packet) {
				pts, ok := c.PacketPTS2(sel.audio, pkt)
				if !ok {
					return
				}
				aus, err := adec.Decode(pkt)
				if err != nil {
					if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
						agg.add("AAC depacketization error: "+err.Error(), 1)
					}
					return
				}
				for i, au := range aus {
					t := ms(pts+int64(i*1024), rate)
					au := append([]byte(nil), au...)
					enqueue(func(mw *mkvWriter) error { return mw.block(2, t, true, au) })
				}
			})
		} else {
			c.OnPacketRTP(sel.audio, sel.audioFormat, func(pkt *rtp.Packet) {
				pts, ok := c.PacketPTS2(sel.audio, pkt)
				if !ok || len(pkt.Payload) == 0 {
					return
				}
				t := ms(pts, rate)
				// Opus and G.711: the payload is the frame; gortsplib
				// reuses neither after the callback, but copy to be safe.
				frame := append([]byte(nil), pkt.Payload...)
				enqueue(func(mw *mkvWriter) error { return mw.block(2, t, true, frame) })
			})
		}
	}

	if _, err := c.Play(nil); err != nil {
		return s.fail(ctx, "PLAY", err)
	}
	s.log.Info("playing through a transcode", "video", "M-JPEG", "audio", audioName(sel))

	tctx, tcancel := context.WithCancel(ctx)
	defer tcancel()
	srcDone := make(chan error, 1)
	go func() { srcDone <- src.Run(tctx, st) }()
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			<-srcDone
			return ctx.Err()
		case err := <-waitDone:
			waitDone <- err // for the deferred cleanup
			tcancel()
			<-srcDone
			return s.fail(ctx, "connection", err)
		case err := <-srcDone:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil {
				err = errors.New("transcode ended")
			}
			return s.unavailable("transcode", err)
		case now := <-ticker.C:
			agg.tick(now)
		}
	}
}

// mkvAudioTrack describes an audio format the transcode takes.
func mkvAudioTrack(f format.Format) (mkvTrack, error) {
	switch f := f.(type) {
	case *format.MPEG4Audio:
		asc, err := f.Config.Marshal()
		if err != nil {
			return mkvTrack{}, err
		}
		return mkvTrack{codecID: "A_AAC", private: asc, audio: true,
			rate: float64(f.Config.SampleRate), channels: max(f.Config.ChannelCount, 1)}, nil
	case *format.Opus:
		ch := max(f.ChannelCount, 1)
		return mkvTrack{codecID: "A_OPUS", private: opusHead(ch), audio: true, rate: 48000, channels: ch}, nil
	case *format.G711:
		tag := uint16(6) // WAVE_FORMAT_ALAW
		if f.MULaw {
			tag = 7 // WAVE_FORMAT_MULAW
		}
		ch := max(f.ChannelCount, 1)
		return mkvTrack{codecID: "A_MS/ACM", private: waveFormatEx(tag, f.SampleRate, ch), audio: true,
			rate: float64(f.SampleRate), channels: ch}, nil
	}
	return mkvTrack{}, fmt.Errorf("audio %s cannot be fed to ffmpeg", f.Codec())
}
