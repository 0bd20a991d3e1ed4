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
