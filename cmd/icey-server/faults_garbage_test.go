package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testpeer"
)

// A camera that sends garbage RTP, then H.264 broken in the ways a decoder
// notices: nothing of it reaches the viewer (no frame while only garbage
// arrives; every frame forwarded decodes without an error), the path
// counts and names it in /api/status and /metrics, and the same session
// plays at full rate once the camera is well again.
func TestFaultCameraSendsGarbage(t *testing.T) {
	cam := rtsptest.Start(t, rtsptest.Options{})
	p := launch(t, []string{"--source", cam.URL("cam")})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitFrames(25, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	invalid := func() (float64, string) {
		m := statusPaths(t, p)["main"]
		last, _ := m["lastInvalidVideo"].(string)
		return m["invalidVideo"].(float64), last
	}
	if n, _ := invalid(); n != 0 {
		t.Fatalf("a healthy camera counted %v invalid access units", n)
	}

	// Garbage RTP: random payloads under the camera's real RTP headers.
	cam.SetFault(rtsptest.FaultGarbageRTP)
	time.Sleep(500 * time.Millisecond) // frames already on their way
	framesBefore, sentBefore := v.Frames(), cam.Broken()
	time.Sleep(5 * time.Second)
	garbageFrames, garbagePackets := v.Frames()-framesBefore, cam.Broken()-sentBefore
	n1, why := invalid()
	t.Logf("garbage RTP: %d packets sent in 5 s, %d frames reached the viewer, %v access units counted invalid (latest: %s)",
		garbagePackets, garbageFrames, n1, why)
	if garbagePackets < 100 {
		t.Fatalf("the camera sent only %d garbage packets", garbagePackets)
	}
	if garbageFrames != 0 {
		t.Fatalf("%d frames of garbage reached the viewer", garbageFrames)
	}
	if n1 == 0 || why == "" {
		t.Fatalf("the path reports no invalid video: %v %q", n1, why)
	}

	// Invalid H.264: every fifth access unit broken (forbidden bit, unknown
	// PPS, cut header, data partitioning, a lost reference picture, a
	// broken SPS): what the viewer gets must decode cleanly.
	cam.SetFault(rtsptest.FaultInvalidH264)
	brokenBefore := cam.Broken()
	rec, err := v.Record(ctx, 3*time.Second, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	n2, why := invalid()
	broken := cam.Broken() - brokenBefore
	t.Logf("invalid H.264: %d access units broken, %v more counted invalid (latest: %s); viewer recorded %d frames, ffprobe decoded %d, errors %q",
		broken, n2-n1, why, rec.Frames, rec.Decoded, strings.TrimSpace(rec.DecodeLog))
	// Each GOP (1 s) starts clean: its IDR and the four pictures before the
	// first broken one play; the rest of the GOP waits for the next IDR.
	if strings.TrimSpace(rec.DecodeLog) != "" || rec.Decoded != rec.Frames || rec.Frames < 5 {
		t.Fatalf("the viewer got undecodable video: %d frames recorded, %d decoded: %s", rec.Frames, rec.Decoded, rec.DecodeLog)
	}
	// One broken access unit per GOP is counted: later ones in the same GOP
	// arrive while video already waits for the next IDR.
	if broken < 10 || n2-n1 < 3 {
		t.Fatalf("%d access units broken, %v counted", broken, n2-n1)
	}
	_, metrics := scrape(t, p.base+"/metrics")
	if m := metricValue(t, metrics, `icey_source_invalid_video_total{path="main"}`); m < n2 {
		t.Fatalf("metric %v < status %v", m, n2)
	}

	// Well again: the same session plays the camera's full rate.
	cam.SetFault(rtsptest.FaultNone)
	fps, frames, err := v.DecodedFPS(ctx, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("camera well again: %.1f fps decoded (%d frames)", fps, frames)
	if fps < 22 {
		t.Fatalf("%.1f fps after the camera recovered", fps)
	}
	_, st, _ := p.get(t, "/api/status")
	if s := st["sessions"].(map[string]any); s["active"] != float64(1) || s["total"] != float64(1) {
		t.Fatalf("the viewer's session did not survive: %v", s)
	}
}
