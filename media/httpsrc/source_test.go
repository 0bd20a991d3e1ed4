package httpsrc

import (
	"bytes"
	"context"
	"os"
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

// ffmpegs lists this process's ffmpeg children that read stdin.
func ffmpegs(t *testing.T) []childtest.Proc {
	var out []childtest.Proc
	for _, pid := range childtest.Descendants(os.Getpid()) {
		p, err := childtest.Read(pid)
		if err == nil && p.Exe() == "ffmpeg" && strings.Contains(strings.Join(p.Cmdline, " "), "-i pipe:0") {
			out = append(out, p)
		}
	}
	return out
}

func count(ctx context.Context, t *testing.T, st *media.Stream, aus, audio int) (int, int, int) {
	t.Helper()
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var a, k, au int
	buf := make([]*media.Packet, 64)
	for au < aus || a < audio {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("after %d AUs, %d audio: %v", au, a, err)
		}
		for _, p := range buf[:n] {
			switch {
			case p.Kind == media.KindAudio:
				a++
			case p.Keyframe:
				k++
			}
			if p.Kind == media.KindVideo && p.RTP.Marker {
				au++
			}
		}
	}
	return au, k, a
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
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()
	au, k, a := count(ctx, t, st, 50, 75)
	t.Logf("%d AUs, %d keyframe packets, %d Opus packets", au, k, a)
	if src.fellBack.Load() {
		t.Fatal("fell back to a transcode for H.264 in MPEG-TS")
	}
	ps := ffmpegs(t)
	if len(ps) != 1 || strings.Contains(strings.Join(ps[0].Cmdline, " "), "libx264") {
		t.Fatalf("want one audio-only ffmpeg, got %v", ps)
	}
	if leaks := ps[0].Leaks(pass, "viewer:", "http://", "native-env-token", "ICEY_"); len(leaks) > 0 {
		t.Fatal(leaks)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "AAC is transcoded") {
		t.Errorf("warnings %q", w)
	}
	cancel()
	<-done
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
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()
	au, k, a := count(ctx, t, st, 50, 50)
	t.Logf("%d AUs, %d keyframe packets, %d Opus packets", au, k, a)
	if !src.fellBack.Load() || live.Authorized.Load() != 1 {
		t.Fatalf("fell back %v, GETs %d: want the one response transcoded", src.fellBack.Load(), live.Authorized.Load())
	}
	ps := ffmpegs(t)
	if len(ps) != 1 || !bytes.Contains([]byte(strings.Join(ps[0].Cmdline, " ")), []byte("libx264")) {
		t.Fatalf("want one transcoding ffmpeg, got %v", ps)
	}
	if leaks := ps[0].Leaks(pass, "viewer:", "http://", "ICEY_"); len(leaks) > 0 {
		t.Fatal(leaks)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "transcoding with ffmpeg") {
		t.Errorf("warnings %q", w)
	}
	cancel()
	<-done
}
