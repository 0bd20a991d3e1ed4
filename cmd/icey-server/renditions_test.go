package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media/childtest"
)

// child is a descendant process of the server.
type child struct {
	pid  int
	argv []string
}

// descendants lists the processes below pid with their argv.
func descendants(t *testing.T, pid int) []child {
	t.Helper()
	var out []child
	for _, n := range childtest.Descendants(pid) {
		if p, err := childtest.Read(n); err == nil {
			out = append(out, child{pid: n, argv: p.Cmdline})
		}
	}
	return out
}

// vp8Children are the server's ffmpeg children encoding VP8.
func vp8Children(t *testing.T, p *proc) []child {
	var out []child
	for _, c := range descendants(t, p.cmd.Process.Pid) {
		if strings.Contains(strings.Join(c.argv, " "), "libvpx") {
			out = append(out, c)
		}
	}
	return out
}

func renditionsOf(t *testing.T, p *proc, path string) []map[string]any {
	var out []map[string]any
	rs, _ := statusPaths(t, p)[path]["renditions"].([]any)
	for _, r := range rs {
		out = append(out, r.(map[string]any))
	}
	return out
}

// Ten VP8 viewers of one H.264 camera (with a password and AAC audio):
// exactly one VP8 ffmpeg runs for all of them; no child process of the
// server has the camera's password in its argv; killing the ffmpeg
// mid-stream is survived (restarted, counted, every viewer's frames flow
// again within seconds); after the last viewer leaves, it stops.
func TestTenVP8ViewersOneTranscode(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass = "Cam-Secret-9f3"
	cam := rtsptest.Start(t, rtsptest.Options{User: "admin", Pass: pass, Audio: rtsptest.AudioAAC, FPS: 25})
	cfg, _ := json.Marshal(map[string]any{
		"webrtc": map[string]any{"maxPendingPerClient": 64},
		"paths":  map[string]any{"cam": map[string]any{"source": cam.URL("cam")}},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 30*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var (
		mu      sync.Mutex
		viewers []*testpeer.Viewer
		wg      sync.WaitGroup
		errs    = make(chan error, 10)
	)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := testpeer.Connect(ctx, p.base+"/cam/whep", testpeer.Options{VideoCodecs: []string{testpeer.CodecVP8}, Timeout: 30 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			mu.Lock()
			viewers = append(viewers, v)
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	defer func() {
		for _, v := range viewers {
			v.Close()
		}
	}()
	for err := range errs {
		t.Fatal(err)
	}
	for _, v := range viewers {
		if err := v.WaitFrames(25, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		if v.VideoCodec() != "video/VP8" {
			t.Fatalf("viewer got %s", v.VideoCodec())
		}
	}
	vp8 := vp8Children(t, p)
	if len(vp8) != 1 {
		t.Fatalf("%d VP8 ffmpeg processes for 10 viewers, want 1", len(vp8))
	}
	if rs := renditionsOf(t, p, "cam"); len(rs) != 1 || rs[0]["codec"] != "VP8" || rs[0]["viewers"] != float64(10) {
		t.Fatalf("renditions %v", rs)
	}
	all := descendants(t, p.cmd.Process.Pid)
	for _, c := range all {
		if strings.Contains(strings.Join(c.argv, " "), pass) {
			t.Fatalf("child %d has the camera password in its argv: %q", c.pid, c.argv)
		}
	}
	t.Logf("%d children (rendition + AAC→Opus), none with the password in argv", len(all))
	_, metrics := scrape(t, p.base+"/metrics")
	if v := metricValue(t, metrics, `icey_rendition_viewers{codec="VP8",path="cam"}`); v != 10 {
		t.Fatalf("icey_rendition_viewers = %v", v)
	}

	// Kill it: restarted, counted, the viewers' frames resume.
	before := make([]uint64, len(viewers))
	for i, v := range viewers {
		before[i] = v.Frames()
	}
	if err := syscall.Kill(vp8[0].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for i, v := range viewers {
		if err := v.WaitFrames(before[i]+25, 15*time.Second); err != nil {
			t.Fatalf("viewer %d after the kill: %v", i, err)
		}
	}
	t.Logf("all 10 viewers received 25 more frames %s after the kill", time.Since(killed).Round(time.Millisecond))
	if rs := renditionsOf(t, p, "cam"); len(rs) != 1 || rs[0]["restarts"] != float64(1) || rs[0]["viewers"] != float64(10) {
		t.Fatalf("after the kill: renditions %v", rs)
	}
	if n, _ := statusSessions(t, p); n != 10 {
		t.Fatalf("%v sessions after the kill, want 10", n)
	}

	// The last viewer leaving stops it (after the linger time).
	for _, v := range viewers {
		v.Close()
	}
	viewers = nil
	deadline := time.Now().Add(20 * time.Second)
	for (len(vp8Children(t, p)) > 0 || len(renditionsOf(t, p, "cam")) > 0) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := len(vp8Children(t, p)); n != 0 {
		t.Fatalf("%d VP8 ffmpeg processes after every viewer left", n)
	}
}

func statusSessions(t *testing.T, p *proc) (float64, map[string]any) {
	_, st, _ := p.get(t, "/api/status")
	s, _ := st["sessions"].(map[string]any)
	n, _ := s["active"].(float64)
	return n, st
}

// Without ffmpeg, a viewer that needs a rendition is refused with 406 and
// the reason, the H.264 viewer still plays, and the status says which
// viewers the path cannot serve.
func TestWithoutFFmpegRenditionsAreRefusedWithAReason(t *testing.T) {
	cam := rtsptest.Start(t, rtsptest.Options{})
	cfg, _ := json.Marshal(map[string]any{"paths": map[string]any{"cam": map[string]any{"source": cam.URL("cam")}},
		"media": map[string]any{"source": cam.URL("main")}})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))}, "PATH="+t.TempDir())
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := testpeer.Connect(ctx, p.base+"/cam/whep", testpeer.Options{VideoCodecs: []string{testpeer.CodecVP8}})
	var se *testpeer.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusNotAcceptable || !strings.Contains(se.Body, "ffmpeg is not installed") || !strings.Contains(se.Body, "H.264") {
		t.Fatalf("VP8-only viewer without ffmpeg: %v, want 406 naming H.264 and the missing ffmpeg", err)
	}
	t.Logf("406: %s", strings.TrimSpace(se.Body))
	v, err := testpeer.Connect(ctx, p.base+"/cam/whep", testpeer.Options{VideoCodecs: []string{testpeer.CodecH264}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitFrames(10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	_, st, body := p.get(t, "/api/status")
	warns := fmt.Sprint(st["warnings"])
	if !strings.Contains(warns, "ffmpeg is not installed") || !strings.Contains(warns, "without H.264") || !strings.Contains(warns, "path cam: ffmpeg is not installed") {
		t.Fatalf("status warnings %v lack the rendition warning\n%s", warns, body)
	}
}
