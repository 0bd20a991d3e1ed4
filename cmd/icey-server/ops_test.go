package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testpeer"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func scrape(t *testing.T, url string, hdr ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metricValue finds `name{labels} value` (labels may be empty) in a scrape.
func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	re := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("series %s not found in scrape", series)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func TestViewerSessionMovesMetricsAndStatus(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	code, before := scrape(t, p.base+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics on loopback: %d", code)
	}
	if metricValue(t, before, "icey_sessions_total") != 0 || metricValue(t, before, `icey_source_up{path="main"}`) != 1 {
		t.Fatalf("initial metrics wrong:\n%s", before)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitVideo(100, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if v.Keyframes.Load() == 0 || v.AudioPackets.Load() == 0 || v.MaxPayload.Load() > 1200 {
		t.Fatalf("viewer got keyframes=%d audio=%d maxPayload=%d", v.Keyframes.Load(), v.AudioPackets.Load(), v.MaxPayload.Load())
	}
	_, st, _ := p.get(t, "/api/status")
	// The bound follows the CPUs (300 each), and the load is measured
	// against it; the viewer's packets leave as UDP GSO segments.
	wantMax := float64(300 * runtime.GOMAXPROCS(0))
	if s := st["sessions"].(map[string]any); s["active"] != float64(1) || s["total"] != float64(1) ||
		s["max"] != wantMax || s["load"] != 1/wantMax {
		t.Fatalf("status sessions %v (want max %v)", s, wantMax)
	}
	if send, _ := st["webrtc"].(map[string]any)["send"].(map[string]any); send["mode"] != "gso" ||
		send["segmented"].(float64) < 50 || send["batches"] != float64(1) {
		t.Fatalf("status webrtc.send %v", send)
	}
	_, mid := scrape(t, p.base+"/metrics")
	if metricValue(t, mid, "icey_sessions_max") != wantMax || metricValue(t, mid, `icey_media_send_mode{mode="gso"}`) != 1 ||
		metricValue(t, mid, "icey_media_send_segmented_total") < 50 ||
		metricValue(t, mid, "icey_media_send_syscalls_total") >= metricValue(t, mid, "icey_media_send_datagrams_total") {
		t.Fatalf("capacity and send metrics:\n%s", grepIcey(mid))
	}
	if metricValue(t, mid, `icey_sessions_active{role="viewer"}`) != 1 || metricValue(t, mid, "icey_packets_sent_total") < 100 ||
		metricValue(t, mid, "icey_first_keyframe_seconds_count") != 1 || metricValue(t, mid, "icey_bytes_sent_total") < 10000 {
		t.Fatalf("metrics during the session:\n%s", grepIcey(mid))
	}
	v.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, after := scrape(t, p.base+"/metrics")
		if metricValue(t, after, `icey_sessions_active{role="viewer"}`) == 0 {
			if metricValue(t, after, "icey_sessions_total") != 1 || metricValue(t, after, "icey_packets_sent_total") < metricValue(t, mid, "icey_packets_sent_total") {
				t.Fatalf("metrics after the session:\n%s", grepIcey(after))
			}
			// The viewer's DELETE ends it with the typed reason "hangup".
			if metricValue(t, after, `icey_sessions_ended_total{reason="hangup",role="viewer"}`) != 1 {
				t.Fatalf("end reason label:\n%s", grepIcey(after))
			}
			if !strings.Contains(after, `icey_http_request_duration_seconds_count{code="201",method="POST",route="/whep"} 1`) {
				t.Fatalf("no HTTP duration for the WHEP POST:\n%s", grepIcey(after))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session never ended in metrics:\n%s", grepIcey(after))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func grepIcey(s string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "icey_") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestMetricsNeedBearerTokenFromOtherHosts(t *testing.T) {
	// A wildcard bind is beyond loopback (inside the test namespace only lo exists).
	p := launch(t, []string{"--host", "0.0.0.0"}, "ICEY_METRICS_TOKEN=scrape-token")
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	if c, _ := scrape(t, p.base+"/metrics"); c != 401 {
		t.Fatalf("without bearer: %d, want 401", c)
	}
	if c, _ := scrape(t, p.base+"/metrics", "Authorization", "Bearer nope"); c != 401 {
		t.Fatalf("wrong bearer: %d", c)
	}
	if c, body := scrape(t, p.base+"/metrics", "Authorization", "Bearer scrape-token"); c != 200 || !strings.Contains(body, "icey_up 1") {
		t.Fatalf("with bearer: %d", c)
	}
	// No token configured on a wildcard bind: `curl localhost:4500/metrics`
	// works (a client on this machine); other hosts are refused (see
	// TestMetricsAuthByClientAddress).
	q := launch(t, []string{"--host", "0.0.0.0"})
	q.waitFor(t, "/api/health", 200, 20*time.Second)
	if c, body := scrape(t, q.base+"/metrics"); c != 200 || !strings.Contains(body, "icey_up 1") {
		t.Fatalf("loopback client, no token configured: %d", c)
	}
	// A separate non-loopback metrics listener without a token is a config error.
	r := launch(t, []string{"-c", writeConfig(t, `{"metrics":{"listen":"0.0.0.0:9464"}}`)})
	if code := r.wait(t, 20*time.Second); code != 3 || !strings.Contains(r.stderr.String(), "metrics.bearerToken") {
		t.Fatalf("exit %d: %s", code, r.stderr)
	}
	// A separate loopback listener is open.
	mport := freePort(t)
	s := launch(t, []string{"-c", writeConfig(t, `{"metrics":{"listen":"127.0.0.1:`+strconv.Itoa(mport)+`"}}`)})
	s.waitFor(t, "/api/health", 200, 20*time.Second)
	if c, _ := scrape(t, "http://127.0.0.1:"+strconv.Itoa(mport)+"/metrics"); c != 200 {
		t.Fatalf("separate loopback listener: %d", c)
	}
	if c, _ := scrape(t, s.base+"/metrics"); c == 200 {
		t.Fatal("/metrics must live on metrics.listen only when it is set")
	}
}

// sseClient reads /api/events into a channel of event types (and data).
type sseEvent struct {
	Type string
	Data map[string]any
}

func openSSE(t *testing.T, url, token string) (<-chan sseEvent, func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	req.Header.Set("X-Icey-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	ch := make(chan sseEvent, 100)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "data: ") {
				continue
			}
			var e struct {
				Type string         `json:"type"`
				Data map[string]any `json:"data"`
			}
			if json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &e) == nil {
				ch <- sseEvent{e.Type, e.Data}
			}
		}
	}()
	return ch, func() { cancel(); resp.Body.Close(); wg.Wait() }
}

func nextEvent(t *testing.T, ch <-chan sseEvent, want string, d time.Duration) sseEvent {
	t.Helper()
	timeout := time.After(d)
	var seen []string
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatalf("stream closed waiting for %s (seen %v)", want, seen)
			}
			if e.Type == want {
				return e
			}
			seen = append(seen, e.Type)
		case <-timeout:
			t.Fatalf("no %s event within %s (seen %v)", want, d, seen)
		}
	}
}

func TestEventsDetailedHealthAndStartupProbe(t *testing.T) {
	cam := rtsptest.Start(t, rtsptest.Options{})
	p := launch(t, []string{"-c", writeConfig(t, `{"media":{"sourceGraceSeconds":1},"http":{"drainSeconds":1}}`),
		"--source", cam.URL("cam")}, "ICEY_AUTH_TOKEN=tok")
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	if c, m, _ := p.get(t, "/api/started"); c != 200 || m["started"] != true {
		t.Fatalf("started %d %v", c, m)
	}
	if c, _ := scrape(t, p.base+"/api/events"); c != 401 {
		t.Fatalf("events without token: %d", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ch, stop := openSSE(t, p.base+"/api/events?x=1", "tok")
	defer stop()
	snap := nextEvent(t, ch, "snapshot", 5*time.Second)
	if snap.Data["ready"] != true {
		t.Fatalf("snapshot %v", snap.Data)
	}

	// A viewer joins and leaves.
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	started := nextEvent(t, ch, "session.started", 10*time.Second)
	if started.Data["role"] != "viewer" || started.Data["id"] == "" {
		t.Fatalf("session.started %v", started.Data)
	}
	v.Close()
	ended := nextEvent(t, ch, "session.ended", 10*time.Second)
	if ended.Data["id"] != started.Data["id"] {
		t.Fatalf("ended %v started %v", ended.Data, started.Data)
	}

	// The camera goes away: detailed health flips the source entry.
	cam.Stop()
	nextEvent(t, ch, "source.reconnecting", 15*time.Second)
	// (a readiness.changed to ready from startup may still be in flight)
	rd := nextEvent(t, ch, "readiness.changed", 15*time.Second)
	if rd.Data["ready"] == true {
		rd = nextEvent(t, ch, "readiness.changed", 15*time.Second)
	}
	if rd.Data["ready"] != false {
		t.Fatalf("readiness %v", rd.Data)
	}
	nextEvent(t, ch, "source.down", 5*time.Second)
	c, m, _ := p.get(t, "/api/health?detailed=true")
	if c != 200 || m["status"] != "unhealthy" || m["components"].(map[string]any)["source"] != "unhealthy" ||
		m["components"].(map[string]any)["http"] != "healthy" {
		t.Fatalf("detailed health %d %v", c, m)
	}
	if c, m, _ := p.get(t, "/api/health/source"); c != 503 || m["status"] != "unhealthy" {
		t.Fatalf("/api/health/source %d %v", c, m)
	}
	if c, m, _ := p.get(t, "/api/health"); c != 200 || m["status"] != "ok" {
		t.Fatalf("plain health must stay 200: %d %v", c, m)
	}
	if c, _, _ := p.get(t, "/api/health/nope"); c != 404 {
		t.Fatalf("unknown component %d", c)
	}
	cam.Restart()
	nextEvent(t, ch, "source.up", 30*time.Second)
	rd = nextEvent(t, ch, "readiness.changed", 10*time.Second)
	if rd.Data["ready"] != true {
		t.Fatalf("readiness %v", rd.Data)
	}
	if c, _, _ := p.get(t, "/api/health/source"); c != 200 {
		t.Fatalf("/api/health/source after recovery %d", c)
	}

	// Draining: the startup probe never goes back to 503.
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	nextEvent(t, ch, "shutdown", 5*time.Second)
	p.waitFor(t, "/api/ready", 503, 5*time.Second)
	if c, _, _ := p.get(t, "/api/started"); c != 200 {
		t.Fatalf("started while draining %d", c)
	}
	if code := p.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
}

func TestHealthCheckPings(t *testing.T) {
	type ping struct {
		path string
		size int
	}
	var mu sync.Mutex
	var pings []ping
	mon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		pings = append(pings, ping{r.URL.Path, len(b)})
		mu.Unlock()
	}))
	defer mon.Close()
	cam := rtsptest.Start(t, rtsptest.Options{})
	p := launch(t, []string{"-c", writeConfig(t, `{"media":{"sourceGraceSeconds":1},"healthCheck":{"intervalSeconds":1}}`),
		"--source", cam.URL("cam"), "--health-check-url", mon.URL + "/ping/key123"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	waitPings := func(what string, pred func([]ping) bool) []ping {
		deadline := time.Now().Add(20 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			cp := append([]ping(nil), pings...)
			mu.Unlock()
			if pred(cp) {
				return cp
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("%s: pings %v", what, pings)
		return nil
	}
	count := func(ps []ping, path string) int {
		n := 0
		for _, x := range ps {
			if x.path == path {
				n++
			}
		}
		return n
	}
	ps := waitPings("start then periodic success", func(ps []ping) bool { return count(ps, "/ping/key123") >= 2 })
	if ps[0].path != "/ping/key123/start" || ps[0].size == 0 {
		t.Fatalf("first ping %v", ps[0])
	}
	cam.Stop()
	ps = waitPings("fail when readiness drops", func(ps []ping) bool { return count(ps, "/ping/key123/fail") == 1 })
	for _, x := range ps {
		if x.size > 100*1024 {
			t.Fatalf("ping body %d bytes > 100 KB", x.size)
		}
	}
	if strings.Contains(p.stderr.String(), "key123") {
		t.Fatal("the ping URL (with its key) was logged")
	}
}

func TestUnreachableMonitorChangesNothingForViewers(t *testing.T) {
	// A monitor that accepts connections and never answers.
	quit := make(chan struct{})
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-quit:
		}
	}))
	defer stall.Close()
	defer close(quit) // runs first: release the held requests so Close can return
	p := launch(t, []string{"--health-check-url", stall.URL + "/k"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitVideo(60, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if c, _, _ := p.get(t, "/api/ready"); c != 200 {
		t.Fatalf("ready %d with a stalled monitor", c)
	}
}
