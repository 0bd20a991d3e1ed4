package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// pictureSize reads the picture size from the SPS a viewer received.
func pictureSize(t *testing.T, v *testpeer.Viewer) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for v.SPS() == nil && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	b := v.SPS()
	if b == nil {
		t.Fatal("no SPS received")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(b); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	return fmt.Sprintf("%dx%d", sps.Width(), sps.Height())
}

// statusPaths returns /api/status paths by name.
func statusPaths(t *testing.T, p *proc) map[string]map[string]any {
	t.Helper()
	_, st, body := p.get(t, "/api/status")
	list, ok := st["paths"].([]any)
	if !ok {
		t.Fatalf("no paths array in %s", body)
	}
	out := map[string]map[string]any{}
	for _, e := range list {
		m := e.(map[string]any)
		out[m["name"].(string)] = m
	}
	return out
}

// One process serves four paths (two RTSP cameras, a file, the built-in
// stream): 40 WHEP viewers spread over them each receive their own path's
// pictures (told apart by picture size), and each camera is opened once.
func TestFourPathsOneProcess(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	cam1 := rtsptest.Start(t, rtsptest.Options{Width: 320, Height: 240})
	cam2 := rtsptest.Start(t, rtsptest.Options{Width: 352, Height: 288})
	clip := filepath.Join(t.TempDir(), "lobby.mp4")
	if b, err := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=480x272:rate=25",
		"-t", "2", "-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "25", clip).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	cfg, _ := json.Marshal(map[string]any{
		"webrtc": map[string]any{"maxPendingPerClient": 64},
		"paths": map[string]any{
			"front":  map[string]any{"source": cam1.URL("front")},
			"garage": map[string]any{"source": cam2.URL("garage")},
			"lobby":  map[string]any{"source": clip},
		},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	want := map[string]string{"main": "640x360", "front": "320x240", "garage": "352x288", "lobby": "480x272"}
	url := func(path string) string {
		if path == "main" {
			return p.base + "/whep"
		}
		return p.base + "/" + path + "/whep"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	type viewer struct {
		path string
		v    *testpeer.Viewer
	}
	var (
		mu      sync.Mutex
		viewers []viewer
		wg      sync.WaitGroup
		errs    = make(chan error, 40)
	)
	start := time.Now()
	for i := 0; i < 40; i++ {
		path := []string{"main", "front", "garage", "lobby"}[i%4]
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := testpeer.Connect(ctx, url(path), testpeer.Options{VideoOnly: true, Timeout: 30 * time.Second})
			if err != nil {
				errs <- fmt.Errorf("%s: %w", path, err)
				return
			}
			mu.Lock()
			viewers = append(viewers, viewer{path, v})
			mu.Unlock()
		}()
	}
	wg.Wait()
	close(errs)
	for _, v := range viewers {
		defer v.v.Close()
	}
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("40 viewers over 4 paths connected in %v", time.Since(start).Round(time.Millisecond))
	for _, v := range viewers {
		if err := v.v.WaitVideo(30, 15*time.Second); err != nil {
			t.Fatalf("%s: %v", v.path, err)
		}
		if got := pictureSize(t, v.v); got != want[v.path] {
			t.Fatalf("a viewer of %s received %s pictures, want %s", v.path, got, want[v.path])
		}
	}
	if cam1.Opened() != 1 || cam2.Opened() != 1 {
		t.Fatalf("cameras opened %d and %d times, want once each", cam1.Opened(), cam2.Opened())
	}
	sp := statusPaths(t, p)
	for name := range want {
		s := sp[name]
		if s == nil || s["viewers"] != float64(10) || s["state"] != "up" || s["fps"].(float64) <= 0 {
			t.Fatalf("status of %s: %v", name, s)
		}
		t.Logf("path %-6s %s: %v fps, %v viewers, %v bytes in", name, want[name], s["fps"], s["viewers"], s["bytesIn"])
	}
	if _, st, _ := p.get(t, "/api/status"); st["sessions"].(map[string]any)["active"] != float64(40) {
		t.Fatalf("sessions %v", st["sessions"])
	}
	if s := sp["front"]["source"].(string); !strings.HasPrefix(s, "rtsp://127.0.0.1:") {
		t.Fatalf("front source %q", s)
	}
	code, metrics := scrape(t, p.base+"/metrics")
	if code != 200 || !strings.Contains(metrics, `icey_path_viewers{path="garage"} 10`) {
		t.Fatalf("metrics (%d) lack the per-path viewers:\n%s", code, metrics)
	}
	// An unknown path is a clear 404; the UI answers on a path's URL.
	if code, _, body := p.get(t, "/nope/"); code != 404 && !strings.Contains(body, "<html") {
		t.Fatalf("/nope/ = %d", code)
	}
	if code, _, body := p.get(t, "/front/"); code != 200 || !strings.Contains(strings.ToLower(body), "<html") {
		t.Fatalf("/front/ = %d %.80s", code, body)
	}
}

// An on-demand path opens no connection before its first viewer; the first
// viewer's POST waits for the source and answers 201; the connection
// closes after the idle time and opens again for the next viewer.
func TestOnDemandPathOverWHEP(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	cam := rtsptest.Start(t, rtsptest.Options{})
	cfg, _ := json.Marshal(map[string]any{"paths": map[string]any{
		"garage": map[string]any{"source": cam.URL("g"), "sourceOnDemand": true, "sourceOnDemandCloseAfterSeconds": 1},
	}})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	time.Sleep(500 * time.Millisecond)
	if cam.Opened() != 0 || statusPaths(t, p)["garage"]["state"] != "idle" {
		t.Fatalf("before any viewer: %d connections, %v", cam.Opened(), statusPaths(t, p)["garage"])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for round := 1; round <= 2; round++ {
		start := time.Now()
		v, err := testpeer.Connect(ctx, p.base+"/garage/whep", testpeer.Options{VideoOnly: true})
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if err := v.WaitVideo(1, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for v.FirstKeyframe() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("round %d: on-demand start, first viewer's POST → first keyframe: %v", round,
			(v.Joined.Sub(start) + v.FirstKeyframe()).Round(time.Millisecond))
		if err := v.WaitVideo(30, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if s := statusPaths(t, p)["garage"]; s["state"] != "up" || s["viewers"] != float64(1) {
			t.Fatalf("status while viewing: %v", s)
		}
		v.Close()
		deadline = time.Now().Add(10 * time.Second)
		for (cam.Conns() != 0 || statusPaths(t, p)["garage"]["state"] != "idle") && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if cam.Conns() != 0 || cam.Opened() != int64(round) {
			t.Fatalf("round %d: after the idle time %d open, %d opened", round, cam.Conns(), cam.Opened())
		}
	}
	// Readiness does not depend on an idle on-demand path.
	p.waitFor(t, "/api/ready", 200, 5*time.Second)
}

// A path whose source is down fails readiness only when it is required;
// otherwise the paths check warns. Each names the path and the reason.
func TestRequiredPathDrivesReadiness(t *testing.T) {
	dead := freePort(t) // nothing listens there
	for _, required := range []bool{false, true} {
		cfg, _ := json.Marshal(map[string]any{"paths": map[string]any{
			"yard": map[string]any{"source": fmt.Sprintf("rtsp://127.0.0.1:%d/x", dead), "required": required},
		}})
		p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
		want, result := 200, "warn"
		if required {
			want, result = 503, "fail"
		}
		body := p.waitFor(t, "/api/ready", want, 20*time.Second)
		deadline := time.Now().Add(10 * time.Second)
		c := checkByName(body, "paths")
		for (c == nil || c["result"] != result) && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			_, body, _ = p.get(t, "/api/ready")
			c = checkByName(body, "paths")
		}
		if c == nil || c["result"] != result || !strings.Contains(c["detail"].(string), "yard") {
			t.Fatalf("required=%v: paths check %v, want %s naming the path", required, c, result)
		}
		if code, _, _ := p.get(t, "/api/ready"); code != want {
			t.Fatalf("required=%v: /api/ready %d, want %d", required, code, want)
		}
	}
}

// A required on-demand path (an edge's origin) fails readiness while its
// server does not answer, although the path is idle, and passes once it
// does.
func TestOnDemandUpstreamDrivesReadiness(t *testing.T) {
	port := freePort(t)
	cfg, _ := json.Marshal(map[string]any{"paths": map[string]any{
		"~^(.+)$": map[string]any{"source": fmt.Sprintf("rtsp://127.0.0.1:%d/$1", port), "required": true},
	}})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	body := p.waitFor(t, "/api/ready", 503, 20*time.Second)
	if c := checkByName(body, "paths"); c == nil || !strings.Contains(c["detail"].(string), "unreachable") {
		t.Fatalf("paths check %v", c)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	p.waitFor(t, "/api/ready", 200, 15*time.Second)

	// An on-demand default path is ready while idle (its server answers).
	cfg, _ = json.Marshal(map[string]any{"paths": map[string]any{
		"main": map[string]any{"source": fmt.Sprintf("rtsp://127.0.0.1:%d/cam", port), "sourceOnDemand": true},
	}})
	p2 := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	body = p2.waitFor(t, "/api/ready", 200, 15*time.Second)
	if c := checkByName(body, "source"); c == nil || !strings.Contains(c["detail"].(string), "On demand") {
		t.Fatalf("source check of an idle on-demand main: %v", c)
	}
}

// A busy RTSP port is a startup failure naming the setting that moves it.
func TestRTSPPortConflictExits4(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	p := launchOnce(t, nil, "ICEY_RTSP=true", fmt.Sprintf("ICEY_RTSP_PORT=%d", port))
	if code := p.wait(t, 20*time.Second); code != 4 || !strings.Contains(p.stderr.String(), "cannot bind RTSP") || !strings.Contains(p.stderr.String(), "rtsp.port") {
		t.Fatalf("exit %d: %s", code, p.stderr)
	}
}
