package httpsrc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/transcode"
)

// An HLS playlist behind basic authentication: its segments are separate
// requests, so ffmpeg opens the URL itself, from a private list file; the
// password is in neither its command line nor its environment, and every
// segment request carries the credentials.
func TestSourceHLSPlaylist(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	dir := t.TempDir()
	cmd := exec.Command(ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "6", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-g", "25", "-bf", "0",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod",
		filepath.Join(dir, "index.m3u8"))
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, b)
	}
	const user, pass = "viewer", "Hls-Pa55-list"
	var ok, rejected atomic.Int64
	files := http.FileServer(http.Dir(dir))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if u, p, good := r.BasicAuth(); !good || u != user || p != pass {
			rejected.Add(1)
			w.Header().Set("WWW-Authenticate", `Basic realm="hls"`)
			http.Error(w, "unauthorized", 401)
			return
		}
		ok.Add(1)
		if strings.HasSuffix(r.URL.Path, ".ts") {
			time.Sleep(500 * time.Millisecond) // keep ffmpeg running for the check
		}
		files.ServeHTTP(w, r)
	}))
	defer srv.Close()
	u, _ := url.Parse(srv.URL + "/index.m3u8")
	u.User = url.UserPassword(user, pass)
	src, err := NewSource(SourceConfig{URL: u.String(), Fallback: fallback(u.String()),
		Playlist: func() (media.Source, error) {
			return transcode.New(transcode.Config{Input: u.String(), Kind: transcode.KindURL}, nil)
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- src.Run(ctx, st) }()
	au, _, a := count(ctx, t, st, 25, 10)
	var found bool
	for _, pid := range childtest.Descendants(os.Getpid()) {
		p, err := childtest.Read(pid)
		if err != nil || p.Exe() != "ffmpeg" {
			continue
		}
		found = true
		t.Logf("ffmpeg: %q", p.Cmdline)
		if leaks := p.Leaks(pass, "viewer:", "m3u8", "ICEY_"); len(leaks) > 0 {
			t.Fatal(leaks)
		}
	}
	if !found {
		t.Fatal("no ffmpeg child found while the playlist played")
	}
	t.Logf("%d AUs, %d Opus packets; %d authorized requests, %d rejected", au, a, ok.Load(), rejected.Load())
	if ok.Load() < 3 {
		t.Errorf("only %d authorized requests: segments fetched without credentials?", ok.Load())
	}
	cancel()
	<-done
}
