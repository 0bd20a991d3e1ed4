package media

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// A stream's consumers are goroutines blocked in Subscriber.Read,
// Subscriber.ReadBatches and Stream.WaitTracks: Subscriber.Close must end
// its reader, Stream.Close every other one, after they received what was
// published.
func TestCloseLeaksStream(t *testing.T) {
	leaktest.Check(t)
	st := NewStream(StreamConfig{Name: "leak"}, nil)
	waiting := NewStream(StreamConfig{Name: "no-tracks"}, nil)
	st.SetTracks(Tracks{Audio: &AudioParams{Codec: CodecOpus, ClockRate: 48000, Channels: 2}})

	const readers = 4
	var received [readers]atomic.Int64
	ended := make(chan error, readers+1)
	subs := make([]*Subscriber, readers)
	for i := range subs {
		sub, err := st.Subscribe(fmt.Sprintf("r%d", i), SubscribeOptions{Live: true})
		if err != nil {
			t.Fatal(err)
		}
		subs[i] = sub
		if i%2 == 0 {
			go func() {
				dst := make([]*Unit, 16)
				for {
					n, err := sub.Read(context.Background(), dst)
					if err != nil {
						ended <- err
						return
					}
					received[i].Add(int64(n))
				}
			}()
		} else {
			go func() {
				ended <- sub.ReadBatches(context.Background(), func(u []*Unit) error {
					received[i].Add(int64(len(u)))
					return nil
				})
			}()
		}
	}
	go func() {
		_, err := waiting.WaitTracks(context.Background())
		ended <- err
	}()

	const frames = 50
	for i := 0; i < frames; i++ {
		st.WriteAudio(time.Duration(i)*20*time.Millisecond, []byte{0xfc, byte(i), 0xff, 0xfe})
	}
	deadline := time.Now().Add(10 * time.Second)
	for i := range received {
		for received[i].Load() < frames && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := received[i].Load(); n != frames {
			t.Fatalf("reader %d received %d of %d units", i, n, frames)
		}
	}
	if n := st.Stats().Subscribers; n != readers {
		t.Fatalf("stream counts %d subscribers, want %d", n, readers)
	}

	start := time.Now()
	subs[0].Close()
	subs[0].Close() // idempotent
	wait := func(what string, n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			select {
			case err := <-ended:
				if err != nil && !errors.Is(err, ErrClosed) {
					t.Errorf("%s: a reader ended with %v", what, err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("%s: %d readers still blocked after 10 s", what, n-i)
			}
		}
	}
	wait("Subscriber.Close", 1)
	if n := st.Stats().Subscribers; n != readers-1 {
		t.Errorf("stream counts %d subscribers after one Subscriber.Close, want %d", n, readers-1)
	}
	st.Close()
	waiting.Close()
	st.Close() // idempotent
	wait("Stream.Close", readers)
	if _, err := st.Subscribe("late", SubscribeOptions{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Subscribe after Close: %v, want ErrClosed", err)
	}
	t.Logf("%d readers got %d units each; Subscriber.Close + Stream.Close ended all %d blocked goroutines in %v",
		readers, frames, readers+1, time.Since(start).Round(time.Microsecond))
}
