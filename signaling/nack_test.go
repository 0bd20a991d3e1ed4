package signaling

import (
	"encoding/binary"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
)

func marshalRTCP(t *testing.T, pkts ...rtcp.Packet) []byte {
	t.Helper()
	b, err := rtcp.Marshal(pkts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestForEachNACK(t *testing.T) {
	const ssrc = 0xdecafbad
	nackFor := func(media uint32, pairs ...rtcp.NackPair) *rtcp.TransportLayerNack {
		return &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: media, Nacks: pairs}
	}
	rr := &rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: ssrc}}}
	tests := []struct {
		name string
		pkt  []byte
		want []uint16
	}{
		{"single", marshalRTCP(t, nackFor(ssrc, rtcp.NackPair{PacketID: 100})), []uint16{100}},
		{"bitmask", marshalRTCP(t, nackFor(ssrc, rtcp.NackPair{PacketID: 10, LostPackets: 0b1000_0000_0000_0101})),
			[]uint16{10, 11, 13, 26}},
		{"wraps", marshalRTCP(t, nackFor(ssrc, rtcp.NackPair{PacketID: 65535, LostPackets: 1})), []uint16{65535, 0}},
		{"two pairs", marshalRTCP(t, nackFor(ssrc, rtcp.NackPair{PacketID: 5}, rtcp.NackPair{PacketID: 500})), []uint16{5, 500}},
		{"compound after RR and PLI", marshalRTCP(t, rr, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: ssrc},
			nackFor(ssrc, rtcp.NackPair{PacketID: 7})), []uint16{7}},
		{"other SSRC", marshalRTCP(t, nackFor(ssrc+1, rtcp.NackPair{PacketID: 7})), nil},
		{"PLI only", marshalRTCP(t, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: ssrc}), nil},
		{"receiver report only", marshalRTCP(t, rr), nil},
		{"empty", nil, nil},
		{"truncated", marshalRTCP(t, nackFor(ssrc, rtcp.NackPair{PacketID: 7}))[:10], nil},
		{"not RTCP version 2", []byte{0x01, 205, 0, 3, 0, 0, 0, 1, 0xde, 0xca, 0xfb, 0xad, 0, 7, 0, 0}, nil},
		// A hand-made NACK with padding: 1 FCI then 4 padding bytes.
		{"padded", []byte{0xa1, 205, 0, 4, 0, 0, 0, 1, 0xde, 0xca, 0xfb, 0xad, 0, 9, 0, 0, 0, 0, 0, 4}, []uint16{9}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []uint16
			forEachNACK(tc.pkt, ssrc, func(seq uint16) { got = append(got, seq) })
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSeqMap(t *testing.T) {
	m := &seqMap{}
	if _, ok := m.lookup(0); ok {
		t.Fatal("empty map found a seq")
	}
	// Viewer seqs are continuous (and wrap); hub seqs skip twice (hub
	// drops for this viewer) and wrap too.
	type pair struct{ v, h uint16 }
	var sent []pair
	v := uint16(65530)
	for _, run := range []struct{ from, n uint16 }{{100, 5}, {200, 3}, {65534, 4}} {
		for i := uint16(0); i < run.n; i++ {
			m.record(v, run.from+i)
			sent = append(sent, pair{v, run.from + i})
			v++
		}
	}
	for _, p := range sent {
		if h, ok := m.lookup(p.v); !ok || h != p.h {
			t.Fatalf("lookup(%d) = %d, %v; want %d", p.v, h, ok, p.h)
		}
	}
	if m.n != 3 {
		t.Fatalf("%d anchors for 3 runs", m.n)
	}
	if _, ok := m.lookup(65529); ok {
		t.Fatal("seq before the first one sent was found")
	}
	// Past the last sent: the newest run continues (the hub decides).
	if h, ok := m.lookup(v); !ok || h != 2 {
		t.Fatalf("lookup(next) = %d, %v; want 2", h, ok)
	}

	// More runs than anchors: the oldest are forgotten, the rest still map.
	m = &seqMap{}
	for i := 0; i < seqAnchors+10; i++ {
		m.record(uint16(i), uint16(i*10))
	}
	for i := 0; i < seqAnchors+10; i++ {
		h, ok := m.lookup(uint16(i))
		if i < 10 && ok {
			t.Fatalf("forgotten run %d still maps (to %d)", i, h)
		}
		if i >= 10 && (!ok || h != uint16(i*10)) {
			t.Fatalf("lookup(%d) = %d, %v", i, h, ok)
		}
	}
}

// fakeWriter records what a track writes, the way the interceptor chain
// sees it (including the TWCC interceptor's SetExtension on the header).
type fakeWriter struct {
	mu      sync.Mutex
	headers []rtp.Header
	payload [][]byte
	keep    bool
	ext     []byte
}

func (w *fakeWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	if err := h.SetExtension(3, w.ext); err != nil {
		return 0, err
	}
	if w.keep {
		w.mu.Lock()
		c := *h
		c.Extensions = nil
		w.headers = append(w.headers, c)
		w.payload = append(w.payload, payload)
		w.mu.Unlock()
	}
	return len(payload), nil
}

func (w *fakeWriter) Write(b []byte) (int, error) { return len(b), nil }

func hubPacket(seq uint16, ts uint32, payload byte) *media.Packet {
	p := &media.Packet{Kind: media.KindVideo}
	p.RTP.Header = rtp.Header{Version: 2, PayloadType: media.PayloadTypeH264, SequenceNumber: seq, Timestamp: ts, SSRC: 42,
		Extension: true, ExtensionProfile: rtp.ExtensionProfileOneByte}
	p.RTP.Payload = []byte{payload, payload}
	return p
}

// A NACK for a viewer sequence number is answered with the hub packet sent
// under it (even across hub gaps), with the viewer's SSRC, payload type and
// that sequence number; unknown or expired numbers are counted, not sent.
func TestRetransmitterAnswersFromSharedHistory(t *testing.T) {
	hub := map[uint16]*media.Packet{}
	w := &fakeWriter{keep: true, ext: []byte{0, 1}}
	tr := newViewerTrack(webrtc.RTPCodecTypeVideo, webrtc.MimeTypeH264, 0x42, "s", 65534)
	tr.hist = &seqMap{}
	b := &trackBinding{id: "x", ssrc: 0xdecafbad, pt: 102, write: w}
	tr.binding = b
	// Hub seqs 500.. with a gap (the hub dropped 503-509 for this viewer).
	for _, hs := range []uint16{500, 501, 502, 510, 511, 512} {
		p := hubPacket(hs, uint32(hs)*100, byte(hs))
		hub[hs] = p
		if err := tr.write(b, p); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.headers[3].SequenceNumber; got != 1 {
		t.Fatalf("viewer seq after the wrap %d, want 1 (continuous)", got)
	}
	delete(hub, 500) // expired from the shared history
	w.headers, w.payload = nil, nil
	rt := &retransmitter{t: tr, recent: func(s uint16) *media.Packet { return hub[s] }}
	// Viewer seqs 65534 (hub 500, expired), 0 (502), 1 (510), 3 (512), 9 (never sent).
	rt.handleRTCP(marshalRTCP(t, &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: b.ssrc, Nacks: []rtcp.NackPair{
		{PacketID: 65534, LostPackets: 0b10}, {PacketID: 1, LostPackets: 0b10}, {PacketID: 9}}}))
	wantSeq := []uint16{0, 1, 3}
	wantHub := []uint16{502, 510, 512}
	if len(w.headers) != len(wantSeq) {
		t.Fatalf("%d packets sent again, want %d", len(w.headers), len(wantSeq))
	}
	for i, h := range w.headers {
		if h.SequenceNumber != wantSeq[i] || h.SSRC != b.ssrc || h.PayloadType != b.pt ||
			h.Timestamp != uint32(wantHub[i])*100 || w.payload[i][0] != byte(wantHub[i]) {
			t.Fatalf("retransmission %d: seq %d ssrc %x pt %d ts %d payload %d; want seq %d from hub packet %d",
				i, h.SequenceNumber, h.SSRC, h.PayloadType, h.Timestamp, w.payload[i][0], wantSeq[i], wantHub[i])
		}
	}
	if rt.sent != 3 || rt.missed != 2 {
		t.Fatalf("sent %d missed %d, want 3 and 2", rt.sent, rt.missed)
	}
	// The hub's packets were not touched.
	if p := hub[510]; p.RTP.SequenceNumber != 510 || p.RTP.SSRC != 42 || !p.RTP.Extension {
		t.Fatal("hub packet modified")
	}
}

// The per-viewer write path allocates nothing (the header is reused, the
// TWCC extension slot too).
func TestViewerWriteDoesNotAllocate(t *testing.T) {
	w := &fakeWriter{ext: []byte{0, 1}}
	tr := newViewerTrack(webrtc.RTPCodecTypeVideo, webrtc.MimeTypeH264, 0x42, "s", 0)
	tr.hist = &seqMap{}
	b := &trackBinding{id: "x", ssrc: 1, pt: 102, write: w}
	p := hubPacket(1, 1, 1)
	if n := testing.AllocsPerRun(1000, func() { _ = tr.write(b, p) }); n != 0 {
		t.Fatalf("%v allocations per write, want 0", n)
	}
	nackPkt := marshalRTCP(t, &rtcp.TransportLayerNack{MediaSSRC: 1, Nacks: []rtcp.NackPair{{PacketID: 0, LostPackets: 0xffff}}})
	tr.binding = b
	rt := &retransmitter{t: tr, recent: func(uint16) *media.Packet { return p }}
	if n := testing.AllocsPerRun(100, func() { rt.handleRTCP(nackPkt) }); n != 0 {
		t.Fatalf("%v allocations per NACK, want 0", n)
	}
}

// Keyframe requests for this track (PLI, RFC 4585 §6.3.1; FIR, RFC 5104
// §4.3.1, whose FCI names the SSRC) are passed to the stream; ones for
// another SSRC, malformed ones and other feedback are not.
func TestKeyframeRequested(t *testing.T) {
	const ssrc = 0xdecafbad
	pli := func(media uint32) *rtcp.PictureLossIndication {
		return &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: media}
	}
	fir := func(targets ...uint32) *rtcp.FullIntraRequest {
		f := &rtcp.FullIntraRequest{SenderSSRC: 1}
		for i, s := range targets {
			f.FIR = append(f.FIR, rtcp.FIREntry{SSRC: s, SequenceNumber: uint8(i)})
		}
		return f
	}
	rr := &rtcp.ReceiverReport{SSRC: 1, Reports: []rtcp.ReceptionReport{{SSRC: ssrc}}}
	nackPkt := &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: ssrc, Nacks: []rtcp.NackPair{{PacketID: 7}}}
	tests := []struct {
		name string
		pkt  []byte
		want bool
	}{
		{"PLI", marshalRTCP(t, pli(ssrc)), true},
		{"PLI other SSRC", marshalRTCP(t, pli(ssrc+1)), false},
		{"compound RR NACK PLI", marshalRTCP(t, rr, nackPkt, pli(ssrc)), true},
		{"FIR", marshalRTCP(t, fir(ssrc)), true},
		{"FIR second entry", marshalRTCP(t, fir(5, ssrc)), true},
		{"FIR other SSRC", marshalRTCP(t, fir(5)), false},
		{"NACK only", marshalRTCP(t, rr, nackPkt), false},
		{"REMB", marshalRTCP(t, &rtcp.ReceiverEstimatedMaximumBitrate{SenderSSRC: 1, Bitrate: 1e6, SSRCs: []uint32{ssrc}}), false},
		{"empty", nil, false},
		{"truncated PLI", marshalRTCP(t, pli(ssrc))[:8], false},
		{"PLI after a malformed packet", append([]byte{0x01, 205, 0, 0}, marshalRTCP(t, pli(ssrc))...), false},
		// A hand-made PLI with 4 bytes of padding.
		{"padded PLI", []byte{0xa1, 206, 0, 3, 0, 0, 0, 1, 0xde, 0xca, 0xfb, 0xad, 0, 0, 0, 4}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := keyframeRequested(tc.pkt, ssrc); got != tc.want {
				t.Fatalf("keyframeRequested = %v, want %v", got, tc.want)
			}
		})
	}

	// Through the retransmitter: NACKs answered and the PLI forwarded from
	// one compound packet, without allocating.
	w := &fakeWriter{ext: []byte{0, 1}}
	tr := newViewerTrack(webrtc.RTPCodecTypeVideo, webrtc.MimeTypeH264, 0x42, "s", 7)
	tr.hist = &seqMap{}
	b := &trackBinding{id: "x", ssrc: ssrc, pt: 102, write: w}
	tr.binding = b
	p := hubPacket(1, 1, 1)
	if err := tr.write(b, p); err != nil {
		t.Fatal(err)
	}
	calls := 0
	rt := &retransmitter{t: tr, recent: func(uint16) *media.Packet { return p }, pli: func() { calls++ }}
	both := marshalRTCP(t, rr, nackPkt, pli(ssrc))
	rt.handleRTCP(both)
	if calls != 1 || rt.sent != 1 {
		t.Fatalf("pli calls %d, retransmissions %d; want 1 and 1", calls, rt.sent)
	}
	rt.handleRTCP(marshalRTCP(t, fir(ssrc)))
	rt.handleRTCP(marshalRTCP(t, nackPkt))
	if calls != 2 {
		t.Fatalf("pli calls %d, want 2 (FIR yes, NACK no)", calls)
	}
	if n := testing.AllocsPerRun(100, func() { rt.handleRTCP(both) }); n != 0 {
		t.Fatalf("%v allocations per PLI, want 0", n)
	}
	rt.pli = nil
	rt.handleRTCP(both) // ignored, must not panic
}

// A real pion viewer's PLI and FIR reach the stream's keyframe requester
// (the publisher's PLI to its peer), rate limited by the stream.
func TestViewerPLIRequestsKeyframe(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{}, nil)
	v := startViewer(t, h)
	v.waitFrames(t, 5, 15*time.Second)
	requests := make(chan struct{}, 16)
	h.st.SetKeyframeRequester(func() { requests <- struct{}{} })
	defer h.st.SetKeyframeRequester(nil)
	var ssrc uint32
	for _, r := range v.pc.GetReceivers() {
		if tr := r.Track(); tr != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(tr.SSRC())
		}
	}
	if ssrc == 0 {
		t.Fatal("viewer has no video track")
	}
	for _, pkt := range []rtcp.Packet{
		&rtcp.PictureLossIndication{MediaSSRC: ssrc},
		&rtcp.FullIntraRequest{FIR: []rtcp.FIREntry{{SSRC: ssrc, SequenceNumber: 1}}},
	} {
		if err := v.pc.WriteRTCP([]rtcp.Packet{pkt}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-requests:
		case <-time.After(5 * time.Second):
			t.Fatalf("%T from the viewer did not reach the stream", pkt)
		}
		time.Sleep(600 * time.Millisecond) // past the stream's rate limit
	}
}

// dropper is a receive-side interceptor that loses video packets on
// purpose (every every-th sequence number after a start, up to max), and
// notes which of them arrive later (retransmitted).
type dropper struct {
	interceptor.NoOp
	every, max int

	mu        sync.Mutex
	seen      int
	lost      map[uint16]bool // seq -> arrived again
	recovered int
	neighbors map[uint16]uint32 // RTP timestamps of every packet seen
	badTS     []uint16
}

func (d *dropper) NewInterceptor(string) (interceptor.Interceptor, error) { return d, nil }

func (d *dropper) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	if !strings.EqualFold(info.MimeType, webrtc.MimeTypeH264) {
		return r
	}
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		for {
			n, attr, err := r.Read(b, a)
			if err != nil || n < 12 {
				return n, attr, err
			}
			if !d.pass(binary.BigEndian.Uint16(b[2:4]), binary.BigEndian.Uint32(b[4:8])) {
				continue
			}
			return n, attr, nil
		}
	})
}

func (d *dropper) pass(seq uint16, ts uint32) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seen++
	if again, ok := d.lost[seq]; ok {
		if !again {
			d.lost[seq] = true
			d.recovered++
			// A packet's timestamp lies between its neighbours' (all one
			// stream, in order): a wrong hub packet would not.
			prev, okp := d.neighbors[seq-1]
			next, okn := d.neighbors[seq+1]
			if okp && okn && (int32(ts-prev) < 0 || int32(next-ts) < 0) {
				d.badTS = append(d.badTS, seq)
			}
		}
		return true
	}
	d.neighbors[seq] = ts
	if d.seen > 20 && len(d.lost) < d.max && int(seq)%d.every == 0 {
		d.lost[seq] = false
		delete(d.neighbors, seq)
		return false
	}
	return true
}

func (d *dropper) counts() (lost, recovered int, bad []uint16) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.lost), d.recovered, slices.Clone(d.badTS)
}

// A real pion viewer that loses packets from its start on (every 7th, 25 in
// all) and NACKs them (pion's generator) gets each one again, with the
// right content (timestamp in order with its neighbours).
func TestNACKedPacketsAreRetransmitted(t *testing.T) {
	c := getClip(t)
	base := runtime.NumGoroutine()
	h := newHarness(t, c, Config{}, nil)
	first := startViewer(t, h) // lets the GOP cache fill
	first.waitFrames(t, 20, 15*time.Second)

	d := &dropper{every: 7, max: 25, lost: map[uint16]bool{}, neighbors: map[uint16]uint32{}}
	me := &webrtc.MediaEngine{}
	if err := me.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	reg.Add(d) // first: the NACK generator below sees the losses
	gen, err := nack.NewGeneratorInterceptor(nack.GeneratorInterval(50 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	reg.Add(gen)
	se := loopbackSettings()
	// The dropper sits after SRTP, which has seen the dropped packets: its
	// replay protection would discard their retransmissions (a packet
	// really lost on the way never reaches it).
	se.DisableSRTPReplayProtection(true)
	api := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() { _ = pc.GracefulClose(); wg.Wait() }()
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for {
				if _, _, err := tr.Read(buf); err != nil {
					return
				}
			}
		}()
	})
	h.postWHEP(t, pc)
	deadline := time.Now().Add(30 * time.Second)
	for {
		lost, rec, _ := d.counts()
		if lost == d.max && rec == lost {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 30 s: %d packets lost on purpose, %d of them retransmitted", lost, rec)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, _, bad := d.counts(); len(bad) > 0 {
		t.Fatalf("retransmitted packets %v carry timestamps out of order with their neighbours", bad)
	}

	_ = pc.GracefulClose()
	wg.Wait()
	h.close()
	first.close()
	checkGoroutines(t, base)
}
