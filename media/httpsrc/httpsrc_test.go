package httpsrc

import (
	"bytes"
	"context"
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
	r := childtest.Start(t, src, 40*time.Second)
	var checked bool
	tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool {
		if !checked {
			for _, p := range childtest.FFmpegs("-i pipe:0") { // not the test server's own ffmpeg
				t.Logf("ffmpeg %d: %q", p.Pid, p.Cmdline)
				if leaks := p.Leaks(pass, "viewer:", "http://", "feed-turn-secret", "ICEY_"); len(leaks) > 0 {
					t.Fatal(leaks)
				}
				checked = true
			}
		}
		return tl.AUs >= 50 && tl.Audio >= 50
	})
	if !checked {
		t.Fatal("no ffmpeg child reading pipe:0 was found")
	}
	if tl.Keyframes == 0 || live.Authorized.Load() == 0 {
		t.Fatalf("keyframes %d, authorized requests %d", tl.Keyframes, live.Authorized.Load())
	}
	tr := r.Stream.Tracks()
	if tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Fatalf("audio %+v", tr.Audio)
	}
	t.Logf("%+v", tl)
	r.Stop(t)
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
