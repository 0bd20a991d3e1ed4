package logging

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"
)

// recorder is a slog handler that keeps every record.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

func attrs(rec slog.Record) map[string]any {
	m := map[string]any{}
	rec.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.Any(); return true })
	return m
}

func TestLimiterZeroValueOnePerSecond(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	type step struct {
		at   time.Duration
		ok   bool
		held int
	}
	for i, s := range []step{
		{0, true, 0},
		{10 * time.Millisecond, false, 0},
		{500 * time.Millisecond, false, 0},
		{999 * time.Millisecond, false, 0},
		{time.Second, true, 3},
		{time.Second + 1, false, 0},
		{3 * time.Second, true, 1},
		{5 * time.Second, true, 0},
	} {
		ok, held := l.Allow(t0.Add(s.at))
		if ok != s.ok || held != s.held {
			t.Fatalf("step %d (+%v): got (%v, %d), want (%v, %d)", i, s.at, ok, held, s.ok, s.held)
		}
	}
}

func TestLimiterIntervalAndBurst(t *testing.T) {
	l := Limiter{Interval: 10 * time.Second, Burst: 3}
	t0 := time.Unix(1000, 0)
	allowed := 0
	for i := 0; i < 10; i++ {
		if ok, _ := l.Allow(t0.Add(time.Duration(i) * time.Second / 2)); ok {
			allowed++
		}
	}
	if allowed != 3 {
		t.Fatalf("allowed %d in the first window, want 3", allowed)
	}
	if ok, held := l.Allow(t0.Add(10 * time.Second)); !ok || held != 7 {
		t.Fatalf("next window: got (%v, %d), want (true, 7)", ok, held)
	}
	if ok, held := l.Allow(t0.Add(10*time.Second + 1)); !ok || held != 0 {
		t.Fatalf("second in window: got (%v, %d), want (true, 0)", ok, held)
	}
}

func TestLimiterFlush(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	l.Allow(t0)
	l.Allow(t0)
	l.Allow(t0)
	if n := l.Flush(); n != 2 {
		t.Fatalf("Flush = %d, want 2", n)
	}
	if n := l.Flush(); n != 0 {
		t.Fatalf("second Flush = %d, want 0", n)
	}
	if ok, held := l.Allow(t0.Add(time.Second)); !ok || held != 0 {
		t.Fatalf("after Flush: got (%v, %d), want (true, 0)", ok, held)
	}
}

func TestLimiterLogRecords(t *testing.T) {
	rec := &recorder{}
	log := slog.New(rec)
	var l Limiter
	t0 := time.Unix(1000, 0)
	args := []any{"id", "s1"}
	if !l.LogAt(t0, log, slog.LevelWarn, "boom", args...) {
		t.Fatal("first line not logged")
	}
	for i := 0; i < 4; i++ {
		if l.LogAt(t0.Add(time.Duration(i+1)*time.Millisecond), log, slog.LevelWarn, "boom", args...) {
			t.Fatal("held-back line logged")
		}
	}
	if !l.LogAt(t0.Add(time.Second), log, slog.LevelError, "boom again", args...) {
		t.Fatal("line after the interval not logged")
	}
	if len(args) != 2 {
		t.Fatalf("caller's args modified: %v", args)
	}
	if len(rec.recs) != 2 {
		t.Fatalf("got %d records, want 2", len(rec.recs))
	}
	r0, r1 := rec.recs[0], rec.recs[1]
	if r0.Message != "boom" || r0.Level != slog.LevelWarn {
		t.Fatalf("first record: %v %q", r0.Level, r0.Message)
	}
	if a := attrs(r0); a["id"] != "s1" || a["suppressed"] != nil {
		t.Fatalf("first record attrs: %v (no suppressed wanted)", a)
	}
	if r1.Message != "boom again" || r1.Level != slog.LevelError {
		t.Fatalf("second record: %v %q", r1.Level, r1.Message)
	}
	if a := attrs(r1); a["id"] != "s1" || a["suppressed"] != int64(4) {
		t.Fatalf("second record attrs: %v (suppressed=4 wanted)", a)
	}
}

func TestLimiterHeldBackDoesNotAllocate(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	l.Allow(t0)
	log := slog.New(&recorder{})
	if n := testing.AllocsPerRun(100, func() { l.Allow(t0) }); n != 0 {
		t.Fatalf("Allow allocates %v times on the held-back path", n)
	}
	if n := testing.AllocsPerRun(100, func() { l.LogAt(t0, log, slog.LevelWarn, "x") }); n != 0 {
		t.Fatalf("LogAt allocates %v times on the held-back path", n)
	}
}

func TestLimiterConcurrent(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 1000; i++ {
				if ok, _ := l.Allow(t0); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if allowed != 1 {
		t.Fatalf("allowed %d, want 1", allowed)
	}
	if n := l.Flush(); n != 7999 {
		t.Fatalf("held %d, want 7999", n)
	}
}
