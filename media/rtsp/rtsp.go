// Package rtsp is the RTSP/RTSPS camera source: it plays a stream with
// gortsplib, keeps the H.264 or H.265 video (as it is: B-frames too, with
// their presentation times) and Opus/PCMU/PCMA audio, and writes access
// units and audio frames into a media.Stream. With Config.TranscodeAudio,
// AAC, MP3/MP2 or G.722 audio is turned into Opus by an ffmpeg child that
// the server feeds on stdin (the camera URL and its credentials never
// reach ffmpeg). An
// M-JPEG camera plays through Config.VideoTranscode (an ffmpeg fed on
// stdin). Reconnection is the supervisor's job: Run returns on any failure
// and is called again.
package rtsp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph265"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg4audio"
	"github.com/bluenviron/gortsplib/v4/pkg/liberrors"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/internal/redact"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
)

// Defaults of Config.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultReadTimeout = 10 * time.Second
)

// Transports accepted in Config.Transport.
const (
	TransportAuto = "auto"
	TransportUDP  = "udp"
	TransportTCP  = "tcp"
)

// ErrUnauthorized is wrapped (with media.ErrSourceUnavailable) when the
// camera rejects the credentials, or none were given and it wants some.
var ErrUnauthorized = errors.New("unauthorized (401)")

// Config configures a Source. Only URL is required.
type Config struct {
	// URL is rtsp:// or rtsps://, optionally with user:pass@.
	URL string
	// Transport is "auto" (default: UDP, falling back to TCP when no UDP
	// packet arrives), "udp" or "tcp" (interleaved, works through NAT and
	// firewalls).
	Transport string
	// DialTimeout bounds the TCP (and TLS) connection setup (default 5 s).
	DialTimeout time.Duration
	// ReadTimeout bounds each RTSP response and the time without any RTP
	// packet once playing: a stalled camera fails the run (default 10 s).
	ReadTimeout time.Duration
	// TLSConfig for rtsps:// (default: system roots, server name from the URL).
	TLSConfig *tls.Config
	// TranscodeAudio: when the camera offers no Opus or G.711 audio but
	// MPEG-4 AAC, MPEG-1/2 Audio (MP3, MP2) or G.722 (preferred in this
	// order), transcode it to Opus with ffmpeg (transcode.AudioPipe: the
	// server writes the audio it pulled to ffmpeg's stdin; video passes
	// through untouched) instead of dropping it. Needs ffmpeg.
	TranscodeAudio bool
	// FFmpegPath for TranscodeAudio (default: "ffmpeg" from PATH).
	FFmpegPath string
	// VideoTranscode, when set, plays a camera without H.264 or H.265 but
	// with M-JPEG video: the server depacketizes the JPEG frames (and AAC,
	// Opus or G.711 audio) and feeds them as Matroska (FeedFormat) to the
	// returned source's ffmpeg stdin (typically a transcode.Source with
	// Feed set), which writes H.264 + Opus into the stream. Nil: such
	// cameras fail with media.ErrUnsupportedCodec. H.265 is not transcoded:
	// it is written to the stream as it is (WriteH265).
	VideoTranscode func(feed FeedFunc) (media.Source, error)
}

// Source plays one RTSP URL. It implements media.Source. Run may be called
// again after it returns, but not concurrently.
type Source struct {
	cfg  Config
	u    *base.URL
	safe string // URL without credentials
	pass string // for scrubbing error texts; empty if none
	log  *slog.Logger

	media.WarningSet // warnings of the latest run

	audioPid atomic.Int64 // ffmpeg of the current run's audio transcode, for tests
}

// New validates cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if i := strings.Index(cfg.URL, "://"); i < 0 || (cfg.URL[:i] != "rtsp" && cfg.URL[:i] != "rtsps") {
		return nil, fmt.Errorf("rtsp: unsupported scheme in %q (want rtsp:// or rtsps://)", media.RedactURL(cfg.URL))
	}
	u, err := base.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("rtsp: invalid URL %q", media.RedactURL(cfg.URL))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("rtsp: no host in %s", media.RedactURL(cfg.URL))
	}
	switch cfg.Transport {
	case "":
		cfg.Transport = TransportAuto
	case TransportAuto, TransportUDP, TransportTCP:
	default:
		return nil, fmt.Errorf("rtsp: transport %q: want auto, udp or tcp", cfg.Transport)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	s := &Source{cfg: cfg, u: u, safe: media.RedactURL(cfg.URL)}
	if u.User != nil {
		s.pass, _ = u.User.Password()
	}
	s.log = log.With("module", "rtsp", "source", s.safe)
	return s, nil
}

// Kind implements media.Source.
func (s *Source) Kind() string { return "rtsp" }

// String implements media.Source: the URL without credentials.
func (s *Source) String() string { return s.safe }

var _ media.Warner = (*Source)(nil)

// Run implements media.Source: it connects, plays, and writes media into st
// until ctx is done (ctx.Err()), the connection fails or no RTP packet
// arrives for ReadTimeout (media.ErrSourceUnavailable), or the stream has no
// H.264 or H.265 video (or M-JPEG with VideoTranscode) (media.ErrUnsupportedCodec).
func (s *Source) Run(ctx context.Context, st media.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	agg := newAggregator(s.log)
	defer agg.flush()

	dialer := &net.Dialer{}
	c := &gortsplib.Client{
		Scheme:      s.u.Scheme,
		Host:        s.u.Host,
		ReadTimeout: s.cfg.ReadTimeout,
		TLSConfig:   s.cfg.TLSConfig,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
			defer cancel()
			return dialer.DialContext(ctx, network, addr)
		},
		OnTransportSwitch: func(err error) { s.log.Info("transport switch", "reason", s.scrub(err.Error())) },
		OnPacketsLost:     func(n uint64) { agg.add("RTP packets lost", int(n)) },
		OnDecodeError:     func(err error) { agg.add("RTP decode error: "+s.scrub(err.Error()), 1) },
	}
	if c.TLSConfig != nil {
		// gortsplib writes ServerName into the config it is given.
		c.TLSConfig = c.TLSConfig.Clone()
	}
	switch s.cfg.Transport {
	case TransportUDP:
		t := gortsplib.TransportUDP
		c.Transport = &t
	case TransportTCP:
		t := gortsplib.TransportTCP
		c.Transport = &t
	}
	if err := c.Start2(); err != nil {
		return s.unavailable("start client", err)
	}
	// Cancelling ctx closes the client, which unblocks Describe/Setup/Play
	// and ends Wait. Close is idempotent and waits for the client's goroutines.
	stopAfter := context.AfterFunc(ctx, c.Close)
	waitDone := make(chan error, 1)
	go func() { waitDone <- c.Wait() }()
	defer func() {
		stopAfter()
		c.Close()
		<-waitDone
	}()

	desc, _, err := c.Describe(s.u)
	if err != nil {
		return s.fail(ctx, "DESCRIBE", err)
	}
	sel, err := s.selectTracks(desc)
	if err != nil {
		return err
	}
	s.SetWarnings(sel.warnings)
	for _, w := range sel.warnings {
		s.log.Warn(w)
	}

	if _, err := c.Setup(desc.BaseURL, sel.video, 0, 0); err != nil {
		return s.fail(ctx, "SETUP video", err)
	}
	if sel.audio != nil {
		if _, err := c.Setup(desc.BaseURL, sel.audio, 0, 0); err != nil {
			return s.fail(ctx, "SETUP audio", err)
		}
	}

	if sel.mjpeg != nil {
		return s.runTranscoded(ctx, c, sel, waitDone, st, agg)
	}

	var lastRTP atomic.Int64 // unix nanos of the latest RTP packet, 0 before the first

	var tracks media.Tracks
	if sel.h265 != nil {
		tracks.Video = &media.VideoParams{Codec: media.CodecH265, VPS: sel.h265.VPS, SPS: sel.h265.SPS, PPS: sel.h265.PPS}
	} else {
		tracks.Video = &media.VideoParams{Codec: media.CodecH264, SPS: sel.h264.SPS, PPS: sel.h264.PPS}
	}
	if sel.audio != nil {
		tracks.Audio = &sel.audioParams
	}

	var pipe *transcode.AudioPipe
	var pipeDone <-chan struct{}
	if sel.transcoded() {
		acfg := transcode.AudioConfig{
			FFmpegPath: s.cfg.FFmpegPath,
			OnOpus:     func(pts time.Duration, frame []byte) { st.WriteAudio(pts, frame) },
		}
		switch {
		case sel.aac != nil:
			acfg.AAC = *sel.aac.Config
		case sel.mpa != nil:
			acfg.Codec = transcode.AudioMPEG1
		case sel.g722 != nil:
			acfg.Codec = transcode.AudioG722
		}
		pipe, err = transcode.StartAudio(ctx, acfg, s.log)
		if err != nil {
			return s.unavailable(acfg.Codec.String()+" to Opus transcode", err)
		}
		s.audioPid.Store(int64(pipe.Pid()))
		pipeDone = pipe.Done()
		defer func() {
			pipe.Close()
			s.audioPid.Store(0)
		}()
	}
	st.SetTracks(tracks)

	// gortsplib calls each media's callback from one goroutine, and the
	// Stream serializes writers internally, so these need no extra locking.
	// The RTP timestamp of a video packet is the picture's presentation
	// time (RFC 6184 §5.1, RFC 7798 §4.1), so with B-frames the access
	// units are written in decoding order with their (reordered) PTS.
	if sel.h265 != nil {
		dec, err := sel.h265.CreateDecoder()
		if err != nil {
			return s.unavailable("H.265 decoder", err)
		}
		gotIRAP := false
		c.OnPacketRTP(sel.video, sel.h265, func(pkt *rtp.Packet) {
			lastRTP.Store(time.Now().UnixNano())
			pts, ok := c.PacketPTS2(sel.video, pkt)
			if !ok {
				return
			}
			au, err := dec.Decode(pkt)
			if err != nil {
				if !errors.Is(err, rtph265.ErrMorePacketsNeeded) && !errors.Is(err, rtph265.ErrNonStartingPacketAndNoPrevious) {
					agg.add("H.265 depacketization error: "+err.Error(), 1)
				}
				return
			}
			if !gotIRAP {
				if !h265.IsRandomAccess(au) {
					return
				}
				gotIRAP = true
			}
			st.WriteH265(ticksToDuration(pts, int64(sel.h265.ClockRate())), au)
		})
	} else {
		dec, err := sel.h264.CreateDecoder()
		if err != nil {
			return s.unavailable("H.264 decoder", err)
		}
		gotIDR := false
		c.OnPacketRTP(sel.video, sel.h264, func(pkt *rtp.Packet) {
			lastRTP.Store(time.Now().UnixNano())
			pts, ok := c.PacketPTS2(sel.video, pkt)
			if !ok {
				return
			}
			au, err := dec.Decode(pkt)
			if err != nil {
				if !errors.Is(err, rtph264.ErrMorePacketsNeeded) && !errors.Is(err, rtph264.ErrNonStartingPacketAndNoPrevious) {
					agg.add("H.264 depacketization error: "+err.Error(), 1)
				}
				return
			}
			// The Stream also waits for an IDR, but dropping here avoids
			// handing it undecodable frames after every (re)connect.
			if !gotIDR {
				if !h264.IsRandomAccess(au) {
					return
				}
				gotIDR = true
			}
			st.WriteH264(ticksToDuration(pts, 90000), au)
		})
	}
	if sel.aac != nil {
		rate := int64(sel.aac.ClockRate())
		aacDec, err := sel.aac.CreateDecoder()
		if err != nil {
			return s.unavailable("AAC decoder", err)
		}
		c.OnPacketRTP(sel.audio, sel.aac, func(pkt *rtp.Packet) {
			lastRTP.Store(time.Now().UnixNano())
			pts, ok := c.PacketPTS2(sel.audio, pkt)
			if !ok {
				return
			}
			aus, err := aacDec.Decode(pkt)
			if err != nil {
				if !errors.Is(err, rtpmpeg4audio.ErrMorePacketsNeeded) {
					agg.add("AAC depacketization error: "+err.Error(), 1)
				}
				return
			}
			pipe.WriteAAC(ticksToDuration(pts, rate), aus)
		})
	} else if sel.mpa != nil {
		rate := int64(sel.mpa.ClockRate())
		var dec mpaDepacketizer
		c.OnPacketRTP(sel.audio, sel.mpa, func(pkt *rtp.Packet) {
			lastRTP.Store(time.Now().UnixNano())
			pts, ok := c.PacketPTS2(sel.audio, pkt)
			if !ok {
				return
			}
			frames, err := dec.decode(pkt.Payload)
			if err != nil {
				agg.add("MPEG audio depacketization error: "+err.Error(), 1)
			}
			if len(frames) > 0 {
				pipe.WriteMPEG1Audio(ticksToDuration(pts, rate), frames)
			}
		})
	} else if sel.g722 != nil {
		// RFC 3551 §4.5.2: G.722's RTP clock is 8000 Hz although it
		// samples at 16 kHz; ClockRate says 8000, so pts is right.
		rate := int64(sel.g722.ClockRate())
		c.OnPacketRTP(sel.audio, sel.g722, func(pkt *rtp.Packet) {
			lastRTP.Store(time.Now().UnixNano())
			pts, ok := c.PacketPTS2(sel.audio, pkt)
			if !ok || len(pkt.Payload) == 0 {
				return
			}
			pipe.WriteG722(ticksToDuration(pts, rate), pkt.Payload)
		})
	} else if sel.audio != nil {
		rate := int64(sel.audioFormat.ClockRate())
		c.OnPacketRTP(sel.audio, sel.audioFormat, func(pkt *rtp.Packet) {
			lastRTP.Store(time.Now().UnixNano())
			pts, ok := c.PacketPTS2(sel.audio, pkt)
			if !ok || len(pkt.Payload) == 0 {
				return
			}
			// Opus (RFC 7587) and G.711 (RFC 3551) carry one frame per
			// packet: the payload is the frame.
			st.WriteAudio(ticksToDuration(pts, rate), pkt.Payload)
		})
	}

	if _, err := c.Play(nil); err != nil {
		return s.fail(ctx, "PLAY", err)
	}
	s.log.Info("playing", "transport", s.cfg.Transport, "video", videoName(sel), "audio", audioName(sel))

	// With transport auto, gortsplib waits up to 3 s for a first UDP packet
	// before switching to TCP: do not count that against the camera.
	firstWait := s.cfg.ReadTimeout
	if s.cfg.Transport == TransportAuto {
		firstWait += 3 * time.Second
	}
	playing := time.Now()

	tick := s.cfg.ReadTimeout / 4
	tick = min(max(tick, 50*time.Millisecond), time.Second)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-waitDone:
			waitDone <- err // for the deferred cleanup
			return s.fail(ctx, "connection", err)
		case <-pipeDone:
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return s.unavailable("audio transcode", pipe.Err())
		case now := <-ticker.C:
			agg.tick(now)
			since, limit := playing, firstWait
			if last := lastRTP.Load(); last != 0 {
				since, limit = time.Unix(0, last), s.cfg.ReadTimeout
			}
			if idle := now.Sub(since); idle >= limit {
				return fmt.Errorf("%w: rtsp %s: no media for %s", media.ErrSourceUnavailable, s.safe, idle.Round(100*time.Millisecond))
			}
		}
	}
}

// selection is what Run plays out of a DESCRIBE.
type selection struct {
	video       *description.Media
	h264        *format.H264
	audio       *description.Media
	audioFormat format.Format
	audioParams media.AudioParams
	// aac is set when the audio is AAC (audioFormat is it too): transcoded
	// to Opus, by an AudioPipe or by VideoTranscode.
	aac *format.MPEG4Audio
	// mpa (MP3, MP2) or g722 is set when the audio is that codec,
	// transcoded to Opus by an AudioPipe.
	mpa  *format.MPEG1Audio
	g722 *format.G722
	// One of h264, h265 and mjpeg is set: H.264 or H.265 passed as is,
	// M-JPEG for VideoTranscode.
	h265     *format.H265
	mjpeg    *format.MJPEG
	warnings []string
}

// transcoded reports whether the selected audio goes through an AudioPipe
// (or, with M-JPEG, VideoTranscode).
func (sel *selection) transcoded() bool {
	return sel.aac != nil || sel.mpa != nil || sel.g722 != nil
}

// audioRank is the preference of an audio format (lower is better): Opus,
// G.711 (both passed through), then, with TranscodeAudio, AAC, MPEG-1/2
// Audio and G.722 (transcoded to Opus). ok is false for a format that
// cannot be played.
func (s *Source) audioRank(f format.Format) (rank int, ok bool) {
	if p, ok := passThrough(f); ok {
		if p.Codec == media.CodecOpus {
			return 0, true
		}
		return 1, true
	}
	if !s.cfg.TranscodeAudio {
		return 0, false
	}
	switch f := f.(type) {
	case *format.MPEG4Audio:
		return 2, f.Config != nil
	case *format.MPEG1Audio:
		return 3, true
	case *format.G722:
		return 4, true
	}
	return 0, false
}

func (s *Source) selectTracks(desc *description.Session) (*selection, error) {
	sel := &selection{}
	audioRank := 0
	var found []string
	var h265Media, mjpegMedia *description.Media
	var h265Format *format.H265
	var mjpegFormat *format.MJPEG
	for _, m := range desc.Medias {
		for _, f := range m.Formats {
			found = append(found, fmt.Sprintf("%s %s", m.Type, f.Codec()))
			if m.Type == description.MediaTypeVideo {
				switch f := f.(type) {
				case *format.H264:
					// Packetization mode 2 (interleaved) is not supported by the decoder.
					if sel.video == nil && f.PacketizationMode < 2 {
						sel.video, sel.h264 = m, f
					}
				case *format.H265:
					if h265Media == nil {
						h265Media, h265Format = m, f
					}
				case *format.MJPEG:
					if mjpegMedia == nil {
						mjpegMedia, mjpegFormat = m, f
					}
				}
				continue
			}
			if m.Type != description.MediaTypeAudio || m.IsBackChannel {
				continue
			}
			// The best ranked format wins (the first of equals): a
			// pass-through one beats a transcoded one.
			rank, ok := s.audioRank(f)
			if !ok || (sel.audio != nil && rank >= audioRank) {
				continue
			}
			audioRank = rank
			sel.audio, sel.audioFormat = m, f
			sel.aac, _ = f.(*format.MPEG4Audio)
			sel.mpa, _ = f.(*format.MPEG1Audio)
			sel.g722, _ = f.(*format.G722)
			if p, ok := passThrough(f); ok {
				sel.audioParams = p
			} else {
				sel.audioParams = media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
			}
		}
	}
	if sel.video == nil && h265Media != nil {
		// H.265 goes to the stream as it is; viewers that cannot decode
		// it get a rendition.
		sel.video, sel.h265 = h265Media, h265Format
	}
	if sel.video == nil && mjpegMedia != nil && s.cfg.VideoTranscode != nil {
		return s.selectForTranscode(desc, mjpegMedia, mjpegFormat), nil
	}
	if sel.transcoded() {
		sel.warnings = append(sel.warnings, fmt.Sprintf("audio %s is transcoded to Opus with ffmpeg", describeFormat(sel.audioFormat)))
	}
	if sel.video == nil {
		if len(found) == 0 {
			found = append(found, "no media")
		}
		return nil, fmt.Errorf("%w: rtsp %s: no H.264 or H.265 video (found: %s)", media.ErrUnsupportedCodec, s.safe, strings.Join(found, ", "))
	}
	// Warn about audio that is dropped: every other audio format, when none
	// could be kept or when the kept one is not it.
	for _, m := range desc.Medias {
		if m.Type != description.MediaTypeAudio || m.IsBackChannel {
			continue
		}
		for _, f := range m.Formats {
			if f == sel.audioFormat {
				continue
			}
			if _, ok := s.audioRank(f); ok && sel.audio != nil {
				continue // a second usable track; one audio track is enough
			}
			why := "only Opus, PCMU and PCMA (8 kHz mono) are passed through"
			if s.cfg.TranscodeAudio {
				why += ", AAC, MP3/MP2 and G.722 transcoded"
			}
			sel.warnings = append(sel.warnings, fmt.Sprintf("audio %s dropped: %s", describeFormat(f), why))
		}
	}
	return sel, nil
}

// selectForTranscode picks the M-JPEG video and the first audio ffmpeg is
// fed with it (AAC, Opus or G.711) for VideoTranscode.
func (s *Source) selectForTranscode(desc *description.Session, vm *description.Media, vf *format.MJPEG) *selection {
	sel := &selection{video: vm, mjpeg: vf}
	for _, m := range desc.Medias {
		if m.Type != description.MediaTypeAudio || m.IsBackChannel || sel.audio != nil {
			continue
		}
		for _, f := range m.Formats {
			if a, ok := f.(*format.MPEG4Audio); ok && a.Config == nil {
				continue
			}
			if _, err := mkvAudioTrack(f); err == nil {
				sel.audio, sel.audioFormat = m, f
				sel.aac, _ = f.(*format.MPEG4Audio)
				sel.audioParams = media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
				break
			}
		}
	}
	sel.warnings = append(sel.warnings, "video M-JPEG is transcoded to H.264 with ffmpeg")
	if sel.audio != nil {
		sel.warnings = append(sel.warnings, fmt.Sprintf("audio %s is transcoded to Opus with it", describeFormat(sel.audioFormat)))
	}
	for _, m := range desc.Medias {
		if m.Type != description.MediaTypeAudio || m.IsBackChannel {
			continue
		}
		for _, f := range m.Formats {
			if f != sel.audioFormat {
				sel.warnings = append(sel.warnings, fmt.Sprintf("audio %s dropped: only AAC, Opus and G.711 are passed to the transcode", describeFormat(f)))
			}
		}
	}
	return sel
}

// passThrough reports whether WebRTC can carry f as is.
func passThrough(f format.Format) (media.AudioParams, bool) {
	switch f := f.(type) {
	case *format.Opus:
		// RFC 7587: always announced as 48000/2 whatever is inside.
		return media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}, true
	case *format.G711:
		if f.SampleRate != 8000 || f.ChannelCount != 1 {
			return media.AudioParams{}, false
		}
		c := media.CodecPCMA
		if f.MULaw {
			c = media.CodecPCMU
		}
		return media.AudioParams{Codec: c, ClockRate: 8000, Channels: 1}, true
	}
	return media.AudioParams{}, false
}

func describeFormat(f format.Format) string {
	switch f := f.(type) {
	case *format.G711:
		return fmt.Sprintf("%s %d Hz/%d ch", f.Codec(), f.SampleRate, f.ChannelCount)
	case *format.MPEG1Audio:
		return "MP3/MP2 (MPEG-1/2 Audio)"
	case *format.G722:
		return "G.722"
	}
	return f.Codec()
}

// mpaDepacketizer reassembles MPEG-1/2 Audio frames from RTP (RFC 2250
// §3.5: a 4-byte header whose last 16 bits are the offset of the payload
// in the frame, then whole frames or one fragment of a frame). gortsplib's
// decoder sizes MPEG-2 layer III frames (16, 22.05, 24 kHz) at twice their
// length and never returns them.
type mpaDepacketizer struct {
	frag []byte // the frame being reassembled
	want int    // its length
}

func (d *mpaDepacketizer) decode(payload []byte) ([][]byte, error) {
	if len(payload) < 5 {
		d.frag = d.frag[:0]
		return nil, errors.New("payload too short")
	}
	offset := int(payload[2])<<8 | int(payload[3])
	buf := payload[4:]
	if offset != 0 {
		if len(d.frag) == 0 || offset != len(d.frag) {
			d.frag = d.frag[:0] // joined mid-frame or lost a fragment
			return nil, nil
		}
		d.frag = append(d.frag, buf...)
		if len(d.frag) < d.want {
			return nil, nil
		}
		f := d.frag[:d.want]
		d.frag = nil
		return [][]byte{f}, nil
	}
	d.frag = d.frag[:0]
	var frames [][]byte
	for len(buf) > 0 {
		var h mpeg1audio.FrameHeader
		if err := h.Unmarshal(buf); err != nil {
			return frames, err
		}
		n := transcode.MPEGAudioFrameLen(h)
		if n <= 4 {
			return frames, errors.New("invalid frame length")
		}
		if n > len(buf) {
			if len(frames) > 0 {
				return frames, errors.New("frame split after whole frames")
			}
			d.frag, d.want = append(d.frag, buf...), n
			return nil, nil
		}
		frames = append(frames, buf[:n])
		buf = buf[n:]
	}
	return frames, nil
}

func videoName(sel *selection) string {
	switch {
	case sel.h265 != nil:
		return media.CodecH265
	case sel.mjpeg != nil:
		return "M-JPEG"
	}
	return media.CodecH264
}

func audioName(sel *selection) string {
	if sel.audio == nil {
		return "none"
	}
	return sel.audioParams.Codec
}

// ticksToDuration converts a timestamp in 1/rate s without overflowing
// (ticks*1e9 overflows int64 after ~28 h at 90 kHz).
func ticksToDuration(ticks, rate int64) time.Duration {
	return time.Duration(ticks/rate)*time.Second + time.Duration(ticks%rate)*time.Second/time.Duration(rate)
}

// fail classifies an error of an RTSP step: ctx.Err() when cancelled, else
// an error wrapping media.ErrSourceUnavailable (and ErrUnauthorized on 401).
func (s *Source) fail(ctx context.Context, step string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var bad liberrors.ErrClientBadStatusCode
	if errors.As(err, &bad) && bad.Code == base.StatusUnauthorized {
		return fmt.Errorf("%w: rtsp %s: %s: %w", media.ErrSourceUnavailable, s.safe, step, ErrUnauthorized)
	}
	return s.unavailable(step, err)
}

// unavailable wraps err's text, scrubbed of credentials; the original error
// is not wrapped because its text could hold them.
func (s *Source) unavailable(step string, err error) error {
	return fmt.Errorf("%w: rtsp %s: %s: %s", media.ErrSourceUnavailable, s.safe, step, s.scrub(err.Error()))
}

// scrub removes credentials from a text, and makes what a camera put in
// it (gortsplib quotes a bad SDP line, a bad header) printable and short.
func (s *Source) scrub(text string) string {
	text = media.RedactURL(text)
	if s.pass != "" {
		text = strings.ReplaceAll(text, s.pass, "***")
	}
	return redact.Printable(text)
}

// aggregator turns per-packet problems into one log line per second per
// message, with a count.
type aggregator struct {
	log   *slog.Logger
	mu    sync.Mutex
	n     map[string]int
	limit logging.Limiter // paces tick's flushes
}

func newAggregator(log *slog.Logger) *aggregator {
	a := &aggregator{log: log, n: map[string]int{}}
	a.limit.Allow(time.Now()) // the first flush is a second away
	return a
}

func (a *aggregator) add(msg string, n int) {
	a.mu.Lock()
	a.n[msg] += n
	a.mu.Unlock()
}

func (a *aggregator) tick(now time.Time) {
	if ok, _ := a.limit.Allow(now); !ok {
		return
	}
	a.flush()
}

func (a *aggregator) flush() {
	a.mu.Lock()
	n := a.n
	a.n = map[string]int{}
	a.mu.Unlock()
	for msg, c := range n {
		a.log.Warn(msg, "count", c)
	}
}
