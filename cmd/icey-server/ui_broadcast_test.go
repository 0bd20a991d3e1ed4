package main

// Publishing from a browser through the bundled UI against the real
// binary: page A Broadcasts its (fake) camera on a publish path, page B
// Watches the same path; the publisher leaves and comes back while B keeps
// its call.

import (
	"testing"
	"time"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
)

// framesDecoded is the expression giving page B's decoded video frames.
const framesDecoded = `(async () => {
	const v = document.getElementById("video");
	if (v && v.getVideoPlaybackQuality) return v.getVideoPlaybackQuality().totalVideoFrames;
	return 0;
})()`

func TestChromiumBroadcastToWatch(t *testing.T) {
	testenv.LoopbackOnly(t)
	p := launch(t, []string{"-c", writeConfig(t, `{"paths":{"stage":{"publish":true}}}`)})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)

	pub := browsertest.Start(t, browsertest.Options{FakeMedia: true})
	if err := pub.Navigate(p.base + "/stage/"); err != nil {
		pub.Fatalf("open UI: %v", err)
	}
	broadcastReady := `window.icey && window.icey.connected && !document.getElementById("broadcast").hidden && !document.getElementById("broadcast").disabled`
	if err := pub.Poll(broadcastReady, 15*time.Second); err != nil {
		pub.Fatalf("Broadcast never offered on /stage/: %v", err)
	}
	if path := browsertest.MustEval[string](pub, 2*time.Second, `window.iceyState.path`); path != "stage" {
		pub.Fatalf("page path %q, want stage", path)
	}
	click := func(b *browsertest.Browser, id string) {
		t.Helper()
		if _, err := browsertest.Eval[bool](b, 5*time.Second, `document.getElementById("`+id+`").click(), true`); err != nil {
			b.Fatalf("click %s: %v", id, err)
		}
	}
	click(pub, "broadcast")
	if err := pub.Poll(`window.iceyState.publishing === true`, 20*time.Second); err != nil {
		pub.Fatalf("never publishing: %v (state %s)", err, browsertest.MustEval[string](pub, 2*time.Second, `JSON.stringify(window.iceyState)`))
	}

	view := browsertest.Start(t, browsertest.Options{})
	if err := view.Navigate(p.base + "/stage/"); err != nil {
		view.Fatalf("open UI: %v", err)
	}
	if err := view.Poll(`!document.getElementById("btn-watch").disabled`, 15*time.Second); err != nil {
		view.Fatalf("Watch never enabled: %v", err)
	}
	click(view, "btn-watch")
	if err := view.Poll(`document.getElementById("video").videoWidth > 0`, 20*time.Second); err != nil {
		view.Fatalf("no picture from the browser publisher: %v", err)
	}
	frames := func() int {
		n, err := browsertest.Eval[int](view, 5*time.Second, framesDecoded)
		if err != nil {
			view.Fatalf("frames: %v", err)
		}
		return n
	}
	rising := func(what string) {
		t.Helper()
		f0 := frames()
		deadline := time.Now().Add(15 * time.Second)
		for frames() < f0+20 {
			if time.Now().After(deadline) {
				view.Fatalf("%s: frames stuck at %d", what, frames())
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	rising("first publisher")
	sp := statusPaths(t, p)["stage"]
	if sp["publisher"] != true || sp["state"] != "publishing" || sp["viewers"] != float64(1) {
		t.Fatalf("stage status %v", sp)
	}

	// The publisher leaves: the viewer keeps its call and is told.
	click(pub, "broadcast-stop")
	if err := view.Poll(`window.iceyState.lastState === "waiting-publisher" && window.iceyState.watching === true`, 15*time.Second); err != nil {
		view.Fatalf("viewer not told the publisher left: %v (%s)", err, browsertest.MustEval[string](view, 2*time.Second, `JSON.stringify(window.iceyState)`))
	}
	if sp := statusPaths(t, p)["stage"]; sp["publisher"] != false || sp["state"] != "waiting-publisher" {
		t.Fatalf("stage status after the publisher left %v", sp)
	}
	// It comes back: the same viewer call plays again, no new offer.
	if err := pub.Poll(broadcastReady, 15*time.Second); err != nil {
		pub.Fatalf("Broadcast not offered again: %v", err)
	}
	click(pub, "broadcast")
	if err := view.Poll(`window.iceyState.lastState === "publishing"`, 15*time.Second); err != nil {
		view.Fatalf("viewer not told of the new publisher: %v", err)
	}
	rising("second publisher, same call")
	if _, st, _ := p.get(t, "/api/status"); st["sessions"].(map[string]any)["total"] != float64(3) {
		t.Fatalf("sessions %v (want 3 in all: two publishers and one viewer)", st["sessions"])
	}
	view.Screenshot("ui-broadcast-watch.png")
}
