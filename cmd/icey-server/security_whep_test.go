package main

// Black-box tests of WHEP session capabilities, admission control of
// pending sessions and ICE candidates, on the built binary with pion
// viewers (internal/testpeer).

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/testpeer"
)

// whepDo sends one request with optional headers and returns the status,
// the headers and the body.
func whepDo(t *testing.T, c *http.Client, method, u, ctype, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, string(b)
}

// stillPlaying fails unless v receives at least n more video packets
// within d.
func stillPlaying(t *testing.T, v *testpeer.Viewer, n uint64, d time.Duration, who string) {
	t.Helper()
	if err := v.WaitVideo(v.VideoPackets.Load()+n, d); err != nil {
		t.Fatalf("%s stopped receiving video: %v", who, err)
	}
}

// watchStarted collects the ids of session.started events on /api/events
// (what anyone who may read the events sees) until stop is called.
func watchStarted(t *testing.T, p *proc, token string) (ids func(n int) []string, stop func()) {
	t.Helper()
	ch, stopSSE := openSSE(t, p.base+"/api/events", token)
	nextEvent(t, ch, "snapshot", 5*time.Second)
	var got []string
	return func(n int) []string {
		t.Helper()
		for len(got) < n {
			e := nextEvent(t, ch, "session.started", 15*time.Second)
			if id, _ := e.Data["id"].(string); id != "" {
				got = append(got, id)
			}
		}
		return got
	}, stopSSE
}

// observedIDs adds the session ids the other ops surfaces show to ids: the
// /api/events snapshot's sessionList and /api/status stream drops (both
// shown only with a token).
func observedIDs(t *testing.T, p *proc, token string, ids []string) []string {
	t.Helper()
	ch, stop := openSSE(t, p.base+"/api/events", token)
	defer stop()
	snap := nextEvent(t, ch, "snapshot", 5*time.Second)
	list, _ := snap.Data["sessionList"].([]any)
	for _, s := range list {
		if id, _ := s.(map[string]any)["id"].(string); id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	_, st, _ := p.get(t, "/api/status", "X-Icey-Token", token)
	if s, ok := st["stream"].(map[string]any); ok {
		drops, _ := s["drops"].([]any)
		for _, d := range drops {
			if id, _ := d.(map[string]any)["id"].(string); id != "" && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

const sdpFrag = "application/trickle-ice-sdpfrag"

// Without a token: a stranger who reads the session id from /api/events
// (or guesses one) cannot DELETE or PATCH the viewer; the viewer keeps
// playing. PATCH needs the Location and the matching If-Match.
func TestWHEPStrangerCannotActOnAViewer(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	started, stopWatch := watchStarted(t, p, "")
	defer stopWatch()
	victim, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer victim.Close()
	if err := victim.WaitVideo(30, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	loc := victim.Location()
	res := loc[strings.LastIndex(loc, "/")+1:]

	ids := observedIDs(t, p, "", started(1))
	if len(ids) != 1 {
		t.Fatalf("ids observed in /api/events and /api/status: %v, want the victim's", ids)
	}
	// Nothing the server shows carries the capability.
	_, _, status := p.get(t, "/api/status")
	_, metrics := scrape(t, p.base+"/metrics")
	for name, body := range map[string]string{"/api/status": status, "/metrics": metrics, "log": p.stderr.String()} {
		if strings.Contains(body, res) || strings.Contains(body, res[:32]) {
			t.Errorf("%s shows the session capability", name)
		}
	}
	frag := "a=end-of-candidates\r\n"
	for _, target := range []string{ids[0], randomHex(32), randomHex(16), res[:32] + randomHex(16)} {
		u := p.base + "/whep/" + target
		if c, _, b := whepDo(t, nil, http.MethodDelete, u, "", ""); c != http.StatusNotFound {
			t.Errorf("stranger DELETE /whep/%s: %d %q, want 404", target, c, b)
		}
		if c, _, b := whepDo(t, nil, http.MethodPatch, u, sdpFrag, frag, "If-Match", victim.ETag()); c != http.StatusNotFound {
			t.Errorf("stranger PATCH /whep/%s: %d %q, want 404", target, c, b)
		}
	}
	stillPlaying(t, victim, 60, 10*time.Second, "victim after the stranger's DELETE/PATCH")
	if got := sessionsActive(t, p); got != 1 {
		t.Errorf("icey_sessions_active %v, want 1", got)
	}

	// The holder of the Location: If-Match is required and must match.
	for _, tc := range []struct {
		hdr  []string
		want int
	}{
		{nil, http.StatusPreconditionRequired},
		{[]string{"If-Match", `"` + randomHex(16) + `"`}, http.StatusPreconditionFailed},
		{[]string{"If-Match", "*"}, http.StatusUnprocessableEntity}, // ICE restart: unsupported, session kept
		{[]string{"If-Match", victim.ETag()}, http.StatusNoContent},
	} {
		if c, _, b := whepDo(t, nil, http.MethodPatch, loc, sdpFrag, frag, tc.hdr...); c != tc.want {
			t.Errorf("PATCH %v: %d %q, want %d", tc.hdr, c, b, tc.want)
		}
	}
	stillPlaying(t, victim, 30, 10*time.Second, "victim after its own PATCHes")
	if c, _, _ := whepDo(t, nil, http.MethodDelete, loc, "", ""); c != http.StatusOK {
		t.Fatalf("DELETE with the Location: %d", c)
	}
	waitSessionsActive(t, p, 0)
}

// With a token every holder can POST, but holder A cannot end holder B's
// session without B's Location, whatever id it observed.
func TestWHEPTokenHolderCannotEndAnothersSession(t *testing.T) {
	const token = "s3cret-token-for-tests"
	p := launch(t, nil, "ICEY_AUTH_TOKEN="+token)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	started, stopWatch := watchStarted(t, p, token)
	defer stopWatch()
	a, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.WaitVideo(30, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ids := observedIDs(t, p, token, started(2))
	if len(ids) != 2 {
		t.Fatalf("observed ids %v, want two", ids)
	}
	auth := []string{"Authorization", "Bearer " + token}
	for _, id := range append(ids, randomHex(32)) {
		if c, _, body := whepDo(t, nil, http.MethodDelete, p.base+"/whep/"+id, "", "", auth...); c != http.StatusNotFound {
			t.Errorf("holder A DELETE /whep/%s with the token: %d %q, want 404", id, c, body)
		}
	}
	// B's Location without the token is not enough either.
	if c, _, _ := whepDo(t, nil, http.MethodDelete, b.Location(), "", ""); c != http.StatusUnauthorized {
		t.Errorf("DELETE of B's Location without the token: %d, want 401", c)
	}
	stillPlaying(t, b, 60, 10*time.Second, "holder B")
	stillPlaying(t, a, 60, 10*time.Second, "holder A")
	if c, _, _ := whepDo(t, nil, http.MethodDelete, b.Location(), "", "", auth...); c != http.StatusOK {
		t.Errorf("B's own DELETE: %d, want 200", c)
	}
	_, st, _ := p.get(t, "/api/status", "X-Icey-Token", token)
	if s, _ := st["sessions"].(map[string]any); s["active"] != float64(1) {
		t.Errorf("after B's DELETE sessions %v, want A still active", st["sessions"])
	}
}

// 500 offers that never complete ICE from 127.0.0.1 while viewers join
// from 127.0.0.2: the flood is held to the per-address pending cap and
// refused with 503 + Retry-After + reason; every legitimate viewer is
// admitted and plays. Join latency with and without the flood is logged.
func TestWHEPPendingFloodDoesNotLockOutViewers(t *testing.T) {
	p := launch(t, nil)
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	legit := net.ParseIP("127.0.0.2")

	join := func(ctx context.Context) (connect, firstKey time.Duration) {
		t.Helper()
		start := time.Now()
		v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{LocalIP: legit, Timeout: 15 * time.Second})
		if err != nil {
			t.Fatalf("legitimate viewer from 127.0.0.2: %v", err)
		}
		defer v.Close()
		connect = time.Since(start)
		if err := v.WaitVideo(60, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if v.Keyframes.Load() == 0 {
			t.Fatal("legitimate viewer got no keyframe")
		}
		return connect, v.FirstKeyframe()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	const joins = 10
	var baseConn, baseKey []time.Duration
	for range joins {
		c, k := join(ctx)
		baseConn, baseKey = append(baseConn, c), append(baseKey, k)
	}

	// The flood's offer: a real pion offer whose peer is closed at once,
	// so ICE never completes.
	api := webrtc.NewAPI(webrtc.WithSettingEngine(testpeer.LoopbackSettings()))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	offer, err := testpeer.RecvOffer(pc)
	_ = pc.Close()
	if err != nil {
		t.Fatal(err)
	}

	const floodN = 500
	var sent, created, refused, badRefusal atomic.Int64
	var reasonsMu sync.Mutex
	reasons := map[string]int{}
	floodDone := make(chan struct{})
	stopFlood := make(chan struct{})
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}, Timeout: 20 * time.Second}
	defer client.CloseIdleConnections()
	floodStart := time.Now()
	go func() {
		defer close(floodDone)
		var wg sync.WaitGroup
		tick := time.NewTicker(10 * time.Millisecond) // ~100 offers/s, then on until the joins end
		defer tick.Stop()
		for {
			select {
			case <-stopFlood:
				if sent.Load() >= floodN {
					wg.Wait()
					return
				}
			default:
			}
			<-tick.C
			sent.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodPost, p.base+"/whep", strings.NewReader(offer))
				req.Header.Set("Content-Type", "application/sdp")
				resp, err := client.Do(req)
				if err != nil {
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusCreated:
					created.Add(1)
				case http.StatusServiceUnavailable:
					refused.Add(1)
					r := string(body)
					if i := strings.Index(r, "reason: "); i >= 0 {
						r = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(r[i+len("reason: "):]), ")"))
					}
					reasonsMu.Lock()
					reasons[r]++
					reasonsMu.Unlock()
					if resp.Header.Get("Retry-After") == "" {
						badRefusal.Add(1)
					}
				}
			}()
		}
	}()
	// Let the flood fill its pending slots before the first join.
	time.Sleep(time.Second)
	var floodConn, floodKey []time.Duration
	maxPending := -1.0
	for range joins {
		c, k := join(ctx)
		floodConn, floodKey = append(floodConn, c), append(floodKey, k)
		_, body := scrape(t, p.base+"/metrics")
		if v, ok := optMetric(body, "icey_sessions_pending"); ok {
			maxPending = max(maxPending, v)
		}
	}
	close(stopFlood)
	<-floodDone
	floodTime := time.Since(floodStart)
	_, body := scrape(t, p.base+"/metrics")
	refusedMetric, wired := optMetric(body, `icey_session_refusals_total{reason="client_pending"}`)

	t.Logf("flood: %d offers from 127.0.0.1 in %v: %d admitted (pending), %d refused %v",
		sent.Load(), floodTime.Round(time.Millisecond), created.Load(), refused.Load(), reasons)
	t.Logf("legitimate join from 127.0.0.2, POST->connected: without flood p50 %v p95 %v; during flood p50 %v p95 %v",
		pct(baseConn, 50), pct(baseConn, 95), pct(floodConn, 50), pct(floodConn, 95))
	t.Logf("legitimate join, POST->first keyframe: without flood p50 %v p95 %v; during flood p50 %v p95 %v",
		pct(baseKey, 50), pct(baseKey, 95), pct(floodKey, 50), pct(floodKey, 95))
	t.Logf("/metrics during the flood: icey_sessions_pending max %v; icey_session_refusals_total{reason=\"client_pending\"} %v", maxPending, refusedMetric)

	if refused.Load() < sent.Load()-created.Load()-5 || reasons["client_pending"] == 0 || badRefusal.Load() != 0 {
		t.Errorf("flood refusals: %d of %d, reasons %v, %d without Retry-After", refused.Load(), sent.Load(), reasons, badRefusal.Load())
	}
	// 8 pending per address, each held until the pending deadline (10 s):
	// at most 8 admitted per 10 s of flooding.
	if created.Load() > 8*(int64(floodTime/(10*time.Second))+2) {
		t.Errorf("%d flood offers admitted: more than the per-address pending cap allows", created.Load())
	}
	// The metrics package exports both series once the binary passes
	// signaling.Totals' Pending and Refusals into metrics.SessionTotals
	// (cmd/icey-server/ops.go, metricsSources); metrics_test covers the
	// rendering and signaling's TestAdmissionPendingLimits the figures.
	if !wired {
		t.Fatal("/metrics does not export icey_sessions_pending / icey_session_refusals_total")
	}
	if maxPending < 1 || maxPending > 8+1 {
		t.Errorf("icey_sessions_pending max %v during the flood, want 1..9 (8 flood + at most 1 joining viewer)", maxPending)
	}
	if refusedMetric < float64(reasons["client_pending"]) {
		t.Errorf("icey_session_refusals_total{reason=\"client_pending\"} = %v, fewer than the %d refusals seen", refusedMetric, reasons["client_pending"])
	}
}

// optMetric is metricValue for a series that may be absent.
func optMetric(body, series string) (float64, bool) {
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func pct(ds []time.Duration, p float64) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(percentile(xs, p)).Round(time.Millisecond)
}

// Bound to 0.0.0.0 the server offers a loopback candidate (so a browser on
// the same machine works where no other interface exists) and a viewer
// plays through it.
func TestWildcardBindOffersLoopbackCandidate(t *testing.T) {
	p := launch(t, []string{"--host", "0.0.0.0"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatalf("viewer against a 0.0.0.0 bind: %v", err)
	}
	defer v.Close()
	var cands []string
	for _, l := range strings.Split(v.Answer(), "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "a=candidate:") {
			cands = append(cands, strings.TrimSpace(l))
		}
	}
	if !slices.ContainsFunc(cands, func(c string) bool { return strings.Contains(c, " 127.0.0.1 ") }) {
		t.Fatalf("answer candidates %q lack 127.0.0.1", cands)
	}
	if err := v.WaitVideo(60, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(v.Location())
	t.Logf("candidates %q; resource %s", cands, u.Path[:len("/whep/")+8]+"…")
}
