package media

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of SupervisorConfig.
const (
	DefaultMinBackoff  = 500 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
	DefaultGracePeriod = 10 * time.Second
	DefaultStableAfter = 10 * time.Second
)

// ErrSupervisorRunning is returned by a second concurrent Supervisor.Run.
var ErrSupervisorRunning = errors.New("media: supervisor already running")

// SupervisorConfig tunes a Supervisor. The zero value is usable.
type SupervisorConfig struct {
	// MinBackoff and MaxBackoff bound the wait between failed runs
	// (defaults 500ms and 10s). The wait doubles per failure and is
	// jittered to [d/2, d) so that many cameras do not retry in lockstep.
	MinBackoff, MaxBackoff time.Duration
	// GracePeriod (default 10s): a source Reconnecting for longer than this
	// after it has delivered media is reported Failed (before its first
	// media, Reconnecting is Failed at once).
	GracePeriod time.Duration
	// StableAfter (default 10s): a run that delivered media for at least
	// this long resets the backoff to MinBackoff.
	StableAfter time.Duration
	// OnStateChange, optional, is called on every state transition from
	// the Run goroutine, without locks held. The error (credentials
	// stripped from its text, still matching errors.Is) is the failure for
	// SourceReconnecting, else nil.
	OnStateChange func(SourceState, error)
}

func (c SupervisorConfig) withDefaults() SupervisorConfig {
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = DefaultMaxBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = c.MinBackoff
	}
	if c.GracePeriod <= 0 {
		c.GracePeriod = DefaultGracePeriod
	}
	if c.StableAfter <= 0 {
		c.StableAfter = DefaultStableAfter
	}
	return c
}

// SupervisorStatus is a snapshot of a source's supervision.
type SupervisorStatus struct {
	State      SourceState
	Since      time.Time // when State was entered
	LastError  string    // credentials stripped
	Reconnects uint64    // restarts after a failure
	// Failed: Reconnecting for longer than GracePeriod, or Reconnecting
	// before the source ever delivered media (a camera that never answered
	// is not "briefly down": the grace period covers outages after media
	// has flowed).
	Failed  bool
	EverUp  bool          // the source has delivered media at least once
	RetryIn time.Duration // the latest wait chosen before a restart (jittered backoff)
}

// Supervisor runs a Source in a loop: it restarts it with a capped,
// jittered exponential backoff after failures, marks a Discontinuity on the
// stream before each restart, and tracks the source state.
type Supervisor struct {
	src     Source
	st      *Stream
	cfg     SupervisorConfig
	log     *slog.Logger
	running atomic.Bool

	mu     sync.Mutex
	status SupervisorStatus
}

// NewSupervisor returns a supervisor for src writing into st, and attaches
// it to st so that st.Stats reports the source state. log may be nil.
func NewSupervisor(src Source, st *Stream, cfg SupervisorConfig, log *slog.Logger) *Supervisor {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	sv := &Supervisor{
		src: src,
		st:  st,
		cfg: cfg.withDefaults(),
		log: log.With("module", "media", "stream", st.Name(), "source", src.String()),
		status: SupervisorStatus{
			State: SourceStarting,
			Since: time.Now(),
		},
	}
	st.sup.Store(sv)
	return sv
}

// Status returns a snapshot without blocking on the source.
func (sv *Supervisor) Status() SupervisorStatus {
	sv.mu.Lock()
	s := sv.status
	sv.mu.Unlock()
	s.Failed = s.State == SourceReconnecting && (!s.EverUp || time.Since(s.Since) > sv.cfg.GracePeriod)
	return s
}

// Run supervises the source until ctx is done, then returns nil (the
// state is then SourceStopped). A source that ends (Run returned nil) is
// not restarted: the state stays SourceEnded until ctx is done. Run does
// not close the stream; its owner does.
func (sv *Supervisor) Run(ctx context.Context) error {
	if !sv.running.CompareAndSwap(false, true) {
		return ErrSupervisorRunning
	}
	defer sv.running.Store(false)
	defer sv.setState(SourceStopped, nil)

	var backoff time.Duration
	for first := true; ctx.Err() == nil; first = false {
		if !first {
			sv.st.Discontinuity()
		}
		upFor, err := sv.runOnce(ctx)
		if ctx.Err() != nil {
			break
		}
		if err == nil {
			sv.log.Info("source ended")
			sv.setState(SourceEnded, nil)
			<-ctx.Done()
			break
		}
		if upFor >= sv.cfg.StableAfter {
			backoff = 0
		}
		backoff = nextBackoff(backoff, sv.cfg.MinBackoff, sv.cfg.MaxBackoff)
		wait := jitter(backoff)
		rerr := redactError(err)
		sv.log.Warn("source failed, retrying", "err", rerr.Error(), "backoff", wait.Round(time.Millisecond))
		sv.mu.Lock()
		sv.status.RetryIn = wait
		sv.mu.Unlock()
		sv.setState(SourceReconnecting, rerr)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
		if ctx.Err() == nil {
			sv.mu.Lock()
			sv.status.Reconnects++
			sv.mu.Unlock()
		}
	}
	return nil
}

// runOnce runs the source once, switching to SourceUp when its first
// packet is published. It reports how long media flowed.
func (sv *Supervisor) runOnce(ctx context.Context) (time.Duration, error) {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	media := sv.st.mediaSignal()
	done := make(chan error, 1)
	go func() { done <- sv.src.Run(runCtx, sv.st) }()
	var upAt time.Time
	for {
		select {
		case <-media:
			media = nil
			upAt = time.Now()
			sv.setState(SourceUp, nil)
		case err := <-done:
			// Media may have arrived just before the source returned (both
			// ready at once: select picks either): it still flowed.
			if media != nil {
				select {
				case <-media:
					upAt = time.Now()
					sv.setState(SourceUp, nil)
				default:
				}
			}
			var upFor time.Duration
			if !upAt.IsZero() {
				upFor = time.Since(upAt)
			}
			return upFor, err
		}
	}
}

// setState records a transition and reports it. Repeated failures while
// already Reconnecting update LastError without a new transition.
func (sv *Supervisor) setState(s SourceState, err error) {
	sv.mu.Lock()
	if err != nil {
		sv.status.LastError = err.Error()
	}
	if s == SourceUp {
		sv.status.EverUp = true
	}
	changed := sv.status.State != s
	if changed {
		sv.status.State = s
		sv.status.Since = time.Now()
	}
	sv.mu.Unlock()
	if changed {
		sv.log.Debug("source state", "state", string(s))
		if f := sv.cfg.OnStateChange; f != nil {
			f(s, err)
		}
	}
}

func nextBackoff(cur, lo, hi time.Duration) time.Duration {
	if cur <= 0 {
		return lo
	}
	if cur >= hi/2 {
		return hi
	}
	return cur * 2
}

// jitter spreads d over [d/2, d).
func jitter(d time.Duration) time.Duration {
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d-d/2)
}
