package transcode

import (
	"context"
	"log/slog"
	"os/exec"
)

// Command prepares an ffmpeg (or other) child the way every child of the
// server is run: its own process group, SIGKILL on ctx's end, always
// reaped, and ChildEnv's scrubbed environment.
func Command(ctx context.Context, path string, args []string) *exec.Cmd {
	return command(ctx, path, args)
}

// Stderr keeps a child's last stderr lines for error messages and logs
// them at most once per second. Use it as cmd.Stderr.
type Stderr struct{ t *tail }

// NewStderr keeps the last max lines; scrub (may be nil) edits every line
// before it is kept or logged.
func NewStderr(max int, scrub func(string) string, log *slog.Logger) *Stderr {
	if scrub == nil {
		scrub = func(s string) string { return s }
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Stderr{t: newTail(max, scrub, log)}
}

func (s *Stderr) Write(p []byte) (int, error) { return s.t.Write(p) }

// Flush logs a pending partial line and the count of suppressed lines.
func (s *Stderr) Flush() { s.t.flush() }

// Summary is ": line1 | line2 ..." or "" when the child said nothing.
func (s *Stderr) Summary() string { return s.t.summary() }

// FFmpegPath resolves the ffmpeg binary: name (default "ffmpeg") looked up
// in PATH, ErrNoFFmpeg when it is not there.
func FFmpegPath(name string) (string, error) {
	if name == "" {
		name = "ffmpeg"
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", ErrNoFFmpeg
	}
	return p, nil
}
