package main

// A web page on another origin, in real Chromium, against the binary with
// the default configuration (no token): it can neither read the ops API and
// its event streams nor end a viewer's session.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

func TestCrossOriginPageCannotListOrEndSessions(t *testing.T) {
	testenv.LoopbackOnly(t)
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)

	// An observer on this machine follows the events and sees the
	// victim's (opaque) session id.
	events, closeEvents := openSSE(t, p.base+"/api/events", "")
	defer closeEvents()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	victim, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	if err := victim.WaitVideo(30, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	observed, _ := nextEvent(t, events, "session.started", 10*time.Second).Data["id"].(string)
	if observed == "" {
		t.Fatal("session.started without an id")
	}
	t.Logf("id observed in /api/events: %q", observed)
	// The attacker's page: same host, another port, so another origin.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte("<!doctype html><title>evil</title>"))
	}))
	defer evil.Close()

	b := browsertest.Start(t, browsertest.Options{})
	if err := b.Navigate(evil.URL + "/"); err != nil {
		b.Fatalf("open page: %v", err)
	}
	script := `(async () => {
  const base = ` + originTestJS(p.base) + `, id = ` + originTestJS(observed) + `;
  const out = {};
  const tryFetch = async (path, init) => {
    try { const r = await fetch(base + path, init); return "status " + r.status + " " + (await r.text()).slice(0, 200); }
    catch (e) { return "blocked: " + e.name; }
  };
  out.status = await tryFetch("/api/status");
  out.config = await tryFetch("/api/config");
  out.events = await new Promise(res => {
    const ws = new WebSocket(base.replace("http", "ws") + "/api/events");
    const t = setTimeout(() => res("timeout"), 5000);
    ws.onmessage = m => { clearTimeout(t); res("read: " + String(m.data).slice(0, 100)); ws.close(); };
    ws.onerror = () => { clearTimeout(t); res("blocked"); };
  });
  out.sse = await new Promise(res => {
    const es = new EventSource(base + "/api/events");
    const t = setTimeout(() => { es.close(); res("nothing read"); }, 3000);
    es.addEventListener("snapshot", m => { clearTimeout(t); es.close(); res("read: " + m.data.slice(0, 100)); });
    es.onerror = () => { clearTimeout(t); es.close(); res("blocked"); };
  });
  out.delete = await tryFetch("/whep/" + encodeURIComponent(id), {method: "DELETE"});
  out.deleteGuess = await tryFetch("/whep/0123456789abcdef", {method: "DELETE"});
  return JSON.stringify(out);
})()`
	res, err := browsertest.Eval[string](b, 30*time.Second, script)
	if err != nil {
		b.Fatalf("attack script: %v", err)
	}
	t.Logf("cross-origin page saw: %s", res)
	for _, leak := range []string{"sessions", "snapshot", "read:", "credential", "status 200"} {
		if strings.Contains(res, leak) {
			t.Fatalf("the foreign page read %q: %s", leak, res)
		}
	}
	if !strings.Contains(res, `"delete":"status 404`) || !strings.Contains(res, `"deleteGuess":"status 404`) {
		t.Fatalf("DELETE with an observed or guessed id must be 404: %s", res)
	}
	// The victim keeps receiving video.
	before := victim.VideoPackets.Load()
	time.Sleep(time.Second)
	if victim.VideoPackets.Load() <= before {
		t.Fatal("the victim stopped receiving video")
	}
	if _, st, _ := p.get(t, "/api/status"); st["sessions"].(map[string]any)["active"] != float64(1) {
		t.Fatalf("victim session gone: %v", st["sessions"])
	}
}

func originTestJS(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "<", `\u003c`)
	return `"` + r.Replace(s) + `"`
}
