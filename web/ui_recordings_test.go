package web

// The recordings panel in Chromium against the fake server of
// ui_browser_test.go, with a fake store behind /api/recordings and
// /recordings/… (../shared/spec/recordings.md, API): a real 3 s H.264 MP4
// made by ffmpeg, served with Range (http.ServeContent) as the server does.
// Checked: the list (newest first, a file being written reads "recording…"
// without play or download), the REC dot, Play in #recording-player
// reaching past 1 s, the token on <video src> and download links (and in
// the header of API calls), Delete (confirm first), refresh on a
// recording.* event, and the panel hidden on a path with nothing recorded.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/internal/browsertest"
	"github.com/icey/icey-server/internal/testenv"
)

type fakeRecording struct {
	Path        string  `json:"path"`
	Name        string  `json:"name"`
	Start       string  `json:"start"`
	End         string  `json:"end,omitempty"`
	DurationSec float64 `json:"durationSec"`
	Bytes       int64   `json:"bytes"`
	Complete    bool    `json:"complete"`
	URL         string  `json:"url"`
}

// fakeStore is the server's recordings API for one test.
type fakeStore struct {
	t     *testing.T
	token string
	mp4   []byte

	mu       sync.Mutex
	recs     []fakeRecording // newest first
	deleted  []string        // "path/name" of each DELETE, with the right token
	ranges   []string        // Range headers of media requests
	badAuth  []string        // requests without the token
	eventsWS *websocket.Conn
}

func (s *fakeStore) add(path, start string, complete bool) fakeRecording {
	ts, err := time.Parse(time.RFC3339, start)
	if err != nil {
		s.t.Fatal(err)
	}
	name := path + "-" + ts.UTC().Format("2006-01-02T15-04-05.000Z") + ".mp4"
	r := fakeRecording{Path: path, Name: name, Start: start, DurationSec: 3, Bytes: int64(len(s.mp4)), Complete: complete,
		URL: "/recordings/" + path + "/" + name}
	if complete {
		r.End = ts.Add(3 * time.Second).UTC().Format(time.RFC3339)
	}
	s.mu.Lock()
	s.recs = append([]fakeRecording{r}, s.recs...)
	s.mu.Unlock()
	return r
}

func (s *fakeStore) authorized(r *http.Request, viaQuery bool) bool {
	got := r.Header.Get("X-Icey-Token")
	if viaQuery {
		got = r.URL.Query().Get("token")
	}
	if got == s.token {
		return true
	}
	s.mu.Lock()
	s.badAuth = append(s.badAuth, r.Method+" "+r.URL.String())
	s.mu.Unlock()
	return false
}

func (s *fakeStore) routes() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"/api/status": func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte(`{"status":"ok","mode":"stream","uptimeSec":1,"sessions":{"active":0,"total":0},"record":{"dir":"/var/lib/icey/recordings"},` +
				`"paths":[{"name":"main","state":"up","recording":true},{"name":"stage","state":"waiting-publisher"}]}`))
		},
		"GET /api/recordings": func(w http.ResponseWriter, r *http.Request) {
			if !s.authorized(r, false) {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			path := r.URL.Query().Get("path")
			s.mu.Lock()
			out := []fakeRecording{}
			for _, rec := range s.recs {
				if path == "" || rec.Path == path {
					out = append(out, rec)
				}
			}
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(out)
		},
		"DELETE /api/recordings/{path}/{name}": func(w http.ResponseWriter, r *http.Request) {
			if !s.authorized(r, false) {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			path, name := r.PathValue("path"), r.PathValue("name")
			s.mu.Lock()
			defer s.mu.Unlock()
			for i, rec := range s.recs {
				if rec.Path == path && rec.Name == name && rec.Complete {
					s.recs = append(s.recs[:i], s.recs[i+1:]...)
					s.deleted = append(s.deleted, path+"/"+name)
					w.WriteHeader(http.StatusNoContent)
					return
				}
			}
			http.NotFound(w, r)
		},
		"GET /recordings/{path}/{name}": func(w http.ResponseWriter, r *http.Request) {
			if !s.authorized(r, true) {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			path, name := r.PathValue("path"), r.PathValue("name")
			s.mu.Lock()
			s.ranges = append(s.ranges, r.Header.Get("Range"))
			found := false
			for _, rec := range s.recs {
				found = found || (rec.Path == path && rec.Name == name && rec.Complete)
			}
			s.mu.Unlock()
			if !found {
				http.NotFound(w, r)
				return
			}
			w.Header().Set("Content-Type", "video/mp4")
			http.ServeContent(w, r, name, time.Unix(1700000000, 0), bytes.NewReader(s.mp4))
		},
		"/api/events": func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("token") != s.token {
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
			up := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			ws.WriteJSON(map[string]any{"seq": 1, "type": "snapshot", "data": map[string]any{}})
			s.mu.Lock()
			s.eventsWS = ws
			s.mu.Unlock()
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					ws.Close()
					return
				}
			}
		},
	}
}

func (s *fakeStore) event(typ string, data map[string]any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.eventsWS == nil {
		s.t.Fatalf("the page has no /api/events socket")
	}
	s.eventsWS.WriteJSON(map[string]any{"seq": 2, "type": typ, "time": time.Now(), "data": data})
}

// makeTestMP4 encodes 3 s of test pattern as H.264 baseline in fragmented
// MP4 with fragments of about a second, the shape the recorder writes.
func makeTestMP4(t *testing.T) []byte {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	out := filepath.Join(t.TempDir(), "rec.mp4")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30",
		"-t", "3", "-c:v", "libx264", "-profile:v", "baseline", "-pix_fmt", "yuv420p", "-g", "30",
		"-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-frag_duration", "1000000", "-y", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestChromiumRecordings(t *testing.T) {
	testenv.LoopbackOnly(t)
	store := &fakeStore{t: t, token: "tk-rec", mp4: makeTestMP4(t)}
	older := store.add("main", "2026-01-02T09:00:00Z", true)
	newer := store.add("main", "2026-01-02T10:00:05Z", true)
	writing := store.add("main", "2026-01-02T11:00:00Z", false)
	f, base := newFakeServerWith(t, store.routes())
	b := browsertest.Start(t, browsertest.Options{Width: 1280, Height: 900})
	if err := b.Navigate(base + "/?token=" + store.token); err != nil {
		b.Fatalf("open /: %v", err)
	}
	poll := func(what, expr string, d time.Duration) {
		t.Helper()
		if err := b.Poll(expr, d); err != nil {
			state, _ := browsertest.Eval[string](b, 2*time.Second, `JSON.stringify({s: window.iceyState, list: document.getElementById("recordings-list").innerText, note: document.getElementById("recordings-note").textContent, events: document.getElementById("events").innerText.slice(0, 1500)})`)
			store.mu.Lock()
			seen := strings.Join(store.deleted, ", ") + " | ranges " + strings.Join(store.ranges, ", ") + " | unauthorized " + strings.Join(store.badAuth, ", ")
			store.mu.Unlock()
			b.Fatalf("%s: %v\nstate: %s\nstore saw: %s\nsignalling saw: %s", what, err, state, seen, f.calls())
		}
	}
	li := func(name string) string {
		return `document.querySelector('#recordings-list li.recording[data-name="` + name + `"]')`
	}

	// The list: newest first, the file being written without play/download.
	poll("list", `window.iceyState.recordings.length === 3 && !document.getElementById("recordings").hidden && document.querySelectorAll("#recordings-list li.recording").length === 3`, 10*time.Second)
	order := browsertest.MustEval[[]string](b, 2*time.Second, `[...document.querySelectorAll("#recordings-list li.recording")].map(li => li.dataset.name)`)
	if strings.Join(order, ",") != writing.Name+","+newer.Name+","+older.Name {
		t.Errorf("list order %v", order)
	}
	type item struct {
		Text, Start, Href, Download string
		Play, Delete, Dl            bool
	}
	get := func(name string) item {
		return browsertest.MustEval[item](b, 2*time.Second, `(() => { const li = `+li(name)+`; const a = li.querySelector("a.rec-download");
			return {Text: li.innerText, Start: li.querySelector(".rec-start").textContent, Href: a ? a.getAttribute("href") : "", Download: a ? a.getAttribute("download") : "",
			        Play: !!li.querySelector("button.rec-play"), Delete: !!li.querySelector("button.rec-delete"), Dl: !!a}; })()`)
	}
	if w := get(writing.Name); !strings.Contains(w.Text, "recording…") || w.Play || w.Dl || w.Delete {
		t.Errorf("the file being written: %+v, want \"recording…\" without play, download, delete", w)
	}
	n := get(newer.Name)
	if !n.Play || !n.Delete || !n.Dl || n.Download != newer.Name || n.Href != newer.URL+"?token="+store.token {
		t.Errorf("a finalized file: %+v", n)
	}
	if !strings.Contains(n.Text, "0:03") || !strings.Contains(n.Text, "KB") {
		t.Errorf("a finalized file shows %q, want its duration (0:03) and size", n.Text)
	}
	wantStart := browsertest.MustEval[string](b, 2*time.Second, `new Date("`+newer.Start+`").toLocaleString([], {year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false})`)
	if n.Start != wantStart {
		t.Errorf("start shown as %q, want local time %q", n.Start, wantStart)
	}
	// The path records: REC in the status line.
	poll("REC", `!document.getElementById("rec-indicator").hidden && document.getElementById("rec-indicator").textContent === "REC" && window.iceyState.recording`, 10*time.Second)

	// Play: the browser's own player, with Range requests, past 1 s.
	browsertest.MustEval[bool](b, 2*time.Second, li(newer.Name)+`.querySelector(".rec-play").click(), true`)
	poll("playing", `(() => { const v = document.getElementById("recording-player"); return !document.getElementById("recording-viewer").hidden && v.controls && v.currentTime > 1; })()`, 15*time.Second)
	if src := browsertest.MustEval[string](b, 2*time.Second, `document.getElementById("recording-player").getAttribute("src")`); src != newer.URL+"?token="+store.token {
		t.Errorf("player src %q", src)
	}
	browsertest.MustEval[bool](b, 2*time.Second, `document.getElementById("recordings").scrollIntoView(), true`)
	b.Screenshot("ui-recordings.png")
	store.mu.Lock()
	ranges := strings.Join(store.ranges, ", ")
	store.mu.Unlock()
	if !strings.Contains(ranges, "bytes=") {
		t.Errorf("the player sent no Range request (saw %q)", ranges)
	}

	// Delete asks first: a refusal sends nothing.
	browsertest.MustEval[bool](b, 2*time.Second, `window.confirm = () => false, `+li(older.Name)+`.querySelector(".rec-delete").click(), true`)
	time.Sleep(300 * time.Millisecond)
	store.mu.Lock()
	nd := len(store.deleted)
	store.mu.Unlock()
	if nd != 0 {
		t.Fatalf("deleted without confirmation")
	}
	// Confirmed: DELETE /api/recordings/main/<name> with the token header;
	// the list and the player follow.
	browsertest.MustEval[bool](b, 2*time.Second, `window.confirm = () => true, `+li(newer.Name)+`.querySelector(".rec-delete").click(), true`)
	poll("deleted", `window.iceyState.recordings.length === 2 && !`+li(newer.Name)+` && document.getElementById("recording-viewer").hidden`, 10*time.Second)
	store.mu.Lock()
	deleted, bad := strings.Join(store.deleted, ", "), strings.Join(store.badAuth, ", ")
	store.mu.Unlock()
	if deleted != "main/"+newer.Name {
		t.Errorf("the server deleted %q, want main/%s", deleted, newer.Name)
	}
	if bad != "" {
		t.Errorf("requests without the token: %s", bad)
	}

	// A recording.finalized event refreshes the list.
	done := store.add("main", "2026-01-02T12:00:00Z", true)
	poll("events socket", `!document.getElementById("ops-live").hidden`, 10*time.Second)
	store.event("recording.finalized", map[string]any{"path": "main", "name": done.Name})
	poll("refreshed on event", li(done.Name)+` !== null && window.iceyState.recordings[0].name === "`+done.Name+`"`, 10*time.Second)

	// window.icey.refreshRecordings resolves to the list.
	if got := browsertest.MustEval[int](b, 5*time.Second, `window.icey.refreshRecordings().then(l => l.length)`); got != 3 {
		t.Errorf("refreshRecordings() resolved to %d recordings, want 3", got)
	}

	// Another path with nothing recorded and no recording: no panel, no REC.
	browsertest.MustEval[bool](b, 2*time.Second, `window.icey.selectPath("stage"), true`)
	poll("stage: nothing", `window.iceyState.path === "stage" && window.iceyState.recordings.length === 0 && document.getElementById("recordings").hidden && document.getElementById("rec-indicator").hidden`, 10*time.Second)
	// Back on main: the list again.
	browsertest.MustEval[bool](b, 2*time.Second, `window.icey.selectPath("main"), true`)
	poll("main again", `window.iceyState.recordings.length === 3 && !document.getElementById("recordings").hidden && !document.getElementById("rec-indicator").hidden`, 10*time.Second)
}
