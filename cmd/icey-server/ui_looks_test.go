package main

// What a newcomer sees in the bundled UI, in Chromium against the binary:
// nothing is drawn over the picture while it plays, and the status badge
// explains itself (each warning of /api/ready, in plain words, with what
// to do).

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
)

type rect struct {
	ID                       string
	Left, Top, Right, Bottom float64
}

func (r rect) String() string {
	return fmt.Sprintf("%s[%.0f,%.0f %.0fx%.0f]", r.ID, r.Left, r.Top, r.Right-r.Left, r.Bottom-r.Top)
}

func (r rect) overlaps(o rect) bool {
	return r.Left < o.Right && o.Left < r.Right && r.Top < o.Bottom && o.Top < r.Bottom
}

// layoutJS returns the video element's box, the picture inside it (the
// video is letterboxed with object-fit: contain) and every rendered HUD
// element: the bar, the stats, each chip, the stream badge.
const layoutJS = `(() => {
  const box = (el, id) => { const r = el.getBoundingClientRect(); return {ID: id, Left: r.left, Top: r.top, Right: r.right, Bottom: r.bottom}; };
  const v = document.getElementById("video");
  const vb = box(v, "video");
  const s = Math.min((vb.Right - vb.Left) / v.videoWidth, (vb.Bottom - vb.Top) / v.videoHeight);
  const pw = v.videoWidth * s, ph = v.videoHeight * s;
  const px = vb.Left + ((vb.Right - vb.Left) - pw) / 2, py = vb.Top + ((vb.Bottom - vb.Top) - ph) / 2;
  const hud = [];
  for (const el of document.querySelectorAll("#hud-bar, #hud-bar *, #hud, #hud *, #live")) {
    const r = el.getBoundingClientRect();
    if (r.width > 0 && r.height > 0) hud.push(box(el, el.id || el.className || el.tagName));
  }
  return {Video: vb, Picture: {ID: "picture", Left: px, Top: py, Right: px + pw, Bottom: py + ph}, HUD: hud};
})()`

type layout struct {
	Video, Picture rect
	HUD            []rect
}

// checkHUDClear asserts that no HUD element overlaps the top 15 % of the
// video area, nor the picture itself, and that the HUD is on screen.
func checkHUDClear(t *testing.T, b *browsertest.Browser, where string) layout {
	t.Helper()
	l := browsertest.MustEval[layout](b, 5*time.Second, layoutJS)
	if len(l.HUD) < 5 {
		b.Fatalf("%s: HUD not rendered (%d elements): %v", where, len(l.HUD), l.HUD)
	}
	top := l.Video
	top.ID = "top 15% of the video"
	top.Bottom = top.Top + 0.15*(l.Video.Bottom-l.Video.Top)
	for _, h := range l.HUD {
		if h.overlaps(top) {
			b.Fatalf("%s: HUD element %v covers the %v (video %v)", where, h, top, l.Video)
		}
		if h.overlaps(l.Picture) {
			b.Fatalf("%s: HUD element %v covers the picture %v", where, h, l.Picture)
		}
	}
	t.Logf("%s: video %v picture %v; %d HUD elements, all clear of it (first %v)", where, l.Video, l.Picture, len(l.HUD), l.HUD[0])
	return l
}

func TestChromiumUIHUDClearOfThePictureAndStatusExplained(t *testing.T) {
	testenv.LoopbackOnly(t)
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	// A fresh start on 127.0.0.1: TURN with demo credentials, so degraded.
	_, ready, _ := p.get(t, "/api/ready")
	if ready["status"] != "degraded" {
		t.Fatalf("expected a degraded fresh start to explain, got %v", ready)
	}
	var warnings []string
	for _, w := range ready["warnings"].([]any) {
		warnings = append(warnings, w.(string))
	}
	type check struct{ Name, Result, Detail string }
	var notPass []check
	for _, c := range ready["checks"].([]any) {
		m := c.(map[string]any)
		if m["result"] != "pass" {
			notPass = append(notPass, check{m["name"].(string), m["result"].(string), m["detail"].(string)})
		}
	}
	if len(warnings)+len(notPass) == 0 {
		t.Fatalf("degraded without a warning or a warning check: %v", ready)
	}

	b := browsertest.Start(t, browsertest.Options{Width: 1280, Height: 800})
	if err := b.Navigate(p.base + "/"); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	if err := b.Poll(`document.getElementById("ops-status").textContent === "degraded"`, 10*time.Second); err != nil {
		b.Fatalf("status badge: %v", err)
	}

	// The badge explains itself: every warning verbatim, every check that
	// warns by name with its detail, and what to do.
	text := browsertest.MustEval[string](b, 5*time.Second, `document.getElementById("ops-explain").textContent`)
	for _, w := range warnings {
		if !strings.Contains(text, w) {
			b.Fatalf("the explanation lacks the warning %q:\n%s", w, text)
		}
	}
	for _, c := range notPass {
		if !strings.Contains(text, c.Name+" check") || !strings.Contains(text, c.Detail) {
			b.Fatalf("the explanation lacks the %s check (%s: %q):\n%s", c.Name, c.Result, c.Detail, text)
		}
	}
	for _, want := range []string{"viewers can watch", "What to do: ", "turn.secret"} {
		if !strings.Contains(text, want) {
			b.Fatalf("the explanation lacks %q:\n%s", want, text)
		}
	}
	if d := browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("ops-status").getAttribute("aria-describedby")`); d != "ops-explain" {
		b.Fatalf("badge not described by the explanation: %q", d)
	}
	summary := browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("ops-summary").textContent`)
	if !strings.Contains(summary, "Viewers can watch") {
		b.Fatalf("summary %q", summary)
	}
	t.Logf("summary: %s", summary)

	// Hidden until asked; hover shows it, leaving hides it; a tap pins it.
	visible := `(() => { const r = document.getElementById("ops-explain").getBoundingClientRect(); return r.width > 100 && r.height > 40; })()`
	if browsertest.MustEval[bool](b, 2*time.Second, visible) {
		b.Fatalf("explanation open before anyone asked")
	}
	badge := browsertest.MustEval[rect](b, 2*time.Second, `(() => { const r = document.getElementById("ops-status").getBoundingClientRect(); return {ID: "badge", Left: r.left, Top: r.top, Right: r.right, Bottom: r.bottom}; })()`)
	cx, cy := (badge.Left+badge.Right)/2, (badge.Top+badge.Bottom)/2
	if err := chromedp.Do(b.Context(), chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, cx, cy)); err != nil {
		b.Fatalf("hover: %v", err)
	}
	if err := b.Poll(visible, 3*time.Second); err != nil {
		b.Fatalf("hovering the badge does not show the explanation: %v", err)
	}
	b.Screenshot("ui-status-explained.png")
	if err := chromedp.Do(b.Context(), chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 20, 400)); err != nil {
		b.Fatalf("move away: %v", err)
	}
	if err := b.Poll("!"+visible, 3*time.Second); err != nil {
		b.Fatalf("the explanation stays after the pointer left: %v", err)
	}
	if err := chromedp.Do(b.Context(), chromedp.MouseClickXY(cx, cy)); err != nil {
		b.Fatalf("tap: %v", err)
	}
	if err := chromedp.Do(b.Context(), chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, 20, 400)); err != nil {
		b.Fatalf("move away: %v", err)
	}
	time.Sleep(400 * time.Millisecond)
	if !browsertest.MustEval[bool](b, 2*time.Second, visible) {
		b.Fatalf("a tap does not keep the explanation open")
	}
	if err := chromedp.Do(b.Context(), chromedp.MouseClickXY(20, 400)); err != nil {
		b.Fatalf("tap elsewhere: %v", err)
	}
	if err := b.Poll("!"+visible, 3*time.Second); err != nil {
		b.Fatalf("a tap elsewhere does not close the explanation: %v", err)
	}

	// Play, and check the layout: nothing on the picture, on desktop and phone.
	if err := b.Poll(`!document.getElementById("btn-watch").disabled`, 10*time.Second); err != nil {
		b.Fatalf("Watch never enabled: %v", err)
	}
	browsertest.MustEval[bool](b, 5*time.Second, `document.getElementById("btn-watch").click(), true`)
	if err := b.Poll(`document.getElementById("video").videoWidth > 0 && document.getElementById("hud-codec").textContent !== "–" && Number(document.getElementById("hud-fps").textContent) > 0`, 20*time.Second); err != nil {
		b.Fatalf("no picture and stats: %v", err)
	}
	if err := b.Poll(`!document.getElementById("live").hidden && !document.getElementById("hud").hidden`, 5*time.Second); err != nil {
		b.Fatalf("HUD or LIVE badge not shown while playing: %v", err)
	}
	checkHUDClear(t, b, "desktop 1280x800")
	b.Screenshot("ui-playing-hud.png")

	if err := chromedp.Do(b.Context(), chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile)); err != nil {
		b.Fatalf("phone viewport: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	checkHUDClear(t, b, "phone 390x844")
	b.Screenshot("ui-playing-hud-phone.png")
	if err := chromedp.Do(b.Context(), chromedp.EmulateViewport(1280, 800)); err != nil {
		b.Fatalf("desktop viewport: %v", err)
	}

	// Fullscreen takes the picture and the bar under it.
	if err := chromedp.Do(b.Context(), chromedp.Click(chromedp.ID("btn-full"))); err != nil {
		b.Fatalf("click Fullscreen: %v", err)
	}
	if err := b.Poll(`document.fullscreenElement && document.fullscreenElement.id === "player"`, 5*time.Second); err != nil {
		b.Fatalf("Fullscreen did not take the player: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	fl := checkHUDClear(t, b, "fullscreen")
	if bottom := browsertest.MustEval[float64](b, 2*time.Second, `window.innerHeight`); fl.HUD[0].Bottom > bottom+1 {
		b.Fatalf("fullscreen: the HUD bar %v is below the screen (height %.0f)", fl.HUD[0], bottom)
	}
	b.Screenshot("ui-playing-hud-fullscreen.png")
	browsertest.MustEval[bool](b, 5*time.Second, `document.exitFullscreen().then(() => true)`)

	// One meaning per badge: the stream badge says LIVE; the ops panel's
	// event-stream indicator does not.
	badges := browsertest.MustEval[string](b, 2*time.Second, `JSON.stringify({live: document.getElementById("live").textContent, rt: document.getElementById("ops-live").textContent, ops: document.getElementById("ops-status").textContent})`)
	var bs map[string]string
	if err := json.Unmarshal([]byte(badges), &bs); err != nil {
		t.Fatal(err)
	}
	if bs["live"] != "LIVE" || strings.Contains(strings.ToLower(bs["rt"]), "live") || strings.Contains(strings.ToLower(bs["ops"]), "live") {
		b.Fatalf("badges mean more than one thing: %v", bs)
	}
	if n := browsertest.MustEval[int](b, 2*time.Second, `[...document.querySelectorAll("body *")].filter(el => el.children.length === 0 && /^\s*live\s*$/i.test(el.textContent) && el.getBoundingClientRect().width > 0).length`); n != 1 {
		b.Fatalf("%d visible elements read LIVE; want exactly the stream badge", n)
	}
}
