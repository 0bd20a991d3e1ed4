package recordings

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
)

// A Clip written as intel's Clipper writes one: the ring's units, then
// live units from a goroutine reading a Subscriber; the reader ends when
// its Subscriber closes, Clip.Close finalizes a valid MP4 and nothing of
// the clip (its recorder and muxer) keeps a goroutine.
func TestCloseLeaksClip(t *testing.T) {
	leaktest.Check(t)
	c := clip(t, testpeer.ClipOptions{FPS: 25, GOP: 25, Seconds: 4})
	st := newStream(t, c, true)
	feed(st, c, 0, 2*time.Second, true, true, 0)
	store, err := OpenStore(StoreConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := store.CreateClip("cam", time.Now(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range st.Units(time.Second) {
		if err := cl.Write(u); err != nil {
			t.Fatal(err)
		}
	}
	sub, err := st.Subscribe("clip", media.SubscribeOptions{Live: true})
	if err != nil {
		t.Fatal(err)
	}
	writerDone := make(chan error, 1)
	go func() {
		writerDone <- sub.ReadBatches(context.Background(), func(units []*media.Unit) error {
			for _, u := range units {
				if err := cl.Write(u); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	feed(st, c, 2*time.Second, 3*time.Second, true, true, 0)
	deadline := time.Now().Add(10 * time.Second)
	for sub.Stats().Queued > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	sub.Close()
	select {
	case err := <-writerDone:
		if err != nil {
			t.Fatalf("clip writer: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("clip writer still reading 10 s after Subscriber.Close")
	}
	start := time.Now()
	res, err := cl.Close()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := cl.Close(); err != nil || again.Name != res.Name {
		t.Errorf("second Close: %+v %v, want the same result", again, err)
	}
	if err := cl.Write(st.Units(0)[0]); err != nil {
		t.Errorf("Write after Close: %v, want ignored", err)
	}
	p := checkFile(t, filepath.Join(store.Dir(), res.Name), []string{"h264", "opus"})
	if _, err := os.Stat(filepath.Join(store.Dir(), res.Name+".part")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf(".part left after Close: %v", err)
	}
	t.Logf("Clip.Close finalized %s: %.2f s, %d bytes, in %v", res.Name, p.duration(), res.Bytes, took.Round(time.Millisecond))
}
