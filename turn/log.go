package turn

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pion/logging"

	ilog "github.com/icey/icey-server/internal/logging"
)

// slogFactory bridges pion's logger into slog at a quiet level: pion logs
// per request and even per datagram (Info "No Permission...", Error "Failed
// to send DataIndication"), so trace/debug/info go below slog's Debug and
// warnings/errors are rate limited to one line per second with a count.
type slogFactory struct{ log *slog.Logger }

func (f *slogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &slogLeveled{log: f.log.With("pion", scope)}
}

const (
	levelPionTrace = slog.LevelDebug - 8
	levelPionDebug = slog.LevelDebug - 4
	levelPionInfo  = slog.LevelDebug
)

type slogLeveled struct {
	log   *slog.Logger
	limit ilog.Limiter // warnings and errors: one line per second
}

func (l *slogLeveled) emit(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l *slogLeveled) emitf(level slog.Level, format string, args ...any) {
	if l.log.Enabled(context.Background(), level) {
		l.log.Log(context.Background(), level, fmt.Sprintf(format, args...))
	}
}

// warn logs at Warn at most once per second; the next line carries how many
// were suppressed in between.
func (l *slogLeveled) warn(msg func() string) {
	ok, n := l.limit.Allow(time.Now())
	if !ok {
		return
	}
	if n > 0 {
		l.log.Warn(msg(), "suppressed", n)
		return
	}
	l.log.Warn(msg())
}

func (l *slogLeveled) Trace(msg string)                  { l.emit(levelPionTrace, msg) }
func (l *slogLeveled) Tracef(format string, args ...any) { l.emitf(levelPionTrace, format, args...) }
func (l *slogLeveled) Debug(msg string)                  { l.emit(levelPionDebug, msg) }
func (l *slogLeveled) Debugf(format string, args ...any) { l.emitf(levelPionDebug, format, args...) }
func (l *slogLeveled) Info(msg string)                   { l.emit(levelPionInfo, msg) }
func (l *slogLeveled) Infof(format string, args ...any)  { l.emitf(levelPionInfo, format, args...) }
func (l *slogLeveled) Warn(msg string)                   { l.warn(func() string { return msg }) }
func (l *slogLeveled) Warnf(format string, args ...any) {
	l.warn(func() string { return fmt.Sprintf(format, args...) })
}
func (l *slogLeveled) Error(msg string) { l.warn(func() string { return msg }) }
func (l *slogLeveled) Errorf(format string, args ...any) {
	l.warn(func() string { return fmt.Sprintf(format, args...) })
}
