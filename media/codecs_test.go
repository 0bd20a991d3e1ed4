package media

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pion/rtp/codecs"
)

// An H.265 access unit is packetized per RFC 7798: parameter sets in front
// of the IRAP, large NALUs in fragmentation units of equal size within
// MaxPayload, and pion's depacketizer gets the NALUs back exactly.
func TestWriteH265Packetization(t *testing.T) {
	st := NewStream(StreamConfig{MaxPayload: 1200}, nil)
	defer st.Close()
	st.SetTracks(Tracks{Video: &VideoParams{Codec: CodecH265}})
	sub, err := st.Subscribe("t", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	vps := []byte{0x40, 0x01, 0x0c, 0x01}
	sps := []byte{0x42, 0x01, 0x01, 0x01}
	pps := []byte{0x44, 0x01, 0xc1}
	idr := h265NALU(19, 5000)
	trail := h265NALU(1, 800)
	st.WriteH265(0, [][]byte{h265NALU(1, 300)}) // before any IRAP: dropped
	st.WriteH265(frame30, [][]byte{{0x46, 0x01, 0x50}, vps, sps, pps, idr})
	st.WriteH265(2*frame30, [][]byte{trail})
	units := drainUnits(t, sub)
	if len(units) != 2 {
		t.Fatalf("got %d units, want 2 (the picture before the IRAP dropped)", len(units))
	}
	if !units[0].Keyframe || units[0].Codec != CodecH265 || units[1].Keyframe {
		t.Fatalf("keyframe flags %v %v codec %s", units[0].Keyframe, units[1].Keyframe, units[0].Codec)
	}
	want := [][][]byte{{vps, sps, pps, idr}, {trail}}
	for i, u := range units {
		if len(u.Payload) != len(want[i]) {
			t.Fatalf("unit %d payload has %d NALUs, want %d", i, len(u.Payload), len(want[i]))
		}
		var got [][]byte
		var dep codecs.H265Packet
		sizes := map[int]int{}
		for k, p := range u.Packets {
			if len(p.RTP.Payload) > 1200 {
				t.Fatalf("payload of %d bytes", len(p.RTP.Payload))
			}
			if p.RTP.Marker != (k == len(u.Packets)-1) {
				t.Fatalf("marker on packet %d of %d", k, len(u.Packets))
			}
			if p.Keyframe != (i == 0 && k == 0) {
				t.Fatalf("packet keyframe flag wrong at %d/%d", i, k)
			}
			out, err := dep.Unmarshal(p.RTP.Payload)
			if err != nil {
				t.Fatalf("depacketize: %v", err)
			}
			if len(p.RTP.Payload) > 500 {
				sizes[len(p.RTP.Payload)]++
			}
			if len(out) > 0 {
				got = append(got, bytes.Clone(out))
			}
		}
		if i == 0 && len(sizes) > 2 {
			t.Fatalf("fragment sizes not equal: %v", sizes)
		}
		if len(got) != len(want[i]) {
			t.Fatalf("unit %d: %d NALUs depacketized, want %d", i, len(got), len(want[i]))
		}
		for k := range got {
			// pion's depacketizer returns Annex-B NALUs.
			g := bytes.TrimPrefix(got[k], []byte{0, 0, 0, 1})
			if !bytes.Equal(g, want[i][k]) {
				t.Fatalf("unit %d NALU %d differs (%d vs %d bytes)", i, k, len(g), len(want[i][k]))
			}
		}
	}
	if v := st.Tracks().Video; v.VideoCodec() != CodecH265 || !bytes.Equal(v.VPS, vps) {
		t.Fatalf("tracks %+v", v)
	}
}

func h265NALU(typ byte, size int) []byte {
	b := make([]byte, size)
	b[0], b[1] = typ<<1, 0x01
	for i := 2; i < size; i++ {
		b[i] = byte(i*13 + size)
	}
	return b
}

// VP8 frames become RFC 7741 packets (S bit on the first, equal parts, the
// marker on the last); a key frame's size is the stream's VideoInfo.
func TestWriteVP8(t *testing.T) {
	st := NewStream(StreamConfig{MaxPayload: 1000}, nil)
	defer st.Close()
	st.SetTracks(Tracks{Video: &VideoParams{Codec: CodecVP8}})
	sub, err := st.Subscribe("t", SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 2500)
	key[0] = 0x00 // P bit clear: key frame
	copy(key[3:], []byte{0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00})
	for i := 10; i < len(key); i++ {
		key[i] = byte(i)
	}
	inter := []byte{0x01, 0x02, 0x03, 0x04, 0x05}
	st.WriteVP8(0, inter) // before a key frame: dropped
	st.WriteVP8(frame30, key)
	st.WriteVP8(2*frame30, inter)
	units := drainUnits(t, sub)
	if len(units) != 2 || !units[0].Keyframe || units[1].Keyframe {
		t.Fatalf("units %d", len(units))
	}
	for i, want := range [][]byte{key, inter} {
		var frame []byte
		for k, p := range units[i].Packets {
			var vp codecs.VP8Packet
			b, err := vp.Unmarshal(p.RTP.Payload)
			if err != nil {
				t.Fatal(err)
			}
			if (vp.S == 1) != (k == 0) || p.RTP.Marker != (k == len(units[i].Packets)-1) || len(p.RTP.Payload) > 1000 {
				t.Fatalf("unit %d packet %d: S=%d marker=%v size %d", i, k, vp.S, p.RTP.Marker, len(p.RTP.Payload))
			}
			frame = append(frame, b...)
		}
		if !bytes.Equal(frame, want) {
			t.Fatalf("unit %d: frame differs", i)
		}
	}
	if in := st.VideoInfo(); in.Codec != CodecVP8 || in.Width != 320 || in.Height != 240 {
		t.Fatalf("info %+v", in)
	}
}

// The stream reports the H.264 profile and size from the SPS and notices
// B-frames from presentation times going backwards in decoding order.
func TestVideoInfoH264(t *testing.T) {
	clip := makeClip(t, "320x240", 1, 30)
	st := newVideoStream(t, StreamConfig{}, false)
	st.WriteH264(0, clip[0])
	st.WriteH264(3*frame30, [][]byte{slice(100)})
	in := st.VideoInfo()
	if in.Codec != CodecH264 || !strings.Contains(in.Profile, "baseline") || in.BFrames || in.Width != 320 || in.Height != 240 {
		t.Fatalf("info %+v", in)
	}
	st.WriteH264(1*frame30, [][]byte{slice(100)}) // a B-frame: shown before the previous one
	if in := st.VideoInfo(); !in.BFrames {
		t.Fatalf("B-frames not noticed: %+v", in)
	}
}
