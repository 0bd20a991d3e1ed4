package signaling

import (
	"context"
	"runtime"
	"sync"

	"github.com/icey/icey-server/media"
)

// The shared fan-out. A viewer's own goroutine (Session.pump) reads its own
// subscriber while it catches up: the cached GOP, paced, up to the live edge.
// Once it is live it hands over to one of the stream's shards, a few
// goroutines (one per CPU) that each read the stream once and write every
// unit to all of their viewers. The per-viewer wake-up per frame (a
// goroutine parked and woken for every viewer and every frame, ~15 % of the
// fan-out's CPU) becomes one per shard, and the viewer's subscriber queue is
// freed.
//
// The handover loses and repeats nothing. Units are numbered (media.Unit's
// Seq). A shard records the last unit it began to write (processed) and
// writes a viewer only the units after the last one the viewer wrote itself
// (handover). A viewer joins under the shard's lock only when its own
// subscriber is live (nothing queued, no keyframe wait), decided under the
// stream's lock (media.Subscriber.Live): every unit the shard has begun to
// write was then already queued for the viewer's subscriber too, so the
// viewer has written it, or it was not for the viewer (another kind); any
// later unit is the shard's. From then on only the shard writes the viewer's tracks.

// fanouts holds the shared fan-out of each stream with viewers in it.
type fanouts struct {
	mu       sync.Mutex
	byStream map[*media.Stream]*fanout
}

// fanout is one stream's shards.
type fanout struct {
	st      *media.Stream
	shards  []*shard
	members int // viewers in all shards (under fanouts.mu)
}

// shard is one goroutine writing a stream's units to its viewers.
type shard struct {
	sub *media.Subscriber

	mu        sync.Mutex
	viewers   []*Session // copied on change: the writer iterates a snapshot
	processed uint64     // Seq of the last unit the writer began to write
	stopped   bool
	dropped   uint64 // the subscriber's drops so far, for the viewers' counters
	done      chan struct{}
}

// queueFactor sizes a shard's subscriber queue from the per-viewer bound:
// a shard relays for many viewers and must not overflow while it writes.
const queueFactor = 4

// join hands s over to a shard of its stream, if its own subscriber sub is
// live; false means: not yet (read on and try again), or no shard could be
// made (the stream closed).
func (m *Manager) join(s *Session, sub *media.Subscriber) bool {
	f := m.fan.acquire(m, s.st)
	if f == nil {
		return false
	}
	sh := f.shards[0]
	for _, x := range f.shards[1:] {
		if x.size() < sh.size() {
			sh = x
		}
	}
	sh.mu.Lock()
	if sh.stopped || !sub.Live() {
		sh.mu.Unlock()
		m.fan.release(f)
		return false
	}
	s.handover = max(s.lastSeq, sh.processed)
	s.shard.Store(sh)
	s.fan = f
	s.shardDropBase = sh.dropped
	s.inShard = true
	vs := make([]*Session, len(sh.viewers), len(sh.viewers)+1)
	copy(vs, sh.viewers)
	sh.viewers = append(vs, s)
	sh.mu.Unlock()
	return true
}

// leave takes s out of its shard (the shard writes it no more units after
// this returns... except the one batch it may be writing now, which finds
// the session ended).
func (m *Manager) leave(s *Session) {
	sh, f := s.shard.Load(), s.fan
	if sh == nil {
		return
	}
	sh.mu.Lock()
	vs := make([]*Session, 0, len(sh.viewers))
	for _, x := range sh.viewers {
		if x != s {
			vs = append(vs, x)
		}
	}
	sh.viewers = vs
	if s.inShard {
		s.shardDrops = sh.dropped - s.shardDropBase
		s.inShard = false
	}
	sh.mu.Unlock()
	m.fan.release(f)
}

func (sh *shard) size() int {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return len(sh.viewers)
}

// acquire returns st's fan-out, made with its shards if it had none, with
// one more member counted; nil if the stream cannot be subscribed to.
func (fs *fanouts) acquire(m *Manager, st *media.Stream) *fanout {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f := fs.byStream[st]; f != nil {
		f.members++
		return f
	}
	n := min(runtime.GOMAXPROCS(0), 8)
	f := &fanout{st: st}
	for i := 0; i < n; i++ {
		sh := &shard{done: make(chan struct{})}
		sub, err := st.Subscribe("fanout", media.SubscribeOptions{
			Live: true, QueuePackets: m.cfg.SubscriberQueue * queueFactor, Group: sh.stats,
		})
		if err != nil {
			for _, x := range f.shards {
				x.stop()
			}
			return nil
		}
		sh.sub = sub
		f.shards = append(f.shards, sh)
		go sh.run()
	}
	if fs.byStream == nil {
		fs.byStream = map[*media.Stream]*fanout{}
	}
	fs.byStream[st] = f
	f.members = 1
	return f
}

// release counts one member less; the last one stops the shards.
func (fs *fanouts) release(f *fanout) {
	fs.mu.Lock()
	f.members--
	last := f.members == 0
	if last && fs.byStream[f.st] == f {
		delete(fs.byStream, f.st)
	}
	fs.mu.Unlock()
	if last {
		for _, sh := range f.shards {
			sh.stop()
		}
	}
}

// stop ends the shard's goroutine and waits for it.
func (sh *shard) stop() {
	sh.mu.Lock()
	sh.stopped = true
	sh.mu.Unlock()
	sh.sub.Close()
	<-sh.done
}

// stats lists the shard's viewers for the stream's Stats (media.Subscribe's
// Group): the shard stands for them.
func (sh *shard) stats() []media.SubscriberStats {
	sh.mu.Lock()
	vs := sh.viewers
	sh.mu.Unlock()
	out := make([]media.SubscriberStats, 0, len(vs))
	for _, s := range vs {
		info := s.info()
		out = append(out, media.SubscriberStats{ID: s.id, Sent: info.Sent, Dropped: info.Drops})
	}
	return out
}

// run writes every unit the stream publishes to the shard's viewers until
// the shard is stopped or the stream closes (which ends its viewers).
func (sh *shard) run() {
	defer close(sh.done)
	buf := make([]*media.Unit, pumpBatch)
	for {
		n, err := sh.sub.Read(context.Background(), buf)
		if err != nil {
			sh.mu.Lock()
			stopped, vs := sh.stopped, sh.viewers
			sh.mu.Unlock()
			if !stopped {
				for _, s := range vs {
					s.end(ErrSourceClosed)
				}
			}
			return
		}
		units := buf[:n]
		dropped := sh.sub.Stats().Dropped
		sh.mu.Lock()
		sh.processed = units[n-1].Seq
		sh.dropped = dropped
		vs := sh.viewers
		sh.mu.Unlock()
		for _, s := range vs {
			s.writeUnits(units)
		}
		clear(units)
	}
}
