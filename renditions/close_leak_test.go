package renditions

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
)

// Set.Close with one rendition watched (a reader blocked on its stream)
// and one lingering without viewers: both ffmpeg processes are gone, the
// reader sees its stream closed, and every goroutine (runners, feeders,
// ffmpeg output readers, stall watchers) has ended.
func TestCloseLeaksSet(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	leaktest.Check(t)
	src, stop := startSource(t)
	defer stop()
	set := New("cam", src, Config{Linger: time.Minute}, nil)
	watched, release, err := set.Acquire(context.Background(), media.CodecH264)
	if err != nil {
		t.Fatal(err)
	}
	_, releaseVP8, err := set.Acquire(context.Background(), media.CodecVP8)
	if err != nil {
		t.Fatal(err)
	}
	releaseVP8() // lingers for a minute
	sub, err := watched.Subscribe("reader", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	readerDone := make(chan error, 1)
	got := make(chan int, 1)
	go func() {
		buf := make([]*media.Unit, 32)
		n := 0
		for {
			k, err := sub.Read(context.Background(), buf)
			if err != nil {
				got <- n
				readerDone <- err
				return
			}
			n += k
		}
	}()
	stats := set.Stats()
	if len(stats) != 2 {
		t.Fatalf("stats %+v, want 2 renditions", stats)
	}
	var pids []int
	for _, s := range stats {
		pids = append(pids, s.Pid)
	}
	time.Sleep(time.Second) // let units flow to the reader

	start := time.Now()
	set.Close()
	took := time.Since(start)
	select {
	case err := <-readerDone:
		if !errors.Is(err, media.ErrClosed) {
			t.Errorf("reader ended with %v, want media.ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reader of a rendition still blocked 10 s after Set.Close")
	}
	units := <-got
	if units == 0 {
		t.Error("the reader got no unit from the rendition before Close")
	}
	for _, pid := range pids {
		if pid == 0 || syscall.Kill(pid, 0) == nil {
			t.Errorf("ffmpeg %d still running after Set.Close", pid)
		}
	}
	if n := len(set.Stats()); n != 0 {
		t.Errorf("%d renditions listed after Close", n)
	}
	release() // after Close: no effect
	set.Close()
	if _, _, err := set.Acquire(context.Background(), media.CodecH264); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close: %v, want ErrClosed", err)
	}
	t.Logf("Set.Close with one watched and one lingering rendition (ffmpeg pids %v) returned in %v; reader had %d units",
		pids, took.Round(time.Millisecond), units)
}
