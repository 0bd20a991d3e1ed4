package media

import (
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the Ring's bounds (StreamConfig.RingDuration, RingMaxBytes).
const (
	DefaultRingDuration = 10 * time.Second
	DefaultRingMaxBytes = 32 << 20
)

// Ring is a stream's history of published units: time- and byte-bounded,
// with an index of its keyframes and an index of its video packets by
// sequence number. It serves
//
//   - the GOP burst for new subscribers (GOP: the video units since the
//     latest keyframe as FromCache copies, while that GOP stays within
//     GOPCacheMaxBytes of RTP payload);
//   - NACK answers (Video: a recent video packet by hub sequence number,
//     lock-free);
//   - recorder starts and clip pre-roll (Units: the units from the keyframe
//     at or before a PTS).
//
// Bounds: units are evicted a whole GOP at a time once the next keyframe is
// at least RingDuration older than the newest unit, so that a pre-roll of
// RingDuration always starts at a keyframe (the ring holds between
// RingDuration and RingDuration plus one GOP); units before the first
// keyframe held (audio, or video before any keyframe) go individually once
// older than RingDuration. The latest GOP is never evicted for its age (a new
// subscriber still gets a GOP longer than RingDuration), only for size: when
// the held units exceed RingMaxBytes (counting each unit's whole buffer,
// its NALU copies included) the oldest GOP goes, and within the latest GOP
// the oldest unit, which also ends the GOP burst until the next keyframe.
// The sequence index holds the latest RetransmitPackets video packets
// regardless of the bounds above.
//
// The Stream owns and feeds it; the exported methods are safe for concurrent
// use. Units are shared and immutable: do not modify what a method returns.
type Ring struct {
	dur      time.Duration
	maxBytes int
	gopMax   int

	mu sync.Mutex
	// units is a circular buffer: n units from head, the first one with
	// absolute index first (absolute indexes count every unit pushed).
	units []*Unit
	head  int
	n     int
	first uint64
	bytes int // sum of mem of the held units

	// keys are the absolute indexes of the held keyframes, ascending.
	keys []uint64

	// GOP cache: the video units from absolute index gopKey (the latest
	// keyframe) on, usable while gopOK.
	gopOK    bool
	gopKey   uint64
	gopBytes int // RTP payload bytes of the video units since gopKey
	// burst holds FromCache copies of the GOP's video units scanned so far
	// (units [gopKey, burstScan)); shared read-only by subscribers, extended
	// lazily, replaced (never modified in place) at each GOP.
	burst     []*Unit
	burstScan uint64

	newest time.Duration // largest PTS pushed

	// hist is the sequence index: the latest video packets by sequence
	// number modulo its (power of two) length. Written under mu, read
	// lock-free by the viewers' RTCP goroutines.
	hist []atomic.Pointer[Packet]
}

// RingStats is a snapshot of a Ring.
type RingStats struct {
	Units     int           // units held
	Bytes     int           // bytes held (RTP payloads and NALU copies)
	Keyframes int           // keyframes held
	Oldest    time.Duration // PTS of the oldest unit held (0 when empty)
	Newest    time.Duration // PTS of the newest unit held (0 when empty)
	GOPUnits  int           // video units of the cached GOP (0: no burst)
}

func newRing(cfg StreamConfig) *Ring {
	cfg = cfg.withDefaults()
	return &Ring{
		dur:      cfg.RingDuration,
		maxBytes: cfg.RingMaxBytes,
		gopMax:   cfg.GOPCacheMaxBytes,
		units:    make([]*Unit, 256),
		hist:     make([]atomic.Pointer[Packet], cfg.RetransmitPackets),
	}
}

// at returns the held unit with absolute index i.
func (r *Ring) at(i uint64) *Unit {
	return r.units[(r.head+int(i-r.first))&(len(r.units)-1)]
}

// push appends a published unit, indexes it and applies the bounds.
func (r *Ring) push(u *Unit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if u.Kind == KindVideo {
		mask := uint16(len(r.hist) - 1)
		for _, p := range u.Packets {
			r.hist[p.RTP.SequenceNumber&mask].Store(p)
		}
	}
	if r.n == len(r.units) {
		r.grow()
	}
	idx := r.first + uint64(r.n)
	r.units[(r.head+r.n)&(len(r.units)-1)] = u
	r.n++
	r.bytes += u.mem
	if r.n == 1 || u.PTS > r.newest {
		r.newest = u.PTS
	}
	if u.Keyframe {
		r.keys = append(r.keys, idx)
		r.gopOK, r.gopKey, r.gopBytes = true, idx, 0
		r.burst, r.burstScan = nil, idx
	}
	if r.gopOK && u.Kind == KindVideo {
		r.gopBytes += u.wire
		if r.gopBytes > r.gopMax {
			// New subscribers then wait for the next live keyframe.
			r.dropGOPLocked()
		}
	}
	r.evictLocked()
}

func (r *Ring) grow() {
	units := make([]*Unit, 2*len(r.units))
	for i := 0; i < r.n; i++ {
		units[i] = r.units[(r.head+i)&(len(r.units)-1)]
	}
	r.units, r.head = units, 0
}

// evictLocked applies the time and byte bounds.
func (r *Ring) evictLocked() {
	cut := r.newest - r.dur
	// Whole GOPs before the latest keyframe that is old enough.
	k := -1
	for i, key := range r.keys {
		if r.at(key).PTS > cut {
			break
		}
		k = i
	}
	if k >= 0 {
		r.dropBefore(r.keys[k])
	}
	// Old units before the first keyframe (or all, without one).
	limit := r.first + uint64(r.n)
	if len(r.keys) > 0 {
		limit = r.keys[0]
	}
	for r.first < limit && r.at(r.first).PTS < cut {
		r.dropHead()
	}
	for r.bytes > r.maxBytes && r.n > 0 {
		// The oldest GOP (or the units before the first keyframe) if the
		// ring holds a later keyframe, else the oldest unit.
		next := r.first + 1
		for _, key := range r.keys {
			if key > r.first {
				next = key
				break
			}
		}
		r.dropBefore(next)
	}
}

// dropBefore evicts the units with absolute index < i.
func (r *Ring) dropBefore(i uint64) {
	for r.n > 0 && r.first < i {
		r.dropHead()
	}
}

func (r *Ring) dropHead() {
	u := r.units[r.head]
	r.units[r.head] = nil
	r.head = (r.head + 1) & (len(r.units) - 1)
	r.n--
	r.bytes -= u.mem
	if len(r.keys) > 0 && r.keys[0] == r.first {
		r.keys = append(r.keys[:0], r.keys[1:]...)
	}
	if r.gopOK && r.first == r.gopKey {
		r.dropGOPLocked()
	}
	r.first++
}

// dropGOP ends the GOP burst until the next keyframe (Discontinuity: its
// pictures belong to the previous run).
func (r *Ring) dropGOP() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropGOPLocked()
}

func (r *Ring) dropGOPLocked() {
	r.gopOK, r.gopBytes = false, 0
	r.burst = nil // subscribers may still read the old one
}

// reset empties the ring and its sequence index (the stream closed).
func (r *Ring) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.dropBefore(r.first + uint64(r.n))
	r.keys = r.keys[:0]
	r.dropGOPLocked()
	for i := range r.hist {
		r.hist[i].Store(nil)
	}
}

// Video returns the published video packet with hub sequence number seq
// while the sequence index still holds it, else nil. It takes no lock.
func (r *Ring) Video(seq uint16) *Packet {
	p := r.hist[seq&uint16(len(r.hist)-1)].Load()
	if p == nil || p.RTP.SequenceNumber != seq {
		return nil
	}
	return p
}

// GOP returns FromCache copies of the video units from the latest keyframe
// on (the first one that keyframe), or nil when there is no usable GOP: no
// keyframe yet, a Discontinuity since, or a GOP past GOPCacheMaxBytes. The
// copies are made once per unit and shared by every caller during the same
// GOP; the returned slice must not be modified.
func (r *Ring) GOP() []*Unit {
	r.mu.Lock()
	defer r.mu.Unlock()
	burst, _ := r.gopLocked()
	return burst
}

// gopLocked is GOP plus the number of packets in it.
func (r *Ring) gopLocked() ([]*Unit, int) {
	if !r.gopOK {
		return nil, 0
	}
	end := r.first + uint64(r.n)
	for ; r.burstScan < end; r.burstScan++ {
		if u := r.at(r.burstScan); u.Kind == KindVideo {
			r.burst = append(r.burst, cacheCopy(u))
		}
	}
	burst := r.burst[:len(r.burst):len(r.burst)]
	pkts := 0
	for _, u := range burst {
		pkts += len(u.Packets)
	}
	return burst, pkts
}

// cacheCopy returns a FromCache copy of u: its own Unit and packets, the
// same payload bytes.
func cacheCopy(u *Unit) *Unit {
	c := *u
	c.FromCache = true
	pk := make([]Packet, len(u.Packets))
	c.Packets = make([]*Packet, len(u.Packets))
	for i, p := range u.Packets {
		pk[i] = *p
		pk[i].FromCache = true
		c.Packets[i] = &pk[i]
	}
	return &c
}

// Units returns the held units (live ones, not FromCache copies) from the
// video keyframe at or before PTS since, in publishing order: what a
// recorder starting now with a pre-roll back to since, or a clip, needs. If
// the ring no longer reaches back to since, they start at its oldest
// keyframe; if it holds no keyframe (an audio-only stream, or video that has
// not reached one), they are the units with PTS >= since. PTS is on the
// stream's output timeline (RingStats.Newest is the latest).
func (r *Ring) Units(since time.Duration) []*Unit {
	r.mu.Lock()
	defer r.mu.Unlock()
	end := r.first + uint64(r.n)
	start := end
	if len(r.keys) > 0 {
		start = r.keys[0]
		for _, key := range r.keys[1:] {
			if r.at(key).PTS > since {
				break
			}
			start = key
		}
	} else {
		for i := r.first; i < end; i++ {
			if r.at(i).PTS >= since {
				start = i
				break
			}
		}
	}
	if start == end {
		return nil
	}
	out := make([]*Unit, 0, end-start)
	for i := start; i < end; i++ {
		out = append(out, r.at(i))
	}
	return out
}

// Stats returns a snapshot of the ring's contents.
func (r *Ring) Stats() RingStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := RingStats{Units: r.n, Bytes: r.bytes, Keyframes: len(r.keys)}
	if r.n > 0 {
		st.Oldest, st.Newest = r.at(r.first).PTS, r.newest
	}
	if r.gopOK {
		for i := r.gopKey; i < r.first+uint64(r.n); i++ {
			if r.at(i).Kind == KindVideo {
				st.GOPUnits++
			}
		}
	}
	return st
}

// gop is GOP for the Stream's Subscribe, with the burst's packet count.
func (r *Ring) gop() ([]*Unit, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gopLocked()
}
