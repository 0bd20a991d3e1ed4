package recordings

import (
	"math"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
)

// A clip written from the ring's units (starting mid-GOP: the muxer waits
// for the keyframe) is a finalized, valid MP4 of H.264 and Opus that
// starts on a keyframe; no .part is left.
func TestClipFromRing(t *testing.T) {
	c := clip(t, testpeer.ClipOptions{FPS: 25, GOP: 25, Seconds: 4})
	st := newStream(t, c, true)
	feed(st, c, 0, 3*time.Second, true, true, 0)
	store, err := OpenStore(StoreConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	cl, err := store.CreateClip("cam", start, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cl.Name() != FileName("cam", start) {
		t.Fatalf("name %q", cl.Name())
	}
	if _, err := os.Stat(filepath.Join(store.Dir(), cl.Name()+".part")); err != nil {
		t.Fatalf("no .part while writing: %v", err)
	}
	units := st.Units(1200 * time.Millisecond) // from the keyframe at 1 s
	if len(units) == 0 || !units[0].Keyframe {
		t.Fatalf("ring: %d units", len(units))
	}
	for _, u := range units[1:] { // skip the keyframe: the clip starts at 2 s
		if err := cl.Write(u); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cl.Close()
	if err != nil {
		t.Fatal(err)
	}
	if res.Name != cl.Name() || res.Bytes <= 0 || len(res.More) != 0 {
		t.Fatalf("result %+v", res)
	}
	file := filepath.Join(store.Dir(), res.Name)
	p := checkFile(t, file, []string{"h264", "opus"})
	if d := p.duration(); math.Abs(d-1) > 0.2 {
		t.Errorf("duration %.3f s, want about 1 s (2 s to 3 s)", d)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() != res.Bytes {
		t.Errorf("size: %v %v, result %d", fi, err, res.Bytes)
	}
	if m, _ := filepath.Glob(filepath.Join(store.Dir(), "*.part")); len(m) != 0 {
		t.Errorf(".part left: %v", m)
	}
	if store.Active(res.Name) {
		t.Error("still active")
	}
}

// A clip given nothing recordable is discarded: no file, no .part.
func TestClipNothingDiscarded(t *testing.T) {
	c := clip(t, testpeer.ClipOptions{FPS: 25, GOP: 25, Seconds: 4})
	st := newStream(t, c, true)
	store, err := OpenStore(StoreConfig{Dir: t.TempDir()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	cl, err := store.CreateClip("cam", start, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A second clip in the same millisecond takes the next one.
	cl2, err := store.CreateClip("cam", start, st, nil)
	if err != nil || cl2.Name() == cl.Name() {
		t.Fatalf("second clip: %v %v", cl2, err)
	}
	_ = cl.Write(&media.Unit{Kind: media.KindAudio, Codec: media.CodecOpus, Payload: [][]byte{c.Opus[0]}})
	for _, x := range []*Clip{cl, cl2} {
		res, err := x.Close()
		if err != nil || res.Name != "" {
			t.Fatalf("close: %+v %v", res, err)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(store.Dir(), "*")); len(m) != 0 {
		t.Errorf("left behind: %v", m)
	}
}
