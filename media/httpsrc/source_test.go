package httpsrc

import (
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/transcode"
)

func fallback(url string) func(FeedFunc) (media.Source, error) {
	return func(feed FeedFunc) (media.Source, error) {
		return transcode.New(transcode.Config{Input: url, Kind: transcode.KindURL, Feed: feed}, nil)
	}
}

// MPEG-TS with H.264 over HTTP: demuxed in-process, video passes through
// (no libx264), AAC goes to an ffmpeg that reads only stdin.
func TestSourcePassesH264Through(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	const pass = "Http-Pa55-native"
	live := childtest.ServeLiveTS(t, "viewer", pass)
	t.Setenv("ICEY_AUTH_TOKEN", "native-env-token")
	src, err := NewSource(SourceConfig{URL: live.URL(), TranscodeAudio: true, Fallback: fallback(live.URL())}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := childtest.Start(t, src, 40*time.Second)
	tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool { return tl.AUs >= 50 && tl.Audio >= 75 })
	t.Logf("%+v", tl)
	if src.fellBack.Load() {
		t.Fatal("fell back to a transcode for H.264 in MPEG-TS")
	}
	ps := childtest.FFmpegs("-i pipe:0")
	if len(ps) != 1 || strings.Contains(strings.Join(ps[0].Cmdline, " "), "libx264") {
		t.Fatalf("want one audio-only ffmpeg, got %v", ps)
	}
	if leaks := ps[0].Leaks(pass, "viewer:", "http://", "native-env-token", "ICEY_"); len(leaks) > 0 {
		t.Fatal(leaks)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "AAC is transcoded") {
		t.Errorf("warnings %q", w)
	}
	r.Cancel()
	r.Wait(t, 10*time.Second)
}

// MPEG-2 video in MPEG-TS: the same response is handed to a full
// transcode through ffmpeg's stdin, and still no secret reaches it.
func TestSourceFallsBackToTranscode(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	const pass = "Http-Pa55-mpeg2"
	live := childtest.ServeLiveTS(t, "viewer", pass, "-c:v", "mpeg2video", "-q:v", "5")
	src, err := NewSource(SourceConfig{URL: live.URL(), TranscodeAudio: true, Fallback: fallback(live.URL())}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := childtest.Start(t, src, 40*time.Second)
	tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool { return tl.AUs >= 50 && tl.Audio >= 50 })
	t.Logf("%+v", tl)
	if !src.fellBack.Load() || live.Authorized.Load() != 1 {
		t.Fatalf("fell back %v, GETs %d: want the one response transcoded", src.fellBack.Load(), live.Authorized.Load())
	}
	ps := childtest.FFmpegs("-i pipe:0")
	if len(ps) != 1 || !strings.Contains(strings.Join(ps[0].Cmdline, " "), "libx264") {
		t.Fatalf("want one transcoding ffmpeg, got %v", ps)
	}
	if leaks := ps[0].Leaks(pass, "viewer:", "http://", "ICEY_"); len(leaks) > 0 {
		t.Fatal(leaks)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "transcoding with ffmpeg") {
		t.Errorf("warnings %q", w)
	}
	r.Cancel()
	r.Wait(t, 10*time.Second)
}
