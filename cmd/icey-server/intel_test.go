package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// analysisChildren are the server's decode taps (ffmpeg with showinfo).
func analysisChildren(t *testing.T, p *proc) []child {
	var out []child
	for _, c := range descendants(t, p.cmd.Process.Pid) {
		if strings.Contains(strings.Join(c.argv, " "), "showinfo") {
			out = append(out, c)
		}
	}
	return out
}

// Intelligence on the default path with ten Symple viewers: exactly one
// decoder for the path, every viewer receives every icey:vision and
// icey:speech event once (the same events), /api/events carries them with
// the path, /api/status has the seed's booleans and the counters, and a
// killed decoder is restarted (counted) while the viewers' video goes on.
func TestIntelligenceOncePerPath(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	clip := testpeer.MotionClip(t, t.TempDir())
	solo := testpeer.MotionClip(t, t.TempDir()) // another file: a path of its own
	cfg, _ := json.Marshal(map[string]any{
		"webrtc": map[string]any{"maxPendingPerClient": 64},
		"media": map[string]any{"source": clip, "loop": true,
			"intelligence": map[string]any{"vision": map[string]any{"enabled": true}, "speech": map[string]any{"enabled": true}}},
		"paths": map[string]any{"solo": map[string]any{"source": solo,
			"intelligence": map[string]any{"vision": map[string]any{"enabled": true}}}},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	one, err := testpeer.Connect(context.Background(), p.base+"/solo/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	evs, stopEvents := openSSE(t, p.base+"/api/events", "")
	defer stopEvents()

	type viewer struct {
		c *symClient
		v *symViewer
	}
	var viewers []viewer
	for i := 0; i < 10; i++ {
		c := mustSymDial(t, p)
		c.mustLogin(fmt.Sprintf("viewer%d", i), "")
		viewers = append(viewers, viewer{c, sympleCall(t, c)})
	}
	if n := len(analysisChildren(t, p)); n != 2 {
		t.Fatalf("%d analysis decoders for a path with 10 viewers and one with 1, want 2 (one per path)", n)
	}
	// Collect for one loop of the clip (6 s) and a bit.
	time.Sleep(7 * time.Second)
	type got struct {
		vision, speech map[string]int
		latency        []float64 // ms, frame given to the decoder → event at this viewer
	}
	results := make([]got, len(viewers))
	var wg sync.WaitGroup
	for i, vw := range viewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := got{vision: map[string]int{}, speech: map[string]int{}}
			from := 0
			for {
				m, err := vw.c.waitFrame(&from, 100*time.Millisecond, func(m map[string]any) bool {
					return m["type"] == "message" && (m["subtype"] == "icey:vision" || m["subtype"] == "icey:speech")
				})
				if err != nil {
					break
				}
				if m["from"] != "icey|server" {
					t.Errorf("event from %v", m["from"])
				}
				d, _ := m["data"].(map[string]any)
				if m["subtype"] == "icey:vision" {
					fr, _ := d["frame"].(map[string]any)
					g.vision[fmt.Sprint(fr["frameId"])]++
					if at, ok := m["_arrivedAt"].(time.Time); ok {
						if fed, _ := fr["receivedAtUsec"].(float64); fed > 0 {
							g.latency = append(g.latency, float64(at.Sub(time.UnixMicro(int64(fed))).Microseconds())/1000)
						}
					}
					if d["schema"] != "vision.event.v1" || d["source"] != "main" || len(d["detections"].([]any)) == 0 {
						t.Errorf("vision event %v", d)
					}
				} else {
					g.speech[fmt.Sprint(d["type"], d["time"])]++
				}
			}
			results[i] = g
		}()
	}
	wg.Wait()
	base := results[0]
	if len(base.vision) == 0 || len(base.speech) == 0 {
		t.Fatalf("viewer 0 got %d vision and %d speech events", len(base.vision), len(base.speech))
	}
	for i, g := range results {
		for k, n := range g.vision {
			if n != 1 {
				t.Fatalf("viewer %d got vision event %s %d times", i, k, n)
			}
		}
		for k, n := range g.speech {
			if n != 1 {
				t.Fatalf("viewer %d got speech event %s %d times", i, k, n)
			}
		}
		// Every viewer the same events (those sent while all were in the
		// call; the first viewers may have more from before the others).
		if i > 0 {
			for k := range results[len(results)-1].vision {
				if g.vision[k] != 1 {
					t.Fatalf("viewer %d lacks vision event %s", i, k)
				}
			}
		}
	}
	t.Logf("each of 10 viewers: %d vision and %d speech events, each once", len(results[9].vision), len(results[9].speech))
	var lat []float64
	for _, g := range results {
		lat = append(lat, g.latency...)
	}
	if len(lat) == 0 {
		t.Fatal("no latency measured")
	}
	t.Logf("motion event latency (frame given to the decoder → event at a viewer), %d samples: p50 %.0f ms, p95 %.0f ms",
		len(lat), percentile(lat, 50), percentile(lat, 95))

	// /api/events: vision.detect and speech.* with the path.
	seen := map[string]bool{}
	deadline := time.After(5 * time.Second)
	for !(seen["vision.detect"] && seen["speech.start"]) {
		select {
		case e := <-evs:
			if strings.HasPrefix(e.Type, "vision.") || strings.HasPrefix(e.Type, "speech.") {
				if e.Data["path"] != e.Data["source"] || (e.Data["path"] != "main" && e.Data["path"] != "solo") {
					t.Fatalf("%s without its path: %v", e.Type, e.Data)
				}
				if e.Data["path"] == "main" {
					seen[e.Type] = true
				}
			}
		case <-deadline:
			t.Fatalf("/api/events had %v", seen)
		}
	}

	_, st, body := p.get(t, "/api/status")
	in, _ := st["intelligence"].(map[string]any)
	vs, _ := in["visionStats"].(map[string]any)
	if in["vision"] != true || in["speech"] != true || vs == nil || vs["detectorEmitted"].(float64) < 1 || in["speechStats"] == nil {
		t.Fatalf("status intelligence %v\n%s", in, body)
	}
	t.Logf("visionStats %v", vs)
	_, metrics := scrape(t, p.base+"/metrics")
	if v := metricValue(t, metrics, `icey_intel_events_total{detector="motion",path="main"}`); v < 1 {
		t.Fatalf("icey_intel_events_total motion = %v", v)
	}

	// Kill the decoder: restarted and counted, the viewers' video rate
	// unchanged (the analysis is off the media path).
	rate := func() []int64 {
		b := make([]int64, len(viewers))
		for i, vw := range viewers {
			b[i] = vw.v.video.Load()
		}
		time.Sleep(3 * time.Second)
		for i, vw := range viewers {
			b[i] = vw.v.video.Load() - b[i]
		}
		return b
	}
	normal := rate()
	dec := analysisChildren(t, p)
	if err := syscall.Kill(dec[0].pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	after := rate()
	for i := range viewers {
		if float64(after[i]) < 0.8*float64(normal[i]) {
			t.Fatalf("viewer %d: %d video packets in 3 s after the decoder was killed, %d before", i, after[i], normal[i])
		}
	}
	t.Logf("video packets per viewer in 3 s: %v before the kill, %v after", normal[0], after[0])
	// The killed decoder was one of the two paths': one restart between them.
	var restarts float64
	for _, name := range []string{"main", "solo"} {
		in, _ := statusPaths(t, p)[name]["intelligence"].(map[string]any)
		vs, _ := in["visionStats"].(map[string]any)
		r, _ := vs["decoderRestarts"].(float64)
		restarts += r
	}
	if restarts != 1 || len(analysisChildren(t, p)) != 2 {
		t.Fatalf("after the kill: %v restarts, %d decoders", restarts, len(analysisChildren(t, p)))
	}
}

// Real Chromium through the UI on a path with analysis: the moving square
// draws motion boxes over the picture, and the tone moves the voice meter.
func TestChromiumShowsMotionAndVoice(t *testing.T) {
	testenv.LoopbackOnly(t)
	testenv.RequireTool(t, "ffmpeg")
	clip := testpeer.MotionClip(t, t.TempDir())
	cfg, _ := json.Marshal(map[string]any{
		"media": map[string]any{"loop": true},
		"paths": map[string]any{"lobby": map[string]any{"source": clip,
			"intelligence": map[string]any{"vision": map[string]any{"enabled": true}, "speech": map[string]any{"enabled": true}}}},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	b := browsertest.Start(t, browsertest.Options{})
	pg := chromiumPage{b}
	if err := b.Navigate(p.base + "/lobby/"); err != nil {
		b.Fatalf("open the UI: %v", err)
	}
	uiWatch(t, pg, p, "lobby")
	// The clip loops every 6 s: motion from 1 s to 3 s, tone on and off.
	if err := pagePoll(pg, `document.querySelectorAll('#motion-overlay .motion-box').length > 0`, 15*time.Second); err != nil {
		b.Fatalf("no motion box drawn: %v\n%s", err, uiDump(pg))
	}
	if path := b.Screenshot("intel-motion-boxes.png"); path != "" {
		t.Logf("screenshot %s", path)
	}
	box, err := browsertest.Eval[map[string]float64](b, 5*time.Second, `(() => {
		const r = document.querySelector('#motion-overlay .motion-box').getBoundingClientRect();
		const v = document.getElementById('video').getBoundingClientRect();
		return {bx: r.x - v.x, by: r.y - v.y, bw: r.width, bh: r.height, vw: v.width, vh: v.height};
	})()`)
	if err != nil {
		b.Fatalf("box: %v", err)
	}
	if box["bw"] <= 0 || box["bh"] <= 0 || box["bx"] < -1 || box["by"] < -1 || box["bx"]+box["bw"] > box["vw"]+1 || box["by"]+box["bh"] > box["vh"]+1 {
		b.Fatalf("motion box %v is not within the video", box)
	}
	if err := pagePoll(pg, `document.getElementById('voice-meter').dataset.active === 'true' && parseFloat(document.getElementById('voice-meter').dataset.level) > 0.045`, 15*time.Second); err != nil {
		b.Fatalf("the voice meter does not move: %v\n%s", err, uiDump(pg))
	}
	if err := pagePoll(pg, `document.getElementById('voice-meter').dataset.active === 'false'`, 10*time.Second); err != nil {
		b.Fatalf("the voice meter does not fall back on silence: %v", err)
	}
	t.Logf("motion box %v; voice meter rose and fell", box)
}

// download GETs url into a file of dir and returns its path.
func download(t *testing.T, url, dir, name string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Snapshots and clips: the first motion event names a snapshot and a clip;
// the snapshot is a PNG of the picture's size, the clip (remuxed from the
// path's history) starts on a keyframe and covers the pre-roll to the last
// event's post-roll; both are listed and served like recordings.
func TestIntelligenceSnapshotsAndClips(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	clip := testpeer.MotionClip(t, t.TempDir())
	rec := t.TempDir()
	cfg, _ := json.Marshal(map[string]any{
		"media": map[string]any{"source": clip, "loop": true, "recordDir": rec,
			"intelligence": map[string]any{"vision": map[string]any{"enabled": true,
				"snapshots": map[string]any{"enabled": true},
				"clips":     map[string]any{"enabled": true, "preRollUsec": 1000000, "postRollUsec": 2000000}}}},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	evs, stop := openSSE(t, p.base+"/api/events", "")
	defer stop()
	p.waitFor(t, "/api/ready", 200, 30*time.Second)

	var first map[string]any
	var lastAt, clipAt time.Time
	var clipURL string
	deadline := time.After(25 * time.Second)
	for clipURL == "" || clipAt.IsZero() {
		select {
		case e := <-evs:
			switch e.Type {
			case "vision.detect":
				if first == nil {
					first = e.Data
				}
				if dd, _ := e.Data["data"].(map[string]any); dd != nil {
					if c, _ := dd["clip"].(map[string]any); c != nil && clipURL == "" {
						clipURL, _ = c["url"].(string)
					}
				}
				lastAt = time.Now()
			case "clip.finalized":
				if u, _ := e.Data["url"].(string); u == clipURL && clipURL != "" {
					clipAt = time.Now()
				}
			}
		case <-deadline:
			t.Fatalf("no finalized clip: first event %v, clip %q", first, clipURL)
		}
	}
	t.Logf("clip %s finalized %v after the last event before it", clipURL, clipAt.Sub(lastAt).Round(time.Millisecond))
	data, _ := first["data"].(map[string]any)
	snap, _ := data["snapshot"].(map[string]any)
	if snap == nil {
		t.Fatalf("first event without a snapshot: %v", first)
	}
	dir := t.TempDir()
	// The snapshot is written just after its event.
	var png string
	for i := 0; ; i++ {
		resp, err := http.Get(p.base + snap["url"].(string))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				png = download(t, p.base+snap["url"].(string), dir, "snap.png")
				break
			}
		}
		if i == 50 {
			entries, _ := os.ReadDir(filepath.Join(rec, "snapshots"))
			t.Fatalf("snapshot %v not served (dir has %v)\n%s", snap, entries, tail(p.stderr.String(), 3000))
		}
		time.Sleep(100 * time.Millisecond)
	}
	pr, err := testenv.FFprobe(t, png)
	if err != nil || pr.Streams["video"].Width != 320 || pr.Streams["video"].Height != 240 {
		t.Fatalf("snapshot: %+v %v", pr, err)
	}
	mp4 := download(t, p.base+clipURL, dir, "clip.mp4")
	pc, err := testenv.FFprobe(t, mp4)
	if err != nil || pc.Streams["video"].Codec != "h264" || !pc.FirstVideoKey {
		t.Fatalf("clip: %+v %v", pc, err)
	}
	// Motion lasts from 1 s to 3 s of each loop, events every 0.5 s or
	// so: the clip spans ~1 s of pre-roll (back to a keyframe, 1 s GOP),
	// the motion, and 2 s of post-roll after the last event: 3.5 to 6 s.
	if pc.Duration < 3 || pc.Duration > 6.5 {
		t.Fatalf("clip of %.2f s, want pre-roll + motion + post-roll (3.5-6 s ±0.5)", pc.Duration)
	}
	t.Logf("snapshot %dx%d, clip %.2f s", pr.Streams["video"].Width, pr.Streams["video"].Height, pc.Duration)
	code, _, body := p.get(t, "/api/recordings/clips?path=main")
	if code != 200 || !strings.Contains(body, filepath.Base(clipURL)) {
		t.Fatalf("clips list %d: %s", code, body)
	}
}
