package main

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testpeer"
)

// A viewer stays connected while the camera drops past the grace period
// and receives frames again, in the same session, when it returns.
func TestViewerSurvivesCameraOutage(t *testing.T) {
	cam := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioOpus})
	p := launch(t, []string{"-c", writeConfig(t, `{"media":{"sourceGraceSeconds":1}}`), "--source", cam.URL("cam")})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitVideo(50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if v.FirstKeyframe() == 0 || v.AudioPackets.Load() == 0 {
		t.Fatalf("keyframe after %s, audio %d", v.FirstKeyframe(), v.AudioPackets.Load())
	}
	_, st, _ := p.get(t, "/api/status")
	sessionsBefore := st["sessions"].(map[string]any)["total"]

	cam.Stop()
	m := p.waitFor(t, "/api/ready", 503, 20*time.Second)
	if checkByName(m, "source")["result"] != "fail" {
		t.Fatalf("source check %v", checkByName(m, "source"))
	}
	time.Sleep(300 * time.Millisecond)
	during := v.VideoPackets.Load()
	time.Sleep(500 * time.Millisecond)
	if got := v.VideoPackets.Load(); got != during {
		t.Fatalf("video kept arriving while the camera was down (%d -> %d)", during, got)
	}
	_, st, _ = p.get(t, "/api/status")
	if st["sessions"].(map[string]any)["active"] != float64(1) {
		t.Fatalf("viewer was dropped during the outage: %v", st["sessions"])
	}

	cam.Restart()
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	keyframes := v.Keyframes.Load()
	if err := v.WaitVideo(during+50, 15*time.Second); err != nil {
		t.Fatalf("same session got no video after the camera returned: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for v.Keyframes.Load() <= keyframes {
		if time.Now().After(deadline) {
			t.Fatal("no keyframe after the camera returned")
		}
		time.Sleep(50 * time.Millisecond)
	}
	_, st, _ = p.get(t, "/api/status")
	if st["sessions"].(map[string]any)["total"] != sessionsBefore || st["sessions"].(map[string]any)["active"] != float64(1) {
		t.Fatalf("the viewer renegotiated or was replaced: %v", st["sessions"])
	}
}

// Several viewers share the one source pipeline; max sessions is enforced.
func TestMaxSessionsAndSharedPipeline(t *testing.T) {
	p := launch(t, []string{"-c", writeConfig(t, `{"webrtc":{"maxSessions":3}}`)})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var vs []*testpeer.Viewer
	for i := 0; i < 3; i++ {
		v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		vs = append(vs, v)
	}
	if _, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{}); err == nil {
		t.Fatal("a 4th viewer was admitted over webrtc.maxSessions=3")
	} else if se, ok := err.(*testpeer.StatusError); !ok || se.Code != 503 {
		t.Fatalf("4th viewer: %v, want 503", err)
	}
	for _, v := range vs {
		if err := v.WaitVideo(60, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	_, st, _ := p.get(t, "/api/status")
	if s := st["stream"].(map[string]any); s["viewers"] != float64(3) || s["packets"].(float64) <= 0 {
		t.Fatalf("stream section %v", s)
	}
}

// With a token, an unauthenticated WHEP preflight gets CORS answers but no
// TURN credentials; an authenticated one gets them.
func TestWHEPPreflightHidesTURNCredentialsWithoutToken(t *testing.T) {
	p := launch(t, []string{"-c", writeConfig(t, `{"turn":{"secret":"s3cret-turn"}}`)}, "ICEY_AUTH_TOKEN=tk")
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	options := func(hdr ...string) *http.Response {
		req, _ := http.NewRequest(http.MethodOptions, p.base+"/whep", nil)
		req.Header.Set("Origin", "http://viewer.example")
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	anon := options()
	if anon.StatusCode != 204 || anon.Header.Get("Access-Control-Allow-Methods") == "" {
		t.Fatalf("preflight %d %v", anon.StatusCode, anon.Header)
	}
	if links := anon.Header.Values("Link"); len(links) != 0 {
		t.Fatalf("unauthenticated preflight got ICE servers: %v", links)
	}
	authed := options("Authorization", "Bearer tk")
	if links := strings.Join(authed.Header.Values("Link"), " "); !strings.Contains(links, "credential=") {
		t.Fatalf("authenticated preflight lacks TURN credentials: %q", links)
	}
}
