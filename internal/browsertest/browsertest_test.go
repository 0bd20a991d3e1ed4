package browsertest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
)

// TestBrowserHarness checks the harness itself against a local page: values
// come back typed, exceptions and rejected promises are errors, a slow
// promise times out, Poll waits, console lines are kept, screenshots land in
// $ICEY_TEST_ARTIFACTS as PNG, and the WHEP viewer installs and reports.
func TestBrowserHarness(t *testing.T) {
	testenv.LoopbackOnly(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/html")
		w.Write([]byte(`<!doctype html><title>t</title><body><h1 id="h">hello</h1>
<script>console.log("page says", 42); setTimeout(() => { window.ready = true }, 300)</script>`))
	}))
	defer srv.Close()
	art := t.TempDir()
	t.Setenv("ICEY_TEST_ARTIFACTS", art)

	baseline := runtime.NumGoroutine()
	b := Start(t, Options{Width: 640, Height: 480})
	if err := b.Navigate(srv.URL); err != nil {
		t.Fatal(err)
	}
	if s := MustEval[string](b, 5*time.Second, `document.getElementById("h").textContent`); s != "hello" {
		t.Fatalf("text %q", s)
	}
	if n := MustEval[int](b, 5*time.Second, `new Promise(r => setTimeout(() => r(7), 50))`); n != 7 {
		t.Fatalf("awaited promise gave %d", n)
	}
	if _, err := Eval[int](b, 5*time.Second, `(() => { throw new Error("boom") })()`); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("exception: %v", err)
	}
	if _, err := Eval[int](b, 5*time.Second, `Promise.reject(new Error("nope"))`); err == nil {
		t.Fatal("rejected promise gave no error")
	}
	start := time.Now()
	if _, err := Eval[int](b, 300*time.Millisecond, `new Promise(() => {})`); err == nil || time.Since(start) > 5*time.Second {
		t.Fatalf("never-settling promise: %v after %v", err, time.Since(start))
	}
	// The tab still works after a timed-out evaluation.
	if err := b.Poll(`window.ready === true`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Poll(`false`, 200*time.Millisecond); err == nil {
		t.Fatal("Poll of a false expression succeeded")
	}
	if c := b.Console(); !strings.Contains(c, "page says") || !strings.Contains(c, "42") {
		t.Fatalf("console %q", c)
	}

	p := b.Screenshot("harness.png")
	png, err := os.ReadFile(p)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) || !strings.HasPrefix(p, art) {
		t.Fatalf("screenshot %s: %v", p, err)
	}

	if err := b.InstallWHEP(); err != nil {
		t.Fatal(err)
	}
	s, err := b.WHEPStats()
	if err != nil || s.ConnectionState != "closed" || s.FramesDecoded != 0 {
		t.Fatalf("idle viewer stats %+v %v", s, err)
	}
	// No WHEP endpoint here: a clear error, not a hang.
	if err := b.WHEPPlay(WHEPOptions{}); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("play against a page without /whep: %v", err)
	}

	// Close stops the browser and every goroutine the harness started.
	b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > baseline && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > baseline {
		t.Fatalf("%d goroutines after Close, %d before Start", n, baseline)
	}
}
