package media

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// scriptSource is a test Source whose runs follow a script.
type scriptSource struct {
	runs   atomic.Int32
	script func(ctx context.Context, st Writer, run int) error
}

func (s *scriptSource) Run(ctx context.Context, st Writer) error {
	return s.script(ctx, st, int(s.runs.Add(1)))
}
func (s *scriptSource) Kind() string   { return "test" }
func (s *scriptSource) String() string { return "test://source" }

// stateLog records OnStateChange calls.
type stateLog struct {
	mu     sync.Mutex
	states []SourceState
	errs   []error
}

func (l *stateLog) on(s SourceState, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states = append(l.states, s)
	l.errs = append(l.errs, err)
}

func (l *stateLog) get() []SourceState {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]SourceState(nil), l.states...)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func writeGOP(st Writer, from time.Duration, n int) {
	for i := 0; i < n; i++ {
		au := [][]byte{slice(200)}
		if i == 0 {
			au = [][]byte{testSPS, testPPS, idr(500)}
		}
		st.WriteH264(from+time.Duration(i)*frame30, au)
	}
}

func startSupervisor(t *testing.T, sv *Supervisor) (cancel func() error) {
	ctx, cancelCtx := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() {
			cancelCtx()
			err = <-done
		})
		return err
	}
	t.Cleanup(func() { stop() })
	return stop
}

const secretErr = "dial rtsp://admin:hunter2@127.0.0.1:1/cam: connection refused"

// Failures are retried with Discontinuity in between: states go up ->
// reconnecting -> up, errors are redacted, timestamps stay continuous.
func TestSupervisorReconnect(t *testing.T) {
	checkLeaks(t)
	st := NewStream(StreamConfig{Name: "cam"}, nil)
	defer st.Close()
	sub, _ := func() (*Subscriber, error) {
		st.SetTracks(Tracks{Video: &VideoParams{}})
		return st.Subscribe("v", SubscribeOptions{QueuePackets: 4096})
	}()
	var log stateLog
	var sv *Supervisor
	var retryIn []time.Duration
	src := &scriptSource{script: func(ctx context.Context, st Writer, run int) error {
		retryIn = append(retryIn, sv.Status().RetryIn)
		st.SetTracks(Tracks{Video: &VideoParams{}})
		switch run {
		case 1:
			writeGOP(st, 5*time.Second, 10) // a source timeline not at 0
			return fmt.Errorf("%w: %s", ErrSourceUnavailable, secretErr)
		case 2:
			return fmt.Errorf("%w: %s", ErrSourceUnavailable, secretErr)
		default:
			writeGOP(st, 0, 10)
			<-ctx.Done()
			return ctx.Err()
		}
	}}
	sv = NewSupervisor(src, st, SupervisorConfig{MinBackoff: 20 * time.Millisecond, MaxBackoff: time.Second, OnStateChange: log.on}, nil)
	if s := sv.Status(); s.State != SourceStarting {
		t.Fatalf("initial state %s", s.State)
	}
	stop := startSupervisor(t, sv)
	// OnStateChange runs after the state is stored: wait for its third call too.
	waitFor(t, "third run up", func() bool {
		return src.runs.Load() == 3 && sv.Status().State == SourceUp && len(log.get()) == 3
	})

	s := sv.Status()
	if s.Reconnects != 2 || s.Failed {
		t.Fatalf("status %+v", s)
	}
	if strings.Contains(s.LastError, "hunter2") || strings.Contains(s.LastError, "admin") ||
		!strings.Contains(s.LastError, "rtsp://127.0.0.1:1/cam") {
		t.Fatalf("LastError not redacted: %q", s.LastError)
	}
	if got := fmt.Sprint(log.get()); got != "[up reconnecting up]" {
		t.Fatalf("state changes %s", got)
	}
	log.mu.Lock()
	rerr := log.errs[1]
	log.mu.Unlock()
	if !errors.Is(rerr, ErrSourceUnavailable) || strings.Contains(rerr.Error(), "hunter2") {
		t.Fatalf("OnStateChange error %v", rerr)
	}
	// Backoff doubles: [min/2, min) then [min, 2min).
	if r := retryIn[1]; r < 10*time.Millisecond || r >= 20*time.Millisecond {
		t.Fatalf("first backoff %v", r)
	}
	if r := retryIn[2]; r < 20*time.Millisecond || r >= 40*time.Millisecond {
		t.Fatalf("second backoff %v", r)
	}
	// The restarted run's pts 0 continues one frame after run 1's last AU.
	aus := depacketize(t, drain(t, sub), 1200)
	if len(aus) != 20 {
		t.Fatalf("%d AUs", len(aus))
	}
	for i := 1; i < len(aus); i++ {
		if d := aus[i].ts - aus[i-1].ts; d != 3000 {
			t.Fatalf("AU %d: timestamp step %d across restart, want 3000", i, d)
		}
	}
	if ss := st.Stats(); ss.State != SourceUp || ss.Reconnects != 2 || ss.LastError != s.LastError {
		t.Fatalf("stream stats do not reflect the supervisor: %+v", ss)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run returned %v", err)
	}
	if got := fmt.Sprint(log.get()); got != "[up reconnecting up stopped]" {
		t.Fatalf("state changes %s", got)
	}
	if sv.Status().State != SourceStopped {
		t.Fatal("not stopped")
	}
}

// Backoff doubles up to MaxBackoff, and a run that delivered media for
// StableAfter resets it.
func TestSupervisorBackoff(t *testing.T) {
	checkLeaks(t)
	st := NewStream(StreamConfig{}, nil)
	defer st.Close()
	var sv *Supervisor
	var mu sync.Mutex
	var retryIn []time.Duration
	var starts []time.Time
	src := &scriptSource{script: func(ctx context.Context, st Writer, run int) error {
		mu.Lock()
		retryIn = append(retryIn, sv.Status().RetryIn)
		starts = append(starts, time.Now())
		mu.Unlock()
		switch run {
		case 6:
			st.SetTracks(Tracks{Video: &VideoParams{}})
			writeGOP(st, 0, 2)
			time.Sleep(80 * time.Millisecond) // stable for longer than StableAfter
		case 8:
			<-ctx.Done()
			return ctx.Err()
		}
		return ErrSourceUnavailable
	}}
	sv = NewSupervisor(src, st, SupervisorConfig{
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, StableAfter: 50 * time.Millisecond,
	}, nil)
	stop := startSupervisor(t, sv)
	waitFor(t, "run 8", func() bool { return src.runs.Load() == 8 })
	stop()

	ms := time.Millisecond
	want := [][2]time.Duration{ // jittered ranges [lo, hi) seen by runs 2..7
		{5 * ms, 10 * ms}, {10 * ms, 20 * ms}, {20 * ms, 40 * ms}, {20 * ms, 40 * ms}, {20 * ms, 40 * ms},
		{5 * ms, 10 * ms}, // reset by run 6
	}
	mu.Lock()
	defer mu.Unlock()
	for i, w := range want {
		r := retryIn[i+1]
		if r < w[0] || r >= w[1] {
			t.Errorf("run %d: backoff %v, want in [%v, %v)", i+2, r, w[0], w[1])
		}
		if gap := starts[i+1].Sub(starts[i]); gap < r {
			t.Errorf("run %d started %v after the previous one, before its backoff %v", i+2, gap, r)
		}
	}
}

// A source that keeps failing is reported Failed after GracePeriod.
func TestSupervisorGrace(t *testing.T) {
	checkLeaks(t)
	st := NewStream(StreamConfig{}, nil)
	defer st.Close()
	// Media flows once, then the source fails for good: the outage is
	// "reconnecting" (not failed) for the grace period, failed after it.
	src := &scriptSource{script: func(ctx context.Context, st Writer, run int) error {
		if run == 1 {
			st.SetTracks(Tracks{Video: &VideoParams{}})
			writeGOP(st, 0, 3)
			time.Sleep(20 * time.Millisecond)
		}
		return fmt.Errorf("%w: %s", ErrSourceUnavailable, secretErr)
	}}
	const grace = 300 * time.Millisecond
	sv := NewSupervisor(src, st, SupervisorConfig{
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, GracePeriod: grace,
	}, nil)
	stop := startSupervisor(t, sv)
	waitFor(t, "reconnecting", func() bool { s := sv.Status(); return s.State == SourceReconnecting && s.EverUp })
	// Failed exactly when the outage is older than the grace period.
	if s := sv.Status(); s.Failed != (time.Since(s.Since) > grace) && s.Failed {
		t.Fatalf("failed within the grace period: %+v", s)
	}
	waitFor(t, "failed", func() bool { return sv.Status().Failed })
	s := sv.Status()
	if s.State != SourceReconnecting || time.Since(s.Since) <= grace || s.Reconnects == 0 || !s.EverUp {
		t.Fatalf("status %+v", s)
	}
	if ss := st.Stats(); ss.State != SourceReconnecting || strings.Contains(ss.LastError, "hunter2") {
		t.Fatalf("stream stats %+v", ss)
	}
	stop()
	if s := sv.Status(); s.State != SourceStopped || s.Failed {
		t.Fatalf("after stop %+v", s)
	}
}

// A source that has never delivered media is failed from its first
// failure on: the grace period is for outages after media has flowed.
func TestSupervisorNeverUpFailsAtOnce(t *testing.T) {
	checkLeaks(t)
	st := NewStream(StreamConfig{}, nil)
	defer st.Close()
	src := &scriptSource{script: func(ctx context.Context, st Writer, run int) error {
		return fmt.Errorf("%w: %s", ErrSourceUnavailable, secretErr)
	}}
	sv := NewSupervisor(src, st, SupervisorConfig{
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond, GracePeriod: time.Hour,
	}, nil)
	stop := startSupervisor(t, sv)
	waitFor(t, "reconnecting", func() bool { return sv.Status().State == SourceReconnecting })
	if s := sv.Status(); !s.Failed || s.EverUp {
		t.Fatalf("never-up source within the grace period: %+v", s)
	}
	stop()
}

// A finite source that returns nil ends: not restarted, Run waits for ctx.
func TestSupervisorEnded(t *testing.T) {
	checkLeaks(t)
	st := NewStream(StreamConfig{}, nil)
	defer st.Close()
	var log stateLog
	src := &scriptSource{script: func(ctx context.Context, st Writer, run int) error {
		st.SetTracks(Tracks{Video: &VideoParams{}})
		writeGOP(st, 0, 3)
		return nil
	}}
	sv := NewSupervisor(src, st, SupervisorConfig{MinBackoff: time.Millisecond, OnStateChange: log.on}, nil)
	stop := startSupervisor(t, sv)
	waitFor(t, "ended", func() bool { return sv.Status().State == SourceEnded })
	if err := sv.Run(context.Background()); !errors.Is(err, ErrSupervisorRunning) {
		t.Fatalf("second Run: %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	if n := src.runs.Load(); n != 1 {
		t.Fatalf("ended source ran %d times", n)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(log.get()); got != "[up ended stopped]" {
		t.Fatalf("state changes %s", got)
	}
}

// A source stopped by ctx before any media: starting -> stopped.
func TestSupervisorStopWhileStarting(t *testing.T) {
	checkLeaks(t)
	st := NewStream(StreamConfig{}, nil)
	defer st.Close()
	var log stateLog
	started := make(chan struct{})
	src := &scriptSource{script: func(ctx context.Context, st Writer, run int) error {
		close(started)
		<-ctx.Done()
		return fmt.Errorf("%w: %w", ErrSourceUnavailable, ctx.Err())
	}}
	sv := NewSupervisor(src, st, SupervisorConfig{OnStateChange: log.on}, nil)
	stop := startSupervisor(t, sv)
	<-started
	if s := sv.Status(); s.State != SourceStarting {
		t.Fatalf("state %s", s.State)
	}
	stop()
	if got := fmt.Sprint(log.get()); got != "[stopped]" {
		t.Fatalf("state changes %s", got)
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"rtsp://admin:secret@10.0.0.5:554/live", "rtsp://10.0.0.5:554/live"},
		{`dial "rtsp://u:p@cam/x": refused`, `dial "rtsp://cam/x": refused`},
		{"rtsp://user:p@ss@host/path", "rtsp://host/path"},
		{"http://token@h and rtsp://a:b@c/d?x=1@2", "http://h and rtsp://c/d?x=1@2"},
		{"rtsp://host/path@notcreds", "rtsp://host/path@notcreds"},
		{"rtsp://host:554", "rtsp://host:554"},
		{"no url here: a@b", "no url here: a@b"},
		{"rtsp://u:p@h", "rtsp://h"},
		{"", ""},
	}
	for _, tc := range tests {
		if got := RedactURL(tc.in); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
