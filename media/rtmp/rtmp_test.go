package rtmp

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/rtmp/rtmptest"
)

// play runs src in the background and tallies d of media from the first
// keyframe.
func play(t *testing.T, src *Source, d time.Duration) (childtest.Tally, *childtest.Running) {
	t.Helper()
	r := childtest.Start(t, src, 0)
	ctx, cancel := context.WithTimeout(r.Ctx, 20*time.Second)
	defer cancel()
	return childtest.CountFor(ctx, t, r.Stream, d), r
}

// The server pulls RTMP itself: H.264 passes through untouched (the SDP
// SPS is the publisher's), AAC becomes Opus through an ffmpeg that reads
// only stdin, and neither the password nor the token reaches it.
func TestPullH264AndAACThroughStdin(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	const pass, token = "Rtmp-Pa55-pull", "tok-Secret-77"
	srv := rtmptest.Start(t, rtmptest.Options{User: "pub", Pass: pass, Token: token})
	t.Setenv("ICEY_SOURCE", srv.URL("cam"))
	t.Setenv("ICEY_AUTH_TOKEN", "rtmp-env-token")
	src, err := New(Config{URL: srv.URL("cam"), TranscodeAudio: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := src.String(); strings.Contains(s, pass) || strings.Contains(s, token) {
		t.Fatalf("String() = %s", s)
	}
	tl, r := play(t, src, 3*time.Second)
	t.Logf("%+v in 3 s", tl)
	if tl.AUs < 50 || tl.Keyframes < 2 || tl.Audio < 75 { // a connect-time backlog can add more
		t.Fatalf("got %+v in 3 s, want ~75 AUs, 3 keyframes, ~150 Opus packets", tl)
	}
	tr := r.Stream.Tracks()
	if !bytes.Equal(tr.Video.SPS, srv.SPS()) {
		t.Error("video SPS differs from the publisher's: not a pass-through")
	}
	if tr.Audio == nil || tr.Audio.Codec != media.CodecOpus {
		t.Errorf("audio %+v", tr.Audio)
	}
	if srv.Played.Load() == 0 {
		t.Fatal("server saw no authenticated player")
	}
	pid := int(src.audioPid.Load())
	childtest.CheckChild(t, pid, pass, token, "pub:", "rtmp://", srv.Addr(), "rtmp-env-token", "ICEY_")
	// The only ffmpeg is the audio pipe: video is not re-encoded.
	for _, cp := range childtest.FFmpegs("") {
		if cp.Pid != pid {
			t.Errorf("another ffmpeg runs: %q", cp.Cmdline)
		}
	}
	r.Stop(t)
	if !childtest.Gone(pid) {
		t.Errorf("ffmpeg %d not reaped", pid)
	}
}

// Without TranscodeAudio (no ffmpeg): H.264 plays, AAC is dropped with a
// warning, and no child process is started.
func TestPullVideoOnlyWithoutFFmpeg(t *testing.T) {
	testenv.CheckGoroutines(t)
	srv := rtmptest.Start(t, rtmptest.Options{Token: "t1"})
	src, err := New(Config{URL: srv.URL("cam")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tl, r := play(t, src, 2*time.Second)
	if tl.AUs < 30 || tl.Audio != 0 || r.Stream.Tracks().Audio != nil {
		t.Fatalf("got %+v, audio track %+v", tl, r.Stream.Tracks().Audio)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "MPEG4Audio dropped") {
		t.Errorf("warnings %q", w)
	}
	for _, cp := range childtest.FFmpegs("") {
		t.Errorf("ffmpeg runs: %q", cp.Cmdline)
	}
}

func TestPullFailures(t *testing.T) {
	testenv.CheckGoroutines(t)
	srv := rtmptest.Start(t, rtmptest.Options{User: "pub", Pass: "right-pa55", Token: "tok"})
	for _, tc := range []struct{ name, url string }{
		{"wrong password", srv.URLWith("cam", "pub", "wr0ng-pa55", "tok")},
		{"wrong token", srv.URLWith("cam", "pub", "right-pa55", "wr0ng-tok")},
		{"refused", "rtmp://pub:wr0ng-pa55@127.0.0.1:1/live/cam"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := New(Config{URL: tc.url, DialTimeout: 3 * time.Second, ReadTimeout: 3 * time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = childtest.RunErr(t, src, 15*time.Second)
			if !errors.Is(err, media.ErrSourceUnavailable) || strings.Contains(err.Error(), "wr0ng") {
				t.Fatalf("Run = %v, want ErrSourceUnavailable without secrets", err)
			}
		})
	}
}

func TestNewAndURLMapping(t *testing.T) {
	for _, bad := range []string{"http://h/x", "rtmp://", "rtsp://h/x"} {
		if _, err := New(Config{URL: bad}, nil); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
	s, err := New(Config{URL: "rtmp://u:p@h:1935/live/cam?token=abc"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.u.Path != "/live" || s.u.Fragment != "cam?token=abc" || s.String() != "rtmp://h:1935/live/cam" {
		t.Errorf("mapped %s (path %q fragment %q), String %s", s.u.Redacted(), s.u.Path, s.u.Fragment, s.String())
	}
}
