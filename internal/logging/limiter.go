package logging

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter rate-limits one log line. Problems on hot paths (a packet that
// cannot be sent, a datagram pion complains about, a line of ffmpeg stderr)
// can repeat thousands of times a second; logging each would flood the log
// and cost more than the work itself. A Limiter lets at most Burst lines
// through per Interval and counts the ones it holds back, so the next line
// that does get through can say how many were aggregated into it
// ("suppressed", n).
//
// The zero value is ready to use: one line per second. A Limiter is safe for
// concurrent use and must not be copied after first use. The held-back path
// takes a mutex and increments a counter; it does not allocate.
type Limiter struct {
	// Interval is the window length; 0 means one second.
	Interval time.Duration
	// Burst is how many lines each window lets through; 0 means one.
	Burst int

	mu   sync.Mutex
	from time.Time // start of the current window; zero before the first call
	n    int       // lines let through in the current window
	held int       // lines held back since the last one let through
}

// Allow reports whether a line at now may be logged. When ok, held is how
// many lines were held back since the previous allowed one (and the count
// starts again from zero); when not ok, the line is counted as held back.
func (l *Limiter) Allow(now time.Time) (ok bool, held int) {
	interval := l.Interval
	if interval <= 0 {
		interval = time.Second
	}
	burst := l.Burst
	if burst <= 0 {
		burst = 1
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.from.IsZero() || now.Sub(l.from) >= interval {
		l.from, l.n = now, 0
	}
	if l.n >= burst {
		l.held++
		return false, 0
	}
	l.n++
	held, l.held = l.held, 0
	return true, held
}

// Flush returns how many lines were held back since the last allowed one and
// resets the count, for a final "and n more" line when the source ends.
func (l *Limiter) Flush() (held int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	held, l.held = l.held, 0
	return held
}

// Log logs msg with args at level if Allow(time.Now()) lets it through,
// adding "suppressed", n when n earlier lines were held back. It reports
// whether the line was logged.
func (l *Limiter) Log(log *slog.Logger, level slog.Level, msg string, args ...any) bool {
	return l.LogAt(time.Now(), log, level, msg, args...)
}

// LogAt is Log with an explicit time.
func (l *Limiter) LogAt(now time.Time, log *slog.Logger, level slog.Level, msg string, args ...any) bool {
	ok, held := l.Allow(now)
	if !ok {
		return false
	}
	if held > 0 {
		args = append(args[:len(args):len(args)], "suppressed", held)
	}
	log.Log(context.Background(), level, msg, args...)
	return true
}
