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
		Source:  func() SourceSnapshot { return SourceSnapshot{State: "reconnecting", Reconnects: 2, FPS: 29.5} },
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
		`icey_source_state{state="reconnecting"} 1`, `icey_source_state{state="up"} 0`, "icey_source_up 0",
		"icey_source_reconnects_total 2", "icey_source_fps 29.5", `icey_turn_refusals_total{reason="peer_denied"} 5`,
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
	scrapeBody := func(st SessionTotals) string {
		m := New(prometheus.NewRegistry(), Sources{Sessions: func() SessionTotals { return st }})
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	body := scrapeBody(SessionTotals{Pending: 5, Refusals: map[string]uint64{"capacity": 0, "pending": 2, "client_pending": 492}})
	for _, want := range []string{"icey_sessions_pending 5", `icey_session_refusals_total{reason="client_pending"} 492`,
		`icey_session_refusals_total{reason="pending"} 2`, `icey_session_refusals_total{reason="capacity"} 0`} {
		if !strings.Contains(body, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if body := scrapeBody(SessionTotals{}); strings.Contains(body, "icey_sessions_pending") || strings.Contains(body, "icey_session_refusals_total") {
		t.Error("admission series exported without a source reporting them")
	}
}
