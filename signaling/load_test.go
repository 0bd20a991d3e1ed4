package signaling

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// TestLoad measures the server side of N viewers (default 50): the pion
// viewers run in a child process (this test binary re-executed), so the
// parent's CPU time is the server's: hub fan-out, SRTP, interceptors, ICE.
// Opt-in: ICEY_SIGNALING_LOAD=1 [ICEY_SIGNALING_LOAD_N=50] go test -run TestLoad -v
func TestLoad(t *testing.T) {
	if os.Getenv("ICEY_SIGNALING_LOAD") == "" {
		t.Skip("set ICEY_SIGNALING_LOAD=1 to run")
	}
	n := 50
	if v, err := strconv.Atoi(os.Getenv("ICEY_SIGNALING_LOAD_N")); err == nil && v > 0 {
		n = v
	}
	const window = 10 * time.Second
	c := makeClip(t, "1280x720", "2M")
	// Every viewer comes from 127.0.0.1 within a second: lift the pending
	// limits (per client 8, total 64 by default) that a real crowd spreads.
	h := newHarness(t, c, Config{MaxPending: n, MaxPendingPerClient: n}, nil)
	time.Sleep(time.Second)

	idle0 := cpuSelf()
	time.Sleep(window)
	idle := cpuSelf() - idle0

	cmd := exec.Command(os.Args[0], "-test.run", "^TestLoadClients$", "-test.v")
	cmd.Env = append(os.Environ(), "ICEY_LOAD_URL="+h.srv.URL, fmt.Sprintf("ICEY_LOAD_N=%d", n),
		fmt.Sprintf("ICEY_LOAD_SECONDS=%d", int(window/time.Second)+15))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(out)
	var report []string
	for sc.Scan() {
		line := sc.Text()
		report = append(report, line)
		if line == "ALL CONNECTED" {
			break
		}
	}
	waitFor(t, "all active", 30*time.Second, func() bool { a, _ := h.m.Counts(); return a == int64(n) })
	time.Sleep(2 * time.Second) // past the cached-GOP bursts
	busy0, bytes0 := cpuSelf(), h.st.Stats().BytesIn
	time.Sleep(window)
	busy := cpuSelf() - busy0
	mbps := float64(h.st.Stats().BytesIn-bytes0) * 8 / window.Seconds() / 1e6
	rss := rssKB()
	for sc.Scan() {
		report = append(report, sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("client process: %v\n%s", err, strings.Join(report, "\n"))
	}
	child := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var drops uint64
	for _, s := range h.m.Sessions() {
		drops += s.Drops
	}
	t.Logf("stream %.2f Mb/s; server CPU over %v: idle (source only) %.1f%%, %d viewers %.1f%% of one core (%.2f%% per viewer); RSS %d MiB; hub drops %d",
		mbps, window, pct(idle, window), n, pct(busy, window), (pct(busy, window)-pct(idle, window))/float64(n), rss/1024, drops)
	t.Logf("client process CPU (whole run): %v", child.Round(time.Millisecond))
	for _, l := range report {
		if strings.HasPrefix(l, "RESULT") {
			t.Log(l)
		}
	}
}

// TestLoadClients is TestLoad's child: N pion viewers against ICEY_LOAD_URL.
func TestLoadClients(t *testing.T) {
	url := os.Getenv("ICEY_LOAD_URL")
	if url == "" {
		t.Skip("helper process for TestLoad")
	}
	n, _ := strconv.Atoi(os.Getenv("ICEY_LOAD_N"))
	secs, _ := strconv.Atoi(os.Getenv("ICEY_LOAD_SECONDS"))
	h := &harness{t: t, srv: nil, client: &http.Client{Timeout: 30 * time.Second}}
	h.baseURL = url
	viewers := make([]*testViewer, n)
	for i := range viewers {
		v, err := tryViewer(t, h, webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio)
		if err != nil {
			t.Fatal(err)
		}
		viewers[i] = v
	}
	for _, v := range viewers {
		waitChan(t, "connected", v.connected, 30*time.Second)
	}
	fmt.Println("ALL CONNECTED")
	start := make([]int64, n)
	for i, v := range viewers {
		start[i] = v.gotFrames.Load()
	}
	time.Sleep(time.Duration(secs) * time.Second)
	minFPS, maxFPS := 1e9, 0.0
	for i, v := range viewers {
		fps := float64(v.gotFrames.Load()-start[i]) / float64(secs)
		minFPS, maxFPS = min(minFPS, fps), max(maxFPS, fps)
	}
	fmt.Printf("RESULT %d viewers: per-viewer fps min %.1f max %.1f\n", n, minFPS, maxFPS)
	for _, v := range viewers {
		v.close()
	}
}

func cpuSelf() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func pct(d, over time.Duration) float64 { return 100 * float64(d) / float64(over) }

func rssKB() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb
		}
	}
	return 0
}
