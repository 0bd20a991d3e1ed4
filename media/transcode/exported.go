package transcode

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
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

// ProcessCPU is the CPU time (user + system) process pid has used so far,
// from Linux /proc; 0 when it cannot be read.
func ProcessCPU(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The fields after the command name, which may hold spaces, in ( ).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks
}

// clockTicks is USER_HZ, 100 on every Linux architecture Go supports.
const clockTicks = 100
