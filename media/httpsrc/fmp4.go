package httpsrc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/transcode"
)

// maxBoxSize bounds one MP4 box that is held in memory (ftyp, moov, moof,
// mdat): the body is untrusted, a larger box fails the run.
const maxBoxSize = 64 << 20

// boxHeader is the framing of one ISO BMFF box.
type boxHeader struct {
	typ  string // four characters
	size uint64 // whole box, header included
	hdr  int    // header bytes: 8, or 16 with a 64-bit largesize
}

var errBoxToEnd = errors.New("an MP4 box of size 0 (to the end of the stream) is not supported")

// parseBoxHeader parses the header at the start of b. It needs 8 bytes, 16
// when the 32-bit size is 1 (a 64-bit largesize follows the type).
// io.ErrUnexpectedEOF: b is too short.
func parseBoxHeader(b []byte) (boxHeader, error) {
	if len(b) < 8 {
		return boxHeader{}, io.ErrUnexpectedEOF
	}
	h := boxHeader{typ: string(b[4:8]), size: uint64(binary.BigEndian.Uint32(b)), hdr: 8}
	switch h.size {
	case 0:
		return h, fmt.Errorf("MP4 box %q: %w", printable(h.typ), errBoxToEnd)
	case 1:
		if len(b) < 16 {
			return boxHeader{}, io.ErrUnexpectedEOF
		}
		h.size = binary.BigEndian.Uint64(b[8:16])
		h.hdr = 16
	}
	if h.size < uint64(h.hdr) {
		return h, fmt.Errorf("MP4 box %q: size %d is smaller than its header", printable(h.typ), h.size)
	}
	return h, nil
}

// printable is a box type safe to put in an error text.
func printable(typ string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return '?'
		}
		return r
	}, typ)
}

// boxReader reads top-level boxes of an MP4 byte stream.
type boxReader struct {
	r     io.Reader
	limit uint64 // largest box read whole
	off   uint64 // stream offset of the next box
}

// next reads the next box header. io.EOF: the stream ended cleanly
// between boxes.
func (br *boxReader) next() (boxHeader, []byte, error) {
	var hb [16]byte
	if _, err := io.ReadFull(br.r, hb[:8]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return boxHeader{}, nil, fmt.Errorf("truncated MP4 box header at offset %d", br.off)
		}
		return boxHeader{}, nil, err
	}
	n := 8
	if binary.BigEndian.Uint32(hb[:4]) == 1 {
		if _, err := io.ReadFull(br.r, hb[8:16]); err != nil {
			return boxHeader{}, nil, fmt.Errorf("truncated MP4 box header at offset %d: %w", br.off, noEOF(err))
		}
		n = 16
	}
	h, err := parseBoxHeader(hb[:n])
	if err != nil {
		return h, nil, fmt.Errorf("at offset %d: %w", br.off, err)
	}
	return h, hb[:n], nil
}

// body reads the rest of box h whose header hdr was just read, whole
// (header and payload), appended to prefix. Memory grows with what
// actually arrives, not with what the header claims.
func (br *boxReader) body(h boxHeader, hdr, prefix []byte) ([]byte, error) {
	if total := uint64(len(prefix)) + h.size; h.size > br.limit || total > br.limit {
		return nil, fmt.Errorf("MP4 box %q at offset %d is %d bytes, over the %d-byte limit", printable(h.typ), br.off, total, br.limit)
	}
	var buf bytes.Buffer
	buf.Grow(len(prefix) + int(min(h.size, 1<<20)))
	buf.Write(prefix)
	buf.Write(hdr)
	rest := int64(h.size) - int64(len(hdr))
	if n, err := io.CopyN(&buf, br.r, rest); err != nil {
		return nil, fmt.Errorf("truncated MP4 box %q at offset %d (%d of %d bytes): %w", printable(h.typ), br.off, n+int64(len(hdr)), h.size, noEOF(err))
	}
	br.off += h.size
	return buf.Bytes(), nil
}

// skip discards the rest of box h (nothing is held in memory).
func (br *boxReader) skip(h boxHeader) error {
	rest := h.size - uint64(h.hdr)
	if rest > 1<<62 {
		return fmt.Errorf("MP4 box %q at offset %d: size %d out of range", printable(h.typ), br.off, h.size)
	}
	if n, err := io.CopyN(io.Discard, br.r, int64(rest)); err != nil {
		return fmt.Errorf("truncated MP4 box %q at offset %d (%d of %d bytes): %w", printable(h.typ), br.off, n, rest, noEOF(err))
	}
	br.off += h.size
	return nil
}

// noEOF turns a clean EOF inside a box into io.ErrUnexpectedEOF.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// children lists the boxes directly inside payload (a container's
// payload), stopping at the first malformed header.
func children(payload []byte) []boxHeader {
	var out []boxHeader
	for len(payload) >= 8 {
		h, err := parseBoxHeader(payload)
		if err != nil || h.size > uint64(len(payload)) {
			break
		}
		out = append(out, h)
		payload = payload[h.size:]
	}
	return out
}

// hasChild reports whether the container box b (header included) holds a
// box of type typ directly.
func hasChild(b []byte, hdr int, typ string) bool {
	for _, c := range children(b[hdr:]) {
		if c.typ == typ {
			return true
		}
	}
	return false
}

// isMP4Head reports whether head (the first bytes of a body) starts with
// an ftyp or moov box.
func isMP4Head(head []byte) bool {
	if len(head) < 8 {
		return false
	}
	typ := string(head[4:8])
	if typ != "ftyp" && typ != "moov" {
		return false
	}
	_, err := parseBoxHeader(head)
	return err == nil || errors.Is(err, io.ErrUnexpectedEOF)
}

// fmp4Options configure playFMP4 (those of tsdemux.Options).
type fmp4Options struct {
	TranscodeAudio bool
	FFmpegPath     string
	StallTimeout   time.Duration
	Close          func()
	OnTracks       func(warnings []string)
	OnAudioPid     func(pid int)
	Log            *slog.Logger
	// MaxBox bounds a box held in memory (default maxBoxSize).
	MaxBox uint64
}

// A minimal ftyp, for a body that starts with moov.
var defaultFtyp = []byte{0, 0, 0, 16, 'f', 't', 'y', 'p', 'i', 's', 'o', '5', 0, 0, 0, 1}

// fmp4Track is one played track of the init segment.
type fmp4Track struct {
	id        int
	timescale uint64
	kind      media.Kind
	h265      bool
	aac       bool
	params    [][]byte // video: parameter sets put in front of a keyframe lacking them
}

// fmp4Sample is one sample with its decoding time, for interleaving.
type fmp4Sample struct {
	tr  *fmp4Track
	dts time.Duration
	pts time.Duration
	s   *fmp4.Sample
}

// ticks converts v units of timescale to a duration; false when it does
// not fit.
func ticks(v int64, timescale uint64) (time.Duration, bool) {
	ts := int64(timescale)
	if ts <= 0 {
		return 0, false
	}
	sec := v / ts
	if sec > 1<<32 || sec < -(1<<32) { // ~136 years
		return 0, false
	}
	return time.Duration(sec)*time.Second + time.Duration(v%ts)*time.Second/time.Duration(ts), true
}

// playFMP4 plays a fragmented MP4 byte stream (an init segment, then
// moof+mdat fragments) into st, like tsdemux.Play does an MPEG-TS: H.264
// and H.265 pass through, Opus too, AAC becomes Opus through ffmpeg
// (stdin only) when TranscodeAudio is set. It returns
// media.ErrUnsupportedCodec before anything is written to st when there is
// no H.264 or H.265 track, the MP4 is not fragmented or its init segment
// is not understood (a fallback may cope); other errors are plain (io.EOF:
// the body ended between boxes).
func playFMP4(ctx context.Context, r io.Reader, st media.Writer, o fmp4Options) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 10 * time.Second
	}
	if o.Close == nil {
		o.Close = func() {}
	}
	if o.MaxBox == 0 {
		o.MaxBox = maxBoxSize
	}
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(runCtx, o.Close)
	defer stop()

	stall := media.WatchStall(runCtx, cancel, o.StallTimeout)
	fail := func(err error) error { return media.RunErr(ctx, runCtx, err) }

	br := &boxReader{r: r, limit: o.MaxBox}

	// The init segment: ftyp (optional) and moov; styp, sidx, free, ...
	// before it are skipped. An mdat before moov is a plain MP4.
	var ftyp []byte
	var moov []byte
	for moov == nil {
		h, hdr, err := br.next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = errors.New("MP4 ended before its moov box")
			}
			return fail(err)
		}
		switch h.typ {
		case "ftyp":
			if ftyp, err = br.body(h, hdr, nil); err != nil {
				return fail(err)
			}
		case "moov":
			if moov, err = br.body(h, hdr, nil); err != nil {
				return fail(err)
			}
		case "mdat", "moof":
			return fmt.Errorf("%w: MP4 without a moov box before its media (not a fragmented MP4)", media.ErrUnsupportedCodec)
		default:
			if err := br.skip(h); err != nil {
				return fail(err)
			}
		}
	}
	mh, _ := parseBoxHeader(moov)
	if !hasChild(moov, mh.hdr, "mvex") {
		return fmt.Errorf("%w: MP4 that is not fragmented (no mvex in moov)", media.ErrUnsupportedCodec)
	}
	if ftyp == nil {
		ftyp = defaultFtyp
	}
	var init fmp4.Init
	if err := safely(func() error { return init.Unmarshal(bytes.NewReader(append(append([]byte{}, ftyp...), moov...))) }); err != nil {
		// Nothing written yet: a fallback (ffmpeg) may understand it.
		return fmt.Errorf("%w: MP4 init segment not understood: %v", media.ErrUnsupportedCodec, err)
	}

	var video, audio *fmp4Track
	var found []string
	for _, t := range init.Tracks {
		name := strings.TrimPrefix(fmt.Sprintf("%T", t.Codec), "*codecs.")
		found = append(found, name)
		tr := &fmp4Track{id: t.ID, timescale: uint64(t.TimeScale)}
		switch c := t.Codec.(type) {
		case *fmp4.CodecH264:
			if video == nil || video.h265 {
				tr.kind = media.KindVideo
				tr.params = nonEmpty(c.SPS, c.PPS)
				video = tr
			}
		case *fmp4.CodecH265:
			if video == nil {
				tr.kind, tr.h265 = media.KindVideo, true
				tr.params = nonEmpty(c.VPS, c.SPS, c.PPS)
				video = tr
			}
		case *fmp4.CodecOpus:
			if audio == nil || audio.aac {
				tr.kind = media.KindAudio
				audio = tr
			}
		case *fmp4.CodecMPEG4Audio:
			if audio == nil && o.TranscodeAudio {
				tr.kind, tr.aac = media.KindAudio, true
				audio = tr
			}
		}
	}
	if video == nil {
		return fmt.Errorf("%w: no H.264 or H.265 video in the fragmented MP4 (found: %s)", media.ErrUnsupportedCodec, strings.Join(found, ", "))
	}
	var aacConf *fmp4.CodecMPEG4Audio
	var dropped []string
	for _, t := range init.Tracks {
		if t.ID == video.id || t.Codec.IsVideo() {
			continue
		}
		if audio != nil && t.ID == audio.id {
			if audio.aac {
				aacConf = t.Codec.(*fmp4.CodecMPEG4Audio)
			}
			continue
		}
		dropped = append(dropped, strings.TrimPrefix(fmt.Sprintf("%T", t.Codec), "*codecs."))
	}
	media.ReportWarnings(o.Log, o.OnTracks, media.DemuxAudioWarnings(dropped, aacConf != nil))

	tracks := media.Tracks{Video: &media.VideoParams{Codec: media.CodecH264}}
	for _, t := range init.Tracks {
		switch c := t.Codec.(type) {
		case *fmp4.CodecH264:
			if t.ID == video.id {
				tracks.Video.SPS, tracks.Video.PPS = c.SPS, c.PPS
			}
		case *fmp4.CodecH265:
			if t.ID == video.id {
				tracks.Video = &media.VideoParams{Codec: media.CodecH265, VPS: c.VPS, SPS: c.SPS, PPS: c.PPS}
			}
		}
	}
	if audio != nil {
		tracks.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}

	var pipe *transcode.AudioPipe
	if aacConf != nil {
		var stop func()
		var err error
		pipe, stop, err = transcode.StartAudioForRun(runCtx, transcode.AudioConfig{
			AAC:        aacConf.Config,
			FFmpegPath: o.FFmpegPath,
			OnOpus:     func(pts time.Duration, frame []byte) { st.WriteAudio(pts, frame) },
		}, func(err error) { cancel(fmt.Errorf("audio transcode: %v", err)) }, o.OnAudioPid, o.Log)
		if err != nil {
			return fmt.Errorf("AAC to Opus transcode: %w", err)
		}
		defer stop()
	}
	st.SetTracks(tracks)

	byID := map[int]*fmp4Track{video.id: video}
	if audio != nil {
		byID[audio.id] = audio
	}
	gotIDR := false
	var moof []byte
	var batch []fmp4Sample
	for {
		h, hdr, err := br.next()
		if err != nil {
			return fail(err)
		}
		switch h.typ {
		case "moof":
			if moof, err = br.body(h, hdr, nil); err != nil {
				return fail(err)
			}
			continue
		case "mdat":
			if moof == nil {
				if err := br.skip(h); err != nil {
					return fail(err)
				}
				continue
			}
		default: // styp, sidx, prft, emsg, free, mfra, ...
			if err := br.skip(h); err != nil {
				return fail(err)
			}
			continue
		}
		frag, err := br.body(h, hdr, moof) // moof+mdat, bounded together
		if err != nil {
			return fail(err)
		}
		moof = nil
		var parts fmp4.Parts
		if err := safely(func() error { return parts.Unmarshal(frag) }); err != nil {
			return fail(fmt.Errorf("MP4 fragment at offset %d: %w", br.off-uint64(len(frag)), err))
		}
		stall.Touch()

		batch = batch[:0]
		for _, part := range parts {
			for _, pt := range part.Tracks {
				tr := byID[pt.ID]
				if tr == nil {
					continue
				}
				if pt.BaseTime > 1<<62 {
					return fail(fmt.Errorf("MP4 track %d: decode time %d out of range", pt.ID, pt.BaseTime))
				}
				dts := int64(pt.BaseTime)
				for _, s := range pt.Samples {
					d, ok1 := ticks(dts, tr.timescale)
					pts, ok2 := ticks(dts+int64(s.PTSOffset), tr.timescale)
					if !ok1 || !ok2 {
						return fail(fmt.Errorf("MP4 track %d: time %d/%d out of range", pt.ID, dts, tr.timescale))
					}
					batch = append(batch, fmp4Sample{tr: tr, dts: d, pts: pts, s: s})
					dts += int64(s.Duration)
				}
			}
		}
		// Tracks come one after the other in a fragment: interleave them
		// by decoding time (each track keeps its order).
		sort.SliceStable(batch, func(i, j int) bool { return batch[i].dts < batch[j].dts })
		for _, b := range batch {
			if b.tr.kind == media.KindAudio {
				if b.tr.aac {
					pipe.WriteAAC(b.dts, [][]byte{b.s.Payload})
				} else {
					st.WriteAudio(b.dts, b.s.Payload)
				}
				continue
			}
			au, err := b.s.GetH264() // AVCC, also for H.265
			if err != nil || len(au) == 0 {
				continue // a damaged sample
			}
			var random bool
			if b.tr.h265 {
				random = h265.IsRandomAccess(au)
			} else {
				random = h264.IsRandomAccess(au)
			}
			if !gotIDR {
				if !random {
					continue
				}
				gotIDR = true
			}
			if random && len(b.tr.params) > 0 && !hasParams(au, b.tr.h265) {
				au = append(append([][]byte{}, b.tr.params...), au...)
			}
			if b.tr.h265 {
				st.WriteH265(b.pts, au)
			} else {
				st.WriteH264(b.pts, au)
			}
		}
	}
}

// safely runs f, turning a panic (of a parser fed untrusted bytes) into an
// error.
func safely(f func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed MP4: %v", r)
		}
	}()
	return f()
}

func nonEmpty(bs ...[]byte) [][]byte {
	var out [][]byte
	for _, b := range bs {
		if len(b) > 0 {
			out = append(out, b)
		}
	}
	return out
}

// hasParams reports whether au carries an SPS (H.264) or VPS/SPS (H.265)
// in-band.
func hasParams(au [][]byte, isH265 bool) bool {
	for _, n := range au {
		if len(n) == 0 {
			continue
		}
		if isH265 {
			if typ := h265.NALUType((n[0] >> 1) & 0x3f); typ == h265.NALUType_SPS_NUT {
				return true
			}
		} else if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
			return true
		}
	}
	return false
}
