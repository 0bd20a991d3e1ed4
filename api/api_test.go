package api

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/preflight"
)

type fakeSessions struct{ a, t int64 }

func (f fakeSessions) Counts() (int64, int64) { return f.a, f.t }

type fakeTURN struct{}

func (fakeTURN) Credentials() (string, string) { return "1700000000:icey", "c3VwZXI=" }
func (fakeTURN) TURNStats() TURNStats {
	return TURNStats{Allocations: 1, Refusals: map[string]uint64{"peer_denied": 2}}
}

func newTestHandler(token string, pf *preflight.Preflight) *Handler {
	now := time.Unix(10_000, 0)
	return New(Config{
		Version: "1.2.3", Mode: "stream", Token: token, Started: now.Add(-3601 * time.Second),
		Now: func() time.Time { return now }, Preflight: pf, Sessions: fakeSessions{2, 15}, TURN: fakeTURN{},
		Source: "rtsp://camera.local/stream1", SourceKind: "rtsp", RecordDir: "./recordings",
		HTTPHost: "0.0.0.0", TURNEnabled: true, TURNPort: 3478,
	})
}

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) (*http.Response, map[string]any) {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	req.Host = "viewer.example:4500"
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	resp := rec.Result()
	body, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if method != http.MethodHead {
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("%s %s: body is not JSON: %q", method, path, body)
		}
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: content type %q", path, ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("%s: cache-control %q", path, cc)
	}
	return resp, m
}

// typeOf names a decoded JSON value's type.
func typeOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "bool"
	case map[string]any:
		return "object"
	case []any:
		return "array"
	case nil:
		return "null"
	}
	return "?"
}

func requireShape(t *testing.T, m map[string]any, shape map[string]string) {
	t.Helper()
	for path, want := range shape {
		var cur any = m
		for _, k := range strings.Split(path, ".") {
			obj, ok := cur.(map[string]any)
			if !ok {
				t.Fatalf("%s: parent is not an object", path)
			}
			if cur, ok = obj[k]; !ok {
				t.Fatalf("missing field %s in %v", path, m)
			}
		}
		if got := typeOf(cur); got != want {
			t.Fatalf("%s: type %s, want %s", path, got, want)
		}
	}
}

func TestEndpointsMatchTheContract(t *testing.T) {
	pf := preflight.New("stream")
	pf.Set(preflight.CheckConfig, preflight.Pass, "Loaded config from /etc/icey-server/config.json")
	pf.Set(preflight.CheckTURN, preflight.Warn, "TURN is enabled without externalIp while binding to a wildcard host",
		"TURN externalIp is unset; remote NAT traversal may fail outside local or host-network testing.")
	h := newTestHandler("", pf)

	resp, m := get(t, h, "GET", "/api/health", nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	requireShape(t, m, map[string]string{"status": "string", "product": "string", "service": "string", "version": "string"})
	if m["status"] != "ok" || m["product"] != "icey" || m["service"] != "icey-server" || m["version"] != "1.2.3" {
		t.Fatalf("health %v", m)
	}

	resp, m = get(t, h, "GET", "/api/ready", nil)
	if resp.StatusCode != 200 || m["status"] != "degraded" || m["ready"] != true {
		t.Fatalf("ready %d %v", resp.StatusCode, m)
	}
	requireShape(t, m, map[string]string{"status": "string", "ready": "bool", "product": "string", "service": "string",
		"mode": "string", "checks": "array", "warnings": "array"})
	c0 := m["checks"].([]any)[0].(map[string]any)
	requireShape(t, c0, map[string]string{"name": "string", "result": "string", "detail": "string"})

	resp, m = get(t, h, "GET", "/api/status", nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	requireShape(t, m, map[string]string{
		"status": "string", "ready": "bool", "product": "string", "service": "string", "mode": "string",
		"version": "string", "peer.id": "string", "peer.name": "string", "peer.type": "string",
		"runtime.state": "string", "uptimeSec": "number", "sessions.active": "number", "sessions.total": "number",
		"stream.source": "string", "stream.sourceKind": "string", "stream.loop": "bool", "record.dir": "string",
		"intelligence.vision": "bool", "intelligence.speech": "bool",
	})
	if m["uptimeSec"] != float64(3601) || m["sessions"].(map[string]any)["total"] != float64(15) {
		t.Fatalf("status %v", m)
	}
	if p := m["peer"].(map[string]any); p["id"] != "server" || p["name"] != "Icey Server" || p["type"] != "server" {
		t.Fatalf("peer %v", p)
	}

	resp, m = get(t, h, "GET", "/api/config", nil)
	if resp.StatusCode != 200 {
		t.Fatal(resp.Status)
	}
	requireShape(t, m, map[string]string{
		"status": "string", "mode": "string", "product": "string", "service": "string", "version": "string",
		"http.host": "string", "http.scheme": "string", "http.tls": "bool",
		"turn.enabled": "bool", "turn.host": "string", "turn.port": "number", "turn.username": "string",
		"turn.credential": "string", "stun.urls": "array",
	})
	// Wildcard bind without externalIp: the host the browser used.
	if tu := m["turn"].(map[string]any); tu["host"] != "viewer.example" {
		t.Fatalf("turn host %v", tu["host"])
	}
	if u := m["stun"].(map[string]any)["urls"].([]any); len(u) != 1 || u[0] != "stun:viewer.example:3478" {
		t.Fatalf("stun urls %v", u)
	}
}

func TestReadyIs503WhenACheckFails(t *testing.T) {
	pf := preflight.New("stream")
	pf.Set(preflight.CheckSource, preflight.Fail, "rtsp source unavailable for 12s")
	resp, m := get(t, newTestHandler("", pf), "GET", "/api/ready?x=1", nil)
	if resp.StatusCode != 503 || m["ready"] != false || m["status"] != "error" {
		t.Fatalf("%d %v", resp.StatusCode, m)
	}
}

func TestAuth(t *testing.T) {
	h := newTestHandler("s3cret", preflight.New("stream"))
	for _, p := range []string{"/api/status", "/api/config"} {
		for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer nope"}, {"X-Icey-Token": "s3cre"},
			{"Authorization": "Basic s3cret"}} {
			resp, m := get(t, h, "GET", p, hdr)
			if resp.StatusCode != 401 || m["error"] != "unauthorized" || m["status"] != "error" {
				t.Fatalf("%s %v: %d %v", p, hdr, resp.StatusCode, m)
			}
		}
		for _, hdr := range []map[string]string{{"Authorization": "Bearer s3cret"}, {"X-Icey-Token": "s3cret"}} {
			if resp, _ := get(t, h, "GET", p, hdr); resp.StatusCode != 200 {
				t.Fatalf("%s %v: %d", p, hdr, resp.StatusCode)
			}
		}
	}
	for _, p := range []string{"/api/health", "/api/ready"} {
		if resp, _ := get(t, h, "GET", p, nil); resp.StatusCode != 200 {
			t.Fatalf("%s must stay open: %d", p, resp.StatusCode)
		}
	}
	// The token never appears in a response.
	for _, p := range []string{"/api/status", "/api/config", "/api/ready"} {
		req := httptest.NewRequest("GET", p, nil)
		req.Header.Set("X-Icey-Token", "s3cret")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if strings.Contains(rec.Body.String(), "s3cret") {
			t.Fatalf("%s leaks the token", p)
		}
	}
}

func TestErrors(t *testing.T) {
	h := newTestHandler("", preflight.New("stream"))
	resp, m := get(t, h, "GET", "/api/nope?a=b", nil)
	if resp.StatusCode != 404 || m["error"] != "not_found" || m["status"] != "error" {
		t.Fatalf("404: %d %v", resp.StatusCode, m)
	}
	resp, m = get(t, h, "POST", "/api/health", nil)
	if resp.StatusCode != 405 || resp.Header.Get("Allow") == "" || m["error"] != "method_not_allowed" {
		t.Fatalf("405: %d %v %v", resp.StatusCode, resp.Header, m)
	}
	if resp, _ := get(t, h, "GET", "/api/health?probe=1&x", nil); resp.StatusCode != 200 {
		t.Fatalf("query string must be ignored: %d", resp.StatusCode)
	}
	if resp, _ := get(t, h, "HEAD", "/api/health", nil); resp.StatusCode != 200 {
		t.Fatalf("HEAD: %d", resp.StatusCode)
	}
}

func TestEventsAuthAndStreams(t *testing.T) {
	bus := events.New()
	h := New(Config{Version: "1", Mode: "stream", Token: "tk", Started: time.Now(), Events: bus,
		Snapshot: func() any { return map[string]any{"ready": true} }})
	srv := httptest.NewServer(h)
	defer srv.Close()

	// SSE: header token required; a query token is not accepted for plain GETs.
	for _, u := range []string{srv.URL + "/api/events", srv.URL + "/api/events?token=tk"} {
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 401 {
			t.Fatalf("%s: %d, want 401", u, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest("GET", srv.URL+"/api/events", nil)
	req.Header.Set("Authorization", "Bearer tk")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	rd := bufio.NewReader(resp.Body)
	readData := func() string {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "data: ") {
				return line
			}
		}
	}
	if d := readData(); !strings.Contains(d, `"type":"snapshot"`) {
		t.Fatalf("first event %s", d)
	}
	waitSubs := func(n int) {
		for i := 0; i < 200 && bus.Subscribers() < n; i++ {
			time.Sleep(5 * time.Millisecond)
		}
	}
	waitSubs(1)
	bus.Publish(events.SessionStarted, map[string]string{"id": "abc"})
	if d := readData(); !strings.Contains(d, `"type":"session.started"`) || !strings.Contains(d, `"abc"`) {
		t.Fatalf("event %s", d)
	}

	// WebSocket: the upgrade may carry the token in the query.
	wsURL := "ws" + strings.TrimPrefix(srv.URL, "http") + "/api/events?token=tk"
	c, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var e events.Event
	if err := c.ReadJSON(&e); err != nil || e.Type != events.Snapshot {
		t.Fatalf("ws snapshot %v %v", e, err)
	}
	waitSubs(2)
	bus.Publish(events.SourceDown, nil)
	if err := c.ReadJSON(&e); err != nil || e.Type != events.SourceDown {
		t.Fatalf("ws event %v %v", e, err)
	}
	if _, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/api/events?token=bad", nil); err == nil {
		t.Fatal("ws with a wrong token connected")
	}
}

func TestStartedProbe(t *testing.T) {
	var done bool
	h := New(Config{Version: "1", Started: time.Now(), StartupDone: func() bool { return done }})
	resp, m := get(t, h, "GET", "/api/started", nil)
	if resp.StatusCode != 503 || m["started"] != false {
		t.Fatalf("before: %d %v", resp.StatusCode, m)
	}
	done = true
	resp, m = get(t, h, "GET", "/api/started", nil)
	if resp.StatusCode != 200 || m["started"] != true {
		t.Fatalf("after: %d %v", resp.StatusCode, m)
	}
}
