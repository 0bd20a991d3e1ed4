package main

// Relay mode on the binary: WHIP publishers (pion, as OBS would) feed the
// default path, WHEP viewers and a Chromium page watch; publishers come
// and go while the viewers keep their sessions.

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

func TestRelayModeWHIPHandover(t *testing.T) {
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "320x240"})
	p := launch(t, []string{"--mode", "relay"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	if s := statusPaths(t, p)["main"]; s["state"] != "waiting-publisher" || s["publisher"] != false {
		t.Fatalf("before a publisher: %v", s)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// A viewer may arrive first: it waits for the publisher, it never
	// becomes one.
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	pub1, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.WaitVideo(60, 10*time.Second); err != nil {
		t.Fatalf("viewer got nothing from the publisher: %v", err)
	}
	if v.Keyframes.Load() == 0 || v.AudioPackets.Load() == 0 {
		t.Fatalf("keyframes %d audio %d", v.Keyframes.Load(), v.AudioPackets.Load())
	}
	if s := statusPaths(t, p)["main"]; s["state"] != "publishing" || s["publisher"] != true || s["viewers"] != float64(1) {
		t.Fatalf("while publishing: %v", s)
	}
	_, st, _ := p.get(t, "/api/status")
	if s := st["stream"].(map[string]any); s["state"] != "publishing" || s["viewers"] != float64(1) {
		t.Fatalf("stream section %v", s)
	}
	// A second publisher is refused while the first is live.
	_, err = testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	var se *testpeer.StatusError
	if !errors.As(err, &se) || se.Code != 409 {
		t.Fatalf("second publisher: %v, want 409", err)
	}
	// Handover: the first leaves, the viewer stays, the next continues.
	if code, err := pub1.Delete(); err != nil || code != 200 {
		t.Fatalf("DELETE publisher: %d %v", code, err)
	}
	pub1.Close()
	deadline := time.Now().Add(5 * time.Second)
	for statusPaths(t, p)["main"]["state"] != "waiting-publisher" && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	before := v.VideoPackets.Load()
	if _, st, _ := p.get(t, "/api/status"); st["sessions"].(map[string]any)["active"] != float64(1) {
		t.Fatalf("viewer session gone with the publisher: %v", st["sessions"])
	}
	pub2, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub2.Close()
	if err := v.WaitVideo(before+60, 10*time.Second); err != nil {
		t.Fatalf("the same viewer session got nothing from the next publisher: %v", err)
	}
	if s := statusPaths(t, p)["main"]; s["state"] != "publishing" {
		t.Fatalf("after handover: %v", s)
	}
}

// WHIP from a pion publisher, watched in Chromium through the UI.
func TestChromiumWatchesWHIPPublisher(t *testing.T) {
	testenv.LoopbackOnly(t)
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "640x360", Bitrate: "1500k"})
	p := launch(t, []string{"--mode", "relay"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	b := browsertest.Start(t, browsertest.Options{})
	if err := b.Navigate(p.base + "/"); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	if err := b.Poll(`!document.getElementById("btn-watch").disabled`, 15*time.Second); err != nil {
		b.Fatalf("Watch never enabled: %v", err)
	}
	if _, err := browsertest.Eval[bool](b, 5*time.Second, `document.getElementById("btn-watch").click(), true`); err != nil {
		b.Fatalf("click Watch: %v", err)
	}
	if err := b.Poll(`document.getElementById("video").videoWidth === 640`, 20*time.Second); err != nil {
		b.Fatalf("no 640-wide picture from the WHIP publisher: %v", err)
	}
	f0 := browsertest.MustEval[int](b, 5*time.Second, framesDecoded)
	time.Sleep(2 * time.Second)
	if f1 := browsertest.MustEval[int](b, 5*time.Second, framesDecoded); f1 < f0+30 {
		b.Fatalf("frames decoded %d → %d in 2 s", f0, f1)
	}
}
