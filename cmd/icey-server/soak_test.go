//go:build soak

package main

// The soak (issue #18): one server process under the life of a small site
// for SOAK_DURATION (default 1 h; CI runs 5m): an always-on recorded camera
// that drops every few minutes, an on-demand camera that closes and
// reopens, a recorded publisher path whose WHIP publisher hands over to a
// new one every few minutes, the built-in default path, and 10-20 WHEP
// viewers joining and leaving all of them continuously. Every 10 s it
// samples what an operator would watch (RSS, goroutines, descriptors,
// sessions, drops, first-frame times) into soak.csv; at the end it draws
// soak.png and asserts nothing leaked, every viewer got video in time,
// and the recordings are complete, readable files.
//
//	SOAK_DURATION=5m scripts/netns.sh go test -tags soak -count=1 -timeout 20m -v -run TestSoak ./cmd/icey-server/
//
// SOAK_OUT names the directory for soak.csv and soak.png (default a
// temporary directory, logged); SOAK_SEED the viewers' random seed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/soakplot"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// Bounds the soak asserts (stated here so the report can quote them).
const (
	// A viewer joining a path whose media flows sees its first keyframe
	// within this (an on-demand path's first viewer includes opening the
	// camera).
	soakFirstFrameBound = 5 * time.Second
	// A viewer that joined, or was watching, while its path's camera was
	// down or its publisher was handing over sees video within this after
	// the camera or the new publisher is back (the server retries a camera
	// with a jittered backoff of at most 10 s).
	soakRecoveryBound = 15 * time.Second
	// Goroutines and descriptors after everything left may exceed the
	// baseline (taken in the same quiet state after the warm-up) by this.
	soakGoroutineMargin = 10
	soakFDMargin        = 5
	// RSS growth over the second half: at most soakRSSSlopeMBh, or
	// soakRSSGrowthMB in total for runs too short for a slope to mean much
	// (a GC cycle moves RSS by a few MB).
	soakRSSSlopeMBh = 20.0
	soakRSSGrowthMB = 10.0
	// The live heap (after a forced GC) once everyone left may exceed the
	// baseline's by this.
	soakLiveHeapMarginMB = 5.0
	soakSampleEvery      = 10 * time.Second
)

// interval is one stretch during which a path had no media on purpose
// (camera stopped, publisher handing over); to is zero while it lasts.
type interval struct{ from, to time.Time }

// soakJoin is one viewer's life.
type soakJoin struct {
	path        string
	at, firstAt time.Time // firstAt zero: no keyframe during its life
	left        time.Time
}

type soakViewer struct {
	path string
	v    *testpeer.Viewer
}

type soakState struct {
	t     *testing.T
	base  string
	ctx   context.Context
	start time.Time

	mu       sync.Mutex
	outages  map[string][]interval
	joins    []soakJoin
	failures []string
	alive    map[*soakViewer]bool
	odOpen   time.Time // the on-demand path takes viewers until then

	connecting   atomic.Int64
	joined, left atomic.Int64
	viewersWG    sync.WaitGroup
	stopViewers  chan struct{}
}

func (s *soakState) fail(format string, args ...any) {
	msg := fmt.Sprintf("%6.1f s: ", time.Since(s.start).Seconds()) + fmt.Sprintf(format, args...)
	s.mu.Lock()
	s.failures = append(s.failures, msg)
	s.mu.Unlock()
	s.t.Log("FAILURE " + msg)
}

func (s *soakState) outageBegin(path string) {
	s.mu.Lock()
	s.outages[path] = append(s.outages[path], interval{from: time.Now()})
	s.mu.Unlock()
}

// waitPathUp polls /api/status until path is up again, or until deadline.
func (s *soakState) waitPathUp(path string, deadline time.Time) {
	for time.Now().Before(deadline) {
		if resp, err := http.Get(s.base + "/api/status"); err == nil {
			var st struct {
				Paths []struct{ Name, State string }
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			for _, p := range st.Paths {
				if err == nil && p.Name == path && p.State == "up" {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *soakState) outageEnd(path string, at time.Time) {
	s.mu.Lock()
	if l := s.outages[path]; len(l) > 0 && l[len(l)-1].to.IsZero() {
		l[len(l)-1].to = at
	}
	s.mu.Unlock()
}

// firstFrame is a join's first-frame time, and whether an outage of its
// path delayed it: then it counts from the end of that outage (the
// camera's restart, the new publisher connected) instead of the join.
func (s *soakState) firstFrame(j soakJoin) (time.Duration, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	from, hit := j.at, false
	for _, iv := range s.outages[j.path] {
		to := iv.to
		if to.IsZero() || to.After(j.firstAt) {
			to = j.firstAt
		}
		if iv.from.Before(j.firstAt) && to.After(j.at) {
			hit = true
			if to.After(from) {
				from = to
			}
		}
	}
	return j.firstAt.Sub(from), hit
}

// hadOutage reports whether path had no media on purpose at some time in
// [from, to] or within soakRecoveryBound before to.
func (s *soakState) hadOutage(path string, from, to time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, iv := range s.outages[path] {
		end := iv.to
		if end.IsZero() {
			end = to
		}
		if iv.from.Before(to) && end.Add(soakRecoveryBound).After(from) {
			return true
		}
	}
	return false
}

func (s *soakState) url(path string) string {
	if path == "main" {
		return s.base + "/whep"
	}
	return s.base + "/" + path + "/whep"
}

// viewer joins path, watches for life (or until the soak stops viewers),
// and leaves with the WHEP DELETE.
func (s *soakState) viewer(path string, life time.Duration) {
	defer s.viewersWG.Done()
	ctx, cancel := context.WithTimeout(s.ctx, 30*time.Second)
	v, err := testpeer.Connect(ctx, s.url(path), testpeer.Options{Timeout: 20 * time.Second})
	cancel()
	if err != nil {
		s.connecting.Add(-1)
		s.fail("viewer of %s could not connect: %v", path, err)
		return
	}
	sv := &soakViewer{path: path, v: v}
	s.mu.Lock()
	s.alive[sv] = true
	s.mu.Unlock()
	s.connecting.Add(-1)
	s.joined.Add(1)
	end := v.Joined.Add(life)
	tick := time.NewTicker(20 * time.Millisecond)
	for time.Now().Before(end) {
		select {
		case <-s.stopViewers:
			end = time.Now()
		case <-tick.C:
		}
	}
	tick.Stop()
	j := soakJoin{path: path, at: v.Joined}
	if d := v.FirstKeyframe(); d > 0 {
		j.firstAt = v.Joined.Add(d)
	}
	s.mu.Lock()
	delete(s.alive, sv)
	s.mu.Unlock()
	v.Close()
	j.left = time.Now()
	s.left.Add(1)
	s.mu.Lock()
	s.joins = append(s.joins, j)
	s.mu.Unlock()
	if j.firstAt.IsZero() && !s.hadOutage(path, j.at, j.left) && j.left.Sub(j.at) >= soakFirstFrameBound {
		s.fail("viewer of %s saw no keyframe in %v of life", path, j.left.Sub(j.at).Round(time.Millisecond))
	}
}

// schedule keeps 10-20 viewers alive (the target changes every 30 s),
// each on a random path and living a random 5-60 s, until stop closes.
func (s *soakState) schedule(rng *rand.Rand, stop <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	target, retarget := 0, time.Time{}
	var lastGarage time.Time
	for {
		select {
		case <-stop:
			return
		case <-time.After(250 * time.Millisecond):
		}
		if time.Now().After(retarget) {
			target, retarget = 10+rng.IntN(11), time.Now().Add(30*time.Second)
		}
		s.mu.Lock()
		n := len(s.alive)
		odOpen := s.odOpen
		s.mu.Unlock()
		if n+int(s.connecting.Load()) >= target {
			continue
		}
		life := time.Duration(5+rng.IntN(56)) * time.Second
		paths := []string{"main", "yard", "stage"}
		// The on-demand path takes only viewers that leave before its
		// window closes, so it really goes idle and closes in between.
		if time.Until(odOpen) > 6*time.Second {
			paths = append(paths, "garage")
		}
		path := paths[rng.IntN(len(paths))]
		// Each window of the on-demand path gets at least one viewer, so
		// every cycle opens the camera again.
		if slices.Contains(paths, "garage") && len(s.aliveOn("garage")) == 0 && time.Since(lastGarage) > 5*time.Second {
			path = "garage"
		}
		if path == "garage" {
			lastGarage = time.Now()
			life = min(life, time.Until(odOpen)-time.Second)
		}
		s.connecting.Add(1)
		s.viewersWG.Add(1)
		go s.viewer(path, life)
	}
}

// aliveOn lists the viewers of path connected now with their video
// packet counts.
func (s *soakState) aliveOn(path string) map[*soakViewer]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[*soakViewer]uint64{}
	for sv := range s.alive {
		if sv.path == path {
			out[sv] = sv.v.VideoPackets.Load()
		}
	}
	return out
}

// videoBack waits until every viewer in before that is still connected
// received video after back (30 packets more than it had), and returns
// the slowest one's time from back and how many were checked.
func (s *soakState) videoBack(before map[*soakViewer]uint64, back time.Time, what string) (time.Duration, int) {
	var worst time.Duration
	checked := 0
	for sv, n := range before {
		for {
			s.mu.Lock()
			live := s.alive[sv]
			s.mu.Unlock()
			if !live {
				break
			}
			if sv.v.VideoPackets.Load() >= n+30 {
				worst = max(worst, time.Since(back))
				checked++
				break
			}
			if time.Since(back) > soakRecoveryBound {
				s.fail("a viewer of %s connected through %s got no video %v after it", sv.path, what, soakRecoveryBound)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return worst, checked
}

func soakDuration(t *testing.T) time.Duration {
	d := time.Hour
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < 2*time.Minute {
			t.Fatalf("SOAK_DURATION=%q: want a duration of at least 2m", v)
		}
	}
	return d
}

// quiet waits until no session is active, the on-demand camera is
// closed and the server's goroutines settle (at most within the margin
// of want, when want > 0), then returns RSS MB, heap in use MB,
// goroutines and fds.
func quietState(t *testing.T, p *proc, od *rtsptest.Server, want float64) (rss, heap, gor, fds float64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, st, _ := p.get(t, "/api/status")
		sess, _ := st["sessions"].(map[string]any)
		if sess != nil && sess["active"] == float64(0) && od.Conns() == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never quiet: sessions %v, on-demand camera connections %d", sess, od.Conns())
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Our own keep-alive connections are descriptors of the server too.
	http.DefaultClient.CloseIdleConnections()
	time.Sleep(3 * time.Second)
	for {
		http.DefaultClient.CloseIdleConnections()
		_, body := scrape(t, p.base+"/metrics")
		rss = metricValue(t, body, "process_resident_memory_bytes") / 1e6
		heap = metricValue(t, body, "go_memstats_heap_inuse_bytes") / 1e6
		gor = metricValue(t, body, "go_goroutines")
		fds = metricValue(t, body, "process_open_fds")
		if want == 0 || gor <= want+soakGoroutineMargin || time.Now().After(deadline.Add(30*time.Second)) {
			return rss, heap, gor, fds
		}
		time.Sleep(time.Second)
	}
}

// liveHeapMB forces GCs in the server (its pprof listener's heap profile
// with gc=1; twice, so sync.Pool's victim caches are gone too) and
// returns the heap then allocated: the live heap, which, unlike RSS or
// the heap in use, does not depend on when the GC last ran. It saves the
// heap profile as file (go tool pprof -sample_index=inuse_space file).
func liveHeapMB(t *testing.T, pprofBase, file string) float64 {
	t.Helper()
	scrape(t, pprofBase+"/debug/pprof/heap?gc=1&debug=1")
	code, body := scrape(t, pprofBase+"/debug/pprof/heap?gc=1&debug=1")
	m := regexp.MustCompile(`(?m)^# HeapAlloc = ([0-9]+)$`).FindStringSubmatch(body)
	if code != 200 || m == nil {
		t.Fatalf("heap profile: %d %.200s", code, body)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	if _, prof := scrape(t, pprofBase+"/debug/pprof/heap"); prof != "" {
		if err := os.WriteFile(file, []byte(prof), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return v / 1e6
}

func percentileDur(xs []time.Duration, q float64) time.Duration {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[min(len(s)-1, int(math.Ceil(q*float64(len(s))))-1)]
}

func TestSoak(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.RequireTool(t, "ffprobe")
	dur := soakDuration(t)
	out := os.Getenv("SOAK_OUT")
	if out == "" {
		out = t.TempDir()
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	seed := uint64(1)
	if v := os.Getenv("SOAK_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("soak of %v, seed %d; soak.csv and soak.png go to %s", dur, seed, out)

	// Periods scale with the duration so a 5-minute run still drops the
	// camera, hands the publisher over and cycles the on-demand path at
	// least twice each.
	segment := min(max(dur/10, 20*time.Second), 5*time.Minute)
	camPeriod := min(dur/3, 5*time.Minute)
	handPeriod := min(dur/3, 4*time.Minute)
	odPeriod := min(dur/4, 3*time.Minute)
	// The warm-up lasts until the streams' histories (10 s ring, 4096-packet
	// retransmit buffer) are full, so the baseline holds them too.
	warm := min(max(dur/10, 90*time.Second), 2*time.Minute)

	cam := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioOpus})
	odCam := rtsptest.Start(t, rtsptest.Options{Width: 352, Height: 288})
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "320x240", Seconds: 4})
	recDir := filepath.Join(t.TempDir(), "recordings")
	cfg, _ := json.Marshal(map[string]any{
		"http":       map[string]any{"drainSeconds": 1},
		"media":      map[string]any{"recordDir": recDir, "sourceGraceSeconds": 30},
		"recordings": map[string]any{"segmentSeconds": int(segment.Seconds())},
		"paths": map[string]any{
			"yard":   map[string]any{"source": cam.URL("yard"), "record": true},
			"garage": map[string]any{"source": odCam.URL("garage"), "sourceOnDemand": true, "sourceOnDemandCloseAfterSeconds": 3},
			"stage":  map[string]any{"publish": true, "record": true},
		},
	})
	pprofAddr := "127.0.0.1:" + strconv.Itoa(freePort(t))
	p := launch(t, []string{"-c", writeConfig(t, string(cfg)), "--pprof-listen", pprofAddr})
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	t.Logf("server pid %d; segments %v, camera drop every %v, handover every %v, on-demand cycle %v, warm-up %v",
		p.cmd.Process.Pid, segment, camPeriod, handPeriod, odPeriod, warm)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := &soakState{t: t, base: p.base, ctx: ctx, outages: map[string][]interval{}, alive: map[*soakViewer]bool{},
		start: time.Now(), stopViewers: make(chan struct{})}
	publish := func() *testpeer.Publisher {
		// The path takes one publisher: the next may find the slot still
		// held for a moment after the previous one's DELETE (409).
		deadline := time.Now().Add(15 * time.Second)
		for {
			pctx, pcancel := context.WithTimeout(ctx, 20*time.Second)
			pub, err := testpeer.Publish(pctx, p.base+"/stage/whip", clip, testpeer.PublishOptions{})
			pcancel()
			if err == nil {
				return pub
			}
			var se *testpeer.StatusError
			if !errors.As(err, &se) || se.Code != http.StatusConflict || time.Now().After(deadline) {
				s.fail("publisher could not connect: %v", err)
				return nil
			}
			time.Sleep(100 * time.Millisecond)
		}
	}

	// Warm-up: a few of everything, then all leave for the baseline.
	pub := publish()
	if pub == nil {
		t.Fatal(s.failures)
	}
	s.mu.Lock()
	s.odOpen = time.Now().Add(warm)
	s.mu.Unlock()
	stopSched, schedDone := make(chan struct{}), make(chan struct{})
	go s.schedule(rand.New(rand.NewPCG(seed, 1)), stopSched, schedDone)
	time.Sleep(warm)
	close(stopSched)
	<-schedDone
	close(s.stopViewers)
	s.viewersWG.Wait()
	pub.Close()
	baseRSS, baseHeap, baseGor, baseFDs := quietState(t, p, odCam, 0)
	baseLive := liveHeapMB(t, "http://"+pprofAddr, filepath.Join(out, "heap-baseline.pb.gz"))
	t.Logf("baseline after a %v warm-up (%d joins), all gone: RSS %.1f MB, heap in use %.1f MB, live heap %.1f MB, goroutines %.0f, fds %.0f",
		warm, s.joined.Load(), baseRSS, baseHeap, baseLive, baseGor, baseFDs)
	s.mu.Lock()
	s.joins, s.failures = nil, s.failures[:0:0]
	s.mu.Unlock()
	s.joined.Store(0)
	s.left.Store(0)
	s.stopViewers = make(chan struct{})

	// The soak.
	s.start = time.Now()
	end := s.start.Add(dur)
	if pub = publish(); pub == nil {
		t.Fatal(s.failures)
	}
	var pubMu sync.Mutex
	var drops, handovers, odCycles, odCloses atomic.Int64
	var bg sync.WaitGroup
	sleepUntil := func(at time.Time) bool {
		select {
		case <-time.After(time.Until(at)):
			return true
		case <-ctx.Done():
			return false
		}
	}
	// The camera drops for 10-20 s every camPeriod.
	bg.Add(1)
	go func() {
		defer bg.Done()
		rng := rand.New(rand.NewPCG(seed, 2))
		for k := 0; ; k++ {
			at := s.start.Add(camPeriod*time.Duration(k) + camPeriod/2)
			outage := time.Duration(10+rng.IntN(11)) * time.Second
			if at.Add(outage+20*time.Second).After(end) || !sleepUntil(at) {
				return
			}
			before := s.aliveOn("yard")
			s.outageBegin("yard")
			cam.Stop()
			if !sleepUntil(time.Now().Add(outage)) {
				cam.Restart()
				return
			}
			cam.Restart()
			back := time.Now()
			// The outage lasts until the server has the camera again (its
			// reconnect backoff reaches up to 10 s): a join in between is
			// delayed by the outage, not slow.
			s.waitPathUp("yard", back.Add(soakRecoveryBound))
			s.outageEnd("yard", time.Now())
			drops.Add(1)
			worst, n := s.videoBack(before, back, "a camera drop")
			t.Logf("%6.1f s: camera dropped for %v; video back for %d viewers that stayed within %v",
				at.Sub(s.start).Seconds(), outage, n, worst.Round(time.Millisecond))
		}
	}()
	// The publisher hands over to a new one every handPeriod: the path
	// takes one publisher, so the old one leaves (DELETE) and the next
	// comes.
	bg.Add(1)
	go func() {
		defer bg.Done()
		for k := 0; ; k++ {
			at := s.start.Add(handPeriod*time.Duration(k) + handPeriod*3/4)
			if at.Add(15*time.Second).After(end) || !sleepUntil(at) {
				return
			}
			before := s.aliveOn("stage")
			pubMu.Lock()
			old := pub
			s.outageBegin("stage")
			t0 := time.Now()
			if code, err := old.Delete(); err != nil || code != http.StatusOK {
				s.fail("publisher DELETE: %d %v", code, err)
			}
			old.Close()
			pub = publish()
			back := time.Now()
			s.outageEnd("stage", back)
			pubMu.Unlock()
			if pub == nil {
				return
			}
			handovers.Add(1)
			worst, n := s.videoBack(before, back, "a publisher handover")
			t.Logf("%6.1f s: publisher handed over in %v; video back for %d viewers that stayed within %v",
				at.Sub(s.start).Seconds(), back.Sub(t0).Round(time.Millisecond), n, worst.Round(time.Millisecond))
		}
	}()
	// The on-demand path takes viewers for 60% of each cycle, then none:
	// its camera must close (3 s without readers) and open again.
	bg.Add(1)
	go func() {
		defer bg.Done()
		for k := 0; ; k++ {
			open := s.start.Add(odPeriod * time.Duration(k))
			closeAt := open.Add(odPeriod * 3 / 5)
			next := open.Add(odPeriod)
			if next.After(end) {
				return
			}
			s.mu.Lock()
			s.odOpen = closeAt
			s.mu.Unlock()
			opened := odCam.Opened()
			if !sleepUntil(next.Add(-time.Second)) {
				return
			}
			odCycles.Add(1)
			if odCam.Opened() == opened {
				s.fail("on-demand camera never opened during its window %d", k+1)
			}
			if odCam.Conns() == 0 {
				odCloses.Add(1)
			} else {
				s.fail("on-demand camera still has %d connections %v after its last viewer's window", odCam.Conns(), odPeriod*2/5)
			}
			t.Logf("%6.1f s: on-demand cycle %d: camera opened %d times in the window, closed after it: %v",
				open.Sub(s.start).Seconds(), k+1, odCam.Opened()-opened, odCam.Conns() == 0)
		}
	}()
	stopSched, schedDone = make(chan struct{}), make(chan struct{})
	go s.schedule(rand.New(rand.NewPCG(seed, 3)), stopSched, schedDone)

	cols := []string{"elapsed_s", "rss_mb", "heap_mb", "goroutines", "fds", "sessions_active", "viewers_alive",
		"joined", "left", "failed", "packets_dropped", "send_errors", "yard_reconnects",
		"first_frame_p50_ms", "first_frame_max_ms"}
	tab := &soakplot.Table{Columns: cols}
	// The first row is the baseline (everyone gone), the last the same
	// state at the end.
	_ = tab.Add(0, baseRSS, baseHeap, baseGor, baseFDs, 0, 0, 0, 0, 0, math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN())
	var maxRSS, maxGor, maxFDs float64
	sample := func(prev time.Time) {
		_, body := scrape(t, p.base+"/metrics")
		_, st, _ := p.get(t, "/api/status")
		sess, _ := st["sessions"].(map[string]any)
		active, _ := sess["active"].(float64)
		rss := metricValue(t, body, "process_resident_memory_bytes") / 1e6
		gor := metricValue(t, body, "go_goroutines")
		fds := metricValue(t, body, "process_open_fds")
		maxRSS, maxGor, maxFDs = max(maxRSS, rss), max(maxGor, gor), max(maxFDs, fds)
		s.mu.Lock()
		var window []soakJoin
		for _, j := range s.joins {
			if !j.firstAt.IsZero() && j.firstAt.After(prev) {
				window = append(window, j)
			}
		}
		for sv := range s.alive {
			if d := sv.v.FirstKeyframe(); d > 0 && sv.v.Joined.Add(d).After(prev) {
				window = append(window, soakJoin{path: sv.path, at: sv.v.Joined, firstAt: sv.v.Joined.Add(d)})
			}
		}
		alive, failed := len(s.alive), len(s.failures)
		s.mu.Unlock()
		var ffs []time.Duration
		for _, j := range window {
			d, _ := s.firstFrame(j)
			ffs = append(ffs, d)
		}
		p50, mx := math.NaN(), math.NaN()
		if len(ffs) > 0 {
			p50 = float64(percentileDur(ffs, 0.5).Milliseconds())
			mx = float64(slices.Max(ffs).Milliseconds())
		}
		_ = tab.Add(time.Since(s.start).Seconds(), rss, metricValue(t, body, "go_memstats_heap_inuse_bytes")/1e6, gor, fds,
			active, float64(alive), float64(s.joined.Load()), float64(s.left.Load()), float64(failed),
			metricValue(t, body, "icey_packets_dropped_total"), metricValue(t, body, "icey_media_send_errors_total"),
			metricValue(t, body, `icey_source_reconnects_total{path="yard"}`), p50, mx)
	}
	prev := s.start
	for next := s.start.Add(soakSampleEvery); !next.After(end); next = next.Add(soakSampleEvery) {
		time.Sleep(time.Until(next))
		select {
		case <-p.done:
			t.Fatalf("server exited with %d during the soak; stderr:\n%s", p.code, tail(p.stderr.String(), 4000))
		default:
		}
		sample(prev)
		prev = next
	}

	// Everyone leaves.
	close(stopSched)
	<-schedDone
	close(s.stopViewers)
	s.viewersWG.Wait()
	bg.Wait()
	pubMu.Lock()
	if pub != nil {
		pub.Close()
	}
	pubMu.Unlock()
	soakRows := len(tab.Rows)
	endRSS, endHeap, endGor, endFDs := quietState(t, p, odCam, baseGor)
	sample(prev)
	endLive := liveHeapMB(t, "http://"+pprofAddr, filepath.Join(out, "heap-end.pb.gz"))

	// Series, slopes and the figure.
	if err := tab.WriteCSVFile(filepath.Join(out, "soak.csv")); err != nil {
		t.Fatal(err)
	}
	if err := tab.PlotPNG(filepath.Join(out, "soak.png"), "elapsed_s", "elapsed (s); the first point is the baseline, the last after everyone left", []soakplot.Panel{
		{Title: "server memory", YLabel: "MB", Columns: []string{"rss_mb", "heap_mb"}},
		{Title: "server goroutines", YLabel: "count", Columns: []string{"goroutines"}},
		{Title: "server open file descriptors", YLabel: "count", Columns: []string{"fds"}},
		{Title: "sessions", YLabel: "count", Columns: []string{"sessions_active", "viewers_alive"}},
		{Title: "first frame (join to first keyframe, per 10 s window)", YLabel: "ms", Columns: []string{"first_frame_p50_ms", "first_frame_max_ms"}},
	}, 1000, 1500); err != nil {
		t.Fatal(err)
	}
	half := &soakplot.Table{Columns: cols, Rows: tab.Rows[1+(soakRows-1)/2 : soakRows]}
	slope := func(col string) float64 {
		sl, _, _ := soakplot.Fit(half.Column("elapsed_s"), half.Column(col))
		return sl * 3600
	}
	rssSlope, gorSlope, fdSlope := slope("rss_mb"), slope("goroutines"), slope("fds")
	halfHours := (half.Rows[len(half.Rows)-1][0] - half.Rows[0][0]) / 3600
	rssBound := max(soakRSSSlopeMBh, soakRSSGrowthMB/halfHours)

	// First frames.
	var normal, recovered []time.Duration
	normalBy := map[string][]time.Duration{}
	byPath := map[string]int{}
	var noFrameInOutage int
	for _, j := range s.joins {
		byPath[j.path]++
		if j.firstAt.IsZero() {
			noFrameInOutage++ // the others were reported as failures
			continue
		}
		d, hit := s.firstFrame(j)
		switch {
		case hit:
			recovered = append(recovered, d)
			if d > soakRecoveryBound {
				s.fail("a viewer of %s joined at %.1f s during an outage: first keyframe %v after the path was back (bound %v)",
					j.path, j.at.Sub(s.start).Seconds(), d.Round(time.Millisecond), soakRecoveryBound)
			}
		default:
			normal = append(normal, d)
			normalBy[j.path] = append(normalBy[j.path], d)
			if d > soakFirstFrameBound {
				s.fail("a viewer of %s joined at %.1f s: first keyframe after %v (bound %v)",
					j.path, j.at.Sub(s.start).Seconds(), d.Round(time.Millisecond), soakFirstFrameBound)
			}
		}
	}

	// A clean stop, then the recordings.
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM; stderr:\n%s", code, tail(p.stderr.String(), 4000))
	}
	parts, _ := filepath.Glob(filepath.Join(recDir, "*.part"))
	files, _ := filepath.Glob(filepath.Join(recDir, "*.mp4"))
	var yardFiles, stageFiles int
	var recSeconds, longest float64
	for _, f := range files {
		pr := checkMP4(t, f, 0, false)
		recSeconds += pr.Duration
		longest = max(longest, pr.Duration)
		switch {
		case strings.HasPrefix(filepath.Base(f), "yard-"):
			yardFiles++
		case strings.HasPrefix(filepath.Base(f), "stage-"):
			stageFiles++
		}
	}

	t.Logf("SUMMARY soak %v (%d samples every %v), seed %d", dur, soakRows-1, soakSampleEvery, seed)
	t.Logf("SUMMARY RSS MB: baseline %.1f, end %.1f, max %.1f; second-half slope %+.1f MB/h (bound %.0f MB/h); heap in use MB: baseline %.1f, end %.1f, second-half slope %+.1f MB/h; live heap after a forced GC: baseline %.1f MB, end %.1f MB (bound +%.0f MB)",
		baseRSS, endRSS, maxRSS, rssSlope, rssBound, baseHeap, endHeap, slope("heap_mb"), baseLive, endLive, soakLiveHeapMarginMB)
	t.Logf("SUMMARY goroutines: baseline %.0f, end %.0f, max %.0f; second-half slope %+.1f /h (bound: end <= baseline + %d)",
		baseGor, endGor, maxGor, gorSlope, soakGoroutineMargin)
	t.Logf("SUMMARY fds: baseline %.0f, end %.0f, max %.0f; second-half slope %+.1f /h (bound: end <= baseline + %d)",
		baseFDs, endFDs, maxFDs, fdSlope, soakFDMargin)
	t.Logf("SUMMARY first frame of %d joins with media flowing: p50 %v, p95 %v, max %v (bound %v)",
		len(normal), percentileDur(normal, 0.5).Round(time.Millisecond), percentileDur(normal, 0.95).Round(time.Millisecond),
		slices.Max(append(normal, 0)).Round(time.Millisecond), soakFirstFrameBound)
	var by []string
	for _, path := range []string{"main", "yard", "stage", "garage"} {
		l := normalBy[path]
		by = append(by, fmt.Sprintf("%s %v/%v", path, percentileDur(l, 0.5).Round(time.Millisecond), slices.Max(append(l, 0)).Round(time.Millisecond)))
	}
	t.Logf("SUMMARY first frame p50/max by path (garage: on demand, its first viewer opens the camera): %s", strings.Join(by, ", "))
	t.Logf("SUMMARY first frame of %d joins delayed by an outage, counted from the path's return: p50 %v, max %v (bound %v); %d left during an outage without a frame",
		len(recovered), percentileDur(recovered, 0.5).Round(time.Millisecond), slices.Max(append(recovered, 0)).Round(time.Millisecond),
		soakRecoveryBound, noFrameInOutage)
	t.Logf("SUMMARY joins %d (main %d, yard %d, stage %d, garage %d), left %d; camera drops %d, publisher handovers %d, on-demand cycles %d (closed %d times, camera opened %d times)",
		s.joined.Load(), byPath["main"], byPath["yard"], byPath["stage"], byPath["garage"], s.left.Load(),
		drops.Load(), handovers.Load(), odCycles.Load(), odCloses.Load(), odCam.Opened())
	last := tab.Rows[len(tab.Rows)-1]
	t.Logf("SUMMARY server counters: packets dropped %.0f, send errors %.0f, yard reconnects %.0f",
		last[tab.Index("packets_dropped")], last[tab.Index("send_errors")], last[tab.Index("yard_reconnects")])
	t.Logf("SUMMARY recordings: %d files (yard %d, stage %d, other %d), %.0f s in all, longest %.1f s (segment %v), all read by ffprobe; .part left: %d",
		len(files), yardFiles, stageFiles, len(files)-yardFiles-stageFiles, recSeconds, longest, segment, len(parts))
	t.Logf("SUMMARY series: %s and %s", filepath.Join(out, "soak.csv"), filepath.Join(out, "soak.png"))

	if endGor > baseGor+soakGoroutineMargin {
		t.Errorf("goroutines %v after everyone left, baseline %v (+%d allowed)", endGor, baseGor, soakGoroutineMargin)
	}
	if endFDs > baseFDs+soakFDMargin {
		t.Errorf("fds %v after everyone left, baseline %v (+%d allowed)", endFDs, baseFDs, soakFDMargin)
	}
	if endLive > baseLive+soakLiveHeapMarginMB {
		t.Errorf("live heap %.1f MB after everyone left, baseline %.1f MB (+%.0f MB allowed)", endLive, baseLive, soakLiveHeapMarginMB)
	}
	if rssSlope > rssBound {
		t.Errorf("RSS grows %.1f MB/h over the second half, bound %.0f MB/h", rssSlope, rssBound)
	}
	if drops.Load() < 2 || handovers.Load() < 2 || odCloses.Load() < 2 || odCam.Opened() < 2 {
		t.Errorf("the soak did not exercise enough: %d drops, %d handovers, %d on-demand closes, %d opens (want 2 each)",
			drops.Load(), handovers.Load(), odCloses.Load(), odCam.Opened())
	}
	if len(parts) != 0 {
		t.Errorf(".part files left after a clean stop: %v", parts)
	}
	if yardFiles < int(drops.Load())+1 || stageFiles < int(handovers.Load())+1 {
		t.Errorf("recordings: yard %d files for %d drops, stage %d for %d handovers", yardFiles, drops.Load(), stageFiles, handovers.Load())
	}
	for _, f := range s.failures {
		t.Error(f)
	}
}
