//go:build faults

package main

// Disk faults during recording (recordings.md "Safety"), on real
// filesystems: the server runs in a mount namespace of its own whose
// record dir is a small tmpfs, so the disk really fills (ENOSPC) or really
// turns read-only (EROFS) under it, for root and for the mapped root of
// `unshare -rn` alike. The test reads the files through /proc/<pid>/root.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// launchOnTmpfs starts the server like launch, in a private mount
// namespace where a tmpfs with options opts (e.g. "size=1m", "ro") is
// mounted on mnt before the server starts. The process is the server
// itself (unshare and sh exec), so p.cmd.Process.Pid names its namespace.
func launchOnTmpfs(t *testing.T, mnt, opts string, args []string, env ...string) *proc {
	t.Helper()
	testenv.RequireTool(t, "unshare")
	testenv.RequireTool(t, "mount")
	wrapper := filepath.Join(t.TempDir(), "on-tmpfs.sh")
	script := fmt.Sprintf("#!/bin/sh\nexec unshare -m --propagation private sh -c "+
		"'mount -t tmpfs -o \"$1\" tmpfs \"$2\" && shift 2 && exec \"$@\"' sh '%s' '%s' '%s' \"$@\"\n", opts, mnt, binPath)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	// launch execs binPath: point it at the wrapper for this one start
	// (tests of this package do not run in parallel).
	real := binPath
	binPath = wrapper
	defer func() { binPath = real }()
	return launch(t, args, env...)
}

// nsPath is file as the server (in its mount namespace) sees it.
func nsPath(p *proc, file string) string {
	return "/proc/" + strconv.Itoa(p.cmd.Process.Pid) + "/root" + file
}

// inServerNS runs a shell script in the server's mount namespace.
func inServerNS(t *testing.T, p *proc, script string) {
	t.Helper()
	nsenter := testenv.RequireTool(t, "nsenter")
	out, err := exec.Command(nsenter, "-t", strconv.Itoa(p.cmd.Process.Pid), "-m", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("in the server's mount namespace: %s: %v\n%s", script, err, out)
	}
}

// gapWatch measures the longest pause between a viewer's video packets.
type gapWatch struct {
	mu     sync.Mutex
	last   time.Time
	maxGap time.Duration
}

func (g *gapWatch) onVideo(_ *rtp.Packet, at time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.last.IsZero() && at.Sub(g.last) > g.maxGap {
		g.maxGap = at.Sub(g.last)
	}
	g.last = at
}

// gap is the longest pause so far, the current one included.
func (g *gapWatch) gap() time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	return max(g.maxGap, time.Since(g.last))
}

// reset starts a new measurement.
func (g *gapWatch) reset() {
	g.mu.Lock()
	g.maxGap = 0
	g.mu.Unlock()
}

// watchedViewer is a video-only viewer of path with a gapWatch.
func watchedViewer(t *testing.T, p *proc, path string) (*testpeer.Viewer, *gapWatch) {
	t.Helper()
	g := &gapWatch{}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/"+path+"/whep", testpeer.Options{VideoOnly: true, OnVideo: g.onVideo})
	if err != nil {
		t.Fatalf("viewer of %s: %v", path, err)
	}
	t.Cleanup(v.Close)
	if err := v.WaitVideo(50, 15*time.Second); err != nil {
		t.Fatalf("viewer of %s: %v", path, err)
	}
	return v, g
}

// recordingEvents collects the recording.* events of the SSE stream, so
// that none is lost while the test waits for another.
// failedOnceThroughRetry waits through a retry of the recorder (every 5 s)
// and checks that yard's failure was reported once and no recording started
// since event fi.
func failedOnceThroughRetry(t *testing.T, p *proc, evs *recordingEvents, fi int, while string) {
	t.Helper()
	time.Sleep(7 * time.Second)
	if n := evs.count("recording.failed", "yard", 0); n != 1 {
		t.Fatalf("%d recording.failed events %s, want 1", n, while)
	}
	if n := evs.count("recording.started", "yard", fi); n != 0 {
		t.Fatalf("%d recording.started events %s, want none", n, while)
	}
	if n := recordingFailures(t, p, "yard"); n != 1 {
		t.Fatalf("icey_recording_failures_total{path=yard} = %v, want 1", n)
	}
}

type recordingEvents struct {
	mu   sync.Mutex
	list []sseEvent
	at   []time.Time
}

func collectRecordingEvents(t *testing.T, p *proc) *recordingEvents {
	t.Helper()
	ch, stop := openSSE(t, p.base+"/api/events", "")
	t.Cleanup(stop)
	r := &recordingEvents{}
	go func() {
		for e := range ch {
			if strings.HasPrefix(e.Type, "recording.") {
				r.mu.Lock()
				r.list = append(r.list, e)
				r.at = append(r.at, time.Now())
				r.mu.Unlock()
			}
		}
	}()
	return r
}

// wait returns the first event of kind for path after the first skip
// events, and its index.
func (r *recordingEvents) wait(t *testing.T, kind, path string, skip int, d time.Duration) (sseEvent, int, time.Time) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		r.mu.Lock()
		for i := skip; i < len(r.list); i++ {
			if e := r.list[i]; e.Type == kind && e.Data["path"] == path {
				at := r.at[i]
				r.mu.Unlock()
				return e, i, at
			}
		}
		seen := fmt.Sprint(r.list)
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no %s event for %s within %s; recording events: %s", kind, path, d, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// count counts the events of kind for path from index from on.
func (r *recordingEvents) count(kind, path string, from int) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.list[min(from, len(r.list)):] {
		if e.Type == kind && e.Data["path"] == path {
			n++
		}
	}
	return n
}

// processFigures reads the server's goroutines and RSS from /metrics.
func processFigures(t *testing.T, p *proc) (goroutines int, rssMB float64) {
	t.Helper()
	_, body := scrape(t, p.base+"/metrics")
	return int(metricValue(t, body, "go_goroutines")), metricValue(t, body, "process_resident_memory_bytes") / (1 << 20)
}

func recordingFailures(t *testing.T, p *proc, path string) float64 {
	t.Helper()
	_, body := scrape(t, p.base+"/metrics")
	return metricValue(t, body, `icey_recording_failures_total{path="`+path+`"}`)
}

// A real full disk (a 1 MiB tmpfs) under a recording camera path: the
// file being written is finalized (a complete MP4 that ffprobe reads),
// recording.failed is emitted once, counted and logged; viewers of that
// path and of another path see no pause; once space is freed (the full
// file deleted through the API) recording resumes into a new file.
func TestFaultDiskFullDuringRecording(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")
	yard := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioOpus})
	lobby := rtsptest.Start(t, rtsptest.Options{Width: 352, Height: 288})
	dir := t.TempDir()
	cfg := fmt.Sprintf(`{"media":{"recordDir":%q},"paths":{"yard":{"source":%q,"record":true},"lobby":{"source":%q}}}`,
		dir, yard.URL("yard"), lobby.URL("lobby"))
	p := launchOnTmpfs(t, dir, "size=1m", []string{"-c", writeConfig(t, cfg)})
	p.waitFor(t, "/api/health", 200, 20*time.Second)
	evs := collectRecordingEvents(t, p)
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	_, gy := watchedViewer(t, p, "yard")
	vl, gl := watchedViewer(t, p, "lobby")
	g0, rss0 := processFigures(t, p)
	filling := time.Now()
	gy.reset()
	gl.reset()

	// The disk fills: the file is finalized, then the failure reported.
	failed, fi, failedAt := evs.wait(t, "recording.failed", "yard", 0, 120*time.Second)
	t.Logf("1 MiB tmpfs full after %.1f s of recording", time.Since(filling).Seconds())
	if msg, _ := failed.Data["error"].(string); !strings.Contains(msg, "no space left on device") {
		t.Fatalf("recording.failed %v: want the ENOSPC cause", failed.Data)
	}
	name, _ := failed.Data["name"].(string)
	fin, _, _ := evs.wait(t, "recording.finalized", "yard", 0, time.Second)
	if fin.Data["name"] != name || name == "" {
		t.Fatalf("recording.failed names %q, the finalized file is %v", name, fin.Data)
	}
	file := nsPath(p, filepath.Join(dir, name))
	st, err := os.Stat(file)
	if err != nil {
		t.Fatalf("the cut file is not finalized: %v", err)
	}
	if _, err := os.Stat(file + ".part"); err == nil {
		t.Fatalf("%s.part left beside the finalized file", name)
	}
	if st.Size() != int64(fin.Data["bytes"].(float64)) {
		t.Fatalf("%s is %d bytes, recording.finalized said %v", name, st.Size(), fin.Data["bytes"])
	}
	pr := checkMP4(t, file, 0, true)
	if want := fin.Data["durationSec"].(float64); pr.Duration < 2 || pr.Duration < want-0.5 || pr.Duration > want+0.5 {
		t.Fatalf("%s: ffprobe reads %.2f s, recording.finalized said %.2f s", name, pr.Duration, want)
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(nsPath(p, dir), &fs); err != nil {
		t.Fatal(err)
	}
	t.Logf("finalized %s: %d bytes, ffprobe %.2f s (H.264 + Opus), recording.finalized %.2f s; tmpfs free %d KiB",
		name, st.Size(), pr.Duration, fin.Data["durationSec"], fs.Bavail*uint64(fs.Bsize)>>10)
	if !strings.Contains(p.stderr.String(), "recording failed; retrying") || !strings.Contains(p.stderr.String(), "no space left on device") {
		t.Fatalf("the failure is not logged:\n%s", p.stderr)
	}

	// Still full through a retry (every 5 s; the retry's file gets its
	// init segment but no fragment): no new event, one failure.
	failedOnceThroughRetry(t, p, evs, fi, "while the disk stays full")
	if s := statusPaths(t, p); s["yard"]["recording"] == true || s["yard"]["state"] != "up" {
		t.Fatalf("yard while the disk is full: %v", s["yard"])
	}

	// Space returns: recording resumes into a new file.
	req, _ := http.NewRequest("DELETE", p.base+"/api/recordings/yard/"+name, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE %s: %d", name, resp.StatusCode)
	}
	freed := time.Now()
	started, _, startedAt := evs.wait(t, "recording.started", "yard", fi+1, 20*time.Second)
	next, _ := started.Data["name"].(string)
	var grewAt time.Time
	waitRecordings(t, p, "?path=yard", 20*time.Second, func(l []recording) bool {
		for _, r := range l {
			if r.Name == next && r.Bytes > 100<<10 {
				grewAt = time.Now()
				return true
			}
		}
		return false
	})
	t.Logf("space freed → recording.started %.1f s later (retry every 5 s), %s past 100 KiB %.1f s later",
		startedAt.Sub(freed).Seconds(), next, grewAt.Sub(freed).Seconds())
	if s := statusPaths(t, p); s["yard"]["recording"] != true {
		t.Fatalf("yard after recovery: %v", s["yard"])
	}

	// Viewers never noticed.
	outage := grewAt.Sub(failedAt)
	gapY, gapL := gy.gap(), gl.gap()
	g1, rss1 := processFigures(t, p)
	t.Logf("viewers over %.1f s of filling + %.1f s of outage: longest video pause yard %v, lobby %v; lobby packets %d; goroutines %d -> %d; RSS %.0f -> %.0f MB",
		failedAt.Sub(filling).Seconds(), outage.Seconds(), gapY.Round(time.Millisecond), gapL.Round(time.Millisecond),
		vl.VideoPackets.Load(), g0, g1, rss0, rss1)
	if gapY > 2*time.Second || gapL > 2*time.Second {
		t.Fatalf("a viewer paused: longest video gap yard %v, lobby %v", gapY, gapL)
	}
	if g1 > g0+20 {
		t.Fatalf("goroutines %d -> %d across the outage", g0, g1)
	}
}

// healthComponent is a component's status in the detailed health view.
func healthComponent(t *testing.T, p *proc, name string) any {
	t.Helper()
	_, m, body := p.get(t, "/api/health?detailed=true")
	comps, ok := m["components"].(map[string]any)
	if !ok {
		t.Fatalf("detailed health: %s", body)
	}
	return comps[name]
}

// An unwritable record dir (a read-only tmpfs; root ignores permission
// bits, a read-only filesystem it does not): at startup it fails the
// recordings check in record mode (the start fails) and warns for a
// record: true path, which still serves viewers; during recording (the directory turns
// read-only under the server) recording fails cleanly — the file written
// so far stays readable, recording.failed once, viewers unaffected — and
// recording resumes, and the cut file is finalized, once it is writable.
func TestFaultUnwritableRecordDir(t *testing.T) {
	testenv.RequireTool(t, "ffprobe")

	t.Run("startup/record mode", func(t *testing.T) {
		// Nothing else can work in record mode: the failed check stops
		// the start (exit 4, as every failed startup check), naming the
		// directory and the cause.
		dir := t.TempDir()
		p := launchOnTmpfs(t, dir, "ro,size=1m", []string{"--mode", "record", "--record-dir", dir})
		code := p.wait(t, 20*time.Second)
		out := p.stderr.String()
		if code != 4 || !strings.Contains(out, "preflight failed: recordings: record dir "+dir+" is not writable") ||
			!strings.Contains(out, "read-only file system") {
			t.Fatalf("exit %d, want 4 with the failed recordings check; stderr:\n%s", code, out)
		}
		t.Logf("record mode, read-only dir: exit %d, %s", code, strings.TrimSpace(out))
	})

	t.Run("startup/record path", func(t *testing.T) {
		cam := rtsptest.Start(t, rtsptest.Options{})
		dir := t.TempDir()
		cfg := fmt.Sprintf(`{"media":{"recordDir":%q},"paths":{"yard":{"source":%q,"record":true}}}`, dir, cam.URL("yard"))
		p := launchOnTmpfs(t, dir, "ro,size=1m", []string{"-c", writeConfig(t, cfg)})
		m := p.waitFor(t, "/api/ready", 200, 30*time.Second)
		rec := checkByName(m, "recordings")
		detail, _ := rec["detail"].(string)
		if rec["result"] != "warn" || !strings.Contains(detail, "not writable") {
			t.Fatalf("recordings check %v", rec)
		}
		v, g := watchedViewer(t, p, "yard")
		g.reset()
		deadline := time.Now().Add(20 * time.Second)
		for recordingFailures(t, p, "yard") < 1 {
			if time.Now().After(deadline) {
				t.Fatalf("no recording failure counted; stderr:\n%s", p.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(7 * time.Second) // through a retry
		if n := recordingFailures(t, p, "yard"); n != 1 {
			t.Fatalf("icey_recording_failures_total{path=yard} = %v after a retry, want 1", n)
		}
		if !strings.Contains(p.stderr.String(), "recording failed; retrying") || !strings.Contains(p.stderr.String(), "read-only file system") {
			t.Fatalf("the failure is not logged:\n%s", p.stderr)
		}
		if s := statusPaths(t, p)["yard"]; s["recording"] == true || s["state"] != "up" {
			t.Fatalf("yard %v", s)
		}
		if h := healthComponent(t, p, "recordings"); h != "unhealthy" {
			t.Fatalf("detailed health recordings: %v", h)
		}
		before := v.VideoPackets.Load()
		if err := v.WaitVideo(before+50, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		t.Logf("record path, read-only dir: ready 200, recordings check warn %q; 1 failure counted; viewer longest pause %v",
			detail, g.gap().Round(time.Millisecond))
		if g.gap() > 2*time.Second {
			t.Fatalf("the viewer paused %v", g.gap())
		}
	})

	t.Run("during recording", func(t *testing.T) {
		testenv.RequireTool(t, "nsenter")
		yard := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioOpus})
		lobby := rtsptest.Start(t, rtsptest.Options{Width: 352, Height: 288})
		dir := t.TempDir()
		cfg := fmt.Sprintf(`{"media":{"recordDir":%q},"recordings":{"segmentSeconds":2},"paths":{"yard":{"source":%q,"record":true},"lobby":{"source":%q}}}`,
			dir, yard.URL("yard"), lobby.URL("lobby"))
		p := launchOnTmpfs(t, dir, "size=64m", []string{"-c", writeConfig(t, cfg)})
		p.waitFor(t, "/api/health", 200, 20*time.Second)
		evs := collectRecordingEvents(t, p)
		p.waitFor(t, "/api/ready", 200, 30*time.Second)
		_, gy := watchedViewer(t, p, "yard")
		_, gl := watchedViewer(t, p, "lobby")
		waitRecordings(t, p, "?path=yard", 20*time.Second, func(l []recording) bool { return len(complete(l)) >= 1 })
		g0, rss0 := processFigures(t, p)
		gy.reset()
		gl.reset()

		// The directory turns read-only: a read-only bind mount over it
		// (the open file keeps its writable mount, as a remount of a
		// busy filesystem is refused; every new file and rename sees the
		// read-only one).
		inServerNS(t, p, fmt.Sprintf("mount --bind '%s' '%s' && mount -o remount,bind,ro '%s'", dir, dir, dir))
		readOnly := time.Now()
		failed, fi, failedAt := evs.wait(t, "recording.failed", "yard", 0, 20*time.Second)
		msg, _ := failed.Data["error"].(string)
		name, _ := failed.Data["name"].(string)
		if !strings.Contains(msg, "read-only file system") || name == "" {
			t.Fatalf("recording.failed %v", failed.Data)
		}
		t.Logf("dir read-only → recording.failed after %.1f s: %s", failedAt.Sub(readOnly).Seconds(), msg)
		// The cut file keeps what was recorded: readable up to its end.
		part := nsPath(p, filepath.Join(dir, name)) + ".part"
		pr := checkMP4(t, part, 0, true)
		if pr.Duration < 1.5 {
			t.Fatalf("the cut file %s holds %.2f s", name, pr.Duration)
		}
		if h := healthComponent(t, p, "recordings"); h != "unhealthy" {
			t.Fatalf("detailed health recordings while read-only: %v", h)
		}
		failedOnceThroughRetry(t, p, evs, fi, "while read-only")

		// Writable again: recording resumes, the cut file is finalized.
		inServerNS(t, p, fmt.Sprintf("umount '%s'", dir))
		writable := time.Now()
		started, _, startedAt := evs.wait(t, "recording.started", "yard", fi+1, 20*time.Second)
		next, _ := started.Data["name"].(string)
		fin, _, finAt := evs.wait(t, "recording.finalized", "yard", fi+1, 20*time.Second)
		if fin.Data["name"] != name {
			t.Fatalf("first recording.finalized after recovery is %v, want the cut file %s", fin.Data, name)
		}
		t.Logf("writable again → recording.started %.1f s later (%s), the cut file finalized %.1f s later (%.2f s, %v bytes)",
			startedAt.Sub(writable).Seconds(), next, finAt.Sub(writable).Seconds(), fin.Data["durationSec"], fin.Data["bytes"])
		list := waitRecordings(t, p, "?path=yard", 20*time.Second, func(l []recording) bool {
			var cut, resumed bool
			for _, r := range l {
				cut = cut || r.Name == name && r.Complete
				resumed = resumed || r.Name == next && r.Complete
			}
			return cut && resumed
		})
		for _, r := range list {
			if r.Name == name || r.Name == next {
				checkMP4(t, nsPath(p, filepath.Join(dir, r.Name)), 0, true)
			}
		}
		gapY, gapL := gy.gap(), gl.gap()
		g1, rss1 := processFigures(t, p)
		t.Logf("viewers over %.1f s read-only: longest video pause yard %v, lobby %v; goroutines %d -> %d; RSS %.0f -> %.0f MB",
			writable.Sub(readOnly).Seconds(), gapY.Round(time.Millisecond), gapL.Round(time.Millisecond), g0, g1, rss0, rss1)
		if gapY > 2*time.Second || gapL > 2*time.Second {
			t.Fatalf("a viewer paused: yard %v, lobby %v", gapY, gapL)
		}
		if g1 > g0+20 {
			t.Fatalf("goroutines %d -> %d", g0, g1)
		}
	})
}
