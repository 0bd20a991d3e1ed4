package signaling

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/pion/logging"

	ilog "github.com/icey/icey-server/internal/logging"
)

// pionLogFactory bridges pion's leveled loggers into slog. pion is chatty
// about conditions that are normal for a server (peers vanishing, stray
// packets on the shared socket), so its levels are shifted down: pion Error
// becomes slog Warn, pion Warn becomes slog Debug, and everything below is
// dropped. Each scope is rate-limited so a misbehaving peer cannot make pion
// log once per packet.
type pionLogFactory struct {
	log *slog.Logger
}

func (f *pionLogFactory) NewLogger(scope string) logging.LeveledLogger {
	return &pionLogger{
		log:   f.log.With("pion", scope),
		limit: ilog.Limiter{Interval: pionLogWindow, Burst: pionLogBurst},
	}
}

// pionLogBurst lines per pionLogWindow per scope are written; the rest are
// counted and the count is attached to the next written line.
const (
	pionLogBurst  = 10
	pionLogWindow = time.Second
)

type pionLogger struct {
	log   *slog.Logger
	limit ilog.Limiter
}

func (l *pionLogger) emitf(level slog.Level, format string, args ...any) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.emit(level, fmt.Sprintf(format, args...))
}

func (l *pionLogger) emit(level slog.Level, msg string) {
	if !l.log.Enabled(context.Background(), level) {
		return
	}
	l.limit.Log(l.log, level, msg)
}

func (l *pionLogger) Trace(string)          {}
func (l *pionLogger) Tracef(string, ...any) {}
func (l *pionLogger) Debug(string)          {}
func (l *pionLogger) Debugf(string, ...any) {}
func (l *pionLogger) Info(string)           {}
func (l *pionLogger) Infof(string, ...any)  {}
func (l *pionLogger) Warn(msg string)       { l.emit(slog.LevelDebug, msg) }
func (l *pionLogger) Warnf(format string, args ...any) {
	l.emitf(slog.LevelDebug, format, args...)
}
func (l *pionLogger) Error(msg string) { l.emit(slog.LevelWarn, msg) }
func (l *pionLogger) Errorf(format string, args ...any) {
	l.emitf(slog.LevelWarn, format, args...)
}
