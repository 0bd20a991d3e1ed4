// Package browsertest drives a real headless Chromium from Go tests with
// chromedp, with the flags known to make WebRTC work on loopback here
// (../shared/TESTING.md): a fresh user-data dir per browser, loopback ICE
// candidates allowed and not hidden behind mDNS, autoplay without a gesture.
//
//	testenv.LoopbackOnly(t)
//	b := browsertest.Start(t, browsertest.Options{})
//	if err := b.Navigate(base + "/api/health"); err != nil { ... }
//	w, err := browsertest.Eval[int](b, 10*time.Second, `document.querySelector("video").videoWidth`)
//	b.Screenshot("playing.png")
//
// The browser is stopped by t.Cleanup. Console output of the page is kept
// and appended to failure messages by Fatalf, which is what one needs to
// debug a browser test that failed in CI.
package browsertest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/icey/icey-server/internal/testenv"
)

// Options configure a browser. The zero value is a 1280x800 headless window.
type Options struct {
	Width, Height int
	// FakeMedia gives the page a synthetic camera and microphone without a
	// permission prompt (publish tests).
	FakeMedia bool
	// Flags are extra command-line flags (name without "--" → value; true
	// for a bare switch).
	Flags map[string]any
}

// Browser is one running Chromium with one tab.
type Browser struct {
	t   testing.TB
	ctx context.Context // the tab; lives until Close

	cancel context.CancelFunc

	mu      sync.Mutex
	console []string
	output  *lockedBuffer
}

// AllocatorOptions returns the chromedp allocator options for Chromium at
// path with the flags that work here, for tests that manage contexts
// themselves.
func AllocatorOptions(path, userDataDir string, o Options) []chromedp.ExecAllocatorOption {
	if o.Width <= 0 || o.Height <= 0 {
		o.Width, o.Height = 1280, 800
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(userDataDir),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.WindowSize(o.Width, o.Height),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		// Both are needed for WebRTC between loopback peers: without the
		// first Chrome drops loopback candidates, without the second it hides
		// them behind mDNS names that nothing resolves in a netns.
		chromedp.Flag("allow-loopback-in-peer-connection", true),
		chromedp.Flag("disable-features", "Translate,BlinkGenPropertyTrees,WebRtcHideLocalIpsWithMdns"),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
	)
	if o.FakeMedia {
		opts = append(opts,
			chromedp.Flag("use-fake-device-for-media-stream", true),
			chromedp.Flag("use-fake-ui-for-media-stream", true))
	}
	for k, v := range o.Flags {
		opts = append(opts, chromedp.Flag(k, v))
	}
	return opts
}

// Start launches Chromium (failing the test if it is not installed) and
// opens a blank tab. Call testenv.LoopbackOnly first: WebRTC in a browser
// must never reach beyond loopback.
func Start(t testing.TB, o Options) *Browser {
	t.Helper()
	tt, ok := t.(*testing.T)
	if !ok {
		t.Fatal("browsertest: Start needs a *testing.T")
	}
	path := testenv.RequireTool(tt, "chromium")
	b := &Browser{t: t, output: &lockedBuffer{}}
	opts := append(AllocatorOptions(path, t.TempDir(), o), chromedp.CombinedOutput(b.output))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(b.listen))
	b.ctx = ctx
	b.cancel = func() { cancelCtx(); cancelAlloc() }
	// The first Run starts the browser and binds its life to ctx, so it
	// must not carry a timeout; a stuck start is caught by the test timeout.
	if err := chromedp.Do(ctx); err != nil {
		b.cancel()
		t.Fatalf("browsertest: start chromium: %v\n%s", err, b.output.String())
	}
	t.Cleanup(b.Close)
	return b
}

// Close stops the browser and removes its profile. Safe to call twice.
func (b *Browser) Close() { b.cancel() }

// Context is the tab's chromedp context, for actions this package lacks.
// Derive timeouts from it; never cancel it.
func (b *Browser) Context() context.Context { return b.ctx }

func (b *Browser) listen(ev any) {
	var line string
	switch e := ev.(type) {
	case *runtime.EventConsoleAPICalled:
		var parts []string
		for _, a := range e.Args {
			if a.Value != nil {
				parts = append(parts, string(a.Value))
			} else {
				parts = append(parts, a.Description)
			}
		}
		line = fmt.Sprintf("console.%s: %s", e.Type, strings.Join(parts, " "))
	case *runtime.EventExceptionThrown:
		d := e.ExceptionDetails
		line = fmt.Sprintf("exception: %s", d.Text)
		if d.Exception != nil {
			line += " " + d.Exception.Description
		}
	default:
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.console) < 500 {
		b.console = append(b.console, line)
	}
}

// Console returns what the page logged so far (console calls, uncaught
// exceptions).
func (b *Browser) Console() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.console, "\n")
}

// Navigate opens url in the tab and waits for the load event.
func (b *Browser) Navigate(url string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Navigate(url))
}

// Eval evaluates a JavaScript expression in the page, awaiting it if it is
// a promise, and decodes its JSON value into T. A thrown exception or a
// rejected promise is an error, as is running longer than timeout.
func Eval[T any](b *Browser, timeout time.Duration, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("evaluation did not finish within %s: %w", timeout, err)
	}
	return v, err
}

// MustEval is Eval that fails the test (with the page console) on error.
func MustEval[T any](b *Browser, timeout time.Duration, expr string) T {
	b.t.Helper()
	v, err := Eval[T](b, timeout, expr)
	if err != nil {
		b.Fatalf("evaluate %.80q: %v", expr, err)
	}
	return v
}

// Poll waits until the expression is truthy in the page.
func (b *Browser) Poll(expr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	return chromedp.Do(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingTimeout(timeout), chromedp.WithPollingInterval(50*time.Millisecond)))
}

// Screenshot saves a PNG of the viewport as name in ArtifactsDir and
// returns its path. A failure is logged, not fatal: artifacts are a help.
func (b *Browser) Screenshot(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	p := filepath.Join(ArtifactsDir(b.t), name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", name, err)
		return ""
	}
	return p
}

// Fatalf fails the test with the message, the page console and the tail of
// Chromium's own output.
func (b *Browser) Fatalf(format string, args ...any) {
	b.t.Helper()
	out := b.output.String()
	if len(out) > 4000 {
		out = "..." + out[len(out)-4000:]
	}
	b.t.Fatalf("%s\npage console:\n%s\nchromium output (tail):\n%s", fmt.Sprintf(format, args...), b.Console(), out)
}

// ArtifactsDir is where tests leave screenshots: $ICEY_TEST_ARTIFACTS, else
// test-artifacts at the module root (gitignored). It is created if needed.
func ArtifactsDir(t testing.TB) string {
	t.Helper()
	dir := os.Getenv("ICEY_TEST_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(moduleRoot(), "test-artifacts")
	}
	dir, _ = filepath.Abs(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("artifacts dir: %v", err)
	}
	return dir
}

// moduleRoot walks up from the working directory (a test runs in its
// package directory) to the directory holding go.mod.
func moduleRoot() string {
	wd, err := os.Getwd()
	if err != nil {
		return "."
	}
	for d := wd; ; {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		parent := filepath.Dir(d)
		if parent == d {
			return wd
		}
		d = parent
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // chromium can be chatty; keep memory bounded
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
