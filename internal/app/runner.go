package app

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// DefaultStopTimeout bounds a component's Stop when it names no Timeout.
const DefaultStopTimeout = 5 * time.Second

// Component is one long-lived part of the server.
type Component struct {
	// Name identifies the component in logs ("turn", "sessions", ...).
	Name string
	// Start starts it; nil when there is nothing to start (a component
	// that only needs stopping in its place in the order).
	Start func() error
	// Stop stops it and waits for its goroutines; nil when there is
	// nothing to stop. It is called at most once, and only after a
	// successful Start.
	Stop func()
	// Timeout bounds Stop (DefaultStopTimeout when zero): a Stop that
	// overruns is logged and shutdown moves on to the next component,
	// but it is still waited for at the end (bounded by the context).
	Timeout time.Duration
}

// Runner starts components in order and stops them in reverse.
type Runner struct {
	log     *slog.Logger
	mu      sync.Mutex
	started []Component
	stopped bool
	wg      sync.WaitGroup // Stop calls in flight
}

// NewRunner returns an empty runner. log may be nil.
func NewRunner(log *slog.Logger) *Runner {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Runner{log: log}
}

// Start starts cs in order. When one fails, the ones it started (in this
// call and earlier ones) are stopped in reverse and the error, naming the
// component, is returned.
func (r *Runner) Start(ctx context.Context, cs ...Component) error {
	for _, c := range cs {
		r.mu.Lock()
		stopped := r.stopped
		r.mu.Unlock()
		if stopped {
			return fmt.Errorf("%s: runner stopped", c.Name)
		}
		if c.Start != nil {
			if err := c.Start(); err != nil {
				r.Stop(ctx)
				return fmt.Errorf("%s: %w", c.Name, err)
			}
		}
		r.mu.Lock()
		r.started = append(r.started, c)
		r.mu.Unlock()
	}
	return nil
}

// Stop stops every started component in reverse order, each bounded by
// its Timeout, then waits (bounded by ctx) for any that overran. It is
// idempotent.
func (r *Runner) Stop(ctx context.Context) {
	r.mu.Lock()
	list := r.started
	r.started = nil
	r.stopped = true
	r.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		c := list[i]
		if c.Stop == nil {
			continue
		}
		timeout := c.Timeout
		if timeout <= 0 {
			timeout = DefaultStopTimeout
		}
		done := make(chan struct{})
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer close(done)
			c.Stop()
		}()
		t := time.NewTimer(timeout)
		select {
		case <-done:
		case <-t.C:
			r.log.Warn("shutdown step timed out", "module", "main", "step", c.Name, "timeout", timeout)
		case <-ctx.Done():
		}
		t.Stop()
	}
	all := make(chan struct{})
	go func() { r.wg.Wait(); close(all) }()
	select {
	case <-all:
	case <-ctx.Done():
		r.log.Warn("shutdown: a timed-out step is still running at exit", "module", "main")
	}
}
