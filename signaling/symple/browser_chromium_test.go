package symple

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/api"
	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/preflight"
	"github.com/icey/icey-server/signaling"
	"github.com/icey/icey-server/web"
)

const browserToken = "browser-test-token"

// uiServer serves what the binary serves to a browser: the embedded UI, the
// Symple WebSocket (on /ws and on upgrades of /), WHEP and the ops API,
// over a real session layer playing the built-in test stream. restart
// replaces the Symple server after a short outage, like a server restart.
type uiServer struct {
	http *httptest.Server
	l    *sessionLayer
	sym  atomic.Pointer[Server]
}

func newUIServer(t *testing.T) *uiServer {
	t.Helper()
	u := &uiServer{l: newSessionLayer(t, signaling.Config{}, true)}
	u.sym.Store(New(Config{Token: browserToken}, u.l.m, testLogger()))
	pf := preflight.New("stream")
	pf.Set(preflight.CheckConfig, preflight.Pass, "No config file; using defaults")
	pf.Set(preflight.CheckSource, preflight.Pass, "builtin test stream is delivering media")
	pf.Set(preflight.CheckTURN, preflight.Warn, "TURN disabled",
		"TURN is disabled; viewers behind NAT may fail to connect.")
	files, err := web.FS("")
	if err != nil {
		t.Fatal(err)
	}
	ui := web.Handler(files)
	ws := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { u.sym.Load().ServeHTTP(w, r) })
	mux := http.NewServeMux()
	mux.Handle("/api/", api.New(api.Config{Version: "0.0.0-test", Mode: "stream", Token: browserToken,
		Started: time.Now(), Preflight: pf, Sessions: u.l.m, Source: "builtin", SourceKind: "builtin", Loop: true,
		HTTPHost: "127.0.0.1"}))
	mux.Handle("/whep", api.RequireToken(browserToken, u.l.m.Handler()))
	mux.Handle("/ws", ws)
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) {
			ws.ServeHTTP(w, r)
			return
		}
		ui.ServeHTTP(w, r)
	}))
	u.http = httptest.NewServer(mux)
	t.Cleanup(func() {
		u.sym.Load().Shutdown()
		u.http.Close()
	})
	return u
}

// restart shuts the Symple server down (clients get the shutdown event),
// stays down for a while (reconnects fail), then serves a fresh one.
func (u *uiServer) restart(down time.Duration) {
	u.sym.Load().Shutdown()
	time.Sleep(down)
	u.sym.Store(New(Config{Token: browserToken}, u.l.m, testLogger()))
}

func newChromium(t *testing.T, parent context.Context) (context.Context, context.CancelFunc) {
	t.Helper()
	chromium := testenv.RequireTool(t, "chromium")
	opts := browsertest.AllocatorOptions(chromium, t.TempDir(), browsertest.Options{Width: 1280, Height: 800})
	actx, cancelAlloc := chromedp.NewExecAllocator(parent, opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	return ctx, func() { cancelCtx(); cancelAlloc() }
}

func artifactsDir(t *testing.T) string { return browsertest.ArtifactsDir(t) }

const framesDecodedJS = `(async () => {
  const pc = window.icey.pc; if (!pc) return -1;
  let f = 0; (await pc.getStats()).forEach(s => { if (s.type === "inbound-rtp" && s.kind === "video") f = s.framesDecoded || 0; });
  return f; })()`

// TestChromiumWatch drives the real UI in Chromium: the server peer shows
// up, Watch plays (videoWidth > 0, framesDecoded rising), the HUD shows the
// codec and fps, the page looks right (screenshots), hangup ends the
// session; without the token the page says authentication failed.
func TestChromiumWatch(t *testing.T) {
	testenv.LoopbackOnly(t)
	u := newUIServer(t)
	hs, l := u.http, u.l
	bctx, closeBrowser := newChromium(t, context.Background())
	defer closeBrowser()
	start := time.Now()

	// Every step is bounded; the browser lives as long as bctx.
	step := func(ctx context.Context) (context.Context, context.CancelFunc) {
		return context.WithTimeout(ctx, 45*time.Second)
	}
	fail := func(ctx context.Context, what string, err error) {
		t.Helper()
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		dump, _ := chromedp.Run(dctx, chromedp.Evaluate[string](`document.getElementById("events") ? document.getElementById("call-state").innerText + "\n" + document.getElementById("events").innerText : document.documentElement.outerHTML`))
		t.Fatalf("%s: %v\npage:\n%s", what, err, dump)
	}
	do := func(ctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		sctx, cancel := step(ctx)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			fail(ctx, what, err)
		}
	}
	poll := func(ctx context.Context, what, expr string) {
		t.Helper()
		do(ctx, what, chromedp.Poll[chromedp.Void](expr, chromedp.WithPollingTimeout(30*time.Second), chromedp.WithPollingInterval(200*time.Millisecond)))
	}
	eval := func(ctx context.Context, what, expr string) int64 {
		t.Helper()
		sctx, cancel := step(ctx)
		defer cancel()
		v, err := chromedp.Run(sctx, chromedp.Evaluate[int64](expr, chromedp.EvalAwaitPromise))
		if err != nil {
			fail(ctx, what, err)
		}
		return v
	}
	screenshot := func(ctx context.Context, name string) {
		t.Helper()
		sctx, cancel := step(ctx)
		defer cancel()
		png, err := chromedp.Run(sctx, chromedp.CaptureScreenshot())
		if err != nil {
			fail(ctx, "screenshot "+name, err)
		}
		if err := os.WriteFile(filepath.Join(artifactsDir(t), name), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// The first Run starts the browser: no timeout on it (it would stop the browser).
	if err := chromedp.Do(bctx, chromedp.Navigate(hs.URL+"/?token="+browserToken)); err != nil {
		t.Fatalf("open the UI: %v", err)
	}
	poll(bctx, "server peer with a Watch button", `!!document.querySelector('li.peer.server[data-peer="icey|server"] button[data-action="watch"]:not([disabled])')`)
	if loc, err := chromedp.Run(bctx, chromedp.Location()); err != nil || strings.Contains(loc, "token") {
		t.Fatalf("address bar %q (err %v): the token must be removed", loc, err)
	}
	poll(bctx, "ops panel shows checks", `document.querySelectorAll('#ops-checks li').length >= 3 && document.getElementById('ops-status').textContent === 'degraded'`)
	if muted := eval(bctx, "muted", `document.getElementById('video').muted ? 1 : 0`); muted != 1 {
		t.Fatal("video must start muted")
	}

	do(bctx, "click Watch", chromedp.Click(chromedp.CSS(`li.peer.server button[data-action="watch"]`)))
	poll(bctx, "video plays", `document.getElementById('video').videoWidth > 0`)
	f1 := eval(bctx, "framesDecoded", framesDecodedJS)
	time.Sleep(2 * time.Second)
	f2 := eval(bctx, "framesDecoded later", framesDecodedJS)
	if f1 <= 0 || f2 <= f1 {
		t.Fatalf("framesDecoded not rising: %d then %d", f1, f2)
	}
	poll(bctx, "HUD shows codec, resolution and fps", `document.getElementById('hud-codec').textContent === 'H264' && Number(document.getElementById('hud-fps').textContent) > 0 && document.getElementById('hud-res').textContent.includes('×') && !document.getElementById('hud').hidden`)
	if hud, err := chromedp.Run(bctx, chromedp.Text(chromedp.CSS(`#hud`))); err == nil {
		t.Logf("HUD: %s (framesDecoded %d → %d)", strings.Join(strings.Fields(hud), " "), f1, f2)
	}
	if n := len(l.m.Sessions()); n != 1 {
		t.Fatalf("%d sessions on the server while playing", n)
	}

	screenshot(bctx, "ui-playing.png")
	do(bctx, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	time.Sleep(500 * time.Millisecond) // let the layout and a frame settle
	screenshot(bctx, "ui-playing-phone.png")
	do(bctx, "desktop viewport", chromedp.EmulateViewport(1280, 800))
	t.Logf("screenshots in %s", artifactsDir(t))

	do(bctx, "hang up", chromedp.Click(chromedp.ID("btn-hangup")))
	poll(bctx, "UI idle", `!window.icey.pc && document.getElementById('call-state').textContent === 'Idle' && !document.querySelector('li.peer.server button[data-action="watch"]').disabled`)
	waitSessions(t, l.m, 0)

	// Server events reach the events rail.
	u.sym.Load().Broadcast("vision", map[string]any{"label": "person", "score": 0.93})
	poll(bctx, "icey event in the rail", `[...document.querySelectorAll('#events li.ev-icey')].some(li => li.textContent.includes('vision') && li.textContent.includes('person'))`)

	// A server restart: the page notices, retries and comes back by itself.
	u.restart(1500 * time.Millisecond)
	poll(bctx, "shutdown noticed", `[...document.querySelectorAll('#events li')].some(li => li.textContent.includes('Server shutting down'))`)
	poll(bctx, "reconnected after the restart", `window.icey.connected && document.getElementById('conn-text').textContent === 'Connected' && !!document.querySelector('li.peer.server button[data-action="watch"]')`)

	// Without the token, in a fresh tab (the token is kept per tab only).
	nctx, ncancel := chromedp.NewContext(bctx)
	defer ncancel()
	if err := chromedp.Do(nctx, chromedp.Navigate(hs.URL+"/")); err != nil {
		t.Fatal(err)
	}
	poll(nctx, "a clear auth error without the token", `document.getElementById('banner-title').textContent === 'Authentication failed' && document.getElementById('conn-text').textContent === 'Auth failed'`)
	text, err := chromedp.Run(nctx, chromedp.Text(chromedp.ID("banner")))
	if err != nil || !strings.Contains(text, "?token=") {
		t.Fatalf("auth error does not tell how to fix it: %q (%v)", text, err)
	}
	screenshot(nctx, "ui-auth-failed.png")
	t.Logf("browser test took %v", time.Since(start).Round(time.Millisecond))
}
