package media

import (
	"context"
	"errors"
	"sync"
)

// Subscriber is one consumer of a Stream (a WebRTC viewer, a recorder). The
// stream pushes shared units into its bounded queue without ever blocking;
// one goroutine drains it with Read. The bound and the counters are in RTP
// packets: a unit counts with its packets.
type Subscriber struct {
	id           string
	st           *Stream
	video, audio bool
	notify       chan struct{} // 1-buffered wake-up for a blocked Read
	group        func() []SubscriberStats

	mu      sync.Mutex
	closed  bool
	waiting bool // a Read is (about to be) blocked on notify
	// The cached GOP burst, read-only and shared with other subscribers,
	// delivered before the ring and not counted against its bound;
	// burstPkts counts the packets of burst[burstPos:].
	burst     []*Unit
	burstPos  int
	burstPkts int
	// ring is the live queue: count units from head, pkts packets in all,
	// at most len(ring) (the bound; a unit has at least one packet).
	ring  []*Unit
	head  int
	count int
	pkts  int
	// waitKey drops video until a keyframe: at start without a cache, and
	// after an overflow (then the skipped packets count as dropped).
	waitKey     bool
	countSkips  bool
	overflowing bool
	sent        uint64
	dropped     uint64
	overflows   uint64
}

// ID returns the id given to Subscribe.
func (sub *Subscriber) ID() string { return sub.id }

// push queues one unit (all its packets or none, so that the queue never
// holds a partial picture).
func (sub *Subscriber) push(u *Unit) {
	kind, n := u.Kind, len(u.Packets)
	if n == 0 || (kind == KindVideo && !sub.video) || (kind == KindAudio && !sub.audio) {
		return
	}
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	if kind == KindVideo && sub.waitKey {
		if !u.Keyframe {
			if sub.countSkips {
				sub.dropped += uint64(n)
			}
			sub.mu.Unlock()
			return
		}
		sub.waitKey, sub.countSkips = false, false
	}
	if sub.pkts+n > len(sub.ring) {
		// The reader is a whole queue behind. What is queued is stale and
		// later pictures would reference the lost one: flush, then resume
		// video at the next keyframe (audio resumes at once), so a reader
		// that recovers catches up with the live edge instead of lagging.
		sub.dropped += uint64(n + sub.pkts + sub.burstPkts)
		sub.flushLocked()
		if !sub.overflowing {
			sub.overflowing = true
			sub.overflows++
		}
		if sub.video {
			sub.waitKey, sub.countSkips = true, true
		}
		if kind == KindVideo || n > len(sub.ring) {
			sub.mu.Unlock()
			return
		}
	}
	sub.overflowing = false
	i := sub.head + sub.count
	if i >= len(sub.ring) {
		i -= len(sub.ring)
	}
	sub.ring[i] = u
	sub.count++
	sub.pkts += n
	wake := sub.waiting
	sub.waiting = false
	sub.mu.Unlock()
	if wake {
		select {
		case sub.notify <- struct{}{}:
		default:
		}
	}
}

// Read fills dst with as many queued units as fit (the cached GOP burst
// first), blocking until at least one is available. It returns ErrClosed
// once the subscriber or its stream is closed, and ctx.Err() when ctx is
// done. The units are shared: do not modify them. Read must not be called
// concurrently with itself.
func (sub *Subscriber) Read(ctx context.Context, dst []*Unit) (int, error) {
	for {
		sub.mu.Lock()
		if sub.closed {
			sub.mu.Unlock()
			return 0, ErrClosed
		}
		if len(dst) == 0 {
			sub.mu.Unlock()
			return 0, nil
		}
		n, pkts := 0, 0
		for n < len(dst) && sub.burstPos < len(sub.burst) {
			u := sub.burst[sub.burstPos]
			dst[n] = u
			pkts += len(u.Packets)
			sub.burstPos++
			n++
		}
		sub.burstPkts -= pkts
		if sub.burst != nil && sub.burstPos == len(sub.burst) {
			sub.burst, sub.burstPos, sub.burstPkts = nil, 0, 0
		}
		for n < len(dst) && sub.count > 0 {
			u := sub.ring[sub.head]
			dst[n] = u
			pkts += len(u.Packets)
			sub.pkts -= len(u.Packets)
			sub.ring[sub.head] = nil
			sub.head++
			if sub.head == len(sub.ring) {
				sub.head = 0
			}
			sub.count--
			n++
		}
		if n > 0 {
			sub.sent += uint64(pkts)
			sub.mu.Unlock()
			return n, nil
		}
		sub.waiting = true
		sub.mu.Unlock()
		select {
		case <-sub.notify:
		case <-ctx.Done():
			sub.mu.Lock()
			sub.waiting = false
			sub.mu.Unlock()
			return 0, ctx.Err()
		}
	}
}

// Live reports whether the reader has caught up: the cached burst read,
// nothing queued, no wait for a keyframe, not closed. It is decided under
// the stream's lock, between two publications: every unit published before
// it was queued for (or skipped by) this subscriber and the stream's others
// alike, and every unit published after it is queued as usual.
func (sub *Subscriber) Live() bool {
	sub.st.mu.Lock()
	defer sub.st.mu.Unlock()
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return !sub.closed && sub.burst == nil && sub.count == 0 && !sub.waitKey
}

// Stats returns the subscriber's counters.
func (sub *Subscriber) Stats() SubscriberStats {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	return SubscriberStats{
		ID:        sub.id,
		Sent:      sub.sent,
		Dropped:   sub.dropped,
		Overflows: sub.overflows,
		Queued:    sub.pkts + sub.burstPkts,
	}
}

// Close detaches the subscriber from its stream; a blocked Read returns
// ErrClosed. Idempotent.
func (sub *Subscriber) Close() {
	sub.close()
	sub.st.removeSub(sub)
}

func (sub *Subscriber) close() {
	sub.mu.Lock()
	if sub.closed {
		sub.mu.Unlock()
		return
	}
	sub.closed = true
	sub.flushLocked()
	sub.ring = nil
	sub.mu.Unlock()
	select {
	case sub.notify <- struct{}{}:
	default:
	}
}

// flushLocked empties the queue (releasing the units) and the burst.
func (sub *Subscriber) flushLocked() {
	clear(sub.ring)
	sub.head, sub.count, sub.pkts = 0, 0, 0
	sub.burst, sub.burstPos, sub.burstPkts = nil, 0, 0
}

// ReadBatches calls fn with each batch Read returns (at most 64 units;
// the units are shared, do not modify them) until the subscriber or its
// stream closes or ctx ends, which return nil, or fn fails, which returns
// fn's error.
func (sub *Subscriber) ReadBatches(ctx context.Context, fn func([]*Unit) error) error {
	units := make([]*Unit, 64)
	for {
		n, err := sub.Read(ctx, units)
		if err != nil {
			if errors.Is(err, ErrClosed) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := fn(units[:n]); err != nil {
			return err
		}
		clear(units[:n])
	}
}
