package media

import (
	"bytes"
	"fmt"
	"testing"
	"time"
)

// A real x264 clip goes through the hub; the RTP output, reassembled with
// gortsplib's RFC 6184 decoder, must be the clip's pictures with SPS+PPS in
// front of every IDR (x264 sends them in-band only once), no AUD, payloads
// within the bound, markers on AU ends, continuous sequence numbers and
// 90 kHz timestamps following the pts.
func TestWriteH264Clip(t *testing.T) {
	checkLeaks(t)
	aus := makeClip(t, "640x360", 3, 30)
	for _, maxPayload := range []int{1200, 500, 100} {
		t.Run(fmt.Sprint(maxPayload), func(t *testing.T) {
			st := newVideoStream(t, StreamConfig{MaxPayload: maxPayload}, false)
			sub, err := st.Subscribe("v", SubscribeOptions{QueuePackets: 1 << 18, VideoOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, au := range aus {
				st.WriteH264(time.Duration(i)*frame30, au)
			}
			pkts := drain(t, sub)
			got := depacketize(t, pkts, maxPayload)
			if len(got) != len(aus) {
				t.Fatalf("%d AUs out, %d in", len(got), len(aus))
			}
			var sps, pps []byte
			idrs, fua := 0, 0
			for _, p := range pkts {
				if p.RTP.Payload[0]&0x1f == naluFUA {
					fua++
				}
			}
			for i, au := range aus {
				for _, n := range au {
					switch n[0] & 0x1f {
					case naluSPS:
						sps = n
					case naluPPS:
						pps = n
					}
				}
				want := expectedAU(au, sps, pps)
				if !equalAU(got[i].nalus, want) {
					t.Fatalf("AU %d: got types %v, want %v", i, naluTypes(got[i].nalus), naluTypes(want))
				}
				if hasIDRNALU(au) {
					idrs++
					if ty := naluTypes(got[i].nalus); ty[0] != naluSPS || ty[1] != naluPPS {
						t.Fatalf("AU %d: IDR not preceded by SPS, PPS: %v", i, ty)
					}
				}
				if got[i].keyframe != hasIDRNALU(au) {
					t.Fatalf("AU %d: Keyframe %v, IDR %v", i, got[i].keyframe, hasIDRNALU(au))
				}
				if d := got[i].ts - got[0].ts; d != uint32(i*3000) {
					t.Fatalf("AU %d: timestamp +%d, want +%d", i, d, i*3000)
				}
			}
			if idrs != 3 {
				t.Fatalf("%d IDRs, want 3", idrs)
			}
			if fua == 0 {
				t.Fatal("no FU-A packet: the clip did not exercise fragmentation")
			}
			t.Logf("max %d: %d AUs -> %d packets (%d FU-A)", maxPayload, len(aus), len(pkts), fua)
		})
	}
}

// Unit cases with hand-built NALUs: what is skipped, stripped, inserted,
// and how NALUs map to single/STAP-A/FU-A packets at the payload bound.
func TestWriteH264Cases(t *testing.T) {
	const max = 1200
	big := idr(3000)
	exact := slice(max)
	over := slice(max + 1)
	tests := []struct {
		name   string
		params bool // SPS/PPS declared in SetTracks
		writes [][][]byte
		want   [][][]byte
		// payload NAL types of the packets, when checked
		wantPkts []byte
	}{
		{
			name:   "skip until first IDR",
			params: true,
			writes: [][][]byte{{slice(50)}, {slice(60)}, {idr(100)}, {slice(70)}},
			want:   [][][]byte{{testSPS, testPPS, idr(100)}, {slice(70)}},
		},
		{
			name:   "IDR dropped until SPS/PPS known, then learned in-band",
			writes: [][][]byte{{idr(100)}, {slice(40)}, {testSPS, testPPS, idr(90)}, {slice(30)}, {idr(80)}},
			want:   [][][]byte{{testSPS, testPPS, idr(90)}, {slice(30)}, {testSPS, testPPS, idr(80)}},
		},
		{
			name:   "AUD and filler dropped, SEI kept, SPS in P frame stripped",
			params: true,
			writes: [][][]byte{{testAUD, testSEI, idr(100), testFiller}, {testAUD, testSPS, slice(20)}},
			want:   [][][]byte{{testSPS, testPPS, testSEI, idr(100)}, {slice(20)}},
		},
		{
			name:   "parameter sets only: learned, nothing sent",
			writes: [][][]byte{{testSPS, testPPS}, {idr(10)}},
			want:   [][][]byte{{testSPS, testPPS, idr(10)}},
		},
		{
			name:     "small NALUs aggregated into one STAP-A",
			params:   true,
			writes:   [][][]byte{{idr(300)}},
			want:     [][][]byte{{testSPS, testPPS, idr(300)}},
			wantPkts: []byte{naluSTAPA},
		},
		{
			name:     "large IDR: STAP-A of SPS+PPS, then FU-A",
			params:   true,
			writes:   [][][]byte{{big}},
			want:     [][][]byte{{testSPS, testPPS, big}},
			wantPkts: []byte{naluSTAPA, naluFUA, naluFUA, naluFUA},
		},
		{
			name:     "NALU of exactly MaxPayload is a single packet, one more byte is FU-A",
			params:   true,
			writes:   [][][]byte{{idr(10)}, {exact}, {over}},
			want:     [][][]byte{{testSPS, testPPS, idr(10)}, {exact}, {over}},
			wantPkts: []byte{naluSTAPA, 1, naluFUA, naluFUA},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newVideoStream(t, StreamConfig{MaxPayload: max}, tc.params)
			sub, err := st.Subscribe("v", SubscribeOptions{VideoOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			for i, au := range tc.writes {
				st.WriteH264(time.Duration(i)*frame30, au)
			}
			pkts := drain(t, sub)
			got := depacketize(t, pkts, max)
			if len(got) != len(tc.want) {
				t.Fatalf("%d AUs, want %d", len(got), len(tc.want))
			}
			for i := range got {
				if !equalAU(got[i].nalus, tc.want[i]) {
					t.Errorf("AU %d: types %v, want %v", i, naluTypes(got[i].nalus), naluTypes(tc.want[i]))
				}
				if got[i].keyframe != hasIDRNALU(tc.want[i]) {
					t.Errorf("AU %d: Keyframe %v", i, got[i].keyframe)
				}
			}
			if tc.wantPkts != nil {
				var types []byte
				for _, p := range pkts {
					types = append(types, p.RTP.Payload[0]&0x1f)
				}
				if !bytes.Equal(types, tc.wantPkts) {
					t.Errorf("packet types %v, want %v", types, tc.wantPkts)
				}
			}
		})
	}
}

// The caller may reuse its NALU buffers after WriteH264 returns.
func TestWriteH264CopiesInput(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	sub, _ := st.Subscribe("v", SubscribeOptions{})
	n := idr(5000)
	orig := append([]byte(nil), n...)
	st.WriteH264(0, [][]byte{n})
	for i := range n {
		n[i] = 0
	}
	got := depacketize(t, drain(t, sub), 1200)
	if len(got) != 1 || !bytes.Equal(got[0].nalus[2], orig) {
		t.Fatal("published packets alias the caller's buffer")
	}
}
