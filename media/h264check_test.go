package media

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// Every picture x264 makes, in the configurations cameras and encoders
// use, passes the check: the check must never cost a real stream a frame.
func TestH264CheckAcceptsRealStreams(t *testing.T) {
	for _, tc := range []struct {
		name   string
		params string
		args   []string
	}{
		{"baseline", "", []string{"-profile:v", "baseline", "-bf", "0", "-g", "30"}},
		{"main B-pyramid CABAC 4 refs", "b-pyramid=normal:ref=4", []string{"-profile:v", "main", "-bf", "3", "-g", "45"}},
		{"high weighted prediction 4 slices", "slices=4:weightp=2", []string{"-profile:v", "high", "-bf", "2", "-g", "60"}},
		{"interlaced (MBAFF)", "interlaced=1", []string{"-profile:v", "high", "-bf", "2", "-g", "30"}},
		{"intra refresh (one IDR, frame_num wraps)", "intra-refresh=1:keyint=30", []string{"-profile:v", "baseline", "-bf", "0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			aus := encodeH264(t, "320x240", 4, tc.params, tc.args...)
			var c h264Check
			pictures := 0
			for i, au := range aus {
				if err := c.checkAU(au); err != nil {
					t.Fatalf("AU %d of %d (types %v): %v", i, len(aus), naluTypes(au), err)
				}
				if !strings.Contains(string(naluTypes(au)), "\x01") && !strings.Contains(string(naluTypes(au)), "\x05") {
					continue
				}
				pictures++
			}
			if pictures < len(aus)-1 {
				t.Fatalf("%d pictures in %d access units", pictures, len(aus))
			}
		})
	}
}

// Random bytes as slices, right after a real IDR: the measured share the
// check lets through (the decoder's problem then) stays small, and a
// random "IDR", which would restart video, almost never passes.
func TestH264CheckRejectsRandomNALUs(t *testing.T) {
	aus := makeClip(t, "320x240", 1, 30)
	var c h264Check
	if err := c.checkAU(aus[0]); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const trials = 200000
	var passed [2]int // non-IDR, IDR
	for i := 0; i < trials; i++ {
		n := make([]byte, 8+rng.IntN(200))
		for k := range n {
			n[k] = byte(rng.Uint32())
		}
		kind := i % 2
		n[0] = n[0]&0x60 | naluNonIDR // nal_ref_idc random, forbidden bit clear
		if kind == 1 {
			n[0] = n[0]&0x60 | naluIDR
		}
		c.prevRefFrameNum, c.haveRef = 3, true
		var pic picture
		if c.nalu(n, &pic) == nil && c.picture(&pic) == nil {
			passed[kind]++
		}
	}
	nonIDR := float64(passed[0]) / (trials / 2)
	idrRate := float64(passed[1]) / (trials / 2)
	t.Logf("random slices accepted: non-IDR %.3f%% (%d), IDR %.4f%% (%d) of %d each",
		100*nonIDR, passed[0], 100*idrRate, passed[1], trials/2)
	if nonIDR > 0.015 || idrRate > 0.002 {
		t.Fatalf("the check lets random slices through: non-IDR %.3f%%, IDR %.4f%%", 100*nonIDR, 100*idrRate)
	}
}

// A stream with broken access units: each is dropped and counted with its
// reason, nothing is forwarded until the next IDR, and every access unit
// forwarded is one of the clip's, unchanged.
func TestWriteH264DropsUndecodableAUs(t *testing.T) {
	aus := makeClip(t, "320x240", 2, 15) // IDR every 15 AUs
	st := newVideoStream(t, StreamConfig{}, false)
	sub, err := st.Subscribe("v", SubscribeOptions{VideoOnly: true, QueuePackets: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	broken := map[int]struct {
		au     func([][]byte) [][]byte
		reason string
	}{
		3: {func(au [][]byte) [][]byte { return withSlice(au, func(n []byte) []byte { n[0] |= 0x80; return n }) }, "forbidden_zero_bit"},
		18: {func(au [][]byte) [][]byte {
			return withSlice(au, func(n []byte) []byte { return append([]byte{n[0], 0xcd, 0x5a}, n[3:]...) }) // PPS 5
		}, "unknown PPS 5"},
		33: {func(au [][]byte) [][]byte { return withSlice(au, func(n []byte) []byte { return n[:2] }) }, "slice header"},
		48: {func([][]byte) [][]byte { return nil }, ""}, // a lost reference picture: AU 49 is the broken one
		49: {nil, "reference picture was lost"},
	}
	want := map[int]bool{} // AUs that must come out
	skip := false
	for i, au := range aus {
		if hasIDRNALU(au) {
			skip = false
		}
		b, isBroken := broken[i]
		if isBroken {
			skip = true
			if b.au != nil {
				au = b.au(au)
			}
		}
		if !skip {
			want[i] = true
		}
		if au == nil {
			continue
		}
		st.WriteH264(time.Duration(i)*frame30, au)
		s := st.Stats()
		if isBroken && b.reason != "" && !strings.Contains(s.LastInvalidVideo, b.reason) {
			t.Fatalf("AU %d: last invalid %q, want %q", i, s.LastInvalidVideo, b.reason)
		}
	}
	if n := st.Stats().InvalidVideo; n != 4 {
		t.Fatalf("InvalidVideo %d, want 4", n)
	}
	got := depacketize(t, drain(t, sub), st.Config().MaxPayload)
	var wantAUs [][][]byte
	for i, au := range aus {
		if want[i] {
			wantAUs = append(wantAUs, stripParams(expectedAU(au, testSPS, testPPS)))
		}
	}
	if len(got) != len(wantAUs) {
		t.Fatalf("%d access units forwarded, want %d", len(got), len(wantAUs))
	}
	for i := range got {
		if !equalAU(stripParams(got[i].nalus), wantAUs[i]) {
			t.Fatalf("forwarded AU %d (types %v) is not the clip's (types %v)", i, naluTypes(got[i].nalus), naluTypes(wantAUs[i]))
		}
	}
}

// withSlice returns a copy of au whose first slice is replaced by
// f(a copy of it).
func withSlice(au [][]byte, f func([]byte) []byte) [][]byte {
	out := append([][]byte(nil), au...)
	for i, n := range out {
		if t := n[0] & 0x1f; t == naluNonIDR || t == naluIDR {
			out[i] = f(append([]byte(nil), n...))
			break
		}
	}
	return out
}

// stripParams drops the SPS and PPS the hub puts in front of IDRs.
func stripParams(au [][]byte) [][]byte {
	var out [][]byte
	for _, n := range au {
		if t := n[0] & 0x1f; t != naluSPS && t != naluPPS {
			out = append(out, n)
		}
	}
	return out
}

// FuzzH264Check: any NAL units, in any order, never panic the check, and
// what it accepts as a slice parses again the same way.
func FuzzH264Check(f *testing.F) {
	f.Add(testSPS, testPPS, idr(40), slice(20))
	f.Add(testSPS, []byte{0x68, 0xff, 0xff}, []byte{0x65, 0x88, 0x84}, []byte{0x41})
	f.Fuzz(func(t *testing.T, sps, pps, a, b []byte) {
		var c h264Check
		for _, au := range [][][]byte{{sps, pps}, {a}, {b}, {a, b}} {
			_ = c.checkAU(au)
		}
		for _, n := range [][]byte{a, b} {
			if len(n) == 0 || (n[0]&0x1f != naluNonIDR && n[0]&0x1f != naluIDR) {
				continue
			}
			s1, err1 := c.slice(n)
			s2, err2 := c.slice(n)
			if (err1 == nil) != (err2 == nil) || s1 != s2 {
				t.Fatalf("slice parsed twice differently: %+v %v / %+v %v", s1, err1, s2, err2)
			}
		}
	})
}
