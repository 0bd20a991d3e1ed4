package signaling

// Fuzz targets for the hand-written parsers on the network edge:
//
//	go test -run '^$' -fuzz FuzzWHEPOffer -fuzztime 20s ./signaling/
//	go test -run '^$' -fuzz FuzzParseSDPFrag -fuzztime 20s ./signaling/
//	go test -run '^$' -fuzz FuzzForEachNACK -fuzztime 20s ./signaling/
//	go test -run '^$' -fuzz FuzzSeqMap -fuzztime 20s ./signaling/
//
// Seed corpora live in testdata/fuzz/<target>; without -fuzz, go test runs
// the seeds as regression tests.

import (
	"encoding/binary"
	"slices"
	"strings"
	"testing"

	"github.com/pion/rtcp"

	"github.com/icey/icey-server/media"
)

// A browser-like recvonly offer (Chromium's shape, trimmed).
const seedOffer = "v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
	"a=group:BUNDLE 0 1\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\n" +
	"m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n" +
	"a=ice-ufrag:abcd\r\na=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa\r\na=ice-options:trickle\r\n" +
	"a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n" +
	"a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\na=rtcp-rsize\r\n" +
	"a=rtpmap:96 VP8/90000\r\na=rtpmap:102 H264/90000\r\n" +
	"a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f\r\n" +
	"a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\n" +
	"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=recvonly\r\n" +
	"a=rtpmap:111 opus/48000/2\r\n"

func FuzzWHEPOffer(f *testing.F) {
	for _, s := range []string{seedOffer, "", "v=0\r\n", "hello world\r\n",
		"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n",
		strings.ReplaceAll(seedOffer, "recvonly", "sendonly"),
		strings.ReplaceAll(seedOffer, "m=video 9", "m=video 0"),
		strings.ReplaceAll(seedOffer, "\r\n", "\n"),
	} {
		f.Add(s)
	}
	both := media.Tracks{Video: &media.VideoParams{}, Audio: &media.AudioParams{Codec: media.CodecOpus}}
	videoOnly := media.Tracks{Video: &media.VideoParams{}}
	f.Fuzz(func(t *testing.T, offer string) {
		d, err := checkOffer(offer)
		if err != nil {
			if d != nil {
				t.Fatal("an error with a parsed description")
			}
			return
		}
		if len(d.MediaDescriptions) == 0 {
			t.Fatal("accepted an offer without media sections")
		}
		r1, r2 := offerReceives(d, both), offerReceives(d, videoOnly)
		if r2 && !r1 {
			t.Fatal("receives video of a video-only stream but nothing of a video+audio one")
		}
		if u := offerUfrag(d); u != "" && !strings.Contains(offer, u) {
			t.Fatalf("ufrag %q not in the offer", u)
		}
	})
}

func FuzzParseSDPFrag(f *testing.F) {
	for _, s := range []string{
		"a=ice-ufrag:abcd\r\na=ice-pwd:pwd\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n" +
			"a=candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host\r\na=end-of-candidates\r\n",
		"a=end-of-candidates\r\n", "", "garbage", "x\r\n", "m=\r\na=mid:\r\na=candidate:\r\n",
		strings.Repeat("a=candidate:1 1 udp 1 127.0.0.1 1 typ host\n", 50),
		"a=mid:0\na=candidate:1 1 udp 1 ::1 9 typ host\n\n\r\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		fr, err := parseSDPFrag(body)
		if err != nil {
			if fr != nil {
				t.Fatal("an error with a fragment")
			}
			return
		}
		if len(fr.candidates) > strings.Count(body, "a=candidate:") {
			t.Fatalf("%d candidates from %d candidate lines", len(fr.candidates), strings.Count(body, "a=candidate:"))
		}
		for _, c := range fr.candidates {
			if !strings.HasPrefix(c.candidate, "candidate:") || !strings.Contains(body, c.candidate) {
				t.Fatalf("candidate %q is not a line of the body", c.candidate)
			}
			if strings.ContainsAny(c.candidate, "\r\n") || strings.ContainsAny(c.mid, "\r\n") {
				t.Fatalf("line break inside %q / mid %q", c.candidate, c.mid)
			}
		}
		if fr.end != strings.Contains(body, "a=end-of-candidates") && fr.end {
			t.Fatal("end-of-candidates without the line")
		}
	})
}

// hasPadding reports whether any packet of a compound RTCP buffer sets the
// padding bit (pion and forEachNACK need not agree on malformed padding).
func hasPadding(b []byte) bool {
	for len(b) >= 4 {
		if b[0]&0x20 != 0 {
			return true
		}
		n := (int(binary.BigEndian.Uint16(b[2:4])) + 1) * 4
		if n > len(b) {
			return false
		}
		b = b[n:]
	}
	return false
}

func FuzzForEachNACK(f *testing.F) {
	const ssrc = 0xdecafbad
	add := func(pkts ...rtcp.Packet) {
		b, err := rtcp.Marshal(pkts)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, uint32(ssrc))
	}
	add(&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: ssrc, Nacks: []rtcp.NackPair{{PacketID: 10, LostPackets: 0x8005}}})
	add(&rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: ssrc}}},
		&rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: ssrc},
		&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: ssrc, Nacks: []rtcp.NackPair{{PacketID: 65535, LostPackets: 1}, {PacketID: 7}}})
	f.Add([]byte{0xa1, 205, 0, 4, 0, 0, 0, 1, 0xde, 0xca, 0xfb, 0xad, 0, 9, 0, 0, 0, 0, 0, 4}, uint32(ssrc))
	f.Add([]byte{}, uint32(0))
	f.Add([]byte{0x81, 205, 0xff, 0xff}, uint32(ssrc))
	f.Fuzz(func(t *testing.T, b []byte, ssrc uint32) {
		var got []uint16
		forEachNACK(b, ssrc, func(seq uint16) { got = append(got, seq) })
		// Each 4-byte FCI reports at most 17 packets.
		if len(got) > len(b)/4*17 {
			t.Fatalf("%d NACKed packets from %d bytes", len(got), len(b))
		}
		// Differential: where pion's RTCP parser accepts the whole compound
		// packet (without padding), both find the same lost packets.
		pkts, err := rtcp.Unmarshal(b)
		if err != nil || hasPadding(b) {
			return
		}
		var want []uint16
		for _, p := range pkts {
			if n, ok := p.(*rtcp.TransportLayerNack); ok && n.MediaSSRC == ssrc {
				for _, pair := range n.Nacks {
					want = append(want, pair.PacketList()...)
				}
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("forEachNACK %v, pion %v", got, want)
		}
	})
}

// FuzzSeqMap drives the viewer's sequence map like the pump does (one
// record per packet, the hub sequence jumping where the hub skipped) and
// checks every lookup against the truth: a hit is always right, and every
// packet of the runs the map remembers is found.
func FuzzSeqMap(f *testing.F) {
	f.Add(uint16(100), uint16(5000), []byte{0, 0, 0, 3, 0, 0, 200, 0})
	f.Add(uint16(65530), uint16(65530), []byte{1, 1, 1, 1, 1, 1, 1, 1, 1, 1})
	f.Add(uint16(0), uint16(0), []byte{})
	f.Fuzz(func(t *testing.T, v0, h0 uint16, jumps []byte) {
		if len(jumps) > 4096 {
			jumps = jumps[:4096]
		}
		var m seqMap
		type sent struct {
			viewer, hub uint16
			run         int
		}
		var truth []sent
		v, h, run := v0, h0, 0
		for i, j := range jumps {
			if i > 0 {
				h++
				if j != 0 {
					h += uint16(j) // the hub skipped j packets for this viewer
					run++
				}
			}
			m.record(v, h)
			truth = append(truth, sent{v, h, run})
			if got, ok := m.lookup(v); !ok || got != h {
				t.Fatalf("lookup of the newest packet %d = %d, %v; want %d", v, got, ok, h)
			}
			v++
		}
		for _, s := range truth {
			got, ok := m.lookup(s.viewer)
			if ok && got != s.hub {
				t.Fatalf("lookup(%d) = %d, want %d", s.viewer, got, s.hub)
			}
			if !ok && run-s.run < seqAnchors {
				t.Fatalf("lookup(%d) missed a packet of a remembered run (%d runs back)", s.viewer, run-s.run)
			}
		}
	})
}
