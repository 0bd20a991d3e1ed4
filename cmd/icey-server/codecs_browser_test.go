package main

// Every camera to every browser, with real browsers against the binary:
// Chromium plays an H.264-with-B-frames file, an H.265 camera and an
// M-JPEG camera through the web UI (path picker, Watch), at the source
// rate, as H.264 (a rendition where the source is not plain H.264), with
// audible Opus from the AAC camera; Firefox ESR, which has no H.264 here,
// plays an H.264 and an H.265 camera through the VP8 rendition, over WHEP
// and through the UI; an AV1-only viewer is refused with 406.

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/firefoxtest"
	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// The source rate of every path here, and the least share of it a browser
// must decode (measured over a few seconds of page time).
const (
	browserCodecFPS   = 25
	browserMinFPSRate = 0.8
)

// jsPage is a browser page the UI helpers below drive: Chromium
// (browsertest) or Firefox (firefoxtest). eval returns the JSON value of
// an expression, promises awaited.
type jsPage interface {
	eval(expr string, timeout time.Duration) (json.RawMessage, error)
	logs() string
}

type chromiumPage struct{ b *browsertest.Browser }

func (c chromiumPage) eval(expr string, timeout time.Duration) (json.RawMessage, error) {
	s, err := browsertest.Eval[string](c.b, timeout, `(async () => { const v = await (`+expr+"\n); return v === undefined ? \"null\" : JSON.stringify(v); })()")
	return json.RawMessage(s), err
}
func (c chromiumPage) logs() string { return "page console:\n" + c.b.Console() }

type firefoxPage struct{ b *firefoxtest.Browser }

func (f firefoxPage) eval(expr string, timeout time.Duration) (json.RawMessage, error) {
	return f.b.Eval(expr, timeout)
}
func (f firefoxPage) logs() string { return f.b.Logs() }

// pagePoll waits until expr is truthy in the page.
func pagePoll(pg jsPage, expr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for {
		v, err := pg.eval("!!("+expr+"\n)", 10*time.Second)
		if err == nil && string(v) == "true" {
			return nil
		}
		if err != nil {
			last = err.Error()
		} else {
			last = string(v)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s still not true after %v (last: %s)", expr, timeout, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// uiStats is what the UI's call (window.icey.pc) and its #video say.
type uiStats struct {
	T               float64 `json:"t"` // page time of the reading, ms
	VideoWidth      int     `json:"videoWidth"`
	VideoHeight     int     `json:"videoHeight"`
	FramesDecoded   int64   `json:"framesDecoded"`
	VideoCodec      string  `json:"videoCodec"`
	AudioCodec      string  `json:"audioCodec"`
	AudioPackets    int64   `json:"audioPackets"`
	AudioSamples    float64 `json:"audioSamples"`
	AudioLevel      float64 `json:"audioLevel"`
	AudioEnergy     float64 `json:"audioEnergy"`
	Muted           bool    `json:"muted"`
	ConnectionState string  `json:"connectionState"`
}

// uiStatsJS reads uiStats; it runs in Chromium and in Firefox.
const uiStatsJS = `(async () => {
  const v = document.getElementById("video"), pc = window.icey && window.icey.pc;
  const out = {t: performance.now(), videoWidth: v.videoWidth, videoHeight: v.videoHeight, framesDecoded: 0, videoCodec: "",
    audioCodec: "", audioPackets: 0, audioSamples: 0, audioLevel: 0, audioEnergy: 0, muted: v.muted,
    connectionState: pc ? pc.connectionState : "none"};
  if (!pc) return out;
  const rep = await pc.getStats(), byId = new Map();
  rep.forEach((s) => byId.set(s.id, s));
  rep.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    const c = s.codecId && byId.get(s.codecId), kind = s.kind || s.mediaType;
    if (kind === "video") {
      out.framesDecoded = s.framesDecoded || 0;
      if (c && c.mimeType) out.videoCodec = c.mimeType;
    } else if (kind === "audio") {
      out.audioPackets = s.packetsReceived || 0; out.audioSamples = s.totalSamplesReceived || 0;
      out.audioLevel = s.audioLevel || 0; out.audioEnergy = s.totalAudioEnergy || 0;
      if (c && c.mimeType) out.audioCodec = c.mimeType;
    }
  });
  return out;
})()`

func readUIStats(t *testing.T, pg jsPage) uiStats {
	t.Helper()
	raw, err := pg.eval(uiStatsJS, 10*time.Second)
	if err != nil {
		t.Fatalf("UI stats: %v\n%s", err, pg.logs())
	}
	var s uiStats
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("UI stats %s: %v", raw, err)
	}
	return s
}

// uiDump is the UI's state for failure messages.
func uiDump(pg jsPage) string {
	v, err := pg.eval(`({s: window.iceyState, call: document.getElementById("call-state").textContent,
  banner: document.getElementById("banner").hidden ? "" : document.getElementById("banner").innerText,
  events: document.getElementById("events").innerText.slice(0, 1500)})`, 5*time.Second)
	if err != nil {
		return "UI state: " + err.Error()
	}
	return "UI state: " + string(v)
}

// uiWatch makes the UI page watch path: it waits for the path to be listed,
// picks it with the path picker (unless the page already shows it), clicks
// Watch and waits for a picture. It returns the time from the click to
// videoWidth > 0, measured in the page.
func uiWatch(t *testing.T, pg jsPage, p *proc, path string) time.Duration {
	t.Helper()
	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s: %s\n%s\n%s\nserver stderr (tail):\n%s", path, fmt.Sprintf(format, a...), uiDump(pg), pg.logs(), tail(p.stderr.String(), 3000))
	}
	q, _ := json.Marshal(path)
	if err := pagePoll(pg, `window.icey && window.icey.connected && window.iceyState.paths.includes(`+string(q)+`)`, 20*time.Second); err != nil {
		fail("the UI never listed the path: %v", err)
	}
	if err := pagePoll(pg, `window.iceyState.call === null && document.getElementById("video").videoWidth === 0`, 10*time.Second); err != nil {
		fail("the UI is not idle: %v", err)
	}
	// The path picker, as a user does.
	if _, err := pg.eval(`(() => { const s = document.getElementById("path-picker");
  if (s.value !== `+string(q)+`) { s.value = `+string(q)+`; s.dispatchEvent(new Event("change")); } return !s.hidden; })()`, 5*time.Second); err != nil {
		fail("path picker: %v", err)
	}
	if err := pagePoll(pg, `window.iceyState.path === `+string(q)+` && !document.getElementById("btn-watch").disabled`, 10*time.Second); err != nil {
		fail("Watch not enabled for the path: %v", err)
	}
	raw, err := pg.eval(`(async () => {
  const v = document.getElementById("video"), t0 = performance.now();
  document.getElementById("btn-watch").click();
  while (v.videoWidth === 0 && performance.now() - t0 < 30000) await new Promise((r) => setTimeout(r, 10));
  return v.videoWidth > 0 ? performance.now() - t0 : -1;
})()`, 45*time.Second)
	if err != nil {
		fail("Watch: %v", err)
	}
	var ms float64
	_ = json.Unmarshal(raw, &ms)
	if ms < 0 {
		fail("no picture within 30 s of clicking Watch (stats %+v)", readUIStats(t, pg))
	}
	return time.Duration(ms * float64(time.Millisecond))
}

// uiHangup ends the UI's Watch call.
func uiHangup(t *testing.T, pg jsPage) {
	t.Helper()
	if _, err := pg.eval(`document.getElementById("btn-hangup").click(), true`, 5*time.Second); err != nil {
		t.Fatalf("hang up: %v", err)
	}
	if err := pagePoll(pg, `window.iceyState.call === null && document.getElementById("video").videoWidth === 0`, 10*time.Second); err != nil {
		t.Fatalf("hang up: %v\n%s", err, uiDump(pg))
	}
}

// measureUI reads the UI's stats once a second for seconds seconds and
// returns the first and last readings, the decoded frame rate between them
// in page time, and the rate of each second (logged: a rendition that just
// started sends its first GOP in a burst, a loaded machine stutters).
func measureUI(t *testing.T, pg jsPage, seconds int) (s1, s2 uiStats, fps float64, each []float64) {
	t.Helper()
	s1 = readUIStats(t, pg)
	prev := s1
	for range seconds {
		time.Sleep(time.Second)
		s2 = readUIStats(t, pg)
		each = append(each, framesPerSecond(s2.FramesDecoded-prev.FramesDecoded, (s2.T-prev.T)/1000))
		prev = s2
	}
	return s1, s2, framesPerSecond(s2.FramesDecoded-s1.FramesDecoded, (s2.T-s1.T)/1000), each
}

func framesPerSecond(frames int64, seconds float64) float64 {
	if seconds <= 0 {
		return 0
	}
	return float64(frames) / seconds
}

// fpsList formats per-second rates.
func fpsList(each []float64) string {
	var b strings.Builder
	for i, f := range each {
		if i > 0 {
			b.WriteString(" ")
		}
		fmt.Fprintf(&b, "%.0f", f)
	}
	return "[" + b.String() + "]"
}

// pathRenditions returns a path's renditions from /api/status by codec.
func pathRenditions(t *testing.T, p *proc, path string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	rs, _ := statusPaths(t, p)[path]["renditions"].([]any)
	for _, r := range rs {
		m, _ := r.(map[string]any)
		if c, ok := m["codec"].(string); ok {
			out[c] = m
		}
	}
	return out
}

// waitPathRendition polls /api/status until path has a rendition of codec
// with at least viewers viewers.
func waitPathRendition(t *testing.T, p *proc, path, codec string, viewers float64) map[string]any {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		r := pathRenditions(t, p, path)
		if n, _ := r[codec]["viewers"].(float64); n >= viewers {
			return r[codec]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /api/status renditions %v, want %s with ≥ %v viewers", path, r, codec, viewers)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestChromiumPlaysEveryCodec: one server with an H.264 High file with
// B-frames and AAC, an H.265 camera with AAC and an M-JPEG camera; Chromium
// watches each through the web UI (path picker, Watch) and decodes H.264
// at ≥ 80 % of the source's 25 fps (a rendition for the B-frames file and
// the H.265 camera, shown with its viewer in /api/status), with audible
// Opus (samples rising, audioLevel > 0) from the AAC camera. The time to
// the first frame is logged for the B-frames path when its rendition
// starts for the viewer, and for a second Chromium joining it running.
func TestChromiumPlaysEveryCodec(t *testing.T) {
	testenv.LoopbackOnly(t)
	testenv.RequireTool(t, "ffmpeg")
	start := time.Now()
	dir := t.TempDir()
	bfile := testpeer.MakeMedia(t, dir, testpeer.MediaOptions{Video: testpeer.MediaH264HighBFrames, Audio: testpeer.MediaAAC,
		FPS: browserCodecFPS, Seconds: 4, Name: "bframes.mp4"})
	h265 := rtsptest.Start(t, rtsptest.Options{Video: rtsptest.VideoH265, Audio: rtsptest.AudioAAC, FPS: browserCodecFPS})
	mjpeg := rtsptest.Start(t, rtsptest.Options{Video: rtsptest.VideoMJPEGFrames, FPS: browserCodecFPS})
	cfg, _ := json.Marshal(map[string]any{
		"media": map[string]any{"loop": true},
		"paths": map[string]any{
			"f-bframes": map[string]any{"source": bfile},
			"r-h265":    map[string]any{"source": h265.URL("cam")},
			"r-mjpeg":   map[string]any{"source": mjpeg.URL("cam")},
		},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 60*time.Second)

	ba := browsertest.Start(t, browsertest.Options{})
	a := chromiumPage{ba}
	if err := ba.Navigate(p.base + "/"); err != nil {
		ba.Fatalf("open the UI: %v", err)
	}
	// The second viewer's browser, warmed up on the M-JPEG path below.
	bb := browsertest.Start(t, browsertest.Options{})
	b := chromiumPage{bb}
	if err := bb.Navigate(p.base + "/r-mjpeg/"); err != nil {
		bb.Fatalf("open the UI: %v", err)
	}

	type row struct {
		path           string
		rendition      bool // H.264 for Chromium is a rendition
		audio          bool // the source has (AAC) audio: Opus must be audible
		firstFrame     time.Duration
		fps            float64
		codec, acodec  string
		w, h           int
		level, samples float64
	}
	rows := []*row{
		{path: "r-mjpeg"},
		{path: "r-h265", rendition: true, audio: true},
		{path: "f-bframes", rendition: true, audio: true},
	}
	for i, r := range rows {
		if r.rendition {
			if rs := pathRenditions(t, p, r.path); len(rs) != 0 {
				t.Fatalf("%s: renditions %v before any viewer", r.path, rs)
			}
		}
		r.firstFrame = uiWatch(t, a, p, r.path)
		if r.audio {
			// Unmute (the UI starts muted): audible, as a user hears it.
			if _, err := a.eval(`(() => { const v = document.getElementById("video"); if (v.muted) document.getElementById("btn-mute").click(); return !v.muted; })()`, 5*time.Second); err != nil {
				ba.Fatalf("unmute: %v", err)
			}
		}
		// Let the first GOP's burst pass, then measure over 3 s.
		time.Sleep(time.Second)
		s1, s2, fps, each := measureUI(t, a, 3)
		r.fps, r.codec, r.acodec, r.w, r.h = fps, s2.VideoCodec, s2.AudioCodec, s2.VideoWidth, s2.VideoHeight
		r.level, r.samples = s2.AudioLevel, s2.AudioSamples-s1.AudioSamples
		t.Logf("%s: first frame %v after Watch; %dx%d %s %s %.1f fps %s (frames %d→%d); audio packets %d→%d, samples +%.0f, level %.3f, energy %.4f→%.4f, muted %v",
			r.path, r.firstFrame.Round(time.Millisecond), s2.VideoWidth, s2.VideoHeight, s2.VideoCodec, s2.AudioCodec, fps, fpsList(each),
			s1.FramesDecoded, s2.FramesDecoded, s1.AudioPackets, s2.AudioPackets, r.samples, s2.AudioLevel,
			s1.AudioEnergy, s2.AudioEnergy, s2.Muted)
		if fps < browserMinFPSRate*browserCodecFPS {
			t.Errorf("%s: Chromium decoded %.1f fps, want ≥ %.0f (80 %% of %d)", r.path, fps, browserMinFPSRate*browserCodecFPS, browserCodecFPS)
		}
		if !strings.EqualFold(s2.VideoCodec, "video/H264") {
			t.Errorf("%s: Chromium receives %q, want video/H264", r.path, s2.VideoCodec)
		}
		if s2.VideoWidth != 320 || s2.VideoHeight != 240 {
			t.Errorf("%s: picture %dx%d, want the source's 320x240", r.path, s2.VideoWidth, s2.VideoHeight)
		}
		if r.audio {
			if !strings.EqualFold(s2.AudioCodec, "audio/opus") || s2.AudioPackets-s1.AudioPackets < 50 || r.samples <= 0 {
				t.Errorf("%s: audio %q, packets %d→%d, samples +%.0f: want Opus flowing", r.path, s2.AudioCodec,
					s1.AudioPackets, s2.AudioPackets, r.samples)
			}
			// The 440 Hz tone is audible: a level above silence, and energy
			// accumulating over the window.
			if s2.AudioLevel <= 0.001 || s2.AudioEnergy <= s1.AudioEnergy {
				t.Errorf("%s: audioLevel %.4f, totalAudioEnergy %.4f→%.4f: the tone is not heard", r.path, s2.AudioLevel, s1.AudioEnergy, s2.AudioEnergy)
			}
		}
		rends := pathRenditions(t, p, r.path)
		t.Logf("%s: /api/status video %v, renditions %v", r.path, statusPaths(t, p)[r.path]["video"], rends)
		if r.rendition {
			waitPathRendition(t, p, r.path, "H264", 1)
		} else if len(rends) != 0 {
			t.Errorf("%s: renditions %v, want none (Chromium plays the source's H.264)", r.path, rends)
		}
		if i == 0 {
			// Warm the second browser up on this path (the first use of
			// WebRTC in a Chromium costs 100-650 ms that are not the
			// server's), then leave it idle.
			uiWatch(t, b, p, r.path)
			uiHangup(t, b)
		}
		if i < len(rows)-1 {
			ba.Screenshot("chromium-codecs-" + r.path + ".png")
			uiHangup(t, a)
		}
	}
	ba.Screenshot("chromium-codecs-f-bframes.png")

	// A second viewer joins the running B-frames rendition.
	second := uiWatch(t, b, p, "f-bframes")
	time.Sleep(time.Second)
	_, s2, fps, each := measureUI(t, b, 3)
	t.Logf("f-bframes, second viewer: first frame %v after Watch; %dx%d %s %.1f fps %s", second.Round(time.Millisecond),
		s2.VideoWidth, s2.VideoHeight, s2.VideoCodec, fps, fpsList(each))
	if fps < browserMinFPSRate*browserCodecFPS || !strings.EqualFold(s2.VideoCodec, "video/H264") {
		t.Errorf("f-bframes, second viewer: %.1f fps of %s, want ≥ %.0f of video/H264", fps, s2.VideoCodec, browserMinFPSRate*browserCodecFPS)
	}
	rend := waitPathRendition(t, p, "f-bframes", "H264", 2)
	t.Logf("f-bframes H264 rendition with both viewers: %v", rend)

	var sum strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&sum, "%-9s %-10s %dx%d %5.1f fps  %-10s level %.3f  first frame %v\n", r.path, r.codec, r.w, r.h, r.fps, r.acodec,
			r.level, r.firstFrame.Round(time.Millisecond))
	}
	t.Logf("Chromium through the UI (source %d fps):\n%sB-frames rendition: first frame %v when the rendition starts, %v joining it running (total %v)",
		browserCodecFPS, sum.String(), rows[2].firstFrame.Round(time.Millisecond), second.Round(time.Millisecond),
		time.Since(start).Round(time.Second))
}

// TestFirefoxPlaysThroughTheVP8Rendition: Firefox ESR, which offers VP8,
// VP9 and AV1 only, plays an H.264 camera over WHEP and an H.265 camera
// through the web UI: VP8 at ≥ 80 % of the source rate at the camera's
// 320 px width, the VP8 renditions shown with their viewers in
// /api/status. A viewer offering only AV1 gets 406 naming the path's codec.
func TestFirefoxPlaysThroughTheVP8Rendition(t *testing.T) {
	testenv.LoopbackOnly(t)
	testenv.RequireTool(t, "ffmpeg")
	start := time.Now()
	h264 := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioAAC, FPS: browserCodecFPS})
	h265 := rtsptest.Start(t, rtsptest.Options{Video: rtsptest.VideoH265, Audio: rtsptest.AudioAAC, FPS: browserCodecFPS})
	ff := firefoxtest.Start(t, firefoxtest.Options{HostNumber: 241})
	t.Logf("%s started in %v on %s", ff.Version, time.Since(start).Round(time.Millisecond), ff.Host.Addr)

	// The server listens on the test's end of Firefox's link.
	cfg, _ := json.Marshal(map[string]any{
		"paths": map[string]any{
			"r-h264": map[string]any{"source": h264.URL("cam")},
			"r-h265": map[string]any{"source": h265.URL("cam")},
		},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg)), "--host", ff.Host.Gateway})
	p.waitFor(t, "/api/ready", 200, 60*time.Second)

	// An AV1-only viewer: nothing it can play, said in words.
	for path, codec := range map[string]string{"r-h264": "H.264", "r-h265": "H.265"} {
		code, body := av1OnlyWHEP(t, p.base+"/"+path+"/whep")
		t.Logf("AV1-only offer to %s: %d %q", path, code, strings.TrimSpace(body))
		if code != http.StatusNotAcceptable || !strings.Contains(body, codec) {
			t.Errorf("AV1-only offer to %s: %d %q, want 406 naming %s", path, code, body, codec)
		}
	}
	if rs := pathRenditions(t, p, "r-h264"); len(rs) != 0 {
		t.Errorf("r-h264: renditions %v after refused offers, want none", rs)
	}

	fail := func(format string, a ...any) {
		t.Helper()
		t.Fatalf("%s\n%s\nserver stderr (tail):\n%s", fmt.Sprintf(format, a...), ff.Logs(), tail(p.stderr.String(), 3000))
	}

	// (a) The H.264 camera over WHEP.
	if err := ff.Navigate(p.base + "/"); err != nil {
		fail("open the UI: %v", err)
	}
	t0 := time.Now()
	if err := ff.WHEPPlay("/r-h264/whep"); err != nil {
		fail("WHEP: %v", err)
	}
	if err := ff.Poll(`document.getElementById('firefoxtest').videoWidth > 0`, 30*time.Second); err != nil {
		st, _ := ff.VideoStats()
		fail("no picture over WHEP: %v (stats %+v)", err, st)
	}
	whepFirst := time.Since(t0)
	// The rendition's first GOP comes in a burst (Firefox decodes it at
	// once, ~40 fps for a second) and a new rendition may hiccup at its
	// start: measure from a second after playback settled (25 frames
	// decoded), over 3 s.
	for settle := time.Now().Add(20 * time.Second); ; {
		st, err := ff.VideoStats()
		if err == nil && st.FramesDecoded >= 25 {
			break
		}
		if time.Now().After(settle) {
			fail("playback does not settle: %+v %v", st, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	time.Sleep(time.Second)
	s1, err := ff.VideoStats()
	if err != nil {
		fail("stats: %v", err)
	}
	t1, prev, prevT := time.Now(), s1, time.Now()
	var s2 firefoxtest.Stats
	var each []float64
	for range 3 {
		time.Sleep(time.Second)
		if s2, err = ff.VideoStats(); err != nil {
			fail("stats: %v", err)
		}
		each = append(each, framesPerSecond(int64(s2.FramesDecoded-prev.FramesDecoded), time.Since(prevT).Seconds()))
		prev, prevT = s2, time.Now()
	}
	whepFPS := framesPerSecond(int64(s2.FramesDecoded-s1.FramesDecoded), time.Since(t1).Seconds())
	t.Logf("r-h264 over WHEP: picture %v after the play call; %dx%d %s, %.1f fps %s (frames %d→%d)", whepFirst.Round(time.Millisecond),
		s2.Width, s2.Height, s2.Codec, whepFPS, fpsList(each), s1.FramesDecoded, s2.FramesDecoded)
	if whepFPS < browserMinFPSRate*browserCodecFPS {
		t.Errorf("r-h264 over WHEP: Firefox decoded %.1f fps, want ≥ %.0f", whepFPS, browserMinFPSRate*browserCodecFPS)
	}
	if s2.Codec != "video/VP8" || s2.Width != 320 {
		t.Errorf("r-h264 over WHEP: %s at %d px wide, want video/VP8 at 320", s2.Codec, s2.Width)
	}
	t.Logf("r-h264: /api/status renditions %v", pathRenditions(t, p, "r-h264"))
	waitPathRendition(t, p, "r-h264", "VP8", 1)
	if code, err := ff.WHEPStop(); err != nil || code != http.StatusOK {
		fail("end the WHEP viewer: DELETE %d %v", code, err)
	}

	// (b) The H.265 camera through the UI: the path picker, Watch.
	pg := firefoxPage{ff}
	if err := ff.Navigate(p.base + "/"); err != nil {
		fail("open the UI: %v", err)
	}
	first := uiWatch(t, pg, p, "r-h265")
	time.Sleep(time.Second)
	u1, u2, uiFPS, each := measureUI(t, pg, 3)
	t.Logf("r-h265 through the UI: first frame %v after Watch; %dx%d %s %s %.1f fps %s (frames %d→%d), audio packets %d→%d",
		first.Round(time.Millisecond), u2.VideoWidth, u2.VideoHeight, u2.VideoCodec, u2.AudioCodec, uiFPS, fpsList(each),
		u1.FramesDecoded, u2.FramesDecoded, u1.AudioPackets, u2.AudioPackets)
	if uiFPS < browserMinFPSRate*browserCodecFPS {
		t.Errorf("r-h265 through the UI: Firefox decoded %.1f fps, want ≥ %.0f", uiFPS, browserMinFPSRate*browserCodecFPS)
	}
	if u2.VideoCodec != "video/VP8" || u2.VideoWidth != 320 {
		t.Errorf("r-h265 through the UI: %s at %d px wide, want video/VP8 at 320", u2.VideoCodec, u2.VideoWidth)
	}
	rend := waitPathRendition(t, p, "r-h265", "VP8", 1)
	t.Logf("r-h265: /api/status VP8 rendition %v", rend)
	t.Logf("Firefox (source %d fps): r-h264 over WHEP %.1f fps VP8 (picture after %v), r-h265 through the UI %.1f fps VP8 (first frame %v); total %v",
		browserCodecFPS, whepFPS, whepFirst.Round(time.Millisecond), uiFPS, first.Round(time.Millisecond), time.Since(start).Round(time.Second))
}

// av1OnlyWHEP POSTs the offer of a pion viewer that can receive AV1 video
// (and Opus audio) only, and returns the answer's status and body.
func av1OnlyWHEP(t *testing.T, url string) (int, string) {
	t.Helper()
	me := &webrtc.MediaEngine{}
	for _, c := range []struct {
		kind webrtc.RTPCodecType
		p    webrtc.RTPCodecParameters
	}{
		{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeAV1, ClockRate: 90000}, PayloadType: 45}},
		{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111}},
	} {
		if err := me.RegisterCodec(c.p, c.kind); err != nil {
			t.Fatal(err)
		}
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	offer, err := testpeer.RecvOffer(pc)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(offer, "AV1/90000") || strings.Contains(offer, "H264") || strings.Contains(offer, "VP8") {
		t.Fatalf("the AV1-only offer is not:\n%s", offer)
	}
	resp, err := http.Post(url, "application/sdp", strings.NewReader(offer))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}
