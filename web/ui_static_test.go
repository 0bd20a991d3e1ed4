package web

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"
)

// The ids browser tests and tools drive. Renaming one breaks them: the
// Watch flow (cmd/icey-server, signaling/symple browser tests), the HUD and
// badges (ui_looks_test), and paths and Broadcast.
var uiIDs = []string{
	// Watch, the picture and the bar under it.
	"btn-watch", "btn-hangup", "btn-mute", "btn-snap", "btn-full", "video", "stage", "player", "placeholder", "ph-text",
	"hud-bar", "hud", "hud-codec", "hud-res", "hud-fps", "hud-bitrate", "hud-jb", "hud-stalled", "live", "call-state",
	// Connection, banner, peers, events, ops.
	"conn", "conn-text", "banner", "banner-title", "banner-text", "banner-close", "peers", "peer-count", "events", "events-clear",
	"ops-live", "ops-status", "ops-explain", "ops-summary", "ops-facts", "ops-checks", "ops-warnings", "ops-note",
	// Paths and Broadcast.
	"path-picker", "broadcast", "broadcast-stop", "local-preview", "publish-state",
	// Recordings.
	"recordings", "recordings-list", "recording-player", "rec-indicator", "record-note",
	"recordings-count", "recordings-refresh", "recordings-note", "recording-viewer", "recording-title", "recording-close",
	// Analysis: motion boxes and heat map over the picture, voice meter, detections.
	"motion-overlay", "heatmap", "btn-heatmap", "voice-meter", "voice-level", "intel", "intel-events", "intel-count", "intel-clear",
}

func readUI(t *testing.T, name string) string {
	t.Helper()
	files, err := FS("")
	if err != nil {
		t.Fatal(err)
	}
	b, err := fs.ReadFile(files, name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Every id is in index.html exactly once, is used by app.js, and is listed
// in the comment at the top of app.js that documents them.
func TestUIElementIDs(t *testing.T) {
	html := readUI(t, "index.html")
	js := readUI(t, "app.js")
	head := js
	if i := strings.Index(js, "\nimport "); i > 0 {
		head = js[:i]
	}
	for _, id := range uiIDs {
		if n := strings.Count(html, `id="`+id+`"`); n != 1 {
			t.Errorf("index.html has %d elements with id %q, want 1", n, id)
		}
		if id == "placeholder" || id == "hud-bar" {
			continue // layout only (CSS and the layout test)
		}
		if !strings.Contains(js, `$("`+id+`")`) && !strings.Contains(js, `"`+id+`"`) {
			t.Errorf("app.js does not use #%s", id)
		}
	}
	for _, id := range []string{"btn-watch", "broadcast", "broadcast-stop", "path-picker", "local-preview", "publish-state", "video", "live", "hud",
		"recordings", "recordings-list", "recording-player", "rec-indicator", "motion-overlay", "heatmap", "voice-meter", "intel-events"} {
		if !strings.Contains(head, "#"+id) {
			t.Errorf("the comment at the top of app.js does not document #%s", id)
		}
	}
	for _, g := range []string{"window.iceyState", "path", "publishing", "watching", "lastState", "recordings", "refreshRecordings",
		"li.recording", "rec-play", "rec-download", "rec-delete"} {
		if !strings.Contains(head, g) {
			t.Errorf("the comment at the top of app.js does not document %s", g)
		}
	}
}

// The shapes the new elements need: a <select> picker, buttons, a muted
// inline preview video, and assets referenced absolutely (the same page is
// served at /{path}/).
func TestUIElementShapes(t *testing.T) {
	html := readUI(t, "index.html")
	tag := func(id string) string {
		m := regexp.MustCompile(`<[a-z]+\b[^>]*\bid="` + regexp.QuoteMeta(id) + `"[^>]*>`).FindString(html)
		if m == "" {
			t.Fatalf("no element #%s", id)
		}
		return m
	}
	for id, want := range map[string][]string{
		"path-picker":    {"<select"},
		"broadcast":      {"<button", "hidden"},
		"broadcast-stop": {"<button", "hidden"},
		"local-preview":  {"<video", "muted", "playsinline", "hidden"},
		"publish-state":  {"hidden"},
		"video":          {"<video", "muted", "playsinline"},
		"btn-watch":      {"<button", "disabled"},
		// A panel that shows only when there is something to list, and the
		// browser's own player (it plays and seeks MP4 with Range requests).
		"recordings":       {"<section", "hidden"},
		"recordings-list":  {"<ul"},
		"recording-player": {"<video", "controls"},
		"rec-indicator":    {"hidden"},
	} {
		got := tag(id)
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("#%s: %s lacks %q", id, got, w)
			}
		}
	}
	for _, ref := range []string{`href="/app.css"`, `src="/app.js"`} {
		if !strings.Contains(html, ref) {
			t.Errorf("index.html lacks %s (relative asset URLs break at /{path}/)", ref)
		}
	}
	js := readUI(t, "app.js")
	for _, w := range []string{"window.iceyState", "history.replaceState", "setCodecPreferences", `"icey:state"`, `"waiting-publisher"`, "getUserMedia",
		"/api/recordings", `"recording.started"`, `"recording.finalized"`, `"recording.failed"`, "refreshRecordings", `method: "DELETE"`, "confirm("} {
		if !strings.Contains(js, w) {
			t.Errorf("app.js lacks %s", w)
		}
	}
}

// Index answers any path with the page itself (GET /{path}/ opens the UI).
func TestIndexServesThePageOnAnyPath(t *testing.T) {
	files, err := FS("")
	if err != nil {
		t.Fatal(err)
	}
	h := Index(files)
	for _, p := range []string{"/stage/", "/front/", "/"} {
		code, body := get(t, h, p)
		if code != 200 || !strings.Contains(body, "<title>icey-server</title>") || !strings.Contains(body, `id="path-picker"`) {
			t.Errorf("Index GET %s: %d %.60q", p, code, body)
		}
	}
}
