package metrics

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestScrapeReadsSourcesAndBoundsCardinality(t *testing.T) {
	var viewers []ViewerSnapshot
	for i := 0; i < 25; i++ {
		viewers = append(viewers, ViewerSnapshot{ID: fmt.Sprintf("v%02d", i), Dropped: uint64(i)})
	}
	m := New(prometheus.NewRegistry(), Sources{
		Version: "9.9.9",
		Ready:   func() bool { return false },
		Sessions: func() SessionTotals {
			return SessionTotals{ActiveByRole: map[string]int64{"viewer": 3}, Total: 7, PacketsSent: 100, BytesSent: 5000, Dropped: 4}
		},
		Paths: func() []PathSnapshot {
			return []PathSnapshot{{Path: "main", State: "reconnecting", Reconnects: 2, FPS: 29.5, Viewers: 3}}
		},
		Viewers: func() []ViewerSnapshot { return viewers },
		TURN: func() (TURNSnapshot, bool) {
			return TURNSnapshot{Allocations: 1, Refusals: map[string]uint64{"peer_denied": 5}}, true
		},
	})
	m.ObserveFirstKeyframe(80 * time.Millisecond)
	m.ObserveSessionEnd("viewer", "shutdown", 12)
	h := m.Instrument(func(*http.Request) string { return "/x" }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(418)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/x", nil))

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body := rec.Body.String()
	for _, want := range []string{
		`icey_build_info{version="9.9.9"} 1`, "icey_ready 0", `icey_sessions_active{role="viewer"} 3`,
		"icey_sessions_total 7", "icey_packets_sent_total 100", "icey_bytes_sent_total 5000",
		`icey_source_state{path="main",state="reconnecting"} 1`, `icey_source_state{path="main",state="up"} 0`,
		`icey_source_up{path="main"} 0`, `icey_source_reconnects_total{path="main"} 2`, `icey_source_fps{path="main"} 29.5`, `icey_turn_refusals_total{reason="peer_denied"} 5`,
		"icey_first_keyframe_seconds_count 1", `icey_sessions_ended_total{reason="shutdown",role="viewer"} 1`,
		`icey_http_request_duration_seconds_count{code="418",method="GET",route="/x"} 1`,
		`icey_viewer_dropped_packets{viewer="v24"} 24`, "go_goroutines", "process_cpu_seconds_total",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if n := strings.Count(body, "icey_viewer_dropped_packets{"); n != TopViewers {
		t.Errorf("%d per-viewer series, want top %d", n, TopViewers)
	}
	if strings.Contains(body, `viewer="v14"`) {
		t.Error("a viewer outside the top 10 is exported")
	}
}

func TestReasonLabelIsBounded(t *testing.T) {
	cases := map[string]string{"shutdown": "shutdown", "handshake_timeout": "handshake_timeout", "peer_closed": "peer_closed",
		"source_closed": "source_closed", "": "unknown", "something odd": "other", "source closed": "other",
		"connection_failed": "connection_failed", "hangup": "hangup"}
	for in, want := range cases {
		if got := reasonLabel(in); got != want {
			t.Errorf("reasonLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestInstrumentKeepsHijackForWebSockets(t *testing.T) {
	m := New(prometheus.NewRegistry(), Sources{})
	hijacked := make(chan error, 1)
	srv := httptest.NewServer(m.Instrument(func(*http.Request) string { return "/ws" }, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, ok := w.(http.Hijacker)
		if !ok {
			hijacked <- fmt.Errorf("writer %T is not an http.Hijacker", w)
			return
		}
		c, _, err := h.Hijack()
		if err == nil {
			c.Close()
		}
		hijacked <- err
	})))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err == nil {
		resp.Body.Close()
	}
	if err := <-hijacked; err != nil {
		t.Fatal(err)
	}
}

// Admission figures appear when the session source reports them, and not
// as a misleading 0 when it does not.
func TestScrapeExportsPendingAndRefusals(t *testing.T) {
	bodyFor := func(st SessionTotals) string {
		return scrapeBody(t, Sources{Sessions: func() SessionTotals { return st }})
	}
	body := bodyFor(SessionTotals{Pending: 5, Refusals: map[string]uint64{"capacity": 0, "pending": 2, "client_pending": 492}})
	for _, want := range []string{"icey_sessions_pending 5", `icey_session_refusals_total{reason="client_pending"} 492`,
		`icey_session_refusals_total{reason="pending"} 2`, `icey_session_refusals_total{reason="capacity"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if body := bodyFor(SessionTotals{}); strings.Contains(body, "icey_sessions_pending") || strings.Contains(body, "icey_session_refusals_total") ||
		strings.Contains(body, "icey_sessions_max") || strings.Contains(body, "icey_media_send_") {
		t.Error("admission or send series exported without a source reporting them")
	}
	body = bodyFor(SessionTotals{Max: 600, Send: &SendSnapshot{Mode: "sendmmsg", Datagrams: 90, Syscalls: 12, Segmented: 0, Errors: 1}})
	for _, want := range []string{"icey_sessions_max 600", `icey_media_send_mode{mode="sendmmsg"} 1`, `icey_media_send_mode{mode="gso"} 0`,
		"icey_media_send_datagrams_total 90", "icey_media_send_syscalls_total 12", "icey_media_send_segmented_total 0",
		"icey_media_send_errors_total 1"} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
}

func scrapeBody(t *testing.T, src Sources) string {
	t.Helper()
	m := New(prometheus.NewRegistry(), src)
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape answered %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// Every source series carries the path label; the state one-hot covers the
// path states; viewers and publisher are per path; sessions by path are
// exported only for the reported (configured) paths.
func TestScrapeExportsPerPathSeries(t *testing.T) {
	body := scrapeBody(t, Sources{
		Paths: func() []PathSnapshot {
			return []PathSnapshot{
				{Path: "front", State: "up", FPS: 25, Packets: 900, Bytes: 123456, Reconnects: 1, Viewers: 4},
				{Path: "stage", State: "publishing", FPS: 30, Packets: 10, Bytes: 2000, Viewers: 1, Publisher: true},
				{Path: "front", State: "down"}, // a repeated name must not fail the scrape
				{Path: ""},
			}
		},
		Sessions: func() SessionTotals {
			return SessionTotals{ActiveByRole: map[string]int64{"viewer": 5, "publisher": 1},
				ActiveByPath: map[string]map[string]int64{
					"front":   {"viewer": 4},
					"stage":   {"viewer": 1, "publisher": 1},
					"unknown": {"viewer": 9}, // not a reported path: not exported
				}}
		},
	})
	for _, want := range []string{
		`icey_source_state{path="front",state="up"} 1`, `icey_source_state{path="front",state="down"} 0`,
		`icey_source_state{path="stage",state="publishing"} 1`, `icey_source_state{path="stage",state="waiting-publisher"} 0`,
		`icey_source_up{path="front"} 1`, `icey_source_up{path="stage"} 1`,
		`icey_source_fps{path="front"} 25`, `icey_source_fps{path="stage"} 30`,
		`icey_source_packets_total{path="front"} 900`, `icey_source_bytes_total{path="front"} 123456`,
		`icey_source_reconnects_total{path="front"} 1`, `icey_source_reconnects_total{path="stage"} 0`,
		`icey_path_viewers{path="front"} 4`, `icey_path_viewers{path="stage"} 1`,
		`icey_path_publisher{path="front"} 0`, `icey_path_publisher{path="stage"} 1`,
		`icey_sessions_active_by_path{path="front",role="viewer"} 4`,
		`icey_sessions_active_by_path{path="stage",role="publisher"} 1`,
		`icey_sessions_active_by_path{path="stage",role="viewer"} 1`,
		`icey_sessions_active{role="viewer"} 5`, `icey_sessions_active{role="publisher"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if n := strings.Count(body, "icey_source_state{"); n != 2*len(PathStates) {
		t.Errorf("%d state series, want %d (two paths x %d states)", n, 2*len(PathStates), len(PathStates))
	}
	for _, gone := range []string{`state="ended"`, `state="stopped"`, `path="unknown"`, `path=""`} {
		if strings.Contains(body, gone) {
			t.Errorf("scrape contains %s", gone)
		}
	}
}

func TestScrapeWithoutPaths(t *testing.T) {
	sessions := func() SessionTotals {
		return SessionTotals{ActiveByPath: map[string]map[string]int64{"front": {"viewer": 1}}}
	}
	for name, src := range map[string]Sources{
		"nil":   {Sessions: sessions},
		"empty": {Sessions: sessions, Paths: func() []PathSnapshot { return nil }},
	} {
		body := scrapeBody(t, src)
		for _, absent := range []string{"icey_source_", "icey_path_", "icey_sessions_active_by_path{"} {
			if strings.Contains(body, absent) {
				t.Errorf("%s paths: scrape has %s series", name, absent)
			}
		}
		if !strings.Contains(body, "icey_up 1") {
			t.Errorf("%s paths: scrape lacks icey_up", name)
		}
	}
}
