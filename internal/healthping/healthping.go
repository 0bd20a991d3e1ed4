// Package healthping sends outbound health-check pings in the
// healthchecks.io protocol: POST <url>/start at startup, POST <url> at an
// interval while ready, POST <url>/fail when readiness drops. Each body is
// the tail of the log (at most 100 KB). A monitor that cannot be reached
// never affects serving: one attempt per ping with a timeout, no retries,
// failures logged once per outage.
package healthping

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/icey/icey-server/internal/redact"
)

// MaxBody is the most log bytes sent with a ping.
const MaxBody = 100 * 1024

// Config of a Pinger.
type Config struct {
	URL      string        // the check's ping URL (it carries the check's key: never logged)
	Interval time.Duration // success pings while ready; default 60 s
	Timeout  time.Duration // per request; default 10 s
	Client   *http.Client  // default: a client with Timeout
	Logs     *Tail         // the log tail sent as the body (may be nil)
}

// Pinger runs the ping loop.
type Pinger struct {
	cfg     Config
	log     *slog.Logger
	failing bool // last ping failed (to log outages once)
}

// New validates cfg and returns a Pinger.
func New(cfg Config, log *slog.Logger) *Pinger {
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: cfg.Timeout}
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	return &Pinger{cfg: cfg, log: log}
}

// Run pings until ctx is done. ready is polled each second (non-blocking);
// a true->false edge sends /fail at once, false->true a success ping.
func (p *Pinger) Run(ctx context.Context, ready func() bool) {
	p.send(ctx, "/start")
	last := ready()
	if last {
		p.send(ctx, "")
	}
	nextOK := time.Now().Add(p.cfg.Interval)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := ready()
		switch {
		case last && !now:
			p.send(ctx, "/fail")
		case !last && now:
			p.send(ctx, "")
			nextOK = time.Now().Add(p.cfg.Interval)
		case now && !time.Now().Before(nextOK):
			p.send(ctx, "")
			nextOK = time.Now().Add(p.cfg.Interval)
		}
		last = now
	}
}

func (p *Pinger) send(ctx context.Context, suffix string) {
	var body []byte
	if p.cfg.Logs != nil {
		body = p.cfg.Logs.Bytes()
	}
	rctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, p.cfg.URL+suffix, bytes.NewReader(body))
	if err != nil {
		p.fail(suffix, err)
		return
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	req.Header.Set("User-Agent", "icey-server healthping")
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			p.fail(suffix, err)
		}
		return
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		p.fail(suffix, &statusError{resp.StatusCode})
		return
	}
	if p.failing {
		p.log.Info("health-check monitor reachable again")
	}
	p.failing = false
}

type statusError struct{ code int }

func (e *statusError) Error() string { return "monitor answered " + http.StatusText(e.code) }

func (p *Pinger) fail(suffix string, err error) {
	if p.failing {
		return // one line per outage, not per ping
	}
	p.failing = true
	kind := strings.TrimPrefix(suffix, "/")
	if kind == "" {
		kind = "success"
	}
	// The URL embeds the check's key: log neither it nor an error quoting it.
	msg := strings.ReplaceAll(err.Error(), p.cfg.URL, "<health-check-url>")
	p.log.Warn("health-check ping failed; serving is unaffected", "ping", kind, "err", redact.URL(msg))
}

// Tail is an io.Writer that keeps the last MaxBody bytes written (the log
// tail). Safe for concurrent use.
type Tail struct {
	mu  sync.Mutex
	buf []byte
}

// Write appends p, keeping only the newest MaxBody bytes.
func (t *Tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - MaxBody; over > 0 {
		// Cut at a line boundary so the body starts with a whole line.
		cut := over
		if i := bytes.IndexByte(t.buf[over:], '\n'); i >= 0 && i < 4096 {
			cut = over + i + 1
		}
		t.buf = append(t.buf[:0], t.buf[cut:]...)
	}
	return len(p), nil
}

// Bytes returns a copy of the tail.
func (t *Tail) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}
