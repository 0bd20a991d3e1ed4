package events

import "testing"

func TestPublishOrderAndSlowSubscriber(t *testing.T) {
	b := New()
	fast := b.Subscribe(16)
	slow := b.Subscribe(2)
	for i := 0; i < 5; i++ {
		b.Publish(SessionStarted, map[string]int{"i": i})
	}
	var seqs []uint64
	for i := 0; i < 5; i++ {
		seqs = append(seqs, (<-fast.C).Seq)
	}
	for i := 1; i < len(seqs); i++ {
		if seqs[i] != seqs[i-1]+1 {
			t.Fatalf("out of order %v", seqs)
		}
	}
	n := 0
	for range slow.C {
		n++
	}
	if n != 2 || !slow.Dropped.Load() {
		t.Fatalf("slow subscriber got %d, dropped=%v", n, slow.Dropped.Load())
	}
	if b.Subscribers() != 1 {
		t.Fatalf("subscribers %d", b.Subscribers())
	}
	fast.Close()
	fast.Close() // idempotent
	if _, ok := <-fast.C; ok {
		t.Fatal("closed channel yielded")
	}
	if b.Subscribers() != 0 {
		t.Fatal("leak")
	}
}

// Close ends every stream after what was queued, and later subscriptions
// at once.
func TestCloseEndsSubscriptions(t *testing.T) {
	b := New()
	s := b.Subscribe(4)
	b.Publish(ShutdownStarted, nil)
	b.Close()
	if e, ok := <-s.C; !ok || e.Type != ShutdownStarted {
		t.Fatalf("queued event lost: %v %v", e, ok)
	}
	if _, ok := <-s.C; ok {
		t.Fatal("subscription still open after Close")
	}
	if _, ok := <-b.Subscribe(0).C; ok {
		t.Fatal("a subscription after Close stays open")
	}
	if n := b.Subscribers(); n != 0 {
		t.Fatalf("%d subscribers after Close", n)
	}
	b.Publish(SessionStarted, nil) // no panic on closed channels
}
