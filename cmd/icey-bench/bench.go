package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/url"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// result is one run's outcome; it is printed as a table and as one JSON
// line. Traffic figures (packets, bytes, loss, bitrate) cover the
// steady-state window; join latencies cover every connected viewer.
type result struct {
	Label     string  `json:"label,omitempty"`
	URL       string  `json:"url"`
	Time      string  `json:"time"`
	Viewers   int     `json:"viewers"`
	VideoOnly bool    `json:"video_only"`
	Ramp      float64 `json:"ramp_per_s"`

	Connected int            `json:"connected"`
	Failed    int            `json:"failed"`
	Rejected  int            `json:"rejected_503"` // part of failed
	Dropped   int            `json:"dropped"`      // connected, then lost before the end
	Errors    map[string]int `json:"errors,omitempty"`

	WindowS    float64 `json:"window_s"`
	Packets    int64   `json:"packets"`
	Bytes      int64   `json:"bytes"`
	Expected   int64   `json:"expected"`
	Lost       int64   `json:"lost"`
	LossPct    float64 `json:"loss_pct"`
	RunLossPct float64 `json:"run_loss_pct"` // from each viewer's first packet to the end

	// Gap accounting (gapTracker), window and whole run: a gap is a
	// sequence number a later packet skipped; it is recovered when the
	// packet arrives within 1 s (NACK + retransmission), unrecovered when
	// not. Duplicates are counted apart and never offset a loss.
	NACK              bool    `json:"nack"`
	RcvbufBytes       int64   `json:"rcvbuf_bytes,omitempty"` // per viewer socket, as granted (0: OS default, not set)
	Gaps              int64   `json:"gaps"`
	Unrecovered       int64   `json:"unrecovered"`
	GapPct            float64 `json:"gap_pct"`
	UnrecoveredPct    float64 `json:"unrecovered_pct"`
	RunGaps           int64   `json:"run_gaps"`
	RunRecovered      int64   `json:"run_recovered"`
	RunUnrecovered    int64   `json:"run_unrecovered"`
	RunDuplicates     int64   `json:"run_duplicates"`
	RunGapPct         float64 `json:"run_gap_pct"`
	RunUnrecoveredPct float64 `json:"run_unrecovered_pct"`
	MbpsPerViewer     float64 `json:"mbps_per_viewer"`
	MbpsTotal         float64 `json:"mbps_total"`

	FirstPacket dist `json:"join_first_packet"` // first video RTP packet
	FirstIDR    dist `json:"join_first_idr"`    // first packet of a keyframe
	NoIDR       int  `json:"no_idr"`            // connected viewers that never saw one

	// Kernel UDP drops in this network namespace over the whole run
	// (joins included): socket buffers that overflowed, on either side.
	UDPRcvbufErrors int64 `json:"udp_rcvbuf_errors"`
	UDPSndbufErrors int64 `json:"udp_sndbuf_errors"`

	Server    *serverResult `json:"server,omitempty"`
	Generator cpuResult     `json:"generator"`

	// Floor is set on a floor measurement (-floor): Server then holds the
	// ideal sender's figures.
	Floor *floorResult `json:"floor,omitempty"`
}

type cpuResult struct {
	CPUMs           float64 `json:"cpu_ms"`
	CPUPct          float64 `json:"cpu_pct"` // of one core, over the window
	CPUMsPerViewerS float64 `json:"cpu_ms_per_viewer_s"`
	CPUMsTotal      float64 `json:"cpu_ms_total,omitempty"` // whole run incl. joins
	RSSBaselineMB   float64 `json:"rss_baseline_mb,omitempty"`
	RSSMB           float64 `json:"rss_mb,omitempty"`
	RSSPerViewerMB  float64 `json:"rss_per_viewer_mb,omitempty"`
	// USPerPacket is the CPU time in the window divided by the RTP
	// packets the viewers received in it, in microseconds.
	USPerPacket      float64 `json:"us_per_packet,omitempty"`
	SampleErrorsSeen string  `json:"sample_error,omitempty"`
}

type serverResult struct {
	PID int `json:"pid"`
	cpuResult
}

// bench runs one load point: ramp, wait for connections, settle, measure
// the window, tear down. It always stops by itself: every phase is bounded.
func bench(ctx context.Context, o options, logw io.Writer) (*result, error) {
	var granted atomic.Int64
	api, err := newAPI(apiOptions{loopback: o.loopback, receiverReports: o.receiverReports, nack: o.nack, rcvbuf: o.rcvbuf, vp8Only: o.vp8Only}, &granted)
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(o.url) // validated by parseFlags
	c := &client{
		url:       u,
		token:     o.token,
		videoOnly: o.videoOnly,
		api:       api,
		http:      newHTTPClient(15 * time.Second),
		gather:    10 * time.Second,
	}
	defer c.http.CloseIdleConnections()

	res := &result{
		Label: o.label, URL: o.url, Time: time.Now().UTC().Format(time.RFC3339),
		Viewers: o.viewers, VideoOnly: o.videoOnly, Ramp: o.ramp,
	}
	var (
		baseline  procSample
		sampleErr error
	)
	if o.pid > 0 {
		if baseline, sampleErr = sampleProc(o.pid); sampleErr != nil {
			return nil, fmt.Errorf("sampling pid %d: %w", o.pid, sampleErr)
		}
	}
	selfStart := selfCPU()
	udpStart, udpErr := sampleUDPErrors()

	// Ramp: viewer i's POST starts at i/ramp seconds.
	viewers := make([]*viewer, o.viewers)
	var joins sync.WaitGroup
	start := time.Now()
	for i := range viewers {
		due := start.Add(time.Duration(float64(i) / o.ramp * float64(time.Second)))
		if !sleepUntil(ctx, due) {
			viewers = viewers[:i]
			break
		}
		v := newViewer(c)
		viewers[i] = v
		joins.Go(func() { _ = v.join(ctx) })
	}
	joins.Wait()

	// Wait for every viewer to connect or fail, within the deadline.
	deadline := time.NewTimer(o.connectTimeout)
	for _, v := range viewers {
		select {
		case <-v.settled:
		case <-deadline.C:
		case <-ctx.Done():
		}
	}
	deadline.Stop()
	for _, v := range viewers {
		v.fail(errNoConnect) // no-op for the settled ones
	}
	fmt.Fprintf(logw, "icey-bench: %s: %d viewers joined in %.1fs\n", o.label, len(viewers), time.Since(start).Seconds())
	sleepUntil(ctx, time.Now().Add(o.settleTime))

	// The steady-state window.
	before := make([]viewerSnap, len(viewers))
	for i, v := range viewers {
		before[i] = v.snap()
	}
	var srvBefore, srvAfter procSample
	if o.pid > 0 {
		srvBefore, sampleErr = sampleProc(o.pid)
	}
	selfBefore := selfCPU()
	wStart := time.Now()
	sleepUntil(ctx, wStart.Add(o.duration))
	window := time.Since(wStart)
	selfAfter := selfCPU()
	if o.pid > 0 && sampleErr == nil {
		srvAfter, sampleErr = sampleProc(o.pid)
	}
	after := make([]viewerSnap, len(viewers))
	for i, v := range viewers {
		after[i] = v.snap()
	}
	// The run's gaps are settled once the last ones had their chance to
	// be retransmitted.
	sleepUntil(ctx, time.Now().Add(recoverWithin+100*time.Millisecond))
	final := make([]viewerSnap, len(viewers))
	for i, v := range viewers {
		final[i] = v.snap()
	}

	// Gather per-viewer outcomes before tearing down.
	var firstPkt, firstIDR []time.Duration
	var runExpected, runLost int64
	var winGaps, runGaps gapCounts
	active := 0 // connected at the window start: the viewer-seconds divisor
	errs := map[string]int{}
	for i, v := range viewers {
		v.mu.Lock()
		connected, fp, fi, verr := v.connected, v.firstPacket, v.firstIDR, v.err
		v.mu.Unlock()
		if !connected {
			res.Failed++
			if errors.Is(verr, errRejected) {
				res.Rejected++
			}
			if verr != nil {
				errs[verr.Error()]++
			}
			continue
		}
		res.Connected++
		if before[i].connected && !before[i].ended {
			active++
		}
		if after[i].ended {
			res.Dropped++
		}
		if fp > 0 {
			firstPkt = append(firstPkt, fp)
		}
		if fi > 0 {
			firstIDR = append(firstIDR, fi)
		} else {
			res.NoIDR++
		}
		res.Packets += after[i].packets - before[i].packets
		res.Bytes += after[i].bytes - before[i].bytes
		res.Expected += after[i].expected - before[i].expected
		res.Lost += after[i].lost - before[i].lost
		runExpected += after[i].expected
		runLost += after[i].lost
		winGaps = winGaps.plus(after[i].gaps.minus(before[i].gaps))
		runGaps = runGaps.plus(final[i].gaps)
	}
	if len(errs) > 0 {
		res.Errors = errs
	}
	if udpEnd, err := sampleUDPErrors(); err == nil && udpErr == nil {
		res.UDPRcvbufErrors = udpEnd.rcvbuf - udpStart.rcvbuf
		res.UDPSndbufErrors = udpEnd.sndbuf - udpStart.sndbuf
	}
	res.Lost = max(res.Lost, 0)
	res.WindowS = round(window.Seconds(), 3)
	res.LossPct = pct(res.Lost, res.Expected)
	res.RunLossPct = pct(runLost, runExpected)
	res.NACK = o.nack
	res.RcvbufBytes = granted.Load()
	res.Gaps, res.Unrecovered = winGaps.gaps, winGaps.unrecovered
	res.GapPct, res.UnrecoveredPct = pct(winGaps.gaps, res.Expected), pct(winGaps.unrecovered, res.Expected)
	res.RunGaps, res.RunRecovered, res.RunUnrecovered, res.RunDuplicates = runGaps.gaps, runGaps.recovered, runGaps.unrecovered, runGaps.duplicates
	res.RunGapPct, res.RunUnrecoveredPct = pct(runGaps.gaps, runExpected), pct(runGaps.unrecovered, runExpected)
	res.MbpsTotal = round(float64(res.Bytes)*8/window.Seconds()/1e6, 3)
	if active > 0 {
		res.MbpsPerViewer = round(res.MbpsTotal/float64(active), 3)
	}
	res.FirstPacket = summarise(firstPkt)
	res.FirstIDR = summarise(firstIDR)

	viewerSeconds := float64(active) * window.Seconds()
	res.Generator = cpuUse(selfAfter-selfBefore, window, viewerSeconds, res.Packets)
	if o.pid > 0 {
		srv := &serverResult{PID: o.pid}
		if sampleErr != nil {
			srv.SampleErrorsSeen = sampleErr.Error()
		} else {
			srv.cpuResult = cpuUse(srvAfter.cpu-srvBefore.cpu, window, viewerSeconds, res.Packets)
			srv.RSSBaselineMB = round(float64(baseline.rss)/1e6, 2)
			srv.RSSMB = round(float64(srvAfter.rss)/1e6, 2)
			if res.Connected > 0 {
				srv.RSSPerViewerMB = round(float64(srvAfter.rss-baseline.rss)/1e6/float64(res.Connected), 3)
			}
		}
		res.Server = srv
	}

	// Tear down: DELETE every resource and close every PeerConnection, a
	// bounded number at a time, with a bounded context of its own so an
	// interrupted run still cleans up the server side.
	tctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	sem := make(chan struct{}, 16)
	var leaves sync.WaitGroup
	var delErrs sync.Map
	for _, v := range viewers {
		sem <- struct{}{}
		leaves.Go(func() {
			defer func() { <-sem }()
			if err := v.leave(tctx); err != nil {
				delErrs.Store(v, err)
			}
		})
	}
	leaves.Wait()
	n := 0
	delErrs.Range(func(_, _ any) bool { n++; return true })
	if n > 0 {
		fmt.Fprintf(logw, "icey-bench: %d viewers failed to leave cleanly\n", n)
	}
	res.Generator.CPUMsTotal = round(float64(selfCPU()-selfStart)/1e6, 1)
	return res, nil
}

// cpuUse turns CPU time over a window into the reported figures: share of
// a core, per viewer-second and per packet delivered.
func cpuUse(cpu, window time.Duration, viewerSeconds float64, packets int64) cpuResult {
	r := cpuResult{
		CPUMs:  round(float64(cpu)/1e6, 1),
		CPUPct: round(100*float64(cpu)/float64(window), 1),
	}
	if viewerSeconds > 0 {
		r.CPUMsPerViewerS = round(float64(cpu)/1e6/viewerSeconds, 3)
	}
	if packets > 0 {
		r.USPerPacket = round(float64(cpu)/1e3/float64(packets), 3)
	}
	return r
}

// sleepUntil waits for t or ctx; it reports false if ctx ended first.
func sleepUntil(ctx context.Context, t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-ctx.Done():
		return false
	}
}

func pct(part, whole int64) float64 {
	if whole <= 0 {
		return 0
	}
	return round(100*float64(part)/float64(whole), 3)
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}

// sortedKeys returns m's keys, most frequent first.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if m[keys[i]] != m[keys[j]] {
			return m[keys[i]] > m[keys[j]]
		}
		return keys[i] < keys[j]
	})
	return keys
}
