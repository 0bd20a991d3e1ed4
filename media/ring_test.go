package media

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// ringUnit is a hand-made unit for ring tests: "V" a video unit, "K" a
// keyframe, "A" audio; mem and wire bytes as given.
func ringUnit(kind byte, pts time.Duration, size int) *Unit {
	u := &Unit{PTS: pts, wire: size, mem: size, Kind: KindVideo, Codec: CodecH264}
	switch kind {
	case 'K':
		u.Keyframe = true
	case 'A':
		u.Kind, u.Codec = KindAudio, CodecOpus
	}
	p := &Packet{Kind: u.Kind, Keyframe: u.Keyframe}
	p.RTP.Payload = make([]byte, 1)
	u.Packets = []*Packet{p}
	return u
}

// ringScript pushes "K0 V1 A1 ..." (kind, PTS in units of 100 ms; each
// unit's size 100 bytes unless given as K0:500).
func ringScript(r *Ring, script string) {
	for _, w := range strings.Fields(script) {
		var at, size int
		size = 100
		if i := strings.IndexByte(w, ':'); i >= 0 {
			fmt.Sscan(w[i+1:], &size)
			w = w[:i]
		}
		fmt.Sscan(w[1:], &at)
		r.push(ringUnit(w[0], time.Duration(at)*100*time.Millisecond, size))
	}
}

// describe renders units like the script does (without sizes).
func describe(units []*Unit) string {
	var b strings.Builder
	for i, u := range units {
		if i > 0 {
			b.WriteByte(' ')
		}
		switch {
		case u.Keyframe:
			b.WriteByte('K')
		case u.Kind == KindAudio:
			b.WriteByte('A')
		default:
			b.WriteByte('V')
		}
		fmt.Fprint(&b, int(u.PTS/(100*time.Millisecond)))
	}
	return b.String()
}

// The ring's bounds, keyframe index and GOP cache, step by step: each case
// pushes a script into a fresh ring and checks what it holds, the GOP a new
// subscriber would get and what Units returns.
func TestRingTable(t *testing.T) {
	const ms100 = 100 * time.Millisecond
	tests := []struct {
		name     string
		cfg      StreamConfig // RingDuration, RingMaxBytes, GOPCacheMaxBytes
		script   string
		held     string // all units held
		gop      string // the GOP burst ("" none)
		since    time.Duration
		units    string // Units(since)
		keyframe int    // keyframes held
	}{
		{
			name:   "empty",
			script: "",
		},
		{
			name:   "audio before any keyframe, young",
			cfg:    StreamConfig{RingDuration: 10 * ms100},
			script: "A0 A1 A2",
			held:   "A0 A1 A2", since: ms100, units: "A1 A2",
		},
		{
			name:   "units older than the duration go one by one without a keyframe",
			cfg:    StreamConfig{RingDuration: 10 * ms100},
			script: "A0 A5 V8 A12 A14",
			held:   "A5 V8 A12 A14", since: 0, units: "A5 V8 A12 A14",
		},
		{
			name:   "one GOP",
			cfg:    StreamConfig{RingDuration: 10 * ms100},
			script: "A0 K0 A1 V1 V2",
			held:   "A0 K0 A1 V1 V2", gop: "K0 V1 V2", since: ms100, units: "K0 A1 V1 V2", keyframe: 1,
		},
		{
			name:   "whole GOPs evicted once the next keyframe is old enough",
			cfg:    StreamConfig{RingDuration: 10 * ms100},
			script: "K0 V1 A2 K5 V6 K10 V12 V15",
			// cut = 1.5 s - 1 s = 0.5 s: K5 is the latest keyframe at or
			// before it, so the GOP of K0 goes.
			held: "K5 V6 K10 V12 V15", gop: "K10 V12 V15", since: 7 * ms100, units: "K5 V6 K10 V12 V15", keyframe: 2,
		},
		{
			name:   "Units from the keyframe at or before since",
			cfg:    StreamConfig{RingDuration: 100 * ms100},
			script: "K0 V1 K5 A5 V6 K10 A11 V12",
			held:   "K0 V1 K5 A5 V6 K10 A11 V12", gop: "K10 V12", since: 9 * ms100, units: "K5 A5 V6 K10 A11 V12", keyframe: 3,
		},
		{
			name:   "Units at a keyframe's own PTS",
			cfg:    StreamConfig{RingDuration: 100 * ms100},
			script: "K0 V1 K5 V6 K10 V12",
			held:   "K0 V1 K5 V6 K10 V12", gop: "K10 V12", since: 10 * ms100, units: "K10 V12", keyframe: 3,
		},
		{
			name:   "Units before the oldest keyframe held start at it",
			cfg:    StreamConfig{RingDuration: 10 * ms100},
			script: "K0 V5 K10 V15 K20 V25",
			held:   "K10 V15 K20 V25", gop: "K20 V25", since: 0, units: "K10 V15 K20 V25", keyframe: 2,
		},
		{
			name:   "the latest GOP is kept whatever its age",
			cfg:    StreamConfig{RingDuration: 10 * ms100},
			script: "A0 K1 V10 V20 V30 A31",
			held:   "K1 V10 V20 V30 A31", gop: "K1 V10 V20 V30", since: 25 * ms100, units: "K1 V10 V20 V30 A31", keyframe: 1,
		},
		{
			name:   "byte bound drops the oldest GOP",
			cfg:    StreamConfig{RingDuration: 100 * ms100, RingMaxBytes: 500, GOPCacheMaxBytes: 300},
			script: "K0 V1 V2 K3 V4 K5",
			held:   "K3 V4 K5", gop: "K5", since: 0, units: "K3 V4 K5", keyframe: 2,
		},
		{
			name:   "byte bound within the latest GOP ends the burst",
			cfg:    StreamConfig{RingDuration: 100 * ms100, RingMaxBytes: 300, GOPCacheMaxBytes: 300},
			script: "K0 A0 V1 A1 V2",
			held:   "V1 A1 V2", gop: "", since: 0, units: "V1 A1 V2",
		},
		{
			name:   "GOP past GOPCacheMaxBytes is not a burst; video bytes only",
			cfg:    StreamConfig{RingDuration: 100 * ms100, RingMaxBytes: 10000, GOPCacheMaxBytes: 250},
			script: "K0 A0:1000 V1 A1:1000 V2",
			held:   "K0 A0 V1 A1 V2", gop: "", since: 0, units: "K0 A0 V1 A1 V2", keyframe: 1,
		},
		{
			name:   "the next keyframe restores the burst",
			cfg:    StreamConfig{RingDuration: 100 * ms100, RingMaxBytes: 10000, GOPCacheMaxBytes: 250},
			script: "K0 V1 V2 K3 V4",
			held:   "K0 V1 V2 K3 V4", gop: "K3 V4", since: 2 * ms100, units: "K0 V1 V2 K3 V4", keyframe: 2,
		},
		{
			name:   "a unit larger than the ring is not kept",
			cfg:    StreamConfig{RingDuration: 100 * ms100, RingMaxBytes: 300, GOPCacheMaxBytes: 300},
			script: "K0 V1 K2:400",
			held:   "", gop: "", since: 0, units: "",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(tc.cfg)
			ringScript(r, tc.script)
			all := r.Units(-time.Hour)
			if len(r.keys) == 0 {
				// Without a keyframe Units(-1h) is everything held.
				if got := describe(all); got != tc.held {
					t.Errorf("held %q, want %q", got, tc.held)
				}
			} else {
				held := make([]*Unit, 0, r.n)
				for i := r.first; i < r.first+uint64(r.n); i++ {
					held = append(held, r.at(i))
				}
				if got := describe(held); got != tc.held {
					t.Errorf("held %q, want %q", got, tc.held)
				}
			}
			gop := r.GOP()
			if got := describe(gop); got != tc.gop {
				t.Errorf("GOP %q, want %q", got, tc.gop)
			}
			for _, u := range gop {
				if !u.FromCache || !u.Packets[0].FromCache {
					t.Error("GOP unit is not a FromCache copy")
				}
			}
			if got := describe(r.Units(tc.since)); got != tc.units {
				t.Errorf("Units(%v) %q, want %q", tc.since, got, tc.units)
			}
			st := r.Stats()
			if st.Keyframes != tc.keyframe || st.Units != len(strings.Fields(tc.held)) || st.GOPUnits != len(gop) {
				t.Errorf("stats %+v, want %d keyframes, %d units, %d GOP units", st, tc.keyframe, len(strings.Fields(tc.held)), len(gop))
			}
			sum := 0
			for i := r.first; i < r.first+uint64(r.n); i++ {
				sum += r.at(i).mem
			}
			if st.Bytes != sum || sum > r.maxBytes {
				t.Errorf("bytes %d, held units sum to %d (bound %d)", st.Bytes, sum, r.maxBytes)
			}
		})
	}
}

// Over a long run the ring stays within its time bound (plus at most one
// GOP), always starts at a keyframe once it held one, keeps its buffer
// small, and shares the GOP copies between callers within a GOP.
func TestRingEviction(t *testing.T) {
	r := newRing(StreamConfig{RingDuration: 2 * time.Second})
	const gop = 30 // 1 s at 30 fps
	var prevGOP []*Unit
	for i := 0; i < 3000; i++ {
		pts := time.Duration(i) * frame30
		k := byte('V')
		if i%gop == 0 {
			k = 'K'
		}
		r.push(ringUnit(k, pts, 1000))
		r.push(ringUnit('A', pts, 100))
		st := r.Stats()
		if span := st.Newest - st.Oldest; span > 3*time.Second {
			t.Fatalf("unit %d: ring spans %v", i, span)
		}
		if i > 3*gop {
			if span := st.Newest - st.Oldest; span < 2*time.Second {
				t.Fatalf("unit %d: ring spans only %v", i, span)
			}
			if !r.at(r.first).Keyframe {
				t.Fatalf("unit %d: ring starts with %s", i, describe([]*Unit{r.at(r.first)}))
			}
		}
		g := r.GOP()
		if len(g) != i%gop+1 || !g[0].Keyframe {
			t.Fatalf("unit %d: GOP of %d units", i, len(g))
		}
		if i%gop != 0 && g[0] != prevGOP[0] {
			t.Fatal("GOP copies are not shared within a GOP")
		}
		prevGOP = g
	}
	if len(r.units) > 512 {
		t.Fatalf("ring buffer grew to %d slots for ~%d units", len(r.units), r.n)
	}
}

// Close empties the ring and the sequence index; a Discontinuity ends the
// GOP burst but keeps the history.
func TestRingResetAndDiscontinuity(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	writeGOP(st, 0, 5)
	if n := len(st.Ring().GOP()); n != 5 {
		t.Fatalf("GOP of %d units, want 5", n)
	}
	st.Discontinuity()
	if st.Ring().GOP() != nil {
		t.Fatal("GOP burst survives a Discontinuity")
	}
	if n := len(st.Units(0)); n != 5 {
		t.Fatalf("%d units after a Discontinuity, want the 5 held", n)
	}
	sub, _ := st.Subscribe("s", SubscribeOptions{})
	if q := sub.Stats().Queued; q != 0 {
		t.Fatalf("subscriber after a Discontinuity got %d cached packets", q)
	}
	st.Close()
	if s := st.Ring().Stats(); s.Units != 0 || s.Bytes != 0 || s.Keyframes != 0 {
		t.Fatalf("ring after Close: %+v", s)
	}
}

// Units carry the access units as published: Payload is the normalized
// NALUs (SPS, PPS in front of each IDR), equal to what the packets
// depacketize to, on the continuous PTS timeline, in the stream's own
// buffers; a late subscriber's cached units share Payload and copy packets.
func TestUnitPayload(t *testing.T) {
	checkLeaks(t)
	aus := makeClip(t, "640x360", 2, 30)
	for _, maxPayload := range []int{1200, 100} {
		t.Run(fmt.Sprint(maxPayload), func(t *testing.T) {
			st := newVideoStream(t, StreamConfig{MaxPayload: maxPayload}, false)
			sub, _ := st.Subscribe("v", SubscribeOptions{QueuePackets: 1 << 18})
			var sps, pps []byte
			var inputs [][][]byte
			for i, au := range aus {
				// The source reuses its buffers: hand over copies, then scribble.
				in := make([][]byte, len(au))
				for k, n := range au {
					in[k] = bytes.Clone(n)
				}
				st.WriteH264(time.Duration(i)*frame30+5*time.Second, in)
				st.WriteAudio(time.Duration(i)*frame30+5*time.Second, []byte{byte(i), 1, 2})
				for _, n := range in {
					clear(n)
				}
				inputs = append(inputs, au)
			}
			units := drainUnits(t, sub)
			var video []*Unit
			for _, u := range units {
				if u.Kind == KindAudio {
					if u.Codec != CodecOpus || len(u.Payload) != 1 || len(u.Packets) != 1 || !bytes.Equal(u.Payload[0], u.Packets[0].RTP.Payload) {
						t.Fatalf("audio unit %+v", u)
					}
					continue
				}
				video = append(video, u)
			}
			if len(video) != len(aus) {
				t.Fatalf("%d video units, %d AUs written", len(video), len(aus))
			}
			for i, u := range video {
				for _, n := range inputs[i] {
					switch n[0] & 0x1f {
					case naluSPS:
						sps = n
					case naluPPS:
						pps = n
					}
				}
				want := expectedAU(inputs[i], sps, pps)
				if !equalAU(u.Payload, want) {
					t.Fatalf("AU %d: Payload types %v, want %v", i, naluTypes(u.Payload), naluTypes(want))
				}
				d := depacketize(t, u.Packets, maxPayload)
				if len(d) != 1 || !equalAU(d[0].nalus, u.Payload) {
					t.Fatalf("AU %d: packets do not carry Payload", i)
				}
				if u.Codec != CodecH264 || u.Keyframe != hasIDRNALU(inputs[i]) || u.PTS != time.Duration(i)*frame30 || u.FromCache {
					t.Fatalf("AU %d: codec %q keyframe %v PTS %v cached %v", i, u.Codec, u.Keyframe, u.PTS, u.FromCache)
				}
			}
			// A late subscriber: the GOP from the latest keyframe.
			late, _ := st.Subscribe("late", SubscribeOptions{})
			cached := drainUnits(t, late)
			last := 0
			for i, u := range video {
				if u.Keyframe {
					last = i
				}
			}
			if len(cached) != len(video)-last {
				t.Fatalf("late subscriber got %d cached units, want %d", len(cached), len(video)-last)
			}
			for k, c := range cached {
				u := video[last+k]
				if !c.FromCache || c.PTS != u.PTS || &c.Payload[0][0] != &u.Payload[0][0] || len(c.Packets) != len(u.Packets) {
					t.Fatalf("cached unit %d differs from the published one", k)
				}
				for j, p := range c.Packets {
					if p == u.Packets[j] || !p.FromCache || p.RTP.SequenceNumber != u.Packets[j].RTP.SequenceNumber {
						t.Fatalf("cached unit %d packet %d is not a FromCache copy", k, j)
					}
				}
			}
			// Units: from the keyframe at or before a PTS.
			got := st.Units(video[len(video)-1].PTS)
			if len(got) == 0 || got[0] != video[last] {
				t.Fatal("Units(latest PTS) does not start at the latest keyframe")
			}
		})
	}
}

// The viewer path allocates per unit, never per subscriber: one unit with
// its packets and one buffer for a small access unit or an audio frame.
func TestPublishAllocations(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	for i := 0; i < 10; i++ {
		sub, _ := st.Subscribe(fmt.Sprint(i), SubscribeOptions{QueuePackets: 1 << 16})
		defer sub.Close()
	}
	writeGOP(st, 0, 1)
	pts := time.Second
	frame, small, large := []byte{1, 2, 3}, [][]byte{slice(1000)}, [][]byte{slice(8000)}
	for _, tc := range []struct {
		name  string
		write func()
		want  float64
	}{
		{"audio", func() { st.WriteAudio(pts, frame) }, 2},
		{"one-packet AU", func() { st.WriteH264(pts, small) }, 2},
		{"multi-packet AU", func() { st.WriteH264(pts, large) }, 4},
	} {
		n := testing.AllocsPerRun(200, func() { pts += frame30; tc.write() })
		if n > tc.want {
			t.Errorf("%s: %v allocations, want <= %v", tc.name, n, tc.want)
		}
	}
}

// RequestKeyframe calls the registered requester at most once per 500 ms,
// never with the stream's lock held, and not at all without one; the stream
// requests a keyframe itself for a subscriber that has no cached GOP.
func TestRequestKeyframe(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	clock := time.Unix(1000, 0)
	var clockMu sync.Mutex
	st.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	advance := func(d time.Duration) { clockMu.Lock(); clock = clock.Add(d); clockMu.Unlock() }

	st.RequestKeyframe() // none registered: no-op
	calls := 0
	st.SetKeyframeRequester(func() {
		if !st.mu.TryLock() {
			t.Error("requester called with the stream locked")
		} else {
			st.mu.Unlock()
		}
		calls++
	})
	st.RequestKeyframe()
	st.RequestKeyframe()
	advance(499 * time.Millisecond)
	st.RequestKeyframe()
	if calls != 1 {
		t.Fatalf("%d calls within 500 ms, want 1", calls)
	}
	advance(time.Millisecond)
	st.RequestKeyframe()
	if calls != 2 {
		t.Fatalf("%d calls, want 2 after 500 ms", calls)
	}

	// A subscriber without a cached GOP asks for one (rate limited).
	advance(time.Second)
	s1, _ := st.Subscribe("a", SubscribeOptions{})
	s2, _ := st.Subscribe("b", SubscribeOptions{})
	if calls != 3 {
		t.Fatalf("%d calls after two subscribers joined without a cache, want 3", calls)
	}
	// With a cached GOP it does not, unless it asked for none.
	advance(time.Second)
	writeGOP(st, 0, 3)
	s3, _ := st.Subscribe("c", SubscribeOptions{})
	audio, _ := st.Subscribe("d", SubscribeOptions{AudioOnly: true})
	if calls != 3 {
		t.Fatalf("%d calls, want none for subscribers with a cached GOP or no video", calls)
	}
	s4, _ := st.Subscribe("e", SubscribeOptions{NoCache: true})
	if calls != 4 {
		t.Fatalf("%d calls, want one for a NoCache subscriber", calls)
	}
	for _, s := range []*Subscriber{s1, s2, s3, s4, audio} {
		s.Close()
	}

	// A new requester is not held back by the previous one's window; nil clears.
	other := 0
	st.SetKeyframeRequester(func() { other++ })
	st.RequestKeyframe()
	st.SetKeyframeRequester(nil)
	advance(time.Second)
	st.RequestKeyframe()
	if other != 1 || calls != 4 {
		t.Fatalf("calls %d, other %d; want 4 and 1", calls, other)
	}
}

// Concurrent requests from many viewers' RTCP goroutines: one call per window.
func TestRequestKeyframeConcurrent(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	var mu sync.Mutex
	calls := 0
	st.SetKeyframeRequester(func() { mu.Lock(); calls++; mu.Unlock() })
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 0; k < 100; k++ {
				st.RequestKeyframe()
			}
		}()
	}
	wg.Wait()
	if calls < 1 || calls > 2 { // the run may straddle one window edge
		t.Fatalf("%d calls from 1600 concurrent requests", calls)
	}
}

// Stats.LastKeyframeAt is the wall time of the latest keyframe published.
func TestLastKeyframeAt(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	clock := time.Unix(1000, 0)
	st.now = func() time.Time { return clock }
	if !st.Stats().LastKeyframeAt.IsZero() {
		t.Fatal("LastKeyframeAt set before any keyframe")
	}
	st.WriteH264(0, [][]byte{idr(100)})
	keyAt := clock
	for i := 1; i < 5; i++ {
		clock = clock.Add(frame30)
		st.WriteH264(time.Duration(i)*frame30, [][]byte{slice(100)})
		st.WriteAudio(time.Duration(i)*frame30, []byte{1})
	}
	if got := st.Stats().LastKeyframeAt; !got.Equal(keyAt) {
		t.Fatalf("LastKeyframeAt %v, want %v", got, keyAt)
	}
	clock = clock.Add(frame30)
	st.WriteH264(5*frame30, [][]byte{idr(100)})
	if got := st.Stats().LastKeyframeAt; !got.Equal(clock) {
		t.Fatalf("LastKeyframeAt %v, want %v", got, clock)
	}
}

// The queue bound counts packets: a subscriber whose queue holds N packets
// in fewer units overflows exactly as before, and its counters are packets.
func TestQueueBoundInPackets(t *testing.T) {
	st := newVideoStream(t, StreamConfig{}, true)
	sub, _ := st.Subscribe("s", SubscribeOptions{QueuePackets: 10, NoCache: true})
	st.WriteH264(0, [][]byte{idr(3000)})           // STAP-A + 3 FU-A = 4 packets
	st.WriteH264(frame30, [][]byte{slice(3000)})   // 3 packets
	st.WriteH264(2*frame30, [][]byte{slice(2000)}) // 2: 9 queued
	if s := sub.Stats(); s.Queued != 9 || s.Dropped != 0 {
		t.Fatalf("stats %+v, want 9 queued", s)
	}
	st.WriteH264(3*frame30, [][]byte{slice(2000)}) // 11 > 10: flush
	if s := sub.Stats(); s.Queued != 0 || s.Dropped != 11 || s.Overflows != 1 {
		t.Fatalf("stats after overflow %+v, want 11 dropped", s)
	}
	st.WriteH264(4*frame30, [][]byte{slice(100)}) // skipped until a keyframe
	st.WriteH264(5*frame30, [][]byte{idr(100)})
	units := drainUnits(t, sub)
	if len(units) != 1 || !units[0].Keyframe {
		t.Fatalf("after the overflow got %q, want the keyframe", describe(units))
	}
	if s := sub.Stats(); s.Sent != 1 || s.Dropped != 12 {
		t.Fatalf("stats %+v, want 1 sent and 12 dropped", s)
	}
}
