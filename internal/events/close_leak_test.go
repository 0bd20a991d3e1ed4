package events

import (
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// Consumers of the bus (an SSE or WebSocket stream each) are goroutines
// ranging over a Sub's channel: Sub.Close must end one, Bus.Close all the
// others, after they have drained what was queued for them.
func TestCloseLeaksBus(t *testing.T) {
	leaktest.Check(t)
	b := New()
	const consumers = 4
	var wg sync.WaitGroup
	got := make([]int, consumers)
	subs := make([]*Sub, consumers)
	for i := range subs {
		subs[i] = b.Subscribe(16)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range subs[i].C {
				got[i]++
			}
		}()
	}
	for i := 0; i < 10; i++ {
		b.Publish(SessionStarted, i)
	}
	subs[0].Close()
	subs[0].Close() // idempotent
	if n := b.Subscribers(); n != consumers-1 {
		t.Fatalf("%d subscribers after one Sub.Close, want %d", n, consumers-1)
	}
	start := time.Now()
	b.Close()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("consumers still ranging over their channels 10 s after Bus.Close")
	}
	late := b.Subscribe(1)
	if _, ok := <-late.C; ok {
		t.Fatal("a subscription after Bus.Close received an event")
	}
	for i := 1; i < consumers; i++ {
		if got[i] != 10 {
			t.Errorf("consumer %d drained %d of 10 queued events before its channel closed", i, got[i])
		}
	}
	t.Logf("%d consumers ended %v after Bus.Close (each drained %v events); %d subscribers left", consumers,
		time.Since(start).Round(time.Microsecond), got, b.Subscribers())
}
