package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/rtmp/rtmptest"
	"github.com/icey/icey-server/media/srt/srttest"
)

// Secrets the server gets from its environment; none may reach a child.
var argvSecrets = map[string]string{
	"ICEY_AUTH_TOKEN":    "argv-auth-token-4711",
	"ICEY_TURN_SECRET":   "argv-turn-secret-4712",
	"ICEY_METRICS_TOKEN": "argv-metrics-token-4713",
}

func argvEnv(source string) []string {
	env := []string{"ICEY_SOURCE=" + source}
	for k, v := range argvSecrets {
		env = append(env, k+"="+v)
	}
	return env
}

// checkChildren waits until the server runs an ffmpeg child and asserts
// that no child's /proc/<pid>/cmdline or /proc/<pid>/environ holds any of
// bad, an ICEY_ variable or a URL scheme. It returns the ffmpeg cmdlines.
func checkChildren(t *testing.T, p *proc, bad ...string) []string {
	t.Helper()
	for _, v := range argvSecrets {
		bad = append(bad, v)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		var ffmpegs []string
		for _, pid := range childtest.Descendants(p.cmd.Process.Pid) {
			c, err := childtest.Read(pid)
			if err != nil {
				continue // exited meanwhile
			}
			if leaks := c.Leaks(bad...); len(leaks) > 0 {
				t.Fatalf("secret in a child process: %v\ncmdline %q", leaks, c.Cmdline)
			}
			for _, kv := range c.Environ {
				if strings.HasPrefix(kv, "ICEY_") {
					t.Fatalf("child %d (%s) inherited %s", pid, c.Exe(), kv)
				}
			}
			if c.Exe() == "ffmpeg" {
				ffmpegs = append(ffmpegs, strings.Join(c.Cmdline, " "))
			}
		}
		if len(ffmpegs) > 0 {
			return ffmpegs
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ffmpeg child of the server within 20 s; stderr:\n%s", p.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// watch connects a WHEP viewer and waits for video (and audio).
func watch(t *testing.T, p *proc, audio bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	v, err := testpeer.Connect(ctx, p.base+"/whep", testpeer.Options{Token: argvSecrets["ICEY_AUTH_TOKEN"]})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := v.WaitVideo(50, 15*time.Second); err != nil {
		t.Fatal(err)
	}
	if v.Keyframes.Load() == 0 {
		t.Fatal("no keyframe")
	}
	if audio {
		deadline := time.Now().Add(10 * time.Second)
		for v.AudioPackets.Load() < 50 {
			if time.Now().After(deadline) {
				t.Fatalf("%d audio packets", v.AudioPackets.Load())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	t.Logf("viewer: %d video packets (%d keyframe packets), %d audio packets", v.VideoPackets.Load(), v.Keyframes.Load(), v.AudioPackets.Load())
}

// An RTSP camera with AAC and a password, configured via ICEY_SOURCE: the
// server pulls it with gortsplib; the ffmpeg that turns AAC into Opus reads
// only its stdin. A real WebRTC viewer gets H.264 and Opus.
func TestNoSecretInChildProcessRTSP(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass = "Rtsp-Argv-Pa55"
	cam := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioAAC, User: "admin", Pass: pass})
	p := launch(t, nil, argvEnv(cam.URL("cam"))...)
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	cmds := checkChildren(t, p, pass, "admin:", "rtsp://", "127.0.0.1:"+strconv.Itoa(cam.Port()))
	t.Logf("ffmpeg: %s", cmds)
	if !strings.Contains(cmds[0], "-i pipe:0") {
		t.Errorf("ffmpeg does not read stdin: %s", cmds[0])
	}
	watch(t, p, true)
	_, st, _ := p.get(t, "/api/status", "X-Icey-Token", argvSecrets["ICEY_AUTH_TOKEN"])
	if s := st["stream"].(map[string]any); s["audio"] != "opus" || s["video"] != "H264" {
		t.Errorf("stream %v", s)
	}
	checkChildren(t, p, pass, "admin:", "rtsp://")
}

// An http:// URL with user:pass@: the server GETs it itself and feeds
// ffmpeg's stdin.
func TestNoSecretInChildProcessHTTP(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass = "Http-Argv-Pa55"
	live := childtest.ServeLiveTS(t, "viewer", pass)
	p := launch(t, nil, argvEnv(live.URL())...)
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	cmds := checkChildren(t, p, pass, "viewer:", "http://", "/live.ts")
	t.Logf("ffmpeg: %s", cmds)
	// MPEG-TS with H.264: video passes through; ffmpeg only does the audio.
	if len(cmds) != 1 || !strings.Contains(cmds[0], "-i pipe:0") || strings.Contains(cmds[0], "libx264") {
		t.Errorf("want one audio-only ffmpeg reading stdin, got %q", cmds)
	}
	watch(t, p, true)
	if live.Authorized.Load() == 0 {
		t.Fatal("the HTTP server never saw the credentials")
	}
}

// An http:// URL whose video the server cannot pass through (MPEG-2):
// the response is fed to a transcoding ffmpeg's stdin.
func TestNoSecretInChildProcessHTTPTranscode(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass = "Http-Argv-Mpeg2"
	live := childtest.ServeLiveTS(t, "viewer", pass, "-c:v", "mpeg2video", "-q:v", "5")
	p := launch(t, nil, argvEnv(live.URL())...)
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	cmds := checkChildren(t, p, pass, "viewer:", "http://", "/live.ts")
	t.Logf("ffmpeg: %s", cmds)
	if len(cmds) != 1 || !strings.Contains(cmds[0], "-i pipe:0") || !strings.Contains(cmds[0], "libx264") {
		t.Errorf("want one transcoding ffmpeg reading stdin, got %q", cmds)
	}
	watch(t, p, true)
}

// A URL ffmpeg must open itself (here tcp:// to a listener that accepts
// and stalls): the URL travels in a private file, not in argv or environ.
func TestNoSecretInChildProcessFFmpegURL(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan struct{}, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- struct{}{}
			defer c.Close()
		}
	}()
	const pass = "Tcp-Argv-Pa55"
	src := "tcp://pub:" + pass + "@" + ln.Addr().String() + "/?token=" + pass
	p := launch(t, nil, argvEnv(src)...)
	p.waitFor(t, "/api/health", 200, 30*time.Second)
	select {
	case <-accepted:
	case <-time.After(20 * time.Second):
		t.Fatalf("ffmpeg never connected; stderr:\n%s", p.stderr)
	}
	cmds := checkChildren(t, p, pass, "pub:", "tcp://", ln.Addr().String())
	t.Logf("ffmpeg: %s", cmds)
	if !strings.Contains(cmds[0], "-f concat") {
		t.Errorf("ffmpeg does not read its input from a list: %s", cmds[0])
	}
}

// RTMP with user:pass@ and a token: pulled by the server with gortmplib;
// H.264 passes through, the AAC goes to an ffmpeg that reads only stdin.
func TestNoSecretInChildProcessRTMP(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass, token = "Rtmp-Argv-Pa55", "Rtmp-Argv-Tok"
	srv := rtmptest.Start(t, rtmptest.Options{User: "pub", Pass: pass, Token: token})
	p := launch(t, nil, argvEnv(srv.URL("cam"))...)
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	cmds := checkChildren(t, p, pass, token, "pub:", "rtmp://", srv.Addr())
	t.Logf("ffmpeg: %s", cmds)
	if len(cmds) != 1 || !strings.Contains(cmds[0], "-i pipe:0") || strings.Contains(cmds[0], "libx264") {
		t.Errorf("want one audio-only ffmpeg reading stdin, got %q", cmds)
	}
	watch(t, p, true)
	_, st, _ := p.get(t, "/api/status", "X-Icey-Token", argvSecrets["ICEY_AUTH_TOKEN"])
	s := st["stream"].(map[string]any)
	if s["audio"] != "opus" || s["video"] != "H264" || strings.Contains(fmt.Sprint(s), pass) {
		t.Errorf("stream %v", s)
	}
	if strings.Contains(fmt.Sprint(s), token) {
		// Not a child-process leak: /api/status shows the configured URL
		// through config.PublicSource, which keeps the query.
		t.Logf("note: /api/status shows the URL query (token) in stream.source: %v", s["source"])
	}
}

// SRT with a passphrase and a stream id: pulled by the server with gosrt.
func TestNoSecretInChildProcessSRT(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const pass, sid = "Srt-Argv-Passphrase", "Srt-Argv-StreamId"
	srv := srttest.Start(t, srttest.Options{StreamID: sid, Passphrase: pass})
	p := launch(t, nil, argvEnv(srv.URL())...)
	p.waitFor(t, "/api/ready", 200, 30*time.Second)
	cmds := checkChildren(t, p, pass, sid, "srt://", srv.Addr())
	t.Logf("ffmpeg: %s", cmds)
	if len(cmds) != 1 || !strings.Contains(cmds[0], "-i pipe:0") || strings.Contains(cmds[0], "libx264") {
		t.Errorf("want one audio-only ffmpeg reading stdin, got %q", cmds)
	}
	watch(t, p, true)
	checkChildren(t, p, pass, sid, "srt://")
}
