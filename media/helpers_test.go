package media

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/format/rtph264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/icey/icey-server/internal/testenv"
)

// checkLeaks: see testenv.CheckGoroutines.
func checkLeaks(t *testing.T) { t.Helper(); testenv.CheckGoroutines(t) }

// makeClip encodes a synthetic H.264 clip with ffmpeg (baseline, no
// B-frames, access unit delimiters on so that AUs can be split exactly)
// and returns its access units, NALUs without start codes.
func makeClip(t *testing.T, size string, seconds, gop int) [][][]byte {
	t.Helper()
	return encodeH264(t, size, seconds, "aud=1", "-profile:v", "baseline", "-bf", "0",
		"-g", strconv.Itoa(gop), "-keyint_min", strconv.Itoa(gop), "-sc_threshold", "0")
}

// encodeH264 is makeClip with other x264 parameters (x264Params gets
// aud=1 in front) and encoder arguments.
func encodeH264(t *testing.T, size string, seconds int, x264Params string, args ...string) [][][]byte {
	t.Helper()
	ff := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "clip.h264")
	if !strings.HasPrefix(x264Params, "aud=1") {
		x264Params = "aud=1:" + x264Params
	}
	cmd := exec.Command(ff, append(append([]string{"-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=30",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264"}, args...),
		"-x264-params", x264Params, "-threads", "1", "-f", "h264", out)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	// Split at the AUD start codes, then let mediacommon parse each AU
	// (its parser bounds the NALU count per call to one AU's worth).
	var aus [][][]byte
	for len(raw) > 0 {
		next := bytes.Index(raw[4:], []byte{0, 0, 1, naluAUD})
		chunk := raw
		if next >= 0 {
			chunk, raw = raw[:next+4], raw[next+4:]
			chunk = bytes.TrimRight(chunk, "\x00") // a 4-byte start code's leading zero
		} else {
			raw = nil
		}
		var au h264.AnnexB
		if err := au.Unmarshal(chunk); err != nil {
			t.Fatalf("AU %d: %v", len(aus), err)
		}
		if au[0][0]&0x1f != naluAUD {
			t.Fatalf("AU %d does not start with an AUD", len(aus))
		}
		aus = append(aus, au)
	}
	if len(aus) < seconds*30-1 {
		t.Fatalf("clip has %d access units, want about %d", len(aus), seconds*30)
	}
	return aus
}

// drain returns the packets of every unit queued for sub without blocking.
func drain(t testing.TB, sub *Subscriber) []*Packet {
	t.Helper()
	return packetsOf(drainUnits(t, sub))
}

// drainUnits returns every unit queued for sub without blocking.
func drainUnits(t testing.TB, sub *Subscriber) []*Unit {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var all []*Unit
	buf := make([]*Unit, 64)
	for {
		n, err := sub.Read(ctx, buf)
		all = append(all, buf[:n]...)
		if err != nil {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Read: %v", err)
			}
			return all
		}
	}
}

// packetsOf flattens units into their packets, checking that a unit's
// packets agree with it.
func packetsOf(units []*Unit) []*Packet {
	var all []*Packet
	for _, u := range units {
		for i, p := range u.Packets {
			if p.Kind != u.Kind || p.FromCache != u.FromCache || p.Keyframe != (u.Keyframe && i == 0) {
				panic("unit and packet flags differ")
			}
		}
		all = append(all, u.Packets...)
	}
	return all
}

func onlyKind(pkts []*Packet, k Kind) []*Packet {
	var out []*Packet
	for _, p := range pkts {
		if p.Kind == k {
			out = append(out, p)
		}
	}
	return out
}

// decodedAU is one access unit reassembled from RTP.
type decodedAU struct {
	ts       uint32
	nalus    [][]byte
	keyframe bool // first packet flagged Keyframe
	cached   bool // first packet FromCache
}

// depacketize checks the RTP invariants of a video packet sequence (payload
// bound, continuous sequence numbers, one timestamp per AU with the marker
// on its last packet) and reassembles the access units with gortsplib's
// RFC 6184 decoder.
func depacketize(t testing.TB, pkts []*Packet, maxPayload int) []decodedAU {
	t.Helper()
	var d rtph264.Decoder
	if err := d.Init(); err != nil {
		t.Fatal(err)
	}
	var out []decodedAU
	first := true
	for i, p := range pkts {
		if p.Kind != KindVideo {
			t.Fatalf("packet %d is %v", i, p.Kind)
		}
		if len(p.RTP.Payload) > maxPayload {
			t.Fatalf("packet %d payload %d > %d", i, len(p.RTP.Payload), maxPayload)
		}
		if i > 0 && p.RTP.SequenceNumber != pkts[i-1].RTP.SequenceNumber+1 {
			t.Fatalf("packet %d seq %d after %d", i, p.RTP.SequenceNumber, pkts[i-1].RTP.SequenceNumber)
		}
		last := i == len(pkts)-1 || pkts[i+1].RTP.Timestamp != p.RTP.Timestamp
		if p.RTP.Marker != last {
			t.Fatalf("packet %d marker %v, want %v", i, p.RTP.Marker, last)
		}
		if first {
			out = append(out, decodedAU{ts: p.RTP.Timestamp, keyframe: p.Keyframe, cached: p.FromCache})
		} else if p.Keyframe {
			t.Fatalf("packet %d: Keyframe set on a non-first packet of an AU", i)
		}
		first = p.RTP.Marker
		// Decode mutates nothing of the packet, but clone to be safe with
		// shared packets.
		pc := p.RTP.Clone()
		au, err := d.Decode(pc)
		if errors.Is(err, rtph264.ErrMorePacketsNeeded) {
			continue
		}
		if err != nil {
			t.Fatalf("packet %d: decode: %v", i, err)
		}
		out[len(out)-1].nalus = au
	}
	return out
}

func naluTypes(au [][]byte) []byte {
	var ts []byte
	for _, n := range au {
		ts = append(ts, n[0]&0x1f)
	}
	return ts
}

// expectedAU is what the hub must emit for an input AU, given the latest
// parameter sets: no AUD/filler/SPS/PPS, and SPS+PPS in front of an IDR.
func expectedAU(in [][]byte, sps, pps []byte) [][]byte {
	var out [][]byte
	if hasIDRNALU(in) {
		out = append(out, sps, pps)
	}
	for _, n := range in {
		switch n[0] & 0x1f {
		case naluAUD, naluFiller, naluSPS, naluPPS:
			continue
		}
		out = append(out, n)
	}
	return out
}

func equalAU(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

// Hand-built NALUs: 320x240 Constrained Baseline (log2_max_frame_num 4,
// POC type 2, CAVLC, deblocking control in the PPS) that h264Check accepts.
var (
	testSPS = []byte{0x67, 0x42, 0xc0, 0x0d, 0xd9, 0x01, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x20}
	testPPS = []byte{0x68, 0xce, 0x3c, 0x80}
)

// nalu returns a NAL unit of size bytes: header, then the given header
// bits (a string of 0 and 1), then filler bytes with no start code or
// emulation prevention pattern in them.
func nalu(header byte, size int, headerBits ...string) []byte {
	b := make([]byte, size)
	b[0] = header
	for i := 1; i < size; i++ {
		b[i] = byte(i*7 + size)
	}
	pos := 8
	for _, bits := range headerBits {
		for _, c := range bits {
			if pos/8 >= size {
				panic("NALU too small for its header")
			}
			mask := byte(0x80) >> (pos % 8)
			if c == '1' {
				b[pos/8] |= mask
			} else {
				b[pos/8] &^= mask
			}
			pos++
		}
	}
	return b
}

// idr is an IDR picture of one I slice; slice is a non-reference P picture
// (frame_num 1: valid after any IDR, any number of times).
func idr(size int) []byte {
	// first_mb 0, slice_type 7, pps 0, frame_num 0, idr_pic_id 0,
	// no_output_of_prior_pics 0, long_term_reference 0, qp_delta 0,
	// disable_deblocking_filter_idc 1.
	return nalu(0x65, size, "1", "0001000", "1", "0000", "1", "0", "0", "1", "010")
}

func slice(size int) []byte {
	// first_mb 0, slice_type 5, pps 0, frame_num 1, no num_ref_idx
	// override, no list modification, qp_delta 0, deblocking idc 1.
	return nalu(0x01, size, "1", "00110", "1", "0001", "0", "0", "1", "010")
}

var (
	testAUD    = []byte{0x09, 0xf0}
	testFiller = []byte{0x0c, 0xff, 0xff, 0xff, 0x80}
	testSEI    = []byte{0x06, 0x05, 0x01, 0x00, 0x80}
)

const frame30 = time.Second / 30

func newVideoStream(t testing.TB, cfg StreamConfig, params bool) *Stream {
	st := NewStream(cfg, nil)
	v := &VideoParams{}
	if params {
		v.SPS, v.PPS = testSPS, testPPS
	}
	st.SetTracks(Tracks{Video: v, Audio: &AudioParams{Codec: CodecOpus, ClockRate: 48000, Channels: 2}})
	if t != nil {
		if tt, ok := t.(*testing.T); ok {
			tt.Cleanup(st.Close)
		}
	}
	return st
}
