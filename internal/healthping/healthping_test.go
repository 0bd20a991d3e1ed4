package healthping

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type ping struct {
	path string
	body string
}

func TestPingProtocol(t *testing.T) {
	var mu sync.Mutex
	var got []ping
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			t.Errorf("method %s", r.Method)
		}
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, ping{r.URL.Path, string(b)})
		mu.Unlock()
	}))
	defer srv.Close()

	tail := &Tail{}
	for i := 0; i < 5000; i++ { // ~250 KB of log: the body must be capped
		io.WriteString(tail, "time=now level=INFO msg=\"line of log output padding\" n=1234567\n")
	}
	var ready atomic.Bool
	ready.Store(true)
	p := New(Config{URL: srv.URL + "/ping/abc-key/", Interval: 1500 * time.Millisecond, Logs: tail}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx, ready.Load) }()

	waitFor := func(pred func([]ping) bool) []ping {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			cp := append([]ping(nil), got...)
			mu.Unlock()
			if pred(cp) {
				return cp
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("timed out; got %v", got)
		return nil
	}
	count := func(ps []ping, path string) int {
		n := 0
		for _, p := range ps {
			if p.path == path {
				n++
			}
		}
		return n
	}
	ps := waitFor(func(ps []ping) bool { return count(ps, "/ping/abc-key") >= 2 })
	if ps[0].path != "/ping/abc-key/start" {
		t.Fatalf("first ping %s", ps[0].path)
	}
	ready.Store(false)
	ps = waitFor(func(ps []ping) bool { return count(ps, "/ping/abc-key/fail") == 1 })
	for _, p := range ps {
		if len(p.body) > MaxBody || len(p.body) < MaxBody-4096 {
			t.Fatalf("body %d bytes, want the last <=100 KB of log", len(p.body))
		}
		if !strings.HasPrefix(p.body, "time=") {
			t.Fatalf("body does not start at a line: %q", p.body[:40])
		}
	}
	cancel()
	<-done
}

func TestUnreachableMonitorDoesNotBlock(t *testing.T) {
	// A listener that accepts and never answers.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	p := New(Config{URL: srv.URL, Timeout: 200 * time.Millisecond}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx, func() bool { return true }) }()
	time.Sleep(700 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(3 * time.Second):
		t.Fatal("Run did not stop")
	}
	if time.Since(start) > 3*time.Second {
		t.Fatal("pings blocked")
	}
}
