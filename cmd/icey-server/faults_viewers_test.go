//go:build faults

package main

// Viewer faults on the binary (issue #18): viewers whose machine froze.
// They stop reading their sockets entirely (a child process, SIGSTOP), so
// their kernel buffers fill and nothing (no RTCP, no ICE consent answer)
// comes back. The healthy viewers of the same path must not notice, new
// viewers must join as fast as before, and the server must reap the frozen
// sessions by itself.

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// seqCounter counts a viewer's video packets and the sequence numbers it
// should have seen (RFC 3550 §A.3: expected = highest extended sequence
// number - first + 1), from the track's reader goroutine.
type seqCounter struct {
	mu       sync.Mutex
	started  bool
	first    uint64
	highest  uint64
	received uint64
}

func (c *seqCounter) push(p *rtp.Packet, _ time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.received++
	if !c.started {
		c.started = true
		c.first, c.highest = uint64(p.SequenceNumber), uint64(p.SequenceNumber)
		return
	}
	if d := int16(p.SequenceNumber - uint16(c.highest)); d > 0 {
		c.highest += uint64(d)
	}
}

func (c *seqCounter) snap() (received, expected uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.started {
		return 0, 0
	}
	return c.received, c.highest - c.first + 1
}

type countedViewer struct {
	v *testpeer.Viewer
	c *seqCounter
}

// metricOrZero is a series' value in a scrape, 0 when absent (a labelled
// counter appears with its first increment).
func metricOrZero(body, series string) float64 {
	re := regexp.MustCompile("(?m)^" + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	if m := re.FindStringSubmatch(body); m != nil {
		v, _ := strconv.ParseFloat(m[1], 64)
		return v
	}
	return 0
}

// phaseResult is what the healthy viewers and the fresh joins saw in one
// measurement window.
type phaseResult struct {
	rates    []float64       // video packets per second, per healthy viewer, sorted
	lossPct  float64         // over every healthy viewer (duplicates from retransmissions not removed)
	connect  []time.Duration // fresh joins: POST to connected, sorted
	firstKey []time.Duration // fresh joins: POST to first keyframe packet, sorted
}

func pctl[T int64 | float64 | time.Duration](s []T, q float64) T {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func (r phaseResult) String() string {
	return fmt.Sprintf("healthy video rate p50 %.1f pkt/s (min %.1f, max %.1f), loss %.3f%%; %d fresh joins: connected p50 %s max %s, first keyframe p50 %s max %s",
		pctl(r.rates, 0.5), r.rates[0], r.rates[len(r.rates)-1], r.lossPct,
		len(r.firstKey), pctl(r.connect, 0.5).Round(time.Millisecond), pctl(r.connect, 1).Round(time.Millisecond),
		pctl(r.firstKey, 0.5).Round(time.Millisecond), pctl(r.firstKey, 1).Round(time.Millisecond))
}

// measurePhase measures the healthy viewers over window; joinAt into it,
// fresh viewers join at once and are timed to their first keyframe; they
// leave after the window.
func measurePhase(ctx context.Context, t *testing.T, url string, healthy []countedViewer, fresh int, window, joinAt time.Duration) phaseResult {
	t.Helper()
	type snap struct{ rx, exp uint64 }
	take := func() []snap {
		s := make([]snap, len(healthy))
		for i, h := range healthy {
			s[i].rx, s[i].exp = h.c.snap()
		}
		return s
	}
	before, start := take(), time.Now()
	time.Sleep(joinAt)
	var (
		mu     sync.Mutex
		joined []*testpeer.Viewer
		res    phaseResult
		wg     sync.WaitGroup
		errs   = make(chan error, fresh)
	)
	for range fresh {
		wg.Go(func() {
			v, err := testpeer.Connect(ctx, url, testpeer.Options{VideoOnly: true, Timeout: 20 * time.Second})
			if err != nil {
				errs <- err
				return
			}
			conn := time.Since(v.Joined)
			mu.Lock()
			joined = append(joined, v)
			mu.Unlock()
			deadline := time.Now().Add(10 * time.Second)
			for v.FirstKeyframe() == 0 && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
			if v.FirstKeyframe() == 0 {
				errs <- fmt.Errorf("a fresh viewer got no keyframe in 10 s (%d video packets)", v.VideoPackets.Load())
				return
			}
			mu.Lock()
			res.connect = append(res.connect, conn)
			res.firstKey = append(res.firstKey, v.FirstKeyframe())
			mu.Unlock()
		})
	}
	wg.Wait()
	close(errs)
	if d := time.Until(start.Add(window)); d > 0 {
		time.Sleep(d)
	}
	after, elapsed := take(), time.Since(start)
	for _, v := range joined {
		v.Close()
	}
	for err := range errs {
		t.Fatal(err)
	}
	var rx, exp uint64
	for i := range healthy {
		r, e := after[i].rx-before[i].rx, after[i].exp-before[i].exp
		res.rates = append(res.rates, float64(r)/elapsed.Seconds())
		rx += r
		exp += e
	}
	if exp > rx {
		res.lossPct = 100 * float64(exp-rx) / float64(exp)
	}
	slices.Sort(res.rates)
	slices.Sort(res.connect)
	slices.Sort(res.firstKey)
	return res
}

// TestFaultTenViewersStopReading: 100 WHEP viewers of the built-in
// stream; 10 of them (a child process) freeze. Measured side by side on
// the same server, before and while they are frozen: the 90 healthy
// viewers' packet rate and loss, and how fast 10 fresh viewers get their
// first keyframe. Then the server reaps the 10 frozen sessions by itself
// (ICE consent: no answer from them) and nothing leaks.
func TestFaultTenViewersStopReading(t *testing.T) {
	const (
		healthyN = 90
		frozenN  = 10
		freshN   = 10
		window   = 10 * time.Second
		joinAt   = 3 * time.Second
	)
	p := launch(t, []string{"-c", writeConfig(t, `{"webrtc":{"maxPendingPerClient":64}}`)})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	baseG := serverGoroutines(t, p)
	url := p.base + "/whep"
	ctx, cancel := context.WithTimeout(context.Background(), 170*time.Second)
	defer cancel()

	// The 90 healthy viewers, joined 10 at a time.
	joinStart := time.Now()
	healthy := make([]countedViewer, healthyN)
	for i := 0; i < healthyN; i += 10 {
		var wg sync.WaitGroup
		errs := make(chan error, 10)
		for j := i; j < i+10; j++ {
			c := &seqCounter{}
			wg.Go(func() {
				v, err := testpeer.Connect(ctx, url, testpeer.Options{VideoOnly: true, OnVideo: c.push, Timeout: 30 * time.Second})
				if err != nil {
					errs <- err
					return
				}
				healthy[j] = countedViewer{v, c}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	defer func() {
		for _, h := range healthy {
			if h.v != nil {
				h.v.Close()
			}
		}
	}()
	for _, h := range healthy {
		if err := h.v.WaitVideo(30, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	// The 10 that will freeze: real viewers, reading, in their own process.
	child := startFaultChild(t, "viewers", faultURLEnv+"="+url, faultNEnv+"="+strconv.Itoa(frozenN))
	if n := activeSessions(t, p); n != healthyN+frozenN {
		t.Fatalf("sessions.active %d, want %d", n, healthyN+frozenN)
	}
	t.Logf("%d healthy + %d to-be-frozen viewers joined in %s", healthyN, frozenN, time.Since(joinStart).Round(100*time.Millisecond))
	time.Sleep(2 * time.Second)

	_, m := scrape(t, p.base+"/metrics")
	gA, rssA := metricValue(t, m, "go_goroutines"), metricValue(t, m, "process_resident_memory_bytes")/1e6
	endedA := metricOrZero(m, `icey_sessions_ended_total{reason="connection_failed",role="viewer"}`)
	dropsA := testenv.UDPReceiveDrops(t)
	a := measurePhase(ctx, t, url, healthy, freshN, window, joinAt)
	dropsA = testenv.UDPReceiveDrops(t) - dropsA
	t.Logf("phase A (all %d reading): %s; UDP receive-buffer drops %d", healthyN+frozenN, a, dropsA)

	frozen := time.Now()
	child.freeze(t)
	time.Sleep(500 * time.Millisecond)
	dropsB := testenv.UDPReceiveDrops(t)
	b := measurePhase(ctx, t, url, healthy, freshN, window, joinAt)
	dropsB = testenv.UDPReceiveDrops(t) - dropsB
	stillCounted := activeSessions(t, p) - healthyN
	t.Logf("phase B (%d frozen): %s; UDP receive-buffer drops %d (the frozen sockets overflowing); %.1f s after the freeze the server still counts %d of the frozen sessions",
		frozenN, b, dropsB, time.Since(frozen).Seconds(), stillCounted)
	if dropsB == 0 {
		t.Fatal("no UDP receive-buffer drop while 10 viewers were frozen: they were not really stopped")
	}

	// Unchanged within the tolerance: rate ±10 % (p50), no healthy viewer
	// below 80 % of the phase-A p50, loss at most 1 point more; fresh
	// joins' first keyframe p50 within 1.5x + 0.5 s, max within 2x + 1 s.
	if ra, rb := pctl(a.rates, 0.5), pctl(b.rates, 0.5); rb < 0.9*ra || rb > 1.1*ra || b.rates[0] < 0.8*ra {
		t.Errorf("healthy viewers' rate changed: p50 %.1f -> %.1f pkt/s, slowest %.1f", ra, rb, b.rates[0])
	}
	if b.lossPct > a.lossPct+1 {
		t.Errorf("healthy viewers' loss %.3f%% -> %.3f%%", a.lossPct, b.lossPct)
	}
	if fa, fb := pctl(a.firstKey, 0.5), pctl(b.firstKey, 0.5); fb > fa*3/2+500*time.Millisecond {
		t.Errorf("fresh joins' first keyframe p50 %s -> %s", fa, fb)
	}
	if fa, fb := pctl(a.firstKey, 1), pctl(b.firstKey, 1); fb > 2*fa+time.Second {
		t.Errorf("fresh joins' first keyframe max %s -> %s", fa, fb)
	}

	// The server reaps the frozen sessions by itself.
	_, ok := waitSettled(60*time.Second, func() bool { return activeSessions(t, p) <= healthyN })
	if !ok || activeSessions(t, p) != healthyN {
		t.Fatalf("sessions.active %d %s after the freeze, want %d", activeSessions(t, p), time.Since(frozen).Round(time.Second), healthyN)
	}
	reap := time.Since(frozen)
	_, m = scrape(t, p.base+"/metrics")
	endedB := metricOrZero(m, `icey_sessions_ended_total{reason="connection_failed",role="viewer"}`)
	if endedB-endedA != frozenN {
		t.Errorf("viewer sessions ended as connection_failed: %v, want %d", endedB-endedA, frozenN)
	}
	gB, rssB := metricValue(t, m, "go_goroutines"), metricValue(t, m, "process_resident_memory_bytes")/1e6
	child.kill()
	for _, h := range healthy[:5] {
		if err := h.v.WaitVideo(h.v.VideoPackets.Load()+30, 10*time.Second); err != nil {
			t.Fatalf("a healthy viewer stopped receiving after the reap: %v", err)
		}
	}
	t.Logf("frozen sessions reaped %.1f s after the freeze (sessions %d -> %d, %v ended as connection_failed); server goroutines %v -> %v, RSS %.1f -> %.1f MB",
		reap.Seconds(), healthyN+frozenN, healthyN, endedB-endedA, gA, gB, rssA, rssB)

	for _, h := range healthy {
		h.v.Close()
	}
	if _, ok := waitSettled(30*time.Second, func() bool { return activeSessions(t, p) == 0 }); !ok {
		t.Fatalf("sessions.active %d after every viewer left", activeSessions(t, p))
	}
	endG := waitGoroutines(t, p, baseG, 3, 30*time.Second)
	t.Logf("server goroutines: baseline %v, after everyone left %v", baseG, endG)
}
