package main

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
)

func TestSeqCounter(t *testing.T) {
	tests := []struct {
		name               string
		seqs               []uint16
		expected, received int64
		lost               int64
	}{
		{"empty", nil, 0, 0, 0},
		{"in order", []uint16{10, 11, 12, 13}, 4, 4, 0},
		{"one gap", []uint16{10, 11, 14, 15}, 6, 4, 2},
		{"wrap without loss", []uint16{65533, 65534, 65535, 0, 1}, 5, 5, 0},
		{"gap across the wrap", []uint16{65534, 65535, 2, 3}, 6, 4, 2},
		{"several wraps", wrapping(3*65536 + 7), 3*65536 + 7, 3*65536 + 7, 0},
		{"reordering is not loss", []uint16{1, 2, 4, 3, 5}, 5, 5, 0},
		{"reordering across the wrap", []uint16{65534, 0, 65535, 1}, 4, 4, 0},
		{"late packet before the first", []uint16{100, 101, 99, 102}, 4, 4, 0},
		{"duplicate is not negative loss", []uint16{1, 2, 2, 3}, 3, 4, 0},
		{"gap then late fill", []uint16{1, 2, 5, 6, 3}, 6, 5, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c seqCounter
			for _, s := range tt.seqs {
				c.add(s)
			}
			if c.expected() != tt.expected || c.received != tt.received || c.lost() != tt.lost {
				t.Fatalf("expected=%d received=%d lost=%d, want %d %d %d",
					c.expected(), c.received, c.lost(), tt.expected, tt.received, tt.lost)
			}
		})
	}
}

func wrapping(n int) []uint16 {
	s := make([]uint16, n)
	for i := range s {
		s[i] = uint16(60000 + i)
	}
	return s
}

func TestPercentile(t *testing.T) {
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	tests := []struct {
		name          string
		in            []time.Duration
		p50, p95, max float64
	}{
		{"empty", nil, 0, 0, 0},
		{"one", ms(7), 7, 7, 7},
		{"two", ms(20, 10), 10, 20, 20},
		{"unsorted ten", ms(10, 9, 8, 7, 6, 5, 4, 3, 2, 1), 5, 10, 10},
		{"hundred", func() []time.Duration {
			v := make([]int, 100)
			for i := range v {
				v[i] = 100 - i
			}
			return ms(v...)
		}(), 50, 95, 100},
		{"twenty with an outlier", ms(1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 900), 1, 2, 900},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := summarise(tt.in)
			if d.N != len(tt.in) || d.P50 != tt.p50 || d.P95 != tt.p95 || d.Max != tt.max {
				t.Fatalf("got %+v, want p50=%v p95=%v max=%v", d, tt.p50, tt.p95, tt.max)
			}
		})
	}
	// Sub-millisecond values keep two decimals.
	if d := summarise([]time.Duration{1234567 * time.Nanosecond}); d.P50 != 1.23 {
		t.Fatalf("p50 = %v, want 1.23", d.P50)
	}
}

func TestParseRTP(t *testing.T) {
	p := rtp.Packet{
		Header: rtp.Header{
			Version: 2, PayloadType: 102, SequenceNumber: 65535, Timestamp: 9, SSRC: 0xdeadbeef,
			CSRC: []uint32{1, 2},
		},
		Payload:     []byte{0x65, 1, 2, 3},
		PaddingSize: 3,
	}
	p.Padding = true
	if err := p.Header.SetExtension(1, []byte{0xaa, 0xbb}); err != nil {
		t.Fatal(err)
	}
	buf, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	h, err := parseRTP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if h.seq != 65535 || h.ssrc != 0xdeadbeef || string(h.payload) != string(p.Payload) {
		t.Fatalf("got seq=%d ssrc=%x payload=%x", h.seq, h.ssrc, h.payload)
	}
	for _, bad := range [][]byte{nil, buf[:11], {0x90, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, append([]byte{0x40}, buf[1:]...)} {
		if _, err := parseRTP(bad); err == nil {
			t.Errorf("parseRTP(%x) succeeded", bad)
		}
	}
}

func TestH264KeyframeStart(t *testing.T) {
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"single IDR", []byte{0x65, 0x88}, true},
		{"single SPS", []byte{0x67, 0x42}, true},
		{"single PPS", []byte{0x68, 0xce}, false},
		{"single non-IDR slice", []byte{0x41, 0x9a}, false},
		{"STAP-A SPS+PPS", []byte{0x78, 0, 2, 0x67, 0x42, 0, 2, 0x68, 0xce}, true},
		{"STAP-A SEI+IDR", []byte{0x78, 0, 2, 0x06, 0x05, 0, 2, 0x65, 0x88}, true},
		{"STAP-A SEI+slice", []byte{0x78, 0, 2, 0x06, 0x05, 0, 2, 0x41, 0x9a}, false},
		{"STAP-A truncated", []byte{0x78, 0, 9, 0x65}, false},
		{"FU-A IDR start", []byte{0x7c, 0x85, 0x88}, true},
		{"FU-A IDR middle", []byte{0x7c, 0x05, 0x88}, false},
		{"FU-A IDR end", []byte{0x7c, 0x45, 0x88}, false},
		{"FU-A slice start", []byte{0x5c, 0x81, 0x9a}, false},
		{"FU-A header only", []byte{0x7c}, false},
	}
	for _, tt := range tests {
		if got := h264KeyframeStart(tt.p); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestVP8KeyframeStart(t *testing.T) {
	tests := []struct {
		name string
		p    []byte
		want bool
	}{
		{"empty", nil, false},
		{"start, key frame", []byte{0x10, 0x00}, true},
		{"start, inter frame", []byte{0x10, 0x01}, false},
		{"continuation", []byte{0x00, 0x00}, false},
		{"start, partition 1", []byte{0x11, 0x00}, false},
		{"15-bit picture ID, key frame", []byte{0x90, 0x80, 0x81, 0x23, 0x00}, true},
		{"7-bit picture ID + TL0 + TID, inter", []byte{0x90, 0xe0, 0x12, 0x01, 0x40, 0x01}, false},
		{"7-bit picture ID + TL0 + TID, key", []byte{0x90, 0xe0, 0x12, 0x01, 0x40, 0x00}, true},
		{"truncated extension", []byte{0x90, 0x80}, false},
	}
	for _, tt := range tests {
		if got := vp8KeyframeStart(tt.p); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestH264KeyframeOnRealPacketization runs an ffmpeg-encoded stream through
// pion's H.264 packetizer, with and without STAP-A, and checks that a
// keyframe start is seen in exactly the access units that hold an IDR, with
// the first such packet being the first packet of the access unit.
func TestH264KeyframeOnRealPacketization(t *testing.T) {
	aus := encodeClip(t, 3*time.Second, 10, 10) // 30 frames, GOP 1 s
	idrs := 0
	for _, au := range aus {
		if au.idr {
			idrs++
		}
	}
	if idrs != 3 {
		t.Fatalf("clip has %d IDR access units, want 3", idrs)
	}
	for _, stapA := range []bool{true, false} {
		t.Run(map[bool]string{true: "STAP-A", false: "no STAP-A"}[stapA], func(t *testing.T) {
			pay := &codecs.H264Payloader{DisableStapA: !stapA}
			seen := 0
			kinds := map[byte]bool{}
			for i, au := range aus {
				var pkts [][]byte
				for _, nal := range au.nals {
					pkts = append(pkts, pay.Payload(1200, nal)...)
				}
				hit, firstHit := 0, false
				for j, p := range pkts {
					kinds[p[0]&0x1f] = true
					if h264KeyframeStart(p) {
						hit++
						firstHit = firstHit || j == 0
					}
				}
				switch {
				case au.idr && (hit == 0 || !firstHit):
					t.Errorf("AU %d (IDR): %d keyframe packets, first packet flagged %v", i, hit, firstHit)
				case !au.idr && hit != 0:
					t.Errorf("AU %d (non-IDR): %d keyframe packets", i, hit)
				}
				if hit > 0 {
					seen++
				}
			}
			if seen != idrs {
				t.Fatalf("keyframes seen in %d AUs, want %d", seen, idrs)
			}
			if !kinds[28] || (stapA && !kinds[24]) {
				t.Fatalf("packetization did not exercise FU-A/STAP-A: %v", kinds)
			}
		})
	}
}

func TestGapTracker(t *testing.T) {
	type step struct {
		seq   uint16
		after time.Duration // advance the clock before this packet
	}
	seqs := func(ss ...uint16) []step {
		out := make([]step, len(ss))
		for i, s := range ss {
			out[i] = step{seq: s}
		}
		return out
	}
	tests := []struct {
		name                                         string
		steps                                        []step
		gaps, recovered, unrecovered, late, dup, out int64 // out: still outstanding at the end
	}{
		{"in order", seqs(1, 2, 3, 4), 0, 0, 0, 0, 0, 0},
		{"gap filled at once", seqs(1, 2, 4, 3, 5), 1, 1, 0, 0, 0, 0},
		{"gap across the wrap, filled", seqs(65534, 0, 65535, 1), 1, 1, 0, 0, 0, 0},
		{"two gaps, one filled", seqs(1, 4, 2, 5), 2, 1, 0, 0, 0, 1},
		{"duplicate does not hide a loss", seqs(1, 2, 2, 4), 1, 0, 0, 0, 1, 1},
		{"retransmission of a filled gap is a duplicate", seqs(1, 3, 2, 2, 4), 1, 1, 0, 0, 1, 0},
		{"filled too late", []step{{1, 0}, {3, 0}, {2, 1500 * time.Millisecond}}, 1, 0, 1, 1, 0, 0},
		{"expires when later packets arrive", []step{{1, 0}, {3, 0}, {4, 1100 * time.Millisecond}, {2, 0}}, 1, 0, 1, 1, 0, 0},
		{"filled just in time", []step{{1, 0}, {3, 0}, {2, 900 * time.Millisecond}}, 1, 1, 0, 0, 0, 0},
		{"packet before the first is not a gap", seqs(10, 11, 9, 12), 0, 0, 0, 1, 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := time.Unix(1000, 0)
			g := gapTracker{now: func() time.Time { return now }}
			for _, s := range tt.steps {
				now = now.Add(s.after)
				g.add(s.seq)
			}
			if g.gaps != tt.gaps || g.recovered != tt.recovered || g.unrecovered != tt.unrecovered ||
				g.late != tt.late || g.duplicates != tt.dup || int64(len(g.missing)) != tt.out {
				t.Fatalf("gaps=%d recovered=%d unrecovered=%d late=%d dup=%d outstanding=%d, want %d %d %d %d %d %d",
					g.gaps, g.recovered, g.unrecovered, g.late, g.duplicates, len(g.missing),
					tt.gaps, tt.recovered, tt.unrecovered, tt.late, tt.dup, tt.out)
			}
		})
	}

	// A long run with wraps and a gap every 100 packets, each filled 5
	// packets later: every gap recovered, nothing outstanding.
	var g gapTracker
	var held []uint16
	for i := range 200000 {
		s := uint16(i)
		if i%100 == 50 {
			held = append(held, s)
			continue
		}
		g.add(s)
		if len(held) > 0 && i%100 == 55 {
			g.add(held[0])
			held = held[1:]
		}
	}
	if g.gaps != 2000 || g.recovered != 2000 || g.unrecovered != 0 || g.duplicates != 0 || len(g.missing) != 0 {
		t.Fatalf("long run: %+v", g)
	}
}
