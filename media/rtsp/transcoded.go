package rtsp

import (
	"bufio"
	"context"
	"errors"
	"io"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/media"
)

// FeedFunc writes MPEG-TS to an ffmpeg's stdin (transcode.Config.Feed).
type FeedFunc func(ctx context.Context, w io.Writer) error

// tsOffset keeps the timestamps written to ffmpeg (and the PCR, 0.1 s
// earlier) positive.
const tsOffset = 10 * 90000

// runTranscoded plays an H.265 camera: the server depacketizes H.265 (and
// AAC) with gortsplib, writes MPEG-TS to ffmpeg's stdin through
// Config.VideoTranscode, and the transcode source writes H.264 + Opus into
// st. ffmpeg never sees the camera's URL or credentials.
func (s *Source) runTranscoded(ctx context.Context, c *gortsplib.Client, sel *selection,
	waitDone chan error, st media.Writer, agg *aggregator,
) error {
	vt := &mpegts.Track{Codec: &tscodecs.H265{}}
	tsTracks := []*mpegts.Track{vt}
	var at *mpegts.Track
	if sel.aac != nil {
		at = &mpegts.Track{Codec: &tscodecs.MPEG4Audio{Config: *sel.aac.Config}}
		tsTracks = append(tsTracks, at)
	}
	queue := make(chan func(*mpegts.Writer) error, 512)
	feed := func(fctx context.Context, w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		tw := &mpegts.Writer{W: bw, Tracks: tsTracks}
		if err := tw.Initialize(); err != nil {
			return err
		}
		for {
			select {
			case <-fctx.Done():
				return nil
			case fn := <-queue:
				if err := fn(tw); err != nil {
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
	enqueue := func(fn func(*mpegts.Writer) error) {
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

	vdec, err := sel.h265.CreateDecoder()
	if err != nil {
		return s.unavailable("H.265 decoder", err)
	}
	params := [][]byte{sel.h265.VPS, sel.h265.SPS, sel.h265.PPS}
	var dtsEx *h265.DTSExtractor
	c.OnPacketRTP(sel.video, sel.h265, func(pkt *rtp.Packet) {
		pts, ok := c.PacketPTS2(sel.video, pkt)
		if !ok {
			return
		}
		au, err := vdec.Decode(pkt)
		if err != nil {
			if !errors.Is(err, rtph265.ErrMorePacketsNeeded) && !errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious) {
				agg.add("H.265 depacketization error: "+err.Error(), 1)
			}
			return
		}
		if dtsEx == nil {
			if !h265.IsRandomAccess(au) {
				return
			}
			dtsEx = &h265.DTSExtractor{}
			dtsEx.Initialize()
		}
		if h265.IsRandomAccess(au) {
			au = withParams(au, params)
		}
		pts = pts*90000/int64(sel.h265.ClockRate()) + tsOffset
		dts, err := dtsEx.Extract(au, pts)
		if err != nil {
			agg.add("H.265 DTS: "+err.Error(), 1)
			return
		}
		enqueue(func(tw *mpegts.Writer) error { return tw.WriteH265(vt, pts, dts, au) })
	})
	if at != nil {
		adec, err := sel.aac.CreateDecoder()
		if err != nil {
			return s.unavailable("AAC decoder", err)
		}
		rate := int64(sel.aac.ClockRate())
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
			ts := pts*90000/rate + tsOffset
			enqueue(func(tw *mpegts.Writer) error { return tw.WriteMPEG4Audio(at, ts, aus) })
		})
	}

	if _, err := c.Play(nil); err != nil {
		return s.fail(ctx, "PLAY", err)
	}
	s.log.Info("playing through a transcode", "video", "H265", "audio", audioName(sel))

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

// withParams puts the SDP's VPS/SPS/PPS in front of an IRAP access unit
// that lacks them (cameras often send them out of band only).
func withParams(au [][]byte, params [][]byte) [][]byte {
	has := map[h265.NALUType]bool{}
	for _, n := range au {
		if len(n) > 0 {
			has[h265.NALUType((n[0]>>1)&0b111111)] = true
		}
	}
	if has[h265.NALUType_VPS_NUT] && has[h265.NALUType_SPS_NUT] && has[h265.NALUType_PPS_NUT] {
		return au
	}
	out := make([][]byte, 0, len(au)+3)
	for _, p := range params {
		if len(p) > 0 {
			out = append(out, p)
		}
	}
	return append(out, au...)
}
