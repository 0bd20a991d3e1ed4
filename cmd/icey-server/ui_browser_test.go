package main

// The bundled web UI against the real binary in Chromium: Symple over /ws,
// the Watch flow, and the ops panel following /api/events live.

import (
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
)

func TestChromiumUIOnTheBinary(t *testing.T) {
	testenv.LoopbackOnly(t)
	p := launch(t, nil, "ICEY_AUTH_TOKEN=ui-token")
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	b := browsertest.Start(t, browsertest.Options{Width: 1280, Height: 800})
	if err := b.Navigate(p.base + "/?token=ui-token"); err != nil {
		b.Fatalf("open UI: %v", err)
	}
	// The token leaves the address bar; the ops panel goes live on /api/events.
	if err := b.Poll(`!location.search.includes("token")`, 5*time.Second); err != nil {
		b.Fatalf("token still in the address bar: %v", err)
	}
	if err := b.Poll(`!document.getElementById("ops-live").hidden`, 10*time.Second); err != nil {
		b.Fatalf("ops panel never went live on /api/events: %v", err)
	}
	if err := b.Poll(`!document.getElementById("btn-watch").disabled`, 10*time.Second); err != nil {
		b.Fatalf("Watch never enabled (server peer missing?): %v", err)
	}
	if _, err := browsertest.Eval[bool](b, 5*time.Second, `document.getElementById("btn-watch").click(), true`); err != nil {
		b.Fatalf("click Watch: %v", err)
	}
	if err := b.Poll(`document.getElementById("video").videoWidth > 0`, 20*time.Second); err != nil {
		b.Fatalf("no picture: %v", err)
	}
	// The session event reaches the events rail through /api/events.
	if err := b.Poll(`[...document.querySelectorAll("#events li")].some(li => li.textContent.includes("viewer session") && li.textContent.includes("started"))`, 10*time.Second); err != nil {
		b.Fatalf("no session.started in the events rail: %v\nrail: %s", err,
			browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("events").innerText`))
	}
	if err := b.Poll(`document.getElementById("ops-facts").innerText.includes("1 active")`, 10*time.Second); err != nil {
		b.Fatalf("ops panel does not show the active session: %v", err)
	}
	b.Screenshot("ui-binary-playing.png")
	_, st, _ := p.get(t, "/api/status", "X-Icey-Token", "ui-token")
	if st["sessions"].(map[string]any)["active"] != float64(1) {
		t.Fatalf("server sessions %v", st["sessions"])
	}
}

// Symple is served on /ws and on upgrades of /, with the token, and a
// foreign Origin is refused before the upgrade.
func TestSympleRoutesOnTheBinary(t *testing.T) {
	p := launch(t, nil, "ICEY_AUTH_TOKEN=ws-token")
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	ws := "ws" + strings.TrimPrefix(p.base, "http")
	for _, path := range []string{"/ws", "/"} {
		c, _, err := websocket.DefaultDialer.Dial(ws+path, nil)
		if err != nil {
			t.Fatalf("dial %s: %v", path, err)
		}
		if err := c.WriteJSON(map[string]any{"type": "auth", "user": "alice", "name": "Alice", "token": "ws-token"}); err != nil {
			t.Fatal(err)
		}
		var welcome, presence map[string]any
		if err := c.ReadJSON(&welcome); err != nil || welcome["type"] != "welcome" || welcome["protocol"] != "symple/4" {
			t.Fatalf("%s welcome %v %v", path, welcome, err)
		}
		if err := c.ReadJSON(&presence); err != nil || presence["from"] != "icey|server" {
			t.Fatalf("%s presence %v %v", path, presence, err)
		}
		if d := presence["data"].(map[string]any); d["mode"] != "stream" || d["type"] != "server" {
			t.Fatalf("server peer %v", d)
		}
		c.Close()
	}
	c, _, err := websocket.DefaultDialer.Dial(ws+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	c.WriteJSON(map[string]any{"type": "auth", "user": "mallory", "token": "wrong"})
	var e map[string]any
	if err := c.ReadJSON(&e); err != nil || e["status"] != float64(401) {
		t.Fatalf("wrong token: %v %v", e, err)
	}
	c.Close()
	hdr := map[string][]string{"Origin": {"https://evil.example"}}
	if _, resp, err := websocket.DefaultDialer.Dial(ws+"/ws", hdr); err == nil || resp == nil || resp.StatusCode != 403 {
		t.Fatalf("foreign origin: %v %v", resp, err)
	}
}
