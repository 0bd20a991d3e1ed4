package srt

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/srt/srttest"
)

type tally struct{ aus, keyframes, audio int }

func read(ctx context.Context, t *testing.T, st *media.Stream, d time.Duration) tally {
	t.Helper()
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatalf("no tracks: %v", err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var tl tally
	var first time.Time
	buf := make([]*media.Packet, 64)
	for first.IsZero() || time.Since(first) < d {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("read after %+v: %v", tl, err)
		}
		for _, p := range buf[:n] {
			switch {
			case p.Kind == media.KindAudio:
				if !first.IsZero() {
					tl.audio++
				}
			case p.Keyframe:
				if first.IsZero() {
					first = time.Now()
				}
				tl.keyframes++
			}
			if p.Kind == media.KindVideo && p.RTP.Marker && !first.IsZero() {
				tl.aus++
			}
		}
	}
	return tl
}

// SRT with a passphrase and a stream id: pulled by the server, H.264
// passes through, AAC becomes Opus through an ffmpeg that reads only
// stdin; neither secret reaches it.
func TestPullSRT(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	const pass, sid = "Srt-Passphrase-0123", "cam-key-4567"
	srv := srttest.Start(t, srttest.Options{StreamID: sid, Passphrase: pass})
	t.Setenv("ICEY_SOURCE", srv.URL())
	t.Setenv("ICEY_AUTH_TOKEN", "srt-env-token")
	src, err := New(Config{URL: srv.URL(), TranscodeAudio: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := src.String(); strings.Contains(s, pass) || strings.Contains(s, sid) {
		t.Fatalf("String() = %s", s)
	}
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()
	tl := read(ctx, t, st, 3*time.Second)
	t.Logf("%+v in 3 s", tl)
	if tl.aus < 50 || tl.keyframes < 2 || tl.audio < 75 {
		t.Fatalf("got %+v in 3 s", tl)
	}
	if a := st.Tracks().Audio; a == nil || a.Codec != media.CodecOpus {
		t.Fatalf("audio %+v", a)
	}
	pid := int(src.audioPid.Load())
	p, err := childtest.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	if leaks := p.Leaks(pass, sid, "srt://", srv.Addr(), "srt-env-token", "ICEY_"); len(leaks) > 0 {
		t.Fatal(leaks)
	}
	for _, c := range childtest.Descendants(os.Getpid()) {
		if cp, err := childtest.Read(c); err == nil && cp.Exe() == "ffmpeg" && c != pid && strings.Contains(strings.Join(cp.Cmdline, " "), "pipe:0") {
			t.Errorf("another ffmpeg reads stdin: %q", cp.Cmdline)
		}
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

// Rejected handshakes fail the run without the secrets in the error.
//
// Known library leak: gosrt v0.9.0's Dial does not stop its connection
// timeout timer when the handshake is rejected, so after ConnectionTimeout
// the timer's goroutine blocks forever on an unread channel (one per
// rejected attempt; the supervisor's backoff bounds the rate). The test
// waits for those timers and checks there is no more than one per attempt.
func TestPullSRTFailures(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass, sid = "Srt-Passphrase-0123", "cam-key-4567"
	srv := srttest.Start(t, srttest.Options{StreamID: sid, Passphrase: pass})
	before := gosrtTimers()
	for _, tc := range []struct{ name, url string }{
		{"wrong passphrase", srv.URLWith(sid, "Wr0ng-Passphrase-99")},
		{"wrong stream id", srv.URLWith("Wr0ng-id", pass)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, err := New(Config{URL: tc.url, DialTimeout: time.Second}, nil)
			if err != nil {
				t.Fatal(err)
			}
			st := media.NewStream(media.StreamConfig{}, nil)
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err = src.Run(ctx, st)
			t.Logf("Run: %v", err)
			if !errors.Is(err, media.ErrSourceUnavailable) || strings.Contains(err.Error(), "Wr0ng") || strings.Contains(err.Error(), pass) {
				t.Fatalf("Run = %v", err)
			}
		})
	}
	time.Sleep(1500 * time.Millisecond) // let gosrt's timeout timers fire
	leaked := gosrtTimers() - before
	t.Logf("goroutines left by gosrt after 2 rejected dials: %d", leaked)
	if leaked > 2 {
		t.Errorf("%d gosrt goroutines left after 2 rejected dials", leaked)
	}
	for _, bad := range []string{"srt://", "srt://h:1?mode=listener", "http://h/x"} {
		if _, err := New(Config{URL: bad}, nil); err == nil {
			t.Errorf("New(%q) accepted", bad)
		}
	}
}

// gosrtTimers counts goroutines blocked in gosrt's dial timeout timer.
func gosrtTimers() int {
	buf := make([]byte, 4<<20)
	n := 0
	for _, g := range strings.Split(string(buf[:runtime.Stack(buf, true)]), "\n\n") {
		if strings.Contains(g, "gosrt.Dial.func") {
			n++
		}
	}
	return n
}
