// Package firefoxtest drives a real headless Firefox ESR (Debian's
// firefox-esr) from Go tests, to check that Firefox plays WebRTC from the
// server (../shared/TESTING.md, "Real Firefox").
//
// Firefox gathers no ICE candidate in a namespace without a default route,
// so the browser runs on a host of internal/hosttest: a network namespace
// of its own with a veth link and a default route into the test's
// namespace. The server under test listens on the test's end of that link,
// Browser.Host.Gateway (198.18.n.1), and pion gathers that address only:
//
//	b := firefoxtest.Start(t, firefoxtest.Options{})
//	srv := listen on b.Host.Gateway + ":0" ...
//	if err := b.Navigate("http://" + addr + "/"); err != nil { t.Fatal(err) }
//	if err := b.WHEPPlay("/live/whep"); err != nil { t.Fatal(err) }
//	if err := b.Poll(`document.querySelector("video").videoWidth > 0`, 15*time.Second); err != nil { ... }
//	st, err := b.VideoStats()
//
// The Go side runs `node driver.mjs` (puppeteer-core over WebDriver BiDi,
// never downloading a browser) with a line-based JSON protocol on its
// stdin/stdout. The driver and Firefox live in a PID namespace of their own,
// so that killing it on Close (or when the test binary dies) leaves no
// Firefox process behind. Firefox gets a fresh profile and HOME in temp
// directories.
//
// Needs: firefox-esr, node, and the driver's node_modules
// (scripts/test-deps.sh installs all three; `make test` runs it). A missing
// one fails the test, as testenv.RequireTool does, so CI cannot silently
// skip browser tests.
package firefoxtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/hosttest"
	"github.com/icey/icey-server/internal/testenv"
)

// DefaultHostNumber is the hosttest host number Start uses when
// Options.Host is nil (198.18.250.2, gateway 198.18.250.1).
const DefaultHostNumber = 250

// Options configure a browser. The zero value is fine for playback tests.
type Options struct {
	// Host runs the browser; nil makes a new hosttest host numbered
	// HostNumber (DefaultHostNumber when 0). The server under test should
	// listen on Host.Gateway. Host numbers name links in the namespace
	// that `go test ./...` shares between packages running at once: two
	// packages that both start browsers need distinct numbers, as do
	// parallel tests in one package.
	Host       *hosttest.Host
	HostNumber int
	// FakeMedia gives getUserMedia a synthetic camera and microphone
	// without a prompt (media.navigator.streams.fake), for publish tests.
	FakeMedia bool
	// Prefs are extra Firefox prefs (they override the defaults).
	Prefs map[string]any
	// StartTimeout bounds the browser's launch (default 60 s).
	StartTimeout time.Duration
}

// Stats is what VideoStats reads.
type Stats struct {
	FramesDecoded int    `json:"framesDecoded"`
	Width         int    `json:"width"`  // the <video>'s videoWidth
	Height        int    `json:"height"` // the <video>'s videoHeight
	Codec         string `json:"codec"`  // mimeType of the inbound video, e.g. "video/VP8"
}

// Browser is one running Firefox with one page.
type Browser struct {
	// Host is where the browser runs; the server listens on Host.Gateway.
	Host *hosttest.Host
	// Version is the browser's version, e.g. "firefox/153.8.0".
	Version string

	t      testing.TB
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	done   chan struct{} // closed when the process has exited
	stderr *tailBuffer

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  int
	waiting map[int]chan reply
	console []string
	readErr error
	closed  bool
	once    sync.Once
}

type reply struct {
	ID    int             `json:"id"`
	OK    bool            `json:"ok"`
	Value json.RawMessage `json:"value"`
	Error string          `json:"error"`
}

// Start launches Firefox on a hosttest host and returns once its page is
// ready. A missing firefox-esr, node or driver dependency fails the test
// (testenv.RequireTool's rule: nothing skips for lack of a tool). The
// browser is closed by t.Cleanup.
func Start(t testing.TB, o Options) *Browser {
	t.Helper()
	ffBin := requireTool(t, "firefox-esr")
	nodeBin := requireTool(t, "node")
	requireTool(t, "unshare")
	dir, err := driverDir()
	if err != nil {
		t.Fatalf("firefoxtest: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "puppeteer-core", "package.json")); err != nil {
		t.Fatalf("firefoxtest: puppeteer-core is not installed in %s: run scripts/test-deps.sh (or `make test`), "+
			"which runs `npm ci --ignore-scripts` there", dir)
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 60 * time.Second
	}
	h := o.Host
	if h == nil {
		n := o.HostNumber
		if n == 0 {
			n = DefaultHostNumber
		}
		h = hosttest.New(t, n)
	}
	prefs := map[string]any{}
	if o.FakeMedia {
		prefs["media.navigator.streams.fake"] = true
		prefs["media.navigator.permission.disabled"] = true
	}
	for k, v := range o.Prefs {
		prefs[k] = v
	}
	prefsJSON, err := json.Marshal(prefs)
	if err != nil {
		t.Fatalf("firefoxtest: prefs: %v", err)
	}

	tmp := t.TempDir()
	home, profile, tmpDir := filepath.Join(tmp, "home"), filepath.Join(tmp, "profile"), filepath.Join(tmp, "tmp")
	for _, d := range []string{home, profile, tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}

	// unshare --pid --fork --kill-child: node is PID 1 of a namespace of its
	// own; when it dies (or unshare is killed) the kernel kills every
	// Firefox process in it.
	cmd := h.Command("unshare", "--pid", "--fork", "--kill-child", nodeBin, filepath.Join(dir, "driver.mjs"))
	cmd.Dir = dir
	cmd.Env = append(cmd.Env,
		"PATH="+os.Getenv("PATH"),
		"HOME="+home,
		"TMPDIR="+tmpDir,
		"XDG_CONFIG_HOME="+filepath.Join(home, ".config"),
		"XDG_CACHE_HOME="+filepath.Join(home, ".cache"),
		"XDG_DATA_HOME="+filepath.Join(home, ".local", "share"),
		"XDG_RUNTIME_DIR="+tmpDir,
		"MOZ_CRASHREPORTER_DISABLE=1",
		"MOZ_HEADLESS=1",
		"PUPPETEER_SKIP_DOWNLOAD=1",
		"FIREFOXTEST_BIN="+ffBin,
		"FIREFOXTEST_PROFILE="+profile,
		"FIREFOXTEST_PREFS="+string(prefsJSON),
	)
	// Its own process group; killed with the test binary if that dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	b := &Browser{Host: h, t: t, cmd: cmd, done: make(chan struct{}), stderr: &tailBuffer{max: 64 << 10},
		waiting: map[int]chan reply{}}
	cmd.Stderr = b.stderr
	b.stdin, err = cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("firefoxtest: starting the driver: %v", err)
	}
	h.Attach(cmd)
	t.Cleanup(b.Close)

	ready := make(chan error, 1)
	go b.read(stdout, ready)
	go func() {
		_ = cmd.Wait()
		close(b.done)
	}()
	select {
	case err := <-ready:
		if err != nil {
			t.Fatalf("firefoxtest: Firefox did not start: %v\n%s", err, b.Logs())
		}
	case <-time.After(o.StartTimeout):
		t.Fatalf("firefoxtest: Firefox did not start within %v\n%s", o.StartTimeout, b.Logs())
	}
	return b
}

// requireTool is testenv.RequireTool for any testing.TB.
func requireTool(t testing.TB, name string) string {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		return testenv.RequireTool(tt, name)
	}
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make deps` or `make test`, which installs it", name)
	}
	return p
}

// driverDir finds this package's source directory (driver.mjs and its
// node_modules).
func driverDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok {
		d := filepath.Dir(file)
		if _, err := os.Stat(filepath.Join(d, "driver.mjs")); err == nil {
			return d, nil
		}
	}
	// Built with -trimpath: look for the module root above the working
	// directory (go test runs in the package's directory).
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		c := filepath.Join(d, "internal", "firefoxtest")
		if _, err := os.Stat(filepath.Join(c, "driver.mjs")); err == nil {
			return c, nil
		}
		if filepath.Dir(d) == d {
			return "", errors.New("driver.mjs not found (internal/firefoxtest)")
		}
	}
}

func (b *Browser) read(r io.Reader, ready chan<- error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	started := false
	for sc.Scan() {
		line := sc.Bytes()
		var m struct {
			reply
			Ready   *bool  `json:"ready"`
			Version string `json:"version"`
			Console *string
		}
		if err := json.Unmarshal(line, &m); err != nil {
			b.addConsole("driver: " + string(line))
			continue
		}
		switch {
		case m.Ready != nil:
			started = true
			if *m.Ready {
				b.Version = m.Version
				ready <- nil
			} else {
				ready <- errors.New(m.Error)
			}
		case m.Console != nil:
			b.addConsole(*m.Console)
		default:
			b.mu.Lock()
			ch := b.waiting[m.ID]
			delete(b.waiting, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- m.reply
			}
		}
	}
	err := sc.Err()
	if err == nil {
		err = errors.New("the driver exited")
	}
	if !started {
		ready <- err
	}
	b.mu.Lock()
	b.readErr = err
	for id, ch := range b.waiting {
		ch <- reply{ID: id, Error: err.Error()}
		delete(b.waiting, id)
	}
	b.mu.Unlock()
}

func (b *Browser) addConsole(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.console) >= 500 {
		b.console = b.console[1:]
	}
	b.console = append(b.console, s)
}

// Logs returns the page's console messages and the driver's stderr (the
// end of both), for failure messages.
func (b *Browser) Logs() string {
	b.mu.Lock()
	c := strings.Join(b.console, "\n")
	b.mu.Unlock()
	return "--- Firefox page console:\n" + c + "\n--- driver stderr:\n" + b.stderr.String()
}

// call sends one command and waits for its answer, at most wait.
func (b *Browser) call(cmd map[string]any, wait time.Duration) (json.RawMessage, error) {
	ch := make(chan reply, 1)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, errors.New("firefoxtest: browser closed")
	}
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return nil, fmt.Errorf("firefoxtest: %v", err)
	}
	b.nextID++
	id := b.nextID
	b.waiting[id] = ch
	b.mu.Unlock()
	cmd["id"] = id
	line, err := json.Marshal(cmd)
	if err != nil {
		return nil, err
	}
	b.writeMu.Lock()
	_, err = b.stdin.Write(append(line, '\n'))
	b.writeMu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("firefoxtest: writing to the driver: %v", err)
	}
	select {
	case r := <-ch:
		if !r.OK {
			return nil, fmt.Errorf("firefoxtest: %s: %s", cmd["cmd"], r.Error)
		}
		return r.Value, nil
	case <-time.After(wait):
		b.mu.Lock()
		delete(b.waiting, id)
		b.mu.Unlock()
		return nil, fmt.Errorf("firefoxtest: %s: no answer from the driver within %v", cmd["cmd"], wait)
	}
}

// Navigate loads url in the page and waits for its load event (30 s at
// most).
func (b *Browser) Navigate(url string) error {
	_, err := b.call(map[string]any{"cmd": "navigate", "url": url, "timeoutMs": 30000}, 40*time.Second)
	return err
}

// Eval evaluates the JavaScript expression expr in the page, awaits it if it
// is a promise and returns its value as JSON (null for undefined). For
// statements, pass an async arrow function's call: `(async () => { ... })()`.
func (b *Browser) Eval(expr string, timeout time.Duration) (json.RawMessage, error) {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	return b.call(map[string]any{"cmd": "eval", "expr": expr, "timeoutMs": timeout.Milliseconds()}, timeout+10*time.Second)
}

// Poll evaluates expr every 100 ms until it is truthy, failing after
// timeout with the last value or error.
func (b *Browser) Poll(expr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		left := time.Until(deadline)
		if left < time.Second {
			left = time.Second
		}
		v, err := b.Eval("!!("+expr+"\n)", left)
		if err == nil && string(v) == "true" {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = string(v)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("firefoxtest: %s still not true after %v (last: %s)", expr, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// whepPlay is the page's WHEP client: it keeps the PeerConnection in
// window.__firefoxtestPC and plays into <video id="firefoxtest">.
const whepPlay = `(async (url) => {
  if (window.__firefoxtestPC) window.__firefoxtestPC.close();
  const pc = new RTCPeerConnection();
  window.__firefoxtestPC = pc;
  let v = document.getElementById('firefoxtest');
  if (!v) {
    v = document.createElement('video');
    v.id = 'firefoxtest';
    v.autoplay = true;
    v.muted = true;
    v.playsInline = true;
    document.body.appendChild(v);
  }
  const stream = new MediaStream();
  v.srcObject = stream;
  pc.ontrack = (e) => {
    stream.addTrack(e.track);
    v.play().catch(() => {});
  };
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  await pc.setLocalDescription(await pc.createOffer());
  // One round trip: the offer carries every candidate.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    const timer = setTimeout(resolve, 5000);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve(); }
    });
  });
  const r = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  const body = await r.text();
  if (!r.ok) throw new Error('WHEP POST ' + url + ': ' + r.status + ' ' + body);
  window.__firefoxtestLocation = new URL(r.headers.get('Location') || '', new URL(url, location.href)).href;
  await pc.setRemoteDescription({ type: 'answer', sdp: body });
  return true;
})`

// whepStop closes the WHEP viewer and DELETEs its session resource, as a
// WHEP client leaving does (RFC 9725 §4.3); it returns the DELETE status.
const whepStop = `(async () => {
  const loc = window.__firefoxtestLocation;
  window.__firefoxtestLocation = null;
  let status = 0;
  if (loc) {
    const r = await fetch(loc, { method: 'DELETE' });
    if (!r.ok) throw new Error('WHEP DELETE ' + loc + ': ' + r.status + ' ' + await r.text());
    status = r.status;
  }
  if (window.__firefoxtestPC) window.__firefoxtestPC.close();
  window.__firefoxtestPC = null;
  return status;
})()`

// WHEPStop ends the viewer WHEPPlay started: the peer connection is closed
// and its session DELETEd. It returns the status of the DELETE (0 when
// there was no session).
func (b *Browser) WHEPStop() (int, error) {
	raw, err := b.Eval(whepStop, 10*time.Second)
	if err != nil {
		return 0, err
	}
	var code int
	if err := json.Unmarshal(raw, &code); err != nil {
		return 0, fmt.Errorf("firefoxtest: WHEP DELETE status %s: %w", raw, err)
	}
	return code, nil
}

// WHEPPlay makes the current page play url (absolute, or relative to the
// page) over WHEP: a recvonly video+audio RTCPeerConnection whose complete
// offer is POSTed to url, the answer set, and the tracks attached to a muted
// <video id="firefoxtest">. It returns once the answer is set; poll
// VideoStats for playback.
func (b *Browser) WHEPPlay(url string) error {
	u, _ := json.Marshal(url)
	_, err := b.Eval(whepPlay+"("+string(u)+")", 20*time.Second)
	return err
}

const videoStats = `(async () => {
  const pc = window.__firefoxtestPC;
  const v = document.getElementById('firefoxtest');
  const out = { framesDecoded: 0, width: v ? v.videoWidth : 0, height: v ? v.videoHeight : 0, codec: '' };
  if (!pc) return out;
  const stats = await pc.getStats();
  let videoCodec = '';
  stats.forEach((r) => {
    if (r.type === 'codec' && r.mimeType && r.mimeType.toLowerCase().startsWith('video/') && !videoCodec) videoCodec = r.mimeType;
  });
  stats.forEach((r) => {
    if (r.type === 'inbound-rtp' && (r.kind || r.mediaType) === 'video') {
      out.framesDecoded += r.framesDecoded || 0;
      const c = r.codecId && stats.get(r.codecId);
      if (c && c.mimeType) out.codec = c.mimeType;
    }
  });
  if (!out.codec) out.codec = videoCodec;
  return out;
})()`

// VideoStats reads the WHEPPlay connection's inbound video from getStats
// (frames decoded, codec) and the <video>'s size.
func (b *Browser) VideoStats() (Stats, error) {
	v, err := b.Eval(videoStats, 10*time.Second)
	if err != nil {
		return Stats{}, err
	}
	var s Stats
	if err := json.Unmarshal(v, &s); err != nil {
		return Stats{}, fmt.Errorf("firefoxtest: stats %s: %v", v, err)
	}
	return s, nil
}

// Close closes the browser (politely, then by killing its PID namespace)
// and waits until no process of it is left. Safe to call more than once;
// t.Cleanup calls it.
func (b *Browser) Close() {
	b.once.Do(func() {
		_, _ = b.call(map[string]any{"cmd": "close"}, 15*time.Second)
		b.mu.Lock()
		b.closed = true
		b.mu.Unlock()
		_ = b.stdin.Close()
		select {
		case <-b.done:
			return
		case <-time.After(5 * time.Second):
		}
		// Kill node, PID 1 of the namespace: the kernel kills the rest and
		// unshare returns once all of them are gone.
		pid := b.cmd.Process.Pid
		if kids, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + strconv.Itoa(pid) + "/children"); err == nil {
			for _, f := range strings.Fields(string(kids)) {
				if k, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(k, syscall.SIGKILL)
				}
			}
		}
		select {
		case <-b.done:
			return
		case <-time.After(10 * time.Second):
		}
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		select {
		case <-b.done:
		case <-time.After(10 * time.Second):
			b.t.Errorf("firefoxtest: the driver (pid %d) did not exit", pid)
		}
	})
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (w *tailBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if over := w.buf.Len() - w.max; over > 0 {
		w.buf.Next(over)
	}
	return len(p), nil
}

func (w *tailBuffer) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}
