package httpsrc

import (
	"net/http"
	"path/filepath"
	"strings"
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
	testenv.RequireTool(t, "ffmpeg")
	testenv.CheckGoroutines(t)
	dir := t.TempDir()
	childtest.WriteClip(t, filepath.Join(dir, "index.m3u8"), 48000,
		"-t", "6", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-g", "25", "-bf", "0",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2", "-f", "hls", "-hls_time", "1", "-hls_playlist_type", "vod")
	const user, pass = "viewer", "Hls-Pa55-list"
	files := http.FileServer(http.Dir(dir))
	srv := childtest.Serve(t, user, pass, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, ".ts") {
			time.Sleep(500 * time.Millisecond) // keep ffmpeg running for the check
		}
		files.ServeHTTP(w, r)
	}))
	u := srv.URLFor("/index.m3u8", user, pass)
	src, err := NewSource(SourceConfig{URL: u, Fallback: fallback(u),
		Playlist: func() (media.Source, error) {
			return transcode.New(transcode.Config{Input: u, Kind: transcode.KindURL}, nil)
		}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := childtest.Start(t, src, 40*time.Second)
	tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool { return tl.AUs >= 25 && tl.Audio >= 10 })
	var found bool
	for _, p := range childtest.FFmpegs("") {
		found = true
		t.Logf("ffmpeg: %q", p.Cmdline)
		if leaks := p.Leaks(pass, "viewer:", "m3u8", "ICEY_"); len(leaks) > 0 {
			t.Fatal(leaks)
		}
	}
	if !found {
		t.Fatal("no ffmpeg child found while the playlist played")
	}
	t.Logf("%+v; %d authorized requests, %d rejected", tl, srv.Authorized.Load(), srv.Rejected.Load())
	if srv.Authorized.Load() < 3 {
		t.Errorf("only %d authorized requests: segments fetched without credentials?", srv.Authorized.Load())
	}
	r.Cancel()
	r.Wait(t, 10*time.Second)
}
