// Package childtest helps the media sources' tests (test-only code).
//
// It proves that no secret reaches a child process: it reads
// /proc/<pid>/cmdline and /proc/<pid>/environ of a running process and
// finds the children of a process. It also serves test media over HTTP
// (ServeLiveTS, Serve, WriteClip), runs a media.Source in the background
// (Start, RunErr) and tallies what a Stream delivers (Count, CountFor).
package childtest

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Proc is what the kernel shows about a process to anyone who can read
// its /proc entry (cmdline: every user, via ps; environ: its owner, root).
type Proc struct {
	Pid     int
	Cmdline []string
	Environ []string
}

// Read reads /proc/<pid>/cmdline and /proc/<pid>/environ.
//
// A process that has just been started may show an empty command line
// for a moment: os/exec returns once the parent's close-on-exec pipe
// closes, which the kernel does before it lays out the new argv. Read
// retries for up to a second before calling it exited or a zombie.
func Read(pid int) (Proc, error) { return read(pid, 100) }

func read(pid, retries int) (Proc, error) {
	p := Proc{Pid: pid}
	dir := "/proc/" + strconv.Itoa(pid)
	var cmd []byte
	for i := 0; ; i++ {
		var err error
		cmd, err = os.ReadFile(dir + "/cmdline")
		if err != nil {
			return p, err
		}
		if len(cmd) > 0 {
			break
		}
		if i == retries {
			return p, fmt.Errorf("pid %d: empty cmdline (exited or a zombie)", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	env, err := os.ReadFile(dir + "/environ")
	if err != nil {
		return p, err
	}
	p.Cmdline = split(cmd)
	p.Environ = split(env)
	return p, nil
}

func split(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// Leaks returns a description of each secret found in the command line
// or the environment (an empty secret is ignored).
func (p Proc) Leaks(secrets ...string) []string {
	var out []string
	cmd := strings.Join(p.Cmdline, " ")
	env := strings.Join(p.Environ, "\n")
	for _, s := range secrets {
		if s == "" {
			continue
		}
		if strings.Contains(cmd, s) {
			out = append(out, fmt.Sprintf("pid %d cmdline contains %q", p.Pid, s))
		}
		if strings.Contains(env, s) {
			out = append(out, fmt.Sprintf("pid %d environ contains %q", p.Pid, s))
		}
	}
	return out
}

// Exe is the base name of the process's first argument.
func (p Proc) Exe() string {
	if len(p.Cmdline) == 0 {
		return ""
	}
	return filepath.Base(p.Cmdline[0])
}

// Descendants lists the live processes below pid (children, their
// children, ...), read from /proc/*/stat.
func Descendants(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	parent := map[int]int{}
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		pp, _ := strconv.Atoi(f[1])
		parent[n] = pp
	}
	var out []int
	var walk func(int)
	walk = func(p int) {
		for c, pp := range parent {
			if pp == p {
				out = append(out, c)
				walk(c)
			}
		}
	}
	walk(pid)
	return out
}

// FFmpegs lists the live ffmpeg processes below this one whose command
// line contains match (every one for match "").
func FFmpegs(match string) []Proc {
	var out []Proc
	for _, pid := range Descendants(os.Getpid()) {
		p, err := read(pid, 0) // no wait on zombies
		if err == nil && p.Exe() == "ffmpeg" && strings.Contains(strings.Join(p.Cmdline, " "), match) {
			out = append(out, p)
		}
	}
	return out
}

// Gone reports whether pid has no /proc entry: exited and reaped, not a
// zombie.
func Gone(pid int) bool {
	_, err := os.Stat("/proc/" + strconv.Itoa(pid))
	return os.IsNotExist(err)
}

// CheckChild reads process pid and fails the test if it cannot, or if
// its command line or environment holds one of secrets.
func CheckChild(t testing.TB, pid int, secrets ...string) Proc {
	t.Helper()
	p, err := Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("child %d: %q", pid, p.Cmdline)
	if leaks := p.Leaks(secrets...); len(leaks) > 0 {
		t.Fatal(leaks)
	}
	return p
}
