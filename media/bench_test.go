package media

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkFanout measures the hot path: one op is one access unit that
// becomes exactly one RTP packet (an IDR every 60), published to N
// subscribers and read by each of them in batches. allocs/op is the
// per-packet cost of the whole path; it must not grow with N.
func BenchmarkFanout(b *testing.B) {
	for _, n := range []int{1, 100, 400} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			st := newVideoStream(b, StreamConfig{}, true)
			defer st.Close()
			subs := make([]*Subscriber, n)
			for i := range subs {
				subs[i], _ = st.Subscribe(fmt.Sprint(i), SubscribeOptions{})
			}
			key, delta := [][]byte{idr(1000)}, [][]byte{slice(1100)}
			buf := make([]*Unit, 256)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				au := delta
				if i%60 == 0 {
					au = key
				}
				st.WriteH264(time.Duration(i)*frame30, au)
				i++
				if i%len(buf) == 0 { // drain like the viewers' goroutines would
					for _, s := range subs {
						if k, err := s.Read(ctx, buf); err != nil || k != len(buf) {
							b.Fatalf("Read %d, %v", k, err)
						}
					}
				}
			}
			b.StopTimer()
			nsPerOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
			b.ReportMetric(nsPerOp/float64(n), "ns/sub/pkt")
			for _, s := range subs {
				if s.Stats().Dropped != 0 {
					b.Fatal("dropped")
				}
			}
		})
	}
}

// BenchmarkFanoutReaders is the same with one goroutine per subscriber
// blocking in Read, as in production (wake-ups included).
func BenchmarkFanoutReaders(b *testing.B) {
	for _, n := range []int{1, 100, 400} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			st := newVideoStream(b, StreamConfig{}, true)
			done := make(chan struct{}, n)
			for i := 0; i < n; i++ {
				s, _ := st.Subscribe(fmt.Sprint(i), SubscribeOptions{QueuePackets: 1 << 16})
				go func() {
					defer func() { done <- struct{}{} }()
					buf := make([]*Unit, 64)
					for {
						if _, err := s.Read(context.Background(), buf); err != nil {
							return
						}
					}
				}()
			}
			key, delta := [][]byte{idr(1000)}, [][]byte{slice(1100)}
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				au := delta
				if i%60 == 0 {
					au = key
				}
				st.WriteH264(time.Duration(i)*frame30, au)
				i++
			}
			b.StopTimer()
			st.Close()
			for i := 0; i < n; i++ {
				<-done
			}
		})
	}
}

// BenchmarkFanoutLargeAU is BenchmarkFanout with 720p-like pictures: one op
// is one ~8 KB access unit (7 RTP packets, an IDR of ~40 KB every 30).
func BenchmarkFanoutLargeAU(b *testing.B) {
	for _, n := range []int{1, 100} {
		b.Run(fmt.Sprintf("subs=%d", n), func(b *testing.B) {
			st := newVideoStream(b, StreamConfig{}, true)
			defer st.Close()
			subs := make([]*Subscriber, n)
			for i := range subs {
				subs[i], _ = st.Subscribe(fmt.Sprint(i), SubscribeOptions{QueuePackets: 4096})
			}
			key, delta := [][]byte{idr(40000)}, [][]byte{slice(8000)}
			buf := make([]*Unit, 256)
			ctx := context.Background()
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				au := delta
				if i%30 == 0 {
					au = key
				}
				st.WriteH264(time.Duration(i)*frame30, au)
				i++
				if i%32 == 0 {
					for _, s := range subs {
						for s.Stats().Queued > 0 {
							if _, err := s.Read(ctx, buf); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
			}
			b.StopTimer()
			for _, s := range subs {
				if s.Stats().Dropped != 0 {
					b.Fatal("dropped")
				}
			}
		})
	}
}
