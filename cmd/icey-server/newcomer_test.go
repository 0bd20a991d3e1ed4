package main

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/app"
)

// A camera that never answered is not ready from the first probe on: the
// grace period covers outages after media has flowed, not a camera that
// never delivered.
func TestNeverUpCameraIsNotReadyFromTheStart(t *testing.T) {
	dead := freePort(t) // nothing listens there
	p := launch(t, []string{"--source", "rtsp://cam:secret@127.0.0.1:" + strconv.Itoa(dead) + "/stream"})
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	deadline := time.Now().Add(3 * time.Second)
	probes := 0
	for time.Now().Before(deadline) {
		code, m, body := p.get(t, "/api/ready")
		if code != 503 || m["ready"] != false {
			t.Fatalf("probe %d after start: %d %s", probes, code, body)
		}
		if c := checkByName(m, "source"); c == nil || c["result"] != "fail" ||
			!strings.Contains(c["detail"].(string), "has not delivered media") {
			t.Fatalf("source check: %v", c)
		}
		probes++
		time.Sleep(100 * time.Millisecond)
	}
	if strings.Contains(p.stderr.String(), "secret") {
		t.Fatal("camera password in the log")
	}
}

// The healthcheck subcommand finds the server where its config file puts
// it (the Docker HEALTHCHECK runs it with the container's environment).
func TestHealthcheckReadsTheConfigFile(t *testing.T) {
	port := freePort(t)
	cfg := writeConfig(t, `{"http":{"host":"127.0.0.1","port":`+strconv.Itoa(port)+`},"turn":{"enabled":false}}`)
	// Started by hand: launch would add --port, and the port must come
	// from the file alone.
	srv := exec.Command(binPath, "-c", cfg)
	srv.Env = baseEnv()
	var logs syncBuffer
	srv.Stderr = &logs
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	p := &proc{base: "http://127.0.0.1:" + strconv.Itoa(port), port: port, stderr: &logs, done: make(chan struct{})}
	p.waitFor(t, "/api/ready", 200, 20*time.Second)

	for _, args := range [][]string{
		{"healthcheck", "-c", cfg},
		{"healthcheck", "--ready", "-c", cfg},
		{"healthcheck", "--config=" + cfg, "--timeout", "2s"},
	} {
		out, err := exec.Command(binPath, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v %s", args, err, out)
		}
	}
	cmd := exec.Command(binPath, "healthcheck", "--ready")
	cmd.Env = baseEnv("ICEY_CONFIG=" + cfg)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ICEY_CONFIG: %v %s", err, out)
	}
	// Flags beat the file, as for the server: the wrong port fails.
	cmd = exec.Command(binPath, "healthcheck", "-c", cfg, "--port", strconv.Itoa(freePort(t)))
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("healthcheck on a port nobody serves: %v", err)
	}
	// A config file that does not exist is a config error (3), not "unhealthy".
	cmd = exec.Command(binPath, "healthcheck", "-c", filepath.Join(t.TempDir(), "nope.json"))
	if out, _ := cmd.CombinedOutput(); cmd.ProcessState.ExitCode() != 3 || !strings.Contains(string(out), "nope.json") {
		t.Fatalf("missing file: exit %d %s", cmd.ProcessState.ExitCode(), out)
	}
}

// Messages tell the user what to do.
func TestMessagesSayWhatToDo(t *testing.T) {
	// A busy port names the flag that moves it.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	port := busy.Addr().(*net.TCPAddr).Port
	p := launch(t, []string{"--port", strconv.Itoa(port), "--no-turn"})
	if code := p.wait(t, 20*time.Second); code != 4 {
		t.Fatalf("busy port: exit %d", code)
	}
	if msg := p.stderr.String(); !strings.Contains(msg, "cannot bind HTTP on 127.0.0.1:"+strconv.Itoa(port)+": address already in use") ||
		!strings.Contains(msg, "--port") {
		t.Fatalf("busy port message: %s", msg)
	}
	// A missing file is named once, without a doubled prefix.
	q := launch(t, []string{"--source", filepath.Join(t.TempDir(), "missing.mp4")})
	if code := q.wait(t, 20*time.Second); code != 4 {
		t.Fatalf("missing file: exit %d", code)
	}
	if msg := q.stderr.String(); strings.Contains(msg, "source: source:") || !strings.Contains(msg, "missing.mp4") {
		t.Fatalf("missing file message: %s", msg)
	}
	// The doctor says why a dead camera is not ready (not merely "stopped").
	dead := freePort(t)
	out, _ := exec.Command(binPath, "--doctor", "--host", "127.0.0.1", "--port", strconv.Itoa(freePort(t)), "--no-turn",
		"--source", "rtsp://127.0.0.1:"+strconv.Itoa(dead)+"/x").Output()
	if s := string(out); !strings.Contains(s, "connection refused") || !strings.Contains(s, "has not delivered media") {
		t.Fatalf("doctor detail: %s", s)
	}
}

// The fields the original product's clients read, and the web_root check.
func TestOriginalClientFieldsAndWebRootCheck(t *testing.T) {
	p := launch(t, []string{"--source", "rtsp://cam:pw@127.0.0.1:" + strconv.Itoa(freePort(t)) + "/s"})
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	_, cfg, body := p.get(t, "/api/config")
	src, _ := cfg["source"].(map[string]any)
	if src == nil || src["kind"] != "rtsp" || src["remote"] != true || !strings.HasPrefix(src["value"].(string), "rtsp://127.0.0.1:") {
		t.Fatalf("/api/config source: %s", body)
	}
	if strings.Contains(body, "pw@") {
		t.Fatalf("credentials in /api/config: %s", body)
	}
	_, st, body := p.get(t, "/api/status")
	turn, _ := st["turn"].(map[string]any)
	httpInfo, _ := st["http"].(map[string]any)
	if turn == nil || turn["port"] == nil || httpInfo == nil || httpInfo["scheme"] != "http" ||
		st["host"] != "127.0.0.1" || st["port"] != float64(p.port) {
		t.Fatalf("/api/status fields: %s", body)
	}

	// A configured web root that cannot serve the UI fails at startup with
	// the reason; a good one passes the check.
	empty := t.TempDir()
	q := launch(t, []string{"--web-root", empty})
	if code := q.wait(t, 20*time.Second); code != 4 || !strings.Contains(q.stderr.String(), "web_root") {
		t.Fatalf("web root without index.html: exit %d\n%s", code, q.stderr)
	}
	good := t.TempDir()
	if err := os.WriteFile(filepath.Join(good, "index.html"), []byte("<h1>custom</h1>"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := launch(t, []string{"--web-root", good})
	m := r.waitFor(t, "/api/ready", 200, 20*time.Second)
	if c := checkByName(m, "web_root"); c == nil || c["result"] != "pass" {
		t.Fatalf("web_root check: %v", c)
	}
}

// Bound to a wildcard address with only loopback (the test namespace), the
// webrtc check warns and says what to do.
func TestWebRTCCheckWarnsWithoutAnExternalAddress(t *testing.T) {
	p := launch(t, []string{"--host", "0.0.0.0"})
	m := p.waitFor(t, "/api/ready", 200, 20*time.Second)
	c := checkByName(m, "webrtc")
	if c == nil || c["result"] != "warn" || !strings.Contains(c["detail"].(string), "only browsers on this machine") {
		t.Fatalf("webrtc check: %v", c)
	}
	found := false
	for _, w := range m["warnings"].([]any) {
		if strings.Contains(w.(string), "webrtc.publicIps") {
			found = true
		}
	}
	if !found {
		t.Fatalf("no actionable webrtc warning: %v", m["warnings"])
	}
}

// HTTP hardening: malformed escapes are 400, not 500; a body sent a byte at
// a time is cut off at the read deadline and other clients are served
// meanwhile.
func TestHTTPRequestGuards(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	for _, path := range []string{"/%c0%ae%c0%ae/etc/passwd", "/%00", "/app.js%00.png", "/whep/%ff"} {
		resp, err := http.Get(p.base + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d, want 400", path, resp.StatusCode)
		}
	}
	// Oversized headers are refused.
	req, _ := http.NewRequest("GET", p.base+"/api/health", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != 431 {
			t.Errorf("64 KiB header: %d, want 431", resp.StatusCode)
		}
	}

	// Slow bodies: 50 connections each promising a 1000-byte offer and
	// sending a byte every 2 s.
	const slow = 50
	start := time.Now()
	closed := make(chan time.Duration, slow)
	for i := 0; i < slow; i++ {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(p.port))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_, _ = c.Write([]byte("POST /whep HTTP/1.1\r\nHost: x\r\nContent-Type: application/sdp\r\nContent-Length: 1000\r\n\r\nv"))
		go func(c net.Conn) {
			r := bufio.NewReader(c)
			tick := time.NewTicker(2 * time.Second)
			defer tick.Stop()
			readErr := make(chan struct{})
			go func() { _, _ = r.ReadByte(); close(readErr) }()
			for {
				select {
				case <-readErr:
					closed <- time.Since(start)
					return
				case <-tick.C:
					if _, err := c.Write([]byte("=")); err != nil {
						closed <- time.Since(start)
						return
					}
				case <-time.After(40 * time.Second):
					closed <- 0
					return
				}
			}
		}(c)
	}
	// Meanwhile the server answers others at once.
	t0 := time.Now()
	if c, _, _ := p.get(t, "/api/health"); c != 200 || time.Since(t0) > 2*time.Second {
		t.Fatalf("health during slow bodies: %d after %s", c, time.Since(t0))
	}
	var worst time.Duration
	for i := 0; i < slow; i++ {
		d := <-closed
		if d == 0 {
			t.Fatal("a slow body was still held after 40 s")
		}
		worst = max(worst, d)
	}
	if worst > app.BodyReadTimeout+5*time.Second {
		t.Fatalf("slow bodies released after %s (deadline %s)", worst, app.BodyReadTimeout)
	}
	t.Logf("50 slow bodies released after at most %s (deadline %s)", worst.Round(100*time.Millisecond), app.BodyReadTimeout)
}

// SIGTERM with event-stream clients connected exits as fast as without:
// their streams are closed at shutdown (http.Server.Shutdown alone would
// wait for them to hang up).
func TestShutdownClosesEventStreams(t *testing.T) {
	p := launch(t, []string{"-c", writeConfig(t, `{"http":{"drainSeconds":0}}`)})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	events, closeEvents := openSSE(t, p.base+"/api/events", "")
	defer closeEvents()
	nextEvent(t, events, "snapshot", 5*time.Second)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(p.base, "http")+"/api/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	nextEvent(t, events, "shutdown", 5*time.Second)
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	took := time.Since(start)
	t.Logf("SIGTERM → exit with an SSE and an events WebSocket client: %s", took.Round(time.Millisecond))
	// Without closing the streams the HTTP shutdown waits its 4 s bound.
	if took > 3*time.Second {
		t.Fatalf("exit took %s with event-stream clients connected", took)
	}
	for range events { // the stream has ended
	}
	_ = ws.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		if _, _, err := ws.ReadMessage(); err != nil {
			if ne, ok := err.(interface{ Timeout() bool }); ok && ne.Timeout() {
				t.Fatal("events WebSocket still open after exit")
			}
			break
		}
	}
}
