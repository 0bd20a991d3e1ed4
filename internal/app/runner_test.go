package app

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// recorder logs component calls in order.
type recorder struct {
	mu  sync.Mutex
	log []string
}

func (r *recorder) add(s string) { r.mu.Lock(); r.log = append(r.log, s); r.mu.Unlock() }

func (r *recorder) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return strings.Join(r.log, " ")
}

func (r *recorder) comp(name string, fail bool) Component {
	return Component{Name: name,
		Start: func() error {
			r.add("start:" + name)
			if fail {
				return errors.New("boom")
			}
			return nil
		},
		Stop: func() { r.add("stop:" + name) }}
}

// Components start in order and stop in reverse.
func TestRunnerOrder(t *testing.T) {
	leaktest.Check(t)
	rec := &recorder{}
	r := NewRunner(nil)
	if err := r.Start(context.Background(), rec.comp("a", false), rec.comp("b", false)); err != nil {
		t.Fatal(err)
	}
	if err := r.Start(context.Background(), rec.comp("c", false)); err != nil {
		t.Fatal(err)
	}
	r.Stop(context.Background())
	r.Stop(context.Background()) // idempotent
	if got, want := rec.String(), "start:a start:b start:c stop:c stop:b stop:a"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// A failed start rolls back what was started (earlier calls included) and
// names the component; nothing after it starts.
func TestRunnerRollback(t *testing.T) {
	leaktest.Check(t)
	rec := &recorder{}
	r := NewRunner(nil)
	if err := r.Start(context.Background(), rec.comp("a", false)); err != nil {
		t.Fatal(err)
	}
	err := r.Start(context.Background(), rec.comp("b", false), rec.comp("c", true), rec.comp("d", false))
	if err == nil || !strings.HasPrefix(err.Error(), "c: boom") {
		t.Fatalf("err = %v", err)
	}
	if got, want := rec.String(), "start:a start:b start:c stop:b stop:a"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if err := r.Start(context.Background(), rec.comp("e", false)); err == nil {
		t.Fatal("a stopped runner started a component")
	}
}

// A step that overruns its timeout does not hold up the next ones, and is
// still waited for (bounded by the context).
func TestRunnerBoundedSteps(t *testing.T) {
	leaktest.Check(t)
	rec := &recorder{}
	release := make(chan struct{})
	slow := Component{Name: "slow", Timeout: 50 * time.Millisecond,
		Stop: func() { <-release; rec.add("stop:slow") }}
	r := NewRunner(nil)
	if err := r.Start(context.Background(), rec.comp("first", false), slow); err != nil {
		t.Fatal(err)
	}
	go func() { time.Sleep(300 * time.Millisecond); close(release) }()
	start := time.Now()
	r.Stop(context.Background())
	if got, want := rec.String(), "start:first stop:first stop:slow"; got != want {
		t.Fatalf("got %q, want %q (the slow step must finish before Stop returns)", got, want)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("Stop returned after %v, before the slow step ended", el)
	}

	// With a context that ends first, Stop returns at the context.
	block := make(chan struct{})
	defer close(block)
	r2 := NewRunner(nil)
	_ = r2.Start(context.Background(), Component{Name: "stuck", Timeout: 20 * time.Millisecond, Stop: func() { <-block }})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start = time.Now()
	r2.Stop(ctx)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Stop ignored its context: %v", el)
	}
}
