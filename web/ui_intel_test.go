package web

// The intelligence overlay in Chromium (../shared/spec/intelligence.md):
// against the fake Symple server of ui_browser_test.go, a Watch call plays
// a real VP8 stream (320x240 test pattern made by ffmpeg, sent by the fake
// server's pion track), and icey:vision / icey:speech messages arrive over
// the page's Symple socket as the server would send them. Checked: motion
// boxes and the heat map inside the displayed picture of a letterboxed
// <video> (a 640x240 element showing a 320x240 picture: 160 px bars), the
// heat map's pixels, the voice meter, the detections list with its links,
// the fade, and that messages from other peers or about other paths are
// ignored.

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strconv"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/ivfreader"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
)

// makeTestVP8 encodes 2 s of test pattern at 15 fps as VP8 frames.
func makeTestVP8(t *testing.T) [][]byte {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=15",
		"-t", "2", "-c:v", "libvpx", "-deadline", "realtime", "-b:v", "300k", "-g", "15", "-f", "ivf", "-")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, stderr.String())
	}
	r, _, err := ivfreader.NewWith(bytes.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	var frames [][]byte
	for {
		f, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, f)
	}
	if len(frames) == 0 {
		t.Fatal("ffmpeg made no VP8 frame")
	}
	return frames
}

// playVP8 sends the frames in a loop on the video track of the fake
// server's current PeerConnection until the test ends.
func playVP8(t *testing.T, f *fakeSymple, frames [][]byte) {
	done := make(chan struct{})
	stopped := make(chan struct{})
	t.Cleanup(func() { close(done); <-stopped })
	go func() {
		defer close(stopped)
		tick := time.NewTicker(time.Second / 15)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			f.mu.Lock()
			pc := f.pc
			f.mu.Unlock()
			if pc == nil {
				continue
			}
			for _, s := range pc.GetSenders() {
				if tr, ok := s.Track().(*webrtc.TrackLocalStaticSample); ok {
					tr.WriteSample(media.Sample{Data: frames[i%len(frames)], Duration: time.Second / 15})
				}
			}
		}
	}()
}

func TestUIIntelligenceOverlay(t *testing.T) {
	testenv.LoopbackOnly(t)
	frames := makeTestVP8(t)
	f, base := newFakeServer(t)
	b := browsertest.Start(t, browsertest.Options{Width: 1280, Height: 900})
	if err := b.Navigate(base + "/"); err != nil {
		b.Fatalf("open /: %v", err)
	}
	poll := func(what, expr string, d time.Duration) {
		t.Helper()
		if err := b.Poll(expr, d); err != nil {
			st, _ := browsertest.Eval[string](b, 2*time.Second, `JSON.stringify({intel: window.iceyState.intel, call: window.iceyState.call,
				boxes: [...document.querySelectorAll(".motion-box")].map(e => e.getBoundingClientRect()),
				video: document.getElementById("video").getBoundingClientRect(),
				meter: document.getElementById("voice-meter").outerHTML.slice(0, 400),
				intelEvents: document.getElementById("intel-events").innerHTML.slice(0, 1500),
				events: document.getElementById("events").innerText.slice(0, 1000)})`)
			b.Fatalf("%s: %v\nstate: %s", what, err, st)
		}
	}
	eval := func(expr string) string {
		t.Helper()
		return browsertest.MustEval[string](b, 5*time.Second, expr)
	}
	click := func(id string) {
		t.Helper()
		browsertest.MustEval[bool](b, 5*time.Second, `document.getElementById("`+id+`").click(), true`)
	}
	send := func(from, subtype string, data map[string]any) {
		f.send(map[string]any{"type": "message", "subtype": subtype, "from": from, "to": "web|b1", "data": data})
	}

	// Watch main; the fake server plays a 320x240 VP8 picture.
	poll("connected", `window.icey.connected && window.iceyState.path === "main" && !document.getElementById("btn-watch").disabled`, 10*time.Second)
	click("btn-watch")
	poll("watching", `window.iceyState.watching`, 20*time.Second)
	playVP8(t, f, frames)
	poll("picture", `document.getElementById("video").videoWidth === 320 && document.getElementById("video").videoHeight === 240 && document.getElementById("video").currentTime > 0`, 20*time.Second)
	// Before any event nothing shows.
	poll("nothing yet", `document.getElementById("motion-overlay").hidden && document.getElementById("voice-meter").hidden && document.getElementById("intel").hidden && document.getElementById("btn-heatmap").hidden`, 2*time.Second)

	// A 640x240 element: the 320x240 picture shows at x 160..480, with
	// 160 px bars either side.
	browsertest.MustEval[bool](b, 5*time.Second, `(() => { const s = document.getElementById("stage");
		Object.assign(s.style, {width: "640px", height: "240px", aspectRatio: "auto", border: "0", flex: "none"}); return true; })()`)
	poll("element 640x240", `document.getElementById("video").clientWidth === 640 && document.getElementById("video").clientHeight === 240`, 5*time.Second)
	if got := eval(`JSON.stringify(window.icey.pictureRect())`); got != `{"x":160,"y":0,"width":320,"height":240}` {
		t.Errorf("pictureRect() = %s, want x 160, y 0, 320x240", got)
	}

	grid := make([]float64, 4*3)
	grid[1*4+2] = 0.9 // row 1, column 2
	grid[2*4+0] = 0.3 // row 2, column 0
	vision := func(score float64, extra map[string]any) map[string]any {
		data := map[string]any{"score": score, "gridWidth": 4, "gridHeight": 3,
			"grid": map[string]any{"width": 4, "height": 3, "cells": grid}, "latencyUsec": 12000}
		for k, v := range extra {
			data[k] = v
		}
		return map[string]any{"schema": "vision.event.v1", "type": "detect", "source": "main", "detector": "motion", "emittedAtUsec": 1,
			"frame": map[string]any{"width": 320, "height": 240, "pixelFmt": "yuv420p", "keyframe": false},
			"detections": []map[string]any{
				{"label": "motion", "confidence": 0.8, "trackId": -1, "region": map[string]any{"x": 0.5, "y": 0.25, "width": 0.25, "height": 0.5}},
				{"label": "motion", "confidence": 0.3, "trackId": -1, "region": map[string]any{"x": 0, "y": 0, "width": 1, "height": 1}},
			},
			"tracks": []any{}, "data": data}
	}
	send("icey|server", "icey:vision", vision(0.125, map[string]any{
		"snapshot": map[string]any{"path": "/data/snapshots/main-1.png", "url": "/recordings/main/snapshots/main-1.png"},
		"clip":     map[string]any{"path": "/data/clips/main-1.mp4", "url": "/recordings/main/clips/main-1.mp4"},
	}))
	poll("boxes", `document.querySelectorAll("#motion-overlay .motion-box").length === 2 && !document.getElementById("motion-overlay").hidden`, 5*time.Second)

	// Boxes in pixels relative to the <video> element: inside the picture,
	// offset by the 160 px bar.
	type rect struct{ X, Y, W, H float64 }
	var boxes []rect
	if err := json.Unmarshal([]byte(eval(`(() => { const v = document.getElementById("video").getBoundingClientRect();
		return JSON.stringify([...document.querySelectorAll(".motion-box")].map(e => { const r = e.getBoundingClientRect();
			return {X: r.left - v.left, Y: r.top - v.top, W: r.width, H: r.height}; })); })()`)), &boxes); err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return a-b < 1 && b-a < 1 }
	for i, want := range []rect{{160 + 0.5*320, 0.25 * 240, 0.25 * 320, 0.5 * 240}, {160, 0, 320, 240}} {
		got := boxes[i]
		if !near(got.X, want.X) || !near(got.Y, want.Y) || !near(got.W, want.W) || !near(got.H, want.H) {
			t.Errorf("motion box %d at %+v, want %+v (relative to the 640x240 element)", i, got, want)
		}
		if got.X < 160-1 || got.X+got.W > 480+1 || got.Y < -1 || got.Y+got.H > 240+1 {
			t.Errorf("motion box %d %+v reaches into the letterbox bars", i, got)
		}
	}
	if l := eval(`document.querySelector(".motion-box").getAttribute("aria-label")`); l == "" {
		t.Error("a motion box has no aria-label")
	}

	// The heat map: over the picture, a pixel per cell, opaque where the
	// grid has values and transparent where it has none.
	var heat struct {
		X, Y, W, H    float64
		CW, CH        int
		Alpha         []int
		Display, Role string
	}
	if err := json.Unmarshal([]byte(eval(`(() => { const c = document.getElementById("heatmap"), v = document.getElementById("video").getBoundingClientRect();
		const r = c.getBoundingClientRect(), px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
		const a = (x, y) => px[(y * c.width + x) * 4 + 3];
		return JSON.stringify({X: r.left - v.left, Y: r.top - v.top, W: r.width, H: r.height, CW: c.width, CH: c.height,
			Alpha: [a(2, 1), a(0, 2), a(0, 0), a(3, 2), a(1, 1)], Display: getComputedStyle(c).display, Role: c.getAttribute("role") || ""}); })()`)), &heat); err != nil {
		t.Fatal(err)
	}
	if !near(heat.X, 160) || !near(heat.Y, 0) || !near(heat.W, 320) || !near(heat.H, 240) || heat.CW != 4 || heat.CH != 3 || heat.Display == "none" {
		t.Errorf("heat map at %+v, want a visible 4x3 canvas over the picture (160, 0, 320x240)", heat)
	}
	if len(heat.Alpha) != 5 || heat.Alpha[0] == 0 || heat.Alpha[1] == 0 || heat.Alpha[2] != 0 || heat.Alpha[3] != 0 || heat.Alpha[4] != 0 || heat.Alpha[0] <= heat.Alpha[1] {
		t.Errorf("heat map alpha at cells (2,1) (0,2) (0,0) (3,2) (1,1) = %v, want the 0.9 cell most opaque, the 0.3 cell visible, empty cells transparent", heat.Alpha)
	}

	// The detections list: the event with its score and links to the
	// snapshot and the clip, opening in a new tab.
	poll("detections list", `!document.getElementById("intel").hidden && document.querySelector("#intel-events li.ev-motion") !== null`, 2*time.Second)
	var entry struct {
		Text, Score, Snap, Clip, SnapTarget, ClipTarget, SnapRel, SnapLabel string
	}
	if err := json.Unmarshal([]byte(eval(`(() => { const li = document.querySelector("#intel-events li.ev-motion");
		const s = li.querySelector("a.ev-snapshot"), c = li.querySelector("a.ev-clip");
		return JSON.stringify({Text: li.textContent, Score: li.dataset.score || "", Snap: s ? s.getAttribute("href") : "", Clip: c ? c.getAttribute("href") : "",
			SnapTarget: s ? s.target : "", ClipTarget: c ? c.target : "", SnapRel: s ? s.rel : "", SnapLabel: s ? s.getAttribute("aria-label") || "" : ""}); })()`)), &entry); err != nil {
		t.Fatal(err)
	}
	if entry.Snap != "/recordings/main/snapshots/main-1.png" || entry.Clip != "/recordings/main/clips/main-1.mp4" ||
		entry.SnapTarget != "_blank" || entry.ClipTarget != "_blank" || entry.SnapRel != "noopener noreferrer" || entry.SnapLabel == "" {
		t.Errorf("detections entry links: %+v", entry)
	}
	if entry.Score != "0.125" || !bytes.Contains([]byte(entry.Text), []byte("score 0.125")) || !bytes.Contains([]byte(entry.Text), []byte("2 regions")) {
		t.Errorf("detections entry: %+v, want score 0.125 and 2 regions", entry)
	}
	// Only the server's own URLs become links.
	send("icey|server", "icey:vision", vision(0.2, map[string]any{"snapshot": map[string]any{"url": "javascript:alert(1)"},
		"clip": map[string]any{"url": "//evil.example/x.mp4"}}))
	poll("second entry", `document.querySelectorAll("#intel-events li.ev-motion").length === 2`, 5*time.Second)
	if n := eval(`String(document.querySelector("#intel-events li.ev-motion").querySelectorAll("a").length)`); n != "0" {
		t.Errorf("a foreign snapshot/clip URL became a link (%s links)", n)
	}

	// The heat map toggles.
	poll("toggle shown", `!document.getElementById("btn-heatmap").hidden && document.getElementById("btn-heatmap").getAttribute("aria-pressed") === "true"`, 2*time.Second)
	click("btn-heatmap")
	poll("heat map off", `getComputedStyle(document.getElementById("heatmap")).display === "none" && document.getElementById("btn-heatmap").getAttribute("aria-pressed") === "false" && window.iceyState.intel.heatmap === false`, 2*time.Second)
	click("btn-heatmap")
	poll("heat map on", `getComputedStyle(document.getElementById("heatmap")).display !== "none" && document.getElementById("btn-heatmap").getAttribute("aria-pressed") === "true"`, 2*time.Second)

	// Voice: the meter follows the level, highlighted while active.
	speech := func(typ string, level float64, active bool) map[string]any {
		return map[string]any{"type": typ, "source": "main", "detector": "energy_vad", "time": 1, "active": active, "level": level, "peak": level * 2,
			"audio": map[string]any{"sampleRate": 48000, "channels": 1}, "data": map[string]any{"startThreshold": 0.045, "stopThreshold": 0.02}}
	}
	send("icey|server", "icey:speech", speech("speech:start", 0.12, true))
	poll("meter on", `!document.getElementById("voice-meter").hidden && document.getElementById("voice-meter").dataset.level === "0.12" && document.getElementById("voice-meter").dataset.active === "true" && document.getElementById("voice-meter").getAttribute("aria-valuenow") === "0.12"`, 5*time.Second)
	send("icey|server", "icey:speech", speech("speech:update", 0.3, true))
	poll("meter follows", `document.getElementById("voice-meter").dataset.level === "0.3" && document.getElementById("voice-meter").dataset.active === "true" && parseFloat(document.getElementById("voice-level").style.width) > 50`, 5*time.Second)
	send("icey|server", "icey:vision", vision(0.3, nil))
	poll("boxes for the screenshot", `document.querySelectorAll(".motion-box").length === 2 && !document.getElementById("motion-overlay").classList.contains("fading")`, 5*time.Second)
	b.Screenshot("ui-intel-overlay.png")
	send("icey|server", "icey:speech", speech("speech:end", 0.01, false))
	poll("meter idle", `document.getElementById("voice-meter").dataset.level === "0.01" && document.getElementById("voice-meter").dataset.active === "false"`, 5*time.Second)
	poll("speech entries", `[...document.querySelectorAll("#intel-events li.ev-speech")].map(li => li.querySelector(".ev-text").textContent.split(" ·")[0]).join() === "speech ended,speech started"`, 2*time.Second)

	// Boxes fade about a second after the last event, then go.
	poll("fade", `document.querySelectorAll(".motion-box").length === 0 && window.iceyState.intel.boxes === 0`, 4*time.Second)
	// The test hook: the page's message handler, called as the Symple client does.
	start := time.Now()
	browsertest.MustEval[bool](b, 5*time.Second, `window.icey.onMessage({type: "message", subtype: "icey:vision", from: "icey|server",
		data: {schema: "vision.event.v1", source: "main", frame: {width: 320, height: 240}, detections: [{label: "motion", confidence: 1, region: {x: 0.25, y: 0.5, width: 0.5, height: 0.5}}], data: {score: 0.5}}}), true`)
	poll("hook", `document.querySelectorAll(".motion-box").length === 1`, 2*time.Second)
	time.Sleep(500 * time.Millisecond)
	if n := eval(`String(document.querySelectorAll(".motion-box").length)`); n != "1" && time.Since(start) < 900*time.Millisecond {
		t.Errorf("the box went within half a second (%s boxes)", n)
	}
	poll("faded", `document.querySelectorAll(".motion-box").length === 0`, 4*time.Second)
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Errorf("the box went after %s, want about a second", d)
	}

	// Not from the watched path's server peer, or about another path:
	// ignored (no boxes, no entry, the meter unchanged).
	before := eval(`JSON.stringify([window.iceyState.intel.vision, window.iceyState.intel.speech, document.querySelectorAll("#intel-events li").length])`)
	ignored := browsertest.MustEval[int](b, 2*time.Second, `window.iceyState.intel.ignored`)
	send("icey|x7", "icey:vision", vision(0.9, nil))    // a peer claiming the server's user name
	send("web-zz|q1", "icey:vision", vision(0.9, nil))  // another browser
	send("icey|x8", "icey:vision", vision(0.9, nil))    // a fake server peer for main (not in the roster)
	send("icey|stage", "icey:vision", vision(0.9, nil)) // the server peer of a path this page does not watch
	send("icey|x7", "icey:speech", speech("speech:start", 0.9, true))
	send("icey|stage", "icey:speech", speech("speech:start", 0.9, true))
	other := vision(0.9, nil)
	other["source"] = "stage" // the right peer, about another path
	send("icey|server", "icey:vision", other)
	poll("ignored counted", `window.iceyState.intel.ignored >= `+strconv.Itoa(ignored+3), 5*time.Second)
	time.Sleep(300 * time.Millisecond)
	if after := eval(`JSON.stringify([window.iceyState.intel.vision, window.iceyState.intel.speech, document.querySelectorAll("#intel-events li").length])`); after != before {
		t.Errorf("messages from other peers or paths were taken: counts %s, were %s", after, before)
	}
	if n := eval(`String(document.querySelectorAll(".motion-box").length)`); n != "0" {
		t.Errorf("%s motion boxes from messages that should be ignored", n)
	}
	if m := eval(`document.getElementById("voice-meter").dataset.level + " " + document.getElementById("voice-meter").dataset.active`); m != "0.01 false" {
		t.Errorf("voice meter %q after speech from other peers, want it unchanged (0.01 false)", m)
	}
	poll("impostor logged", `document.getElementById("events").textContent.includes("icey:vision from icey|x7 ignored")`, 2*time.Second)

	// Hang up: nothing stays over the picture; the list stays.
	click("btn-hangup")
	poll("reset", `window.iceyState.call === null && document.getElementById("motion-overlay").hidden && document.getElementById("voice-meter").hidden && document.getElementById("btn-heatmap").hidden && !document.getElementById("intel").hidden`, 5*time.Second)
	// Without a call, events are not shown.
	send("icey|server", "icey:vision", vision(0.9, nil))
	time.Sleep(300 * time.Millisecond)
	if n := eval(`String(document.querySelectorAll(".motion-box").length) + (document.getElementById("motion-overlay").hidden ? " hidden" : " shown")`); n != "0 hidden" {
		t.Errorf("after hang-up a vision event shows: %s", n)
	}
}
