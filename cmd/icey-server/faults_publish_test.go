//go:build faults

package main

// Publisher faults on the binary (issue #18): a WHIP publisher that
// vanishes without a word (its process frozen, then killed: no WHIP
// DELETE, no DTLS close alert, no RTCP BYE), and a publisher that sends
// audio only. The viewers are WHEP viewers and a Symple viewer in a call,
// as a browser on the web UI would be.
//
// The vanishing peers run in a child process: the test binary re-executed
// with faultChildEnv set (see init below), so that SIGSTOP freezes every
// socket of the peer at once, as a machine that lost power would.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/oggwriter"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// The child process's settings (environment, not flags: the test binary's
// flag parsing must not see them).
const (
	faultChildEnv = "FAULT_CHILD_MODE" // "publisher" or "viewers"
	faultURLEnv   = "FAULT_CHILD_URL"  // WHIP or WHEP endpoint
	faultClipEnv  = "FAULT_CHILD_CLIP" // publisher: the clip as JSON
	faultNEnv     = "FAULT_CHILD_N"    // viewers: how many
)

// init runs the child's job instead of the tests when the test binary was
// re-executed as a fault child (before TestMain builds the server).
func init() {
	if mode := os.Getenv(faultChildEnv); mode != "" {
		os.Exit(runFaultChild(mode))
	}
}

// runFaultChild connects the peers, prints "ready" on stdout once they
// receive (viewers) or send (publisher) media, and then runs until its
// stdin closes (the parent died) or it is killed.
func runFaultChild(mode string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	url := os.Getenv(faultURLEnv)
	switch mode {
	case "publisher":
		b, err := os.ReadFile(os.Getenv(faultClipEnv))
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		var clip testpeer.Clip
		if err := json.Unmarshal(b, &clip); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		pub, err := testpeer.Publish(ctx, url, &clip, testpeer.PublishOptions{Timeout: 30 * time.Second})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		for pub.FramesSent.Load() < 10 {
			time.Sleep(10 * time.Millisecond)
		}
		fmt.Printf("ready %s\n", pub.Location())
	case "viewers":
		n, _ := strconv.Atoi(os.Getenv(faultNEnv))
		var wg sync.WaitGroup
		var failed atomic.Int32
		for range n {
			wg.Go(func() {
				v, err := testpeer.Connect(ctx, url, testpeer.Options{VideoOnly: true, Timeout: 30 * time.Second})
				if err == nil {
					err = v.WaitVideo(30, 20*time.Second)
				}
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					failed.Add(1)
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			return 1
		}
		fmt.Println("ready")
	default:
		fmt.Fprintf(os.Stderr, "unknown fault child mode %q\n", mode)
		return 2
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	return 0
}

// faultChild is a running child peer process.
type faultChild struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	out   string // its "ready" line
	err   *syncBuffer
	done  chan struct{}
}

// startFaultChild re-executes the test binary as a child peer and waits
// for its "ready" line. The child is killed at cleanup.
func startFaultChild(t *testing.T, mode string, env ...string) *faultChild {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), append([]string{faultChildEnv + "=" + mode}, env...)...)
	// A frozen child outlives a closed stdin: the kernel kills it if the
	// test binary dies before its cleanup.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	c := &faultChild{cmd: cmd, err: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = c.err
	var err error
	if c.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "ready") {
				ready <- sc.Text()
			}
		}
	}()
	go func() { _ = cmd.Wait(); close(c.done) }()
	t.Cleanup(c.kill)
	select {
	case c.out = <-ready:
	case <-c.done:
		t.Fatalf("fault child %s exited: %s", mode, c.err)
	case <-time.After(60 * time.Second):
		t.Fatalf("fault child %s not ready in 60 s: %s", mode, c.err)
	}
	return c
}

// freeze stops the process: its sockets stay open and nothing leaves them.
func (c *faultChild) freeze(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
}

// kill kills the (possibly frozen) process and waits for it.
func (c *faultChild) kill() {
	select {
	case <-c.done:
		return
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.done
}

// writeClip stores clip as JSON for a child publisher.
func writeClip(t *testing.T, clip *testpeer.Clip) string {
	t.Helper()
	b, err := json.Marshal(clip)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "clip.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// serverGoroutines is go_goroutines from the server's /metrics.
func serverGoroutines(t *testing.T, p *proc) float64 {
	t.Helper()
	_, m := scrape(t, p.base+"/metrics")
	return metricValue(t, m, "go_goroutines")
}

// activeSessions is /api/status sessions.active.
func activeSessions(t *testing.T, p *proc) int {
	t.Helper()
	_, st, body := p.get(t, "/api/status")
	s, ok := st["sessions"].(map[string]any)
	if !ok {
		t.Fatalf("no sessions in status: %s", body)
	}
	return int(s["active"].(float64))
}

// waitSettled polls until cond holds or d passes; it returns how long it
// took and whether cond held.
func waitSettled(d time.Duration, cond func() bool) (time.Duration, bool) {
	start := time.Now()
	for {
		if cond() {
			return time.Since(start), true
		}
		if time.Since(start) > d {
			return time.Since(start), false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGoroutines waits until the server's goroutines are back to at most
// base+slack and returns the last count.
func waitGoroutines(t *testing.T, p *proc, base, slack float64, d time.Duration) float64 {
	t.Helper()
	var n float64
	if _, ok := waitSettled(d, func() bool { n = serverGoroutines(t, p); return n <= base+slack }); !ok {
		_, _, stacks := p.get(t, "/debug/pprof/goroutine?debug=1")
		t.Fatalf("server goroutines %v, baseline %v (+%v allowed) after %s:\n%.4000s", n, base, slack, d, stacks)
	}
	return n
}

// endedMetrics returns the icey_sessions_ended_total lines of a scrape.
func endedMetrics(t *testing.T, p *proc) string {
	t.Helper()
	_, m := scrape(t, p.base+"/metrics")
	var out []string
	for _, l := range strings.Split(m, "\n") {
		if strings.HasPrefix(l, "icey_sessions_ended_total{") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "; ")
}

// TestFaultPublisherVanishes: a WHIP publisher (a child process) is frozen
// without a word while two WHEP viewers and a Symple viewer watch. The
// server notices within its ICE failure timeout: the path goes back to
// waiting-publisher, the Symple viewer is told (icey:state), the viewers'
// sessions stay, nothing leaks; a new publisher takes the path and the
// same viewers, and a new one, get video again.
func TestFaultPublisherVanishes(t *testing.T) {
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "320x240"})
	p := launch(t, []string{"--mode", "relay"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	baseG := serverGoroutines(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()

	// Viewers first: they wait for the publisher.
	var whep []*testpeer.Viewer
	for range 2 {
		v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer v.Close()
		whep = append(whep, v)
	}
	sc := mustSymDial(t, p)
	sc.mustLogin("watcher", "")
	sv := sympleCall(t, sc)

	child := startFaultChild(t, "publisher", faultURLEnv+"="+p.base+"/whip", faultClipEnv+"="+writeClip(t, clip))
	for _, v := range whep {
		if err := v.WaitVideo(60, 15*time.Second); err != nil {
			t.Fatalf("WHEP viewer got nothing from the publisher: %v", err)
		}
	}
	sv.waitVideo(t, 60, 15*time.Second)
	if s := statusPaths(t, p)["main"]; s["state"] != "publishing" || s["publisher"] != true {
		t.Fatalf("while publishing: %v", s)
	}
	if n := activeSessions(t, p); n != 4 {
		t.Fatalf("sessions.active %d while publishing, want 4 (2 WHEP + 1 Symple viewer + the publisher)", n)
	}
	liveG := serverGoroutines(t, p)

	// The publisher's machine vanishes: nothing leaves its sockets again.
	symFrom := 0
	sc.mu.Lock()
	symFrom = len(sc.frames)
	sc.mu.Unlock()
	frozen := time.Now()
	child.freeze(t)
	// The server's ICE timeouts (signaling/engine.go) fail a silent peer
	// 5 s (disconnected) + 15 s (failed) after its last packet: noticed
	// within 30 s, checks and polling included.
	detect, ok := waitSettled(30*time.Second, func() bool {
		return statusPaths(t, p)["main"]["state"] == "waiting-publisher"
	})
	if !ok {
		t.Fatalf("path still %v 30 s after the publisher vanished", statusPaths(t, p)["main"])
	}
	told, err := sc.waitFrame(&symFrom, 10*time.Second, func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["subtype"] == "icey:state" && d["state"] == "waiting-publisher"
	})
	if err != nil {
		t.Fatalf("the Symple viewer was never told the publisher left: %v", err)
	}
	toldAfter := told["_arrivedAt"].(time.Time).Sub(frozen)
	lastVideo := [2]uint64{whep[0].VideoPackets.Load(), whep[1].VideoPackets.Load()}
	child.kill()
	if s := statusPaths(t, p)["main"]; s["publisher"] != false {
		t.Fatalf("after the publisher vanished: %v", s)
	}
	if n := activeSessions(t, p); n != 3 {
		t.Fatalf("sessions.active %d after the publisher vanished, want 3 (the viewers stay)", n)
	}
	ended := endedMetrics(t, p)
	goneG := serverGoroutines(t, p)
	if !strings.Contains(ended, `role="publisher"`) {
		t.Fatalf("no publisher session end counted: %s", ended)
	}
	if sv.closed.Load() {
		t.Fatal("the Symple viewer's call ended with the publisher")
	}
	t.Logf("publisher frozen -> path waiting-publisher after %s, Symple viewer told (icey:state) after %s; sessions 4 -> 3; server goroutines %v -> %v; ended: %s",
		detect.Round(100*time.Millisecond), toldAfter.Round(10*time.Millisecond), liveG, goneG, ended)

	// A new publisher takes the path: the same sessions get video again,
	// and so does a new viewer.
	taken := time.Now()
	pub2, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatalf("a new publisher could not take the path: %v", err)
	}
	for i, v := range whep {
		if err := v.WaitVideo(lastVideo[i]+60, 15*time.Second); err != nil {
			t.Fatalf("WHEP viewer %d got no video from the new publisher: %v", i, err)
		}
	}
	back := time.Since(taken)
	sv.waitVideo(t, 60, 15*time.Second)
	if _, err := sc.waitFrame(&symFrom, 10*time.Second, func(m map[string]any) bool {
		d, _ := m["data"].(map[string]any)
		return m["subtype"] == "icey:state" && d["state"] == "publishing"
	}); err != nil {
		t.Fatalf("the Symple viewer was never told of the new publisher: %v", err)
	}
	nv, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := nv.WaitFrames(30, 15*time.Second); err != nil {
		t.Fatalf("a new viewer got no frames from the new publisher: %v", err)
	}
	if s := statusPaths(t, p)["main"]; s["state"] != "publishing" || s["viewers"] != float64(4) {
		t.Fatalf("after the new publisher: %v", s)
	}
	t.Logf("new publisher -> the same WHEP sessions receive video after %s", back.Round(10*time.Millisecond))

	// Everyone leaves: nothing left behind.
	nv.Close()
	pub2.Close()
	for _, v := range whep {
		v.Close()
	}
	_ = sc.send(map[string]any{"type": "message", "subtype": "call:hangup", "to": "icey|server", "data": map[string]any{"reason": "hangup"}})
	_ = sc.ws.Close()
	_ = sv.pc.Close()
	if d, ok := waitSettled(30*time.Second, func() bool { return activeSessions(t, p) == 0 }); !ok {
		t.Fatalf("sessions.active %d 30 s after everyone left", activeSessions(t, p))
	} else {
		t.Logf("all sessions gone %s after everyone left", d.Round(100*time.Millisecond))
	}
	endG := waitGoroutines(t, p, baseG, 3, 30*time.Second)
	t.Logf("server goroutines: baseline %v, after the vanished publisher, its successor and every viewer left %v", baseG, endG)
}

// audioViewer is a WHEP viewer (pion, loopback) that writes the Opus it
// receives to an Ogg file and counts video packets, so a test can decode
// the audio with ffmpeg.
type audioViewer struct {
	pc       *webrtc.PeerConnection
	location string
	ogg      *oggwriter.OggWriter
	file     string
	mu       sync.Mutex
	audio    atomic.Uint64
	video    atomic.Uint64
	mime     atomic.Value
	wg       sync.WaitGroup
	closed   atomic.Bool
	state    atomic.Value
}

func connectAudioViewer(ctx context.Context, t *testing.T, whepURL string) *audioViewer {
	t.Helper()
	pc, err := testpeer.NewPeerConnection()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "audio.ogg")
	ogg, err := oggwriter.New(file, 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	a := &audioViewer{pc: pc, ogg: ogg, file: file}
	a.state.Store(webrtc.PeerConnectionStateNew)
	connected := make(chan struct{})
	var once sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		a.state.Store(s)
		if s == webrtc.PeerConnectionStateConnected {
			once.Do(func() { close(connected) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		a.mu.Lock()
		if a.closed.Load() {
			a.mu.Unlock()
			return
		}
		a.wg.Add(1)
		a.mu.Unlock()
		defer a.wg.Done()
		if tr.Kind() == webrtc.RTPCodecTypeAudio {
			a.mime.Store(tr.Codec().MimeType)
		}
		for {
			pkt, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			if tr.Kind() == webrtc.RTPCodecTypeVideo {
				a.video.Add(1)
				continue
			}
			a.mu.Lock()
			if !a.closed.Load() {
				_ = a.ogg.WriteRTP(pkt)
			}
			a.mu.Unlock()
			a.audio.Add(1)
		}
	})
	offer, err := testpeer.RecvOffer(pc)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, whepURL, strings.NewReader(offer))
	req.Header.Set("Content-Type", "application/sdp")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("WHEP POST: %d %s", resp.StatusCode, body)
	}
	if u, err := resp.Request.URL.Parse(resp.Header.Get("Location")); err == nil {
		a.location = u.String()
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-connected:
	case <-time.After(20 * time.Second):
		t.Fatalf("audio viewer not connected (state %v)", a.state.Load())
	}
	t.Cleanup(a.close)
	return a
}

// finish closes the Ogg file (the audio received so far) for decoding;
// packets after it are only counted.
func (a *audioViewer) finish() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.closed.Swap(true) {
		_ = a.ogg.Close()
	}
}

// close sends the WHEP DELETE and closes the peer connection.
func (a *audioViewer) close() {
	if a.location != "" {
		req, _ := http.NewRequest(http.MethodDelete, a.location, nil)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			resp.Body.Close()
		}
		a.location = ""
	}
	a.finish() // no reader starts after this
	_ = a.pc.Close()
	a.wg.Wait()
}

// decodeOpus decodes an Ogg Opus file with ffmpeg to 48 kHz stereo PCM and
// returns its duration; any decoder complaint is an error.
func decodeOpus(t *testing.T, file string) (time.Duration, error) {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	cmd := exec.Command(ffmpeg, "-nostdin", "-v", "error", "-xerror", "-i", file, "-f", "s16le", "-ac", "2", "-ar", "48000", "-")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	pcm, err := cmd.Output()
	if err != nil || stderr.Len() > 0 {
		return 0, fmt.Errorf("ffmpeg: %v: %s", err, stderr.String())
	}
	return time.Duration(len(pcm)/4) * time.Second / 48000, nil
}

// TestFaultAudioOnlyPublisher: a WHIP publisher that sends Opus only.
// Viewers get audio that decodes; the path reports audio without video;
// a viewer asking for video and audio, and a video-only viewer, stay
// connected without video; nothing leaks after the publisher leaves.
func TestFaultAudioOnlyPublisher(t *testing.T) {
	clip := testpeer.MakeClip(t, testpeer.ClipOptions{Size: "320x240"})
	p := launch(t, []string{"--mode", "relay"})
	p.waitFor(t, "/api/ready", 200, 20*time.Second)
	time.Sleep(500 * time.Millisecond)
	baseG := serverGoroutines(t, p)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	av := connectAudioViewer(ctx, t, p.base+"/whep")
	vo, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{VideoOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer vo.Close()
	pub, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{AudioOnly: true})
	if err != nil {
		t.Fatalf("an audio-only publisher was refused: %v", err)
	}
	start := time.Now()
	if _, ok := waitSettled(15*time.Second, func() bool { return av.audio.Load() >= 150 }); !ok {
		t.Fatalf("audio viewer: %d audio packets in 15 s (publisher sent %d)", av.audio.Load(), pub.AudioSent.Load())
	}
	got := time.Since(start)
	// 3 s of audio, then check what each side sees.
	time.Sleep(3 * time.Second)
	s := statusPaths(t, p)["main"]
	if s["state"] != "publishing" || s["publisher"] != true || s["audio"] != "opus" {
		t.Fatalf("status of an audio-only path: %v", s)
	}
	if s["video"] != nil {
		// media.Stream.SetTracks without video keeps the cached VideoInfo
		// of the tracks the publish path declared up front.
		t.Errorf("paths[main].video is %v for a publisher that sends none (want absent: audio-only, as the stream section says)", s["video"])
	}
	if n := activeSessions(t, p); n != 3 {
		t.Fatalf("sessions.active %d, want 3 (2 viewers + the publisher)", n)
	}
	if st := av.state.Load(); st != webrtc.PeerConnectionStateConnected {
		t.Fatalf("audio+video viewer %v", st)
	}
	av.finish()
	dur, err := decodeOpus(t, av.file)
	if err != nil {
		t.Fatalf("the received audio does not decode: %v", err)
	}
	if dur < 2*time.Second || av.mime.Load() != webrtc.MimeTypeOpus {
		t.Fatalf("decoded %s of %v audio, want >= 2 s of Opus", dur, av.mime.Load())
	}
	if av.video.Load() != 0 || vo.VideoPackets.Load() != 0 {
		t.Fatalf("video packets from an audio-only publisher: %d / %d", av.video.Load(), vo.VideoPackets.Load())
	}
	_, st, _ := p.get(t, "/api/status")
	_, m := scrape(t, p.base+"/metrics")
	t.Logf("default path's stream section: video=%v audio=%v", st["stream"].(map[string]any)["video"], st["stream"].(map[string]any)["audio"])
	t.Logf("audio-only publisher: first 150 audio packets at the viewer after %s; %d packets received, %s decoded by ffmpeg; status %v video=%v audio=%v; video-only viewer connected with %d video packets; goroutines %v idle, %v now",
		got.Round(10*time.Millisecond), av.audio.Load(), dur.Round(10*time.Millisecond), s["state"], s["video"], s["audio"],
		vo.VideoPackets.Load(), baseG, metricValue(t, m, "go_goroutines"))

	// The video-only viewer is still connected: a later video publisher
	// reaches it.
	if code, err := pub.Delete(); err != nil || code != 200 {
		t.Fatalf("DELETE publisher: %d %v", code, err)
	}
	pub.Close()
	if _, ok := waitSettled(10*time.Second, func() bool { return statusPaths(t, p)["main"]["state"] == "waiting-publisher" }); !ok {
		t.Fatalf("after the audio-only publisher left: %v", statusPaths(t, p)["main"])
	}
	if n := activeSessions(t, p); n != 2 {
		t.Fatalf("sessions.active %d after the publisher left, want 2", n)
	}
	pub2, err := testpeer.Publish(ctx, p.base+"/whip", clip, testpeer.PublishOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := vo.WaitFrames(30, 15*time.Second); err != nil {
		t.Fatalf("the video-only viewer got no video from the next (video) publisher: %v", err)
	}
	pub2.Close()
	vo.Close()
	av.close()
	if _, ok := waitSettled(30*time.Second, func() bool { return activeSessions(t, p) == 0 }); !ok {
		t.Fatalf("sessions.active %d after everyone left", activeSessions(t, p))
	}
	endG := waitGoroutines(t, p, baseG, 3, 30*time.Second)
	t.Logf("video-only viewer got frames from the next video publisher; server goroutines baseline %v, after everyone left %v", baseG, endG)
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatal("test context expired")
	}
}
