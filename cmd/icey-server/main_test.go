package main

// Black-box tests: build the binary once, run it on 127.0.0.1 with free
// ports, and talk to it over HTTP like an operator or Kubernetes would.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/hosttest"
	"github.com/icey/icey-server/internal/rtsptest"
)

var binPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "icey-bin-")
	if err != nil {
		panic(err)
	}
	binPath = filepath.Join(dir, "icey-server")
	out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build failed: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a port free for TCP and UDP on 127.0.0.1.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(p))
		l.Close()
		if err == nil {
			u.Close()
			return p
		}
	}
	t.Fatal("no free port")
	return 0
}

// syncBuffer collects a process's stderr.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type proc struct {
	cmd    *exec.Cmd
	port   int
	base   string
	stdout *syncBuffer
	stderr *syncBuffer
	done   chan struct{}
	code   int
}

// baseEnv keeps tests hermetic: no inherited ICEY_* settings.
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ICEY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// launch starts the binary; args get --host/--port/--turn-port unless given.
// Ports it picks itself can be taken by another process between the pick
// and the bind (other tests, benchmarks): then it retries with new ones.
func launch(t *testing.T, args []string, env ...string) *proc {
	t.Helper()
	joined := strings.Join(args, " ")
	auto := !strings.Contains(joined, "--port") && !strings.Contains(joined, "--turn-port")
	for attempt := 0; ; attempt++ {
		p := launchOnce(t, args, env...)
		if !auto || attempt == 2 || !p.bindFailed() {
			return p
		}
		t.Logf("auto-picked port was taken (%s); retrying", strings.TrimSpace(p.stderr.String()))
	}
}

// bindFailed reports whether the process exited at once with a bind error.
func (p *proc) bindFailed() bool {
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return p.code == 4 && strings.Contains(p.stderr.String(), "cannot bind")
		default:
		}
		if strings.Contains(p.stderr.String(), "msg=\"icey-server serving\"") || strings.Contains(p.stderr.String(), `"msg":"icey-server serving"`) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return false
}

func launchOnce(t *testing.T, args []string, env ...string) *proc {
	t.Helper()
	return launchOn(t, nil, args, env...)
}

// launchOn starts the binary on host h (a network namespace of its own,
// bound to its address), or in the test's namespace when h is nil.
func launchOn(t *testing.T, h *hosttest.Host, args []string, env ...string) *proc {
	t.Helper()
	if h != nil {
		args = append([]string{"--host", h.Addr}, args...)
	}
	p := &proc{stdout: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{})}
	joined := strings.Join(args, " ")
	if !strings.Contains(joined, "--port") {
		p.port = freePort(t)
		args = append(args, "--port", strconv.Itoa(p.port))
	}
	if !strings.Contains(joined, "--host") {
		args = append(args, "--host", "127.0.0.1")
	}
	if !strings.Contains(joined, "--turn-port") && !strings.Contains(joined, "--no-turn") {
		args = append(args, "--turn-port", strconv.Itoa(freePort(t)))
	}
	host := "127.0.0.1"
	for i, a := range args {
		if a == "--host" && i+1 < len(args) {
			host = args[i+1]
		}
	}
	p.base = "http://" + host + ":" + strconv.Itoa(p.port)
	p.cmd = exec.Command(binPath, args...)
	if h != nil {
		p.cmd = h.Command(binPath, args...)
	}
	p.cmd.Dir = t.TempDir()
	p.cmd.Env = append(p.cmd.Env, baseEnv(env...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if h != nil {
		h.Attach(p.cmd)
	}
	go func() {
		_ = p.cmd.Wait()
		p.code = p.cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(d):
		t.Fatalf("process did not exit within %s; stderr:\n%s", d, p.stderr)
		return -1
	}
}

func (p *proc) get(t *testing.T, path string, hdr ...string) (int, map[string]any, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", p.base+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	_ = json.Unmarshal(body, &m)
	return resp.StatusCode, m, string(body)
}

// waitFor polls path until it answers code.
func (p *proc) waitFor(t *testing.T, path string, code int, d time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			t.Fatalf("server exited with %d; stderr:\n%s", p.code, p.stderr)
		default:
		}
		c, m, body := p.get(t, path)
		if c == code {
			return m
		}
		last = fmt.Sprintf("%d %s", c, body)
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered %d within %s (last: %s); stderr:\n%s", path, code, d, last, p.stderr)
	return nil
}

func TestServesBuiltinStreamAndContract(t *testing.T) {
	p := launch(t, nil)
	start := time.Now()
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	t.Logf("process start to /api/ready 200: %s", time.Since(start).Round(time.Millisecond))

	_, h, _ := p.get(t, "/api/health")
	if h["status"] != "ok" || h["product"] != "icey" || h["service"] != "icey-server" || h["version"] == "" {
		t.Fatalf("health %v", h)
	}
	_, st, _ := p.get(t, "/api/status")
	if st["mode"] != "stream" || st["stream"].(map[string]any)["sourceKind"] != "builtin" ||
		st["runtime"].(map[string]any)["state"] != "running" {
		t.Fatalf("status %v", st)
	}
	if _, ok := st["uptimeSec"].(float64); !ok {
		t.Fatalf("uptimeSec type %T", st["uptimeSec"])
	}
	c, rd, _ := p.get(t, "/api/ready")
	names := []string{}
	for _, c := range rd["checks"].([]any) {
		names = append(names, c.(map[string]any)["name"].(string))
	}
	// The contract's checks in their order, then the additions (webrtc; no
	// web_root without --web-root).
	if c != 200 || strings.Join(names, ",") != "config,source,turn,ports,tls,recordings,intelligence,webrtc" {
		t.Fatalf("ready %d checks %v", c, names)
	}
	// Bound to 127.0.0.1 (a specific host) with demo credentials: degraded, still ready.
	if rd["status"] != "degraded" {
		t.Fatalf("status %v", rd["status"])
	}
	c, cf, _ := p.get(t, "/api/config")
	turn := cf["turn"].(map[string]any)
	if c != 200 || turn["host"] != "127.0.0.1" || turn["username"] == "" || cf["http"].(map[string]any)["scheme"] != "http" {
		t.Fatalf("config %v", cf)
	}
	// The web UI is served at /.
	resp, err := http.Get(p.base + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte("<html")) {
		t.Fatalf("UI: %d", resp.StatusCode)
	}
}

func TestAuthAndSecretsNeverLeak(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(`{"turn":{"secret":"turn-secret-xyz"}}`), 0o600)
	src := "rtsp://admin:camPa55w0rd@127.0.0.1:1/stream"
	p := launch(t, []string{"-c", cfgPath, "--source", src, "--log-level", "debug"}, "ICEY_AUTH_TOKEN=api-token-abc")
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	for _, path := range []string{"/api/status", "/api/config"} {
		if c, m, _ := p.get(t, path); c != 401 || m["error"] != "unauthorized" {
			t.Fatalf("%s without token: %d %v", path, c, m)
		}
		if c, _, _ := p.get(t, path, "Authorization", "Bearer wrong"); c != 401 {
			t.Fatalf("%s wrong token: %d", path, c)
		}
		if c, _, _ := p.get(t, path, "Authorization", "Bearer api-token-abc"); c != 200 {
			t.Fatalf("%s bearer: %d", path, c)
		}
		if c, _, _ := p.get(t, path, "X-Icey-Token", "api-token-abc"); c != 200 {
			t.Fatalf("%s x-icey-token: %d", path, c)
		}
	}
	if c, _, _ := p.get(t, "/api/health"); c != 200 {
		t.Fatal("health must be open")
	}
	if c, _, _ := p.get(t, "/api/ready"); c != 200 && c != 503 {
		t.Fatalf("ready must be open: %d", c)
	}
	var all strings.Builder
	for _, path := range []string{"/api/status", "/api/config", "/api/ready", "/api/health"} {
		_, _, body := p.get(t, path, "X-Icey-Token", "api-token-abc")
		all.WriteString(body)
	}
	_, st, _ := p.get(t, "/api/status", "X-Icey-Token", "api-token-abc")
	if st["stream"].(map[string]any)["source"] != "rtsp://127.0.0.1:1/stream" {
		t.Fatalf("source shown as %v", st["stream"].(map[string]any)["source"])
	}
	time.Sleep(1500 * time.Millisecond) // let the source fail and log a few times
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	p.wait(t, 20*time.Second)
	all.WriteString(p.stderr.String())
	all.WriteString(p.stdout.String())
	for _, secret := range []string{"api-token-abc", "turn-secret-xyz", "camPa55w0rd", "admin:"} {
		if strings.Contains(all.String(), secret) {
			t.Fatalf("%q leaked in a response or log:\n%s", secret, all.String())
		}
	}
}

func TestSourceReadinessFollowsTheCamera(t *testing.T) {
	cam := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioOpus})
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(`{"media":{"sourceGraceSeconds":2}}`), 0o600)
	p := launch(t, []string{"-c", cfgPath, "--source", cam.URL("stream")})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)

	cam.Stop()
	// Reconnecting within the grace period: warn, still ready.
	sawWarn := false
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, m, _ := p.get(t, "/api/ready")
		src := checkByName(m, "source")
		if c == 200 && src["result"] == "warn" {
			sawWarn = true
		}
		if c == 503 {
			if src["result"] != "fail" || m["ready"] != false || m["status"] != "error" {
				t.Fatalf("503 body %v", m)
			}
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !sawWarn {
		t.Fatal("source check never warned while reconnecting")
	}
	if c, _, _ := p.get(t, "/api/ready"); c != 503 {
		t.Fatalf("ready %d after the grace period, want 503", c)
	}
	if c, _, _ := p.get(t, "/api/health"); c != 200 {
		t.Fatal("health must stay 200 while the camera is down")
	}
	cam.Restart()
	m := p.waitFor(t, "/api/ready", 200, 30*time.Second)
	if checkByName(m, "source")["result"] != "pass" {
		t.Fatalf("source after recovery: %v", m)
	}
}

func checkByName(m map[string]any, name string) map[string]any {
	checks, _ := m["checks"].([]any)
	for _, c := range checks {
		if cm, ok := c.(map[string]any); ok && cm["name"] == name {
			return cm
		}
	}
	return map[string]any{}
}

func TestUnknownKeyIsAWarningInTheReport(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(`{"http":{"colour":"blue"},"frobnicate":1}`), 0o600)
	p := launch(t, []string{"-c", cfgPath})
	m := p.waitFor(t, "/api/ready", 200, 20*time.Second)
	w, _ := json.Marshal(m["warnings"])
	if !strings.Contains(string(w), "http.colour") || !strings.Contains(string(w), "frobnicate") {
		t.Fatalf("warnings %s", w)
	}
	if cfg := checkByName(m, "config"); cfg["result"] != "warn" || !strings.Contains(cfg["detail"].(string), cfgPath) {
		t.Fatalf("config check %v", cfg)
	}
}

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o600)
		return p
	}
	cases := []struct {
		name string
		args []string
		env  []string
		code int
		msg  string
	}{
		{"help", []string{"--help"}, nil, 0, "Usage"},
		{"version", []string{"--version"}, nil, 0, "icey-server "},
		{"bad flag", []string{"--bogus"}, nil, 2, "bogus"},
		{"bad flag value", []string{"--port", "x"}, nil, 2, "port"},
		{"flag out of range", []string{"--port", "70000"}, nil, 2, "http.port"},
		{"missing explicit config", []string{"-c", filepath.Join(dir, "none.json")}, nil, 3, "none.json"},
		{"invalid json", []string{"-c", write("bad.json", "{")}, nil, 3, "invalid JSON"},
		{"wrong type", []string{"-c", write("type.json", `{"http":{"port":"80"}}`)}, nil, 3, "http.port"},
		{"unknown mode", []string{"-c", write("mode.json", `{"media":{"mode":"party"}}`)}, nil, 3, "media.mode"},
		{"env out of range", nil, []string{"ICEY_TURN_PORT=0"}, 3, "turn.port"},
		{"env not a number", nil, []string{"ICEY_WEBRTC_PORT=abc"}, 3, "ICEY_WEBRTC_PORT"},
		{"missing media file", []string{"--source", filepath.Join(dir, "missing.mp4")}, nil, 4, "missing.mp4"},
		{"tls half configured", []string{"--tls-cert", write("c.pem", "x")}, nil, 4, "tls"},
		{"same port twice", []string{"--turn-port", "PORT"}, nil, 4, "cannot bind TURN"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			for i, a := range args {
				if a == "PORT" {
					args = append([]string(nil), args...)
					args[i] = "0" // replaced below
				}
			}
			var p *proc
			if tc.name == "same port twice" {
				port := freePort(t)
				p = launch(t, []string{"--port", strconv.Itoa(port), "--turn-port", strconv.Itoa(port)})
			} else {
				p = launch(t, args, tc.env...)
			}
			code := p.wait(t, 20*time.Second)
			out := p.stdout.String() + p.stderr.String()
			if code != tc.code {
				t.Fatalf("exit %d, want %d; output:\n%s", code, tc.code, out)
			}
			if !strings.Contains(out, tc.msg) {
				t.Fatalf("output does not mention %q:\n%s", tc.msg, out)
			}
		})
	}
}

func TestSecondInstanceOnTheSamePortExits4(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	q := launch(t, []string{"--port", strconv.Itoa(p.port)})
	if code := q.wait(t, 20*time.Second); code != 4 {
		t.Fatalf("exit %d, want 4; stderr:\n%s", code, q.stderr)
	}
	want := fmt.Sprintf("cannot bind HTTP on 127.0.0.1:%d: address already in use", p.port)
	if !strings.Contains(q.stderr.String(), want) {
		t.Fatalf("stderr lacks %q:\n%s", want, q.stderr)
	}
	if c, _, _ := p.get(t, "/api/health"); c != 200 {
		t.Fatal("first instance hurt by the second")
	}
}

func TestSIGTERMDrainsThenExits0(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "config.json")
	os.WriteFile(cfgPath, []byte(`{"http":{"drainSeconds":2}}`), 0o600)
	p := launch(t, []string{"-c", cfgPath})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	m := p.waitFor(t, "/api/ready", 503, 5*time.Second)
	if checkByName(m, "shutdown")["result"] != "fail" {
		t.Fatalf("no failing shutdown check: %v", m)
	}
	if c, _, _ := p.get(t, "/api/health"); c != 200 {
		t.Fatalf("health %d while draining, want 200", c)
	}
	_, st, _ := p.get(t, "/api/status")
	if st["runtime"].(map[string]any)["state"] != "draining" {
		t.Fatalf("runtime %v", st["runtime"])
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d, want 0; stderr:\n%s", code, p.stderr)
	}
}

func TestDoctor(t *testing.T) {
	p := launch(t, []string{"--doctor"})
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("doctor exit %d, want 0:\n%s%s", code, p.stdout, p.stderr)
	}
	var rep map[string]any
	if err := json.Unmarshal([]byte(p.stdout.String()), &rep); err != nil || rep["ready"] != true {
		t.Fatalf("doctor output: %v\n%s", err, p.stdout)
	}
	if checkByName(rep, "source")["result"] != "pass" {
		t.Fatalf("source %v", checkByName(rep, "source"))
	}
	// TURN port taken: both the ports and the turn check fail.
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tport := strconv.Itoa(busy.LocalAddr().(*net.UDPAddr).Port)
	b := launch(t, []string{"--doctor", "--turn-port", tport})
	if code := b.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("doctor with TURN port taken: exit %d\n%s", code, b.stdout)
	}
	var brep map[string]any
	_ = json.Unmarshal([]byte(b.stdout.String()), &brep)
	if checkByName(brep, "turn")["result"] != "fail" || checkByName(brep, "ports")["result"] != "fail" {
		t.Fatalf("turn/ports checks: %v / %v", checkByName(brep, "turn"), checkByName(brep, "ports"))
	}
	// Not ready: an RTSP camera that does not answer.
	q := launch(t, []string{"--doctor", "--source", "rtsp://127.0.0.1:1/none"})
	if code := q.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("doctor exit %d, want 1:\n%s%s", code, q.stdout, q.stderr)
	}
	if !strings.Contains(q.stdout.String(), `"ready": false`) {
		t.Fatalf("doctor output:\n%s", q.stdout)
	}
}

func TestHealthcheckSubcommand(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	out, err := exec.Command(binPath, "healthcheck", "--url", p.base).CombinedOutput()
	if err != nil {
		t.Fatalf("healthcheck: %v %s", err, out)
	}
	cmd := exec.Command(binPath, "healthcheck", "--ready")
	cmd.Env = baseEnv("ICEY_PORT=" + strconv.Itoa(p.port))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("healthcheck --ready via ICEY_PORT: %v %s", err, out)
	}
	cmd = exec.Command(binPath, "healthcheck", "--url", "http://127.0.0.1:1")
	if err := cmd.Run(); err == nil || cmd.ProcessState.ExitCode() != 1 {
		t.Fatalf("healthcheck against nothing: %v", err)
	}
}
