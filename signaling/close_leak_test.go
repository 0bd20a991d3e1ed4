package signaling

import (
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// Session.Close hangs up one WHEP viewer and Manager.Close the others,
// with media flowing: each viewer's peer connection sees the hangup, and
// every goroutine of the sessions (pump, RTCP readers, ICE/DTLS, the
// peer-state watcher) and of the manager ends; leaktest compares the
// stacks once the harness (HTTP server, feeder, stream) is closed too.
func TestCloseLeaksManager(t *testing.T) {
	leaktest.Check(t)
	c := getClip(t)
	h := newHarness(t, c, Config{}, nil)
	var viewers []*testViewer
	var sessions []*Session
	for range 3 {
		v := startViewer(t, h)
		waitChan(t, "connected", v.connected, 15*time.Second)
		viewers = append(viewers, v)
		s := h.m.Session(strings.TrimPrefix(v.location, "/whep/"))
		if s == nil {
			t.Fatalf("no session for %s", v.location)
		}
		sessions = append(sessions, s)
	}
	for _, v := range viewers {
		v.waitFrames(t, 5, 15*time.Second)
	}

	start := time.Now()
	sessions[0].Close("kicked")
	sessions[0].Close("again") // idempotent: the first reason stays
	waitChan(t, "session 0 done after Session.Close", sessions[0].Done(), 10*time.Second)
	if err := sessions[0].Err(); err == nil || err.Error() != "kicked" {
		t.Errorf("session 0 Err = %v, want kicked", err)
	}
	waitChan(t, "viewer 0 sees the hangup", viewers[0].ended, 15*time.Second)
	waitFor(t, "one session fewer", 10*time.Second, func() bool { a, _ := h.m.Counts(); return a == 2 })
	kicked := time.Since(start)

	start = time.Now()
	h.m.Close("shutdown")
	for i, s := range sessions[1:] {
		select {
		case <-s.Done():
		default:
			t.Fatalf("session %d not done when Manager.Close returned", i+1)
		}
	}
	for _, v := range viewers[1:] {
		waitChan(t, "viewer sees the shutdown", v.ended, 15*time.Second)
	}
	shutdown := time.Since(start)
	if a, total := h.m.Counts(); a != 0 || total != 3 {
		t.Errorf("counts after Close: %d active, %d total; want 0, 3", a, total)
	}
	for _, v := range viewers {
		v.close()
	}
	h.close()
	t.Logf("Session.Close: session done and viewer hung up in %v; Manager.Close with 2 sessions: all viewers hung up in %v",
		kicked.Round(time.Millisecond), shutdown.Round(time.Millisecond))
}
