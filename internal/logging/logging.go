// Package logging builds the server's slog logger: text or JSON to stderr,
// a level, and a scrubbing layer that removes secrets and URL credentials
// from every message and string attribute, so no component can leak them by
// accident.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/icey/icey-server/internal/redact"
)

// ParseLevel maps debug|info|warn|error to a slog level.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info", "":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("unknown log level %q", s)
}

// New returns a logger writing to w. secrets are scrubbed from output.
func New(w io.Writer, level slog.Level, format string, secrets []string) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	if format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(&scrubber{next: h, secrets: nonEmpty(secrets)})
}

func nonEmpty(in []string) []string {
	var out []string
	for _, s := range in {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// scrubber also owns the "module" attribute: a logger scoped twice (cmd
// scopes, then the package scopes again) keeps only the innermost module
// instead of printing the key twice.
type scrubber struct {
	next    slog.Handler
	secrets []string
	module  string
}

func (s *scrubber) clean(v string) string { return redact.Secrets(redact.URL(v), s.secrets...) }

func (s *scrubber) Enabled(ctx context.Context, l slog.Level) bool { return s.next.Enabled(ctx, l) }

func (s *scrubber) Handle(ctx context.Context, r slog.Record) error {
	out := slog.NewRecord(r.Time, r.Level, s.clean(r.Message), r.PC)
	module := s.module
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "module" {
			module = a.Value.String()
			return true
		}
		out.AddAttrs(s.attr(a))
		return true
	})
	if module != "" {
		out.AddAttrs(slog.String("module", module))
	}
	return s.next.Handle(ctx, out)
}

func (s *scrubber) attr(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindString:
		return slog.String(a.Key, s.clean(v.String()))
	case slog.KindGroup:
		attrs := v.Group()
		out := make([]any, 0, len(attrs))
		for _, g := range attrs {
			out = append(out, s.attr(g))
		}
		return slog.Group(a.Key, out...)
	case slog.KindAny:
		if err, ok := v.Any().(error); ok {
			return slog.String(a.Key, s.clean(err.Error()))
		}
		if st, ok := v.Any().(fmt.Stringer); ok {
			return slog.String(a.Key, s.clean(st.String()))
		}
		return slog.String(a.Key, s.clean(fmt.Sprint(v.Any())))
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func (s *scrubber) WithAttrs(attrs []slog.Attr) slog.Handler {
	module := s.module
	clean := make([]slog.Attr, 0, len(attrs))
	for _, a := range attrs {
		if a.Key == "module" {
			module = a.Value.String()
			continue
		}
		clean = append(clean, s.attr(a))
	}
	return &scrubber{next: s.next.WithAttrs(clean), secrets: s.secrets, module: module}
}

func (s *scrubber) WithGroup(name string) slog.Handler {
	return &scrubber{next: s.next.WithGroup(name), secrets: s.secrets, module: s.module}
}

// Module scopes a logger to a component.
func Module(l *slog.Logger, name string) *slog.Logger { return l.With("module", name) }
