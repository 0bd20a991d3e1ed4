// Package events is the in-process lifecycle event bus behind /api/events:
// session started/ended, source up/down/reconnecting, readiness changed,
// TURN refusals. Publishing never blocks; a subscriber that falls behind
// is disconnected (it reconnects and gets a fresh snapshot) rather than
// silently missing events.
package events

import (
	"sync"
	"sync/atomic"
	"time"
)

// Event kinds.
const (
	Snapshot           = "snapshot"
	SessionStarted     = "session.started"
	SessionEnded       = "session.ended"
	SourceUp           = "source.up"
	SourceDown         = "source.down"
	SourceReconnect    = "source.reconnecting"
	SourceEnded        = "source.ended"
	PathState          = "path.state"
	ReadinessChanged   = "readiness.changed"
	RecordingStarted   = "recording.started"
	RecordingFinalized = "recording.finalized"
	RecordingFailed    = "recording.failed"
	TURNRefused        = "turn.refused"
	VisionDetect       = "vision.detect"
	ClipFinalized      = "clip.finalized"
	SpeechStart        = "speech.start"
	SpeechUpdate       = "speech.update"
	SpeechEnd          = "speech.end"
	ShutdownStarted    = "shutdown"
)

// Event is one lifecycle event.
type Event struct {
	Seq  uint64    `json:"seq"`
	Type string    `json:"type"`
	Time time.Time `json:"time"`
	Data any       `json:"data,omitempty"`
}

// DefaultBuffer is each subscriber's queue length.
const DefaultBuffer = 256

// Bus fans events out to subscribers.
type Bus struct {
	seq    atomic.Uint64
	mu     sync.Mutex
	subs   map[*Sub]struct{}
	closed bool
	now    func() time.Time
}

// New returns an empty bus.
func New() *Bus { return &Bus{subs: map[*Sub]struct{}{}, now: time.Now} }

// Sub is one subscription. C is closed when the subscription ends (Close,
// or the subscriber fell more than its buffer behind).
type Sub struct {
	C       <-chan Event
	c       chan Event
	bus     *Bus
	once    sync.Once
	Dropped atomic.Bool // true when closed for falling behind
}

// Subscribe registers a subscriber with the given buffer (0 = default).
func (b *Bus) Subscribe(buffer int) *Sub {
	if buffer <= 0 {
		buffer = DefaultBuffer
	}
	c := make(chan Event, buffer)
	s := &Sub{C: c, c: c, bus: b}
	b.mu.Lock()
	b.subs[s] = struct{}{}
	if b.closed {
		s.closeLocked()
	}
	b.mu.Unlock()
	return s
}

// Close ends every subscription (each still receives what was queued for
// it, then sees its channel closed) and every later one at once. Streams
// built on the bus (SSE, WebSockets) end with it, so an HTTP shutdown does
// not wait for their clients to hang up.
func (b *Bus) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for s := range b.subs {
		s.closeLocked()
	}
}

// Close ends the subscription.
func (s *Sub) Close() {
	s.bus.mu.Lock()
	s.closeLocked()
	s.bus.mu.Unlock()
}

func (s *Sub) closeLocked() {
	s.once.Do(func() {
		delete(s.bus.subs, s)
		close(s.c)
	})
}

// Publish sends an event to every subscriber without blocking.
func (b *Bus) Publish(typ string, data any) Event {
	e := Event{Seq: b.seq.Add(1), Type: typ, Time: b.now().UTC(), Data: data}
	b.mu.Lock()
	defer b.mu.Unlock()
	for s := range b.subs {
		select {
		case s.c <- e:
		default:
			s.Dropped.Store(true)
			s.closeLocked()
		}
	}
	return e
}

// Subscribers counts live subscriptions.
func (b *Bus) Subscribers() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.subs)
}
