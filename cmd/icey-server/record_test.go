package main

// Recording on the binary: record mode with WHIP and with a browser's
// Broadcast, a record: true camera path with rotation and an outage, and
// kill -9 in the middle of a recording.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/recordings"
)

// recording is one entry of GET /api/recordings.
type recording = recordings.Info

func listRecordings(t *testing.T, p *proc, query string) []recording {
	t.Helper()
	resp, err := http.Get(p.base + "/api/recordings" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []recording
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/api/recordings: %d %v", resp.StatusCode, err)
	}
	return out
}

// waitRecordings polls the listing until ok accepts it.
func waitRecordings(t *testing.T, p *proc, query string, d time.Duration, ok func([]recording) bool) []recording {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		list := listRecordings(t, p, query)
		if ok(list) {
			return list
		}
		if time.Now().After(deadline) {
			t.Fatalf("recordings never as expected: %+v", list)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func complete(list []recording) []recording {
	var out []recording
	for _, r := range list {
		if r.Complete {
			out = append(out, r)
		}
	}
	return out
}

// checkMP4 probes a recording: H.264 (+ Opus), the first frame a
// keyframe, audio and video starting together, about want long.
func checkMP4(t *testing.T, file string, want time.Duration, audio bool) testenv.Probe {
	t.Helper()
	pr, err := testenv.FFprobe(t, file)
	if err != nil {
		t.Fatalf("%s: %v", filepath.Base(file), err)
	}
	v, hasV := pr.Streams["video"]
	a, hasA := pr.Streams["audio"]
	if !hasV || v.Codec != "h264" || !pr.FirstVideoKey {
		t.Fatalf("%s: video %+v, first frame a keyframe %v", filepath.Base(file), v, pr.FirstVideoKey)
	}
	if audio && (!hasA || a.Codec != "opus" || math.Abs(a.StartTime-v.StartTime) > 0.1) {
		t.Fatalf("%s: audio %+v vs video %+v", filepath.Base(file), a, v)
	}
	if want > 0 && math.Abs(pr.Duration-want.Seconds()) > 0.1*want.Seconds() {
		t.Fatalf("%s: %.2f s long, want %v ± 10%%", filepath.Base(file), pr.Duration, want)
	}
	return pr
}

// Record mode: a WHIP publish of 6 s becomes one complete MP4 with both
// streams, listed, downloadable with Range; viewers are refused.
func TestRecordModeWHIP(t *testing.T) {
	dir := t.TempDir()
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "320x240", Seconds: 4})
	p := launch(t, []string{"--mode", "record", "--record-dir", dir})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{}); err == nil {
		t.Fatal("a viewer was admitted in record mode")
	}
	pub, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(6 * time.Second)
	sent := time.Duration(pub.FramesSent.Load()) * time.Second / time.Duration(clip.FPS)
	if code, err := pub.Delete(); err != nil || code != 200 {
		t.Fatalf("DELETE: %d %v", code, err)
	}
	ended := time.Now()
	pub.Close()
	list := waitRecordings(t, p, "?path=main", 10*time.Second, func(l []recording) bool { return len(complete(l)) == 1 })
	t.Logf("publish ended → listed complete recording: %v", time.Since(ended).Round(time.Millisecond))
	r := complete(list)[0]
	if !strings.HasPrefix(r.Name, "main-") || !strings.HasSuffix(r.Name, ".mp4") || r.URL != "/recordings/main/"+r.Name {
		t.Fatalf("recording %+v", r)
	}
	// 6 s of wall time; the file is checked against what was sent (the
	// same unless a loaded machine paced the publisher behind the clock).
	t.Logf("sent %v of media in 6 s", sent)
	checkMP4(t, filepath.Join(dir, r.Name), sent, true)

	// Range download: 206 with the file's bytes.
	want, err := os.ReadFile(filepath.Join(dir, r.Name))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", p.base+r.URL, nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || resp.Header.Get("Content-Type") != "video/mp4" || string(got) != string(want[100:200]) {
		t.Fatalf("Range: %d %q, %d bytes", resp.StatusCode, resp.Header.Get("Content-Type"), len(got))
	}
	_, st, _ := p.get(t, "/api/status")
	rec := st["record"].(map[string]any)
	if rec["files"] != float64(1) || rec["bytes"] != float64(len(want)) || rec["active"] != float64(0) {
		t.Fatalf("record section %v", rec)
	}
}

// kill -9 mid-recording loses at most the last fragment: the .part is
// readable up to it, and the next start finalizes and lists it with all
// but at most one fragment (recordings.DefaultFragmentDuration) of what
// had been sent when the server died.
func TestFaultRecordingSurvivesKill9(t *testing.T) {
	// What the file may lack beyond one fragment: the frames in flight
	// between the publisher and the recorder when the process died.
	const inFlight = 0.3
	frag := recordings.DefaultFragmentDuration.Seconds()
	dir := t.TempDir()
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "320x240", Seconds: 4})
	p := launch(t, []string{"--mode", "record", "--record-dir", dir})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	time.Sleep(5 * time.Second)
	// What had been sent when the server died, in media time (a loaded
	// machine may pace the publisher behind the wall clock).
	sent := float64(pub.FramesSent.Load()) / float64(clip.FPS)
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.wait(t, 10*time.Second)
	parts, _ := filepath.Glob(filepath.Join(dir, "*.mp4.part"))
	if len(parts) != 1 {
		t.Fatalf(".part files after kill -9: %v", parts)
	}
	fi, _ := os.Stat(parts[0])
	pr, err := testenv.FFprobe(t, parts[0])
	if err != nil || sent-pr.Duration > frag+inFlight {
		t.Fatalf("the .part after kill -9: %.2f s of %.2f s sent (more than one %.1f s fragment short), %v", pr.Duration, sent, frag, err)
	}
	t.Logf(".part after kill -9 with %.2f s sent: %d bytes, ffprobe reads %.2f s", sent, fi.Size(), pr.Duration)

	p2 := launch(t, []string{"--mode", "record", "--record-dir", dir})
	p2.waitFor(t, "/api/ready", 200, 20*time.Second)
	list := waitRecordings(t, p2, "", 5*time.Second, func(l []recording) bool { return len(complete(l)) == 1 })
	name := complete(list)[0].Name
	fi2, err := os.Stat(filepath.Join(dir, name))
	if err != nil || parts[0] != filepath.Join(dir, name)+".part" {
		t.Fatalf("recovered %s from %s: %v", name, parts[0], err)
	}
	recovered := checkMP4(t, filepath.Join(dir, name), 0, true)
	lost := sent - recovered.Duration
	t.Logf("kill -9 after %.2f s sent: recovered %.2f s, lost %.2f s (bound: one %.1f s fragment + %.1f s in flight); %d bytes cut by the repair",
		sent, recovered.Duration, lost, frag, inFlight, fi.Size()-fi2.Size())
	if lost > frag+inFlight {
		t.Fatalf("recovered file %.2f s of %.2f s sent: %.2f s lost, more than one %.1f s fragment", recovered.Duration, sent, lost, frag)
	}
	if recovered.Duration > sent+0.5 {
		t.Fatalf("recovered file %.2f s, longer than the %.2f s sent", recovered.Duration, sent)
	}
}

// A record: true camera path records continuously: segments rotate at the
// configured length, an outage closes the file and a new one starts when
// the camera returns; viewers are unaffected.
func TestRecordCameraPathSegments(t *testing.T) {
	dir := t.TempDir()
	cam := rtsptest.Start(t, rtsptest.Options{})
	cfg, _ := json.Marshal(map[string]any{
		"media":      map[string]any{"recordDir": dir, "sourceGraceSeconds": 1},
		"recordings": map[string]any{"segmentSeconds": 2},
		"paths":      map[string]any{"yard": map[string]any{"source": cam.URL("yard"), "record": true}},
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/yard/whep", testpeer.Options{VideoOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	list := waitRecordings(t, p, "?path=yard", 15*time.Second, func(l []recording) bool { return len(complete(l)) >= 3 })
	for _, r := range complete(list) {
		pr := checkMP4(t, filepath.Join(dir, r.Name), 0, false)
		if pr.Duration < 1.5 || pr.Duration > 3.5 {
			t.Fatalf("segment %s is %.2f s long, want about 2 s (rotation at a keyframe)", r.Name, pr.Duration)
		}
	}
	if s := statusPaths(t, p)["yard"]; s["recording"] != true {
		t.Fatalf("yard status %v", s)
	}
	// Outage: the file being written is finalized; none is active.
	cam.Stop()
	waitRecordings(t, p, "?path=yard", 10*time.Second, func(l []recording) bool {
		return len(l) > 0 && len(complete(l)) == len(l)
	})
	before := len(listRecordings(t, p, "?path=yard"))
	cam.Restart()
	waitRecordings(t, p, "?path=yard", 15*time.Second, func(l []recording) bool { return len(l) > before })
	if err := v.WaitVideo(v.VideoPackets.Load()+30, 10*time.Second); err != nil {
		t.Fatalf("viewer after the outage: %v", err)
	}
}

// A browser Broadcast in record mode becomes a complete file with video
// and audio that Chromium plays from its URL.
func TestChromiumBroadcastRecordsAndPlays(t *testing.T) {
	testenv.LoopbackOnly(t)
	dir := t.TempDir()
	p := launch(t, []string{"--mode", "record", "--record-dir", dir})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	b := browsertest.Start(t, browsertest.Options{FakeMedia: true})
	if err := b.Navigate(p.base + "/"); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	ready := `window.icey && window.icey.connected && !document.getElementById("broadcast").hidden && !document.getElementById("broadcast").disabled`
	if err := b.Poll(ready, 15*time.Second); err != nil {
		b.Fatalf("Broadcast never offered in record mode: %v", err)
	}
	if _, err := browsertest.Eval[bool](b, 5*time.Second, `document.getElementById("broadcast").click(), true`); err != nil {
		b.Fatalf("click: %v", err)
	}
	if err := b.Poll(`window.iceyState.publishing === true`, 20*time.Second); err != nil {
		b.Fatalf("never publishing: %v", err)
	}
	time.Sleep(5 * time.Second)
	if _, err := browsertest.Eval[bool](b, 5*time.Second, `document.getElementById("broadcast-stop").click(), true`); err != nil {
		b.Fatalf("stop: %v", err)
	}
	ended := time.Now()
	list := waitRecordings(t, p, "", 10*time.Second, func(l []recording) bool { return len(complete(l)) == 1 })
	t.Logf("Broadcast stopped → listed complete recording: %v", time.Since(ended).Round(time.Millisecond))
	r := complete(list)[0]
	pr := checkMP4(t, filepath.Join(dir, r.Name), 0, true)
	if pr.Duration < 4 {
		t.Fatalf("recorded %.2f s of a 5 s Broadcast", pr.Duration)
	}
	play := fmt.Sprintf(`(() => { const v = document.createElement("video"); v.id = "rec-test"; v.muted = true;
		v.src = %q; document.body.appendChild(v); v.play(); return true; })()`, r.URL)
	if _, err := browsertest.Eval[bool](b, 5*time.Second, play); err != nil {
		b.Fatalf("play: %v", err)
	}
	if err := b.Poll(`document.getElementById("rec-test").currentTime > 3`, 15*time.Second); err != nil {
		b.Fatalf("Chromium did not play the recording past 3 s: %v (error %s)", err,
			browsertest.MustEval[string](b, 2*time.Second, `String(document.getElementById("rec-test").error && document.getElementById("rec-test").error.message)`))
	}
}
