package transcode

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// childEnvKeys are the only environment variables a child process gets
// (plus LC_*): nothing of the server's configuration (ICEY_AUTH_TOKEN,
// ICEY_SOURCE, ICEY_TURN_SECRET, ICEY_METRICS_TOKEN, ...) and no proxy
// settings, which can hold credentials too.
var childEnvKeys = map[string]bool{
	"PATH": true, "HOME": true, "LANG": true, "LANGUAGE": true, "TZ": true,
	"TMPDIR": true, "LD_LIBRARY_PATH": true,
}

// ChildEnv is the environment of every child process the server starts:
// an allow-list of the server's own (locale, PATH, temp dir), never a
// secret.
func ChildEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if childEnvKeys[k] || (strings.HasPrefix(k, "LC_") && !strings.ContainsAny(k, " ")) {
			env = append(env, kv)
		}
	}
	if len(env) == 0 {
		env = []string{} // non-nil: exec must not fall back to os.Environ
	}
	return env
}

// command prepares an ffmpeg child: own process group (cancelling kills it
// and anything it spawned; a terminal's Ctrl-C reaches the server first),
// SIGKILL on cancel, always reaped, and the scrubbed environment.
func command(ctx context.Context, path string, args []string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	cmd.Env = ChildEnv()
	return cmd
}

// writeInputList writes the URL that ffmpeg must open itself into an
// ffconcat list: a 0600 file in a fresh 0700 directory, read by ffmpeg's
// concat demuxer, so that the URL (and its user:pass@, query tokens, SRT
// passphrase) never appears in ffmpeg's command line. cleanup removes the
// directory; call it once ffmpeg exited.
func writeInputList(input string, timeout time.Duration) (path string, cleanup func(), err error) {
	if strings.ContainsAny(input, "\r\n\x00") {
		return "", nil, errors.New("URL contains a line break or NUL")
	}
	dir, err := os.MkdirTemp("", "icey-ffmpeg-") // 0700
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	var b strings.Builder
	b.WriteString("ffconcat version 1.0\n")
	// In a quoted ffconcat token only ' needs escaping: close, \', reopen.
	b.WriteString("file '" + strings.ReplaceAll(input, "'", `'\''`) + "'\n")
	if u, err := url.Parse(input); err == nil {
		switch u.Scheme {
		case "http", "https", "rtmp", "rtmps":
			// Fail instead of hanging on a dead server (microseconds).
			b.WriteString("option rw_timeout " + strconv.FormatInt(timeout.Microseconds(), 10) + "\n")
		}
	}
	path = filepath.Join(dir, "input.ffconcat")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		cleanup()
		return "", nil, err
	}
	_, err = f.WriteString(b.String())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		cleanup()
		return "", nil, fmt.Errorf("input list: %w", err)
	}
	return path, cleanup, nil
}

// protocolWhitelist lets the concat demuxer open the URL's protocol and the
// ones it is built on (ffmpeg restricts nested opens to file,crypto,data).
func protocolWhitelist(input string) string {
	list := "file,crypto,data,tcp,udp,tls,http,https,httpproxy,rtp,srtp,rtmp,rtmps,rtmpt,rtmpts,rtmpe,rtmpte,srt,rist"
	if u, err := url.Parse(input); err == nil && u.Scheme != "" && !strings.ContainsAny(u.Scheme, ",") {
		if !strings.Contains(","+list+",", ","+strings.ToLower(u.Scheme)+",") {
			list += "," + strings.ToLower(u.Scheme)
		}
	}
	return list
}
