package childtest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/icey/icey-server/media"
)

// Running is one Run of a media.Source in the background, on its own
// Stream.
type Running struct {
	Stream *media.Stream
	// Ctx is the context Run was given; Cancel cancels it.
	Ctx    context.Context
	Cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Start runs src on a new Stream, with a deadline of timeout (none when
// 0). t.Cleanup cancels the run, waits up to 10 s for Run to return and
// closes the Stream.
func Start(t testing.TB, src media.Source, timeout time.Duration) *Running {
	t.Helper()
	st := media.NewStream(media.StreamConfig{Name: t.Name()}, nil)
	var ctx context.Context
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(context.Background(), timeout)
	} else {
		ctx, cancel = context.WithCancel(context.Background())
	}
	r := &Running{Stream: st, Ctx: ctx, Cancel: cancel, done: make(chan struct{})}
	go func() {
		r.err = src.Run(ctx, st)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		st.Close()
	})
	return r
}

// Done is closed when Run has returned.
func (r *Running) Done() <-chan struct{} { return r.done }

// Err is what Run returned; call it once Done is closed.
func (r *Running) Err() error { return r.err }

// Wait returns Run's error, failing the test if Run has not returned
// within d.
func (r *Running) Wait(t testing.TB, d time.Duration) error {
	t.Helper()
	select {
	case <-r.done:
		return r.err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s", d)
		return nil
	}
}

// Stop cancels the run and fails the test unless Run returns
// context.Canceled within 10 s.
func (r *Running) Stop(t testing.TB) {
	t.Helper()
	r.Cancel()
	if err := r.Wait(t, 10*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v, want context.Canceled", err)
	}
}

// RunErr runs src on a new Stream until it returns or timeout passes,
// logs and returns Run's error: for sources that must fail.
func RunErr(t testing.TB, src media.Source, timeout time.Duration) error {
	t.Helper()
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	err := src.Run(ctx, st)
	t.Logf("Run: %v", err)
	return err
}

// Tally counts what a subscriber to a Stream received.
type Tally struct {
	AUs       int // video access units
	Keyframes int // video keyframe access units
	Audio     int // audio packets
	// FirstKey is when the first keyframe arrived.
	FirstKey time.Time
}

// Count waits for st's tracks, subscribes (with the cached burst) and
// tallies every packet until stop, called before each read, returns true.
// A failed wait or read fails the test.
func Count(ctx context.Context, t testing.TB, st *media.Stream, stop func(Tally) bool) Tally {
	t.Helper()
	return count(ctx, t, st, false, stop)
}

// CountFor waits for st's tracks, subscribes live only (no cached burst)
// and tallies from the first keyframe for d: audio packets and access
// units before it are not counted. A failed wait or read fails the test.
func CountFor(ctx context.Context, t testing.TB, st *media.Stream, d time.Duration) Tally {
	t.Helper()
	return count(ctx, t, st, true, func(tl Tally) bool {
		return !tl.FirstKey.IsZero() && time.Since(tl.FirstKey) >= d
	})
}

func count(ctx context.Context, t testing.TB, st *media.Stream, live bool, stop func(Tally) bool) Tally {
	t.Helper()
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatalf("no tracks: %v", err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{NoCache: live})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var tl Tally
	buf := make([]*media.Unit, 64)
	for !stop(tl) {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("read after %+v: %v", tl, err)
		}
		for _, u := range buf[:n] {
			counting := !live || !tl.FirstKey.IsZero()
			switch {
			case u.Kind == media.KindAudio:
				if counting {
					tl.Audio += len(u.Packets)
				}
			case u.Keyframe:
				if tl.FirstKey.IsZero() {
					tl.FirstKey = time.Now()
				}
				tl.Keyframes++
			}
			if u.Kind == media.KindVideo && (!live || !tl.FirstKey.IsZero()) {
				tl.AUs++
			}
		}
	}
	return tl
}
