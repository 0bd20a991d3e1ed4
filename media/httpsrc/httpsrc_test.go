package httpsrc

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/transcode"
)

// The server pulls the HTTP URL itself and feeds ffmpeg's stdin: ffmpeg's
// command line is only pipe:0, its environment has no secret, and the
// stream delivers H.264 access units and Opus.
func TestFeedThroughFFmpegStdin(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	const pass = "Http-Pa55-feed"
	live := childtest.ServeLiveTS(t, "viewer", pass)
	t.Setenv("ICEY_SOURCE", live.URL())
	t.Setenv("ICEY_TURN_SECRET", "feed-turn-secret")

	f, err := New(live.URL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(f.String(), pass) {
		t.Fatalf("String() = %s", f)
	}
	src, err := transcode.New(transcode.Config{Input: live.URL(), Kind: transcode.KindURL, Feed: f.Feed}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()

	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatal(err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var aus, keys, audio int
	var checked bool
	buf := make([]*media.Packet, 64)
	for aus < 50 || audio < 50 {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("after %d AUs, %d audio: %v", aus, audio, err)
		}
		for _, p := range buf[:n] {
			switch {
			case p.Kind == media.KindAudio:
				audio++
			case p.Keyframe:
				keys++
			}
			if p.Kind == media.KindVideo && p.RTP.Marker {
				aus++
			}
		}
		if !checked {
			for _, pid := range childtest.Descendants(pidOfSelf()) {
				p, err := childtest.Read(pid)
				if err != nil || p.Exe() != "ffmpeg" || !bytes.Contains([]byte(strings.Join(p.Cmdline, " ")), []byte("-i pipe:0")) {
					continue // the test server's own ffmpeg, or gone
				}
				t.Logf("ffmpeg %d: %q", pid, p.Cmdline)
				if leaks := p.Leaks(pass, "viewer:", "http://", "feed-turn-secret", "ICEY_"); len(leaks) > 0 {
					t.Fatal(leaks)
				}
				checked = true
			}
		}
	}
	if !checked {
		t.Fatal("no ffmpeg child reading pipe:0 was found")
	}
	if keys == 0 || live.Authorized.Load() == 0 {
		t.Fatalf("keyframes %d, authorized requests %d", keys, live.Authorized.Load())
	}
	tr := st.Tracks()
	if tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("audio %+v", tr.Audio)
	}
	t.Logf("%d AUs (%d keyframes), %d Opus packets", aus, keys, audio)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

func TestFeedErrors(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass = "Http-Pa55-err"
	live := childtest.ServeLiveTS(t, "viewer", pass)
	for _, tc := range []struct{ name, url, want string }{
		{"wrong password", live.URLWithCredentials("viewer", "wr0ng-pa55"), "401"},
		{"refused", "http://viewer:wr0ng-pa55@127.0.0.1:1/x.ts", "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := New(tc.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			var sink bytes.Buffer
			err = f.Feed(context.Background(), &sink)
			t.Logf("Feed: %v", err)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "wr0ng-pa55") {
				t.Fatalf("Feed = %v, want %q without the password", err, tc.want)
			}
		})
	}
	for _, bad := range []string{"ftp://h/x", "http://", "rtsp://h/x"} {
		if _, err := New(bad, nil); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

func pidOfSelf() int { return os.Getpid() }
