package rtsp

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
)

// An AAC camera with a password: gortsplib pulls it, H.264 passes through,
// the AAC is written to an ffmpeg child's stdin and comes back as Opus. The
// child's command line and environment hold neither the camera's URL or
// password nor the server's secrets.
func TestAACTranscodedThroughStdin(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	secrets := map[string]string{
		"ICEY_AUTH_TOKEN":    "api-token-in-env-1",
		"ICEY_TURN_SECRET":   "turn-secret-in-env-2",
		"ICEY_METRICS_TOKEN": "metrics-token-in-env-3",
	}
	for k, v := range secrets {
		t.Setenv(k, v)
	}
	const pass = "Cam-Pa55-aac"
	srv := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioAAC, User: "admin", Pass: pass})
	t.Setenv("ICEY_SOURCE", srv.URL("cam"))
	log, logs := newLogger()
	src, err := New(Config{URL: srv.URL("cam"), Transport: TransportTCP, TranscodeAudio: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	tl := r.read(t, 3*time.Second)

	tr := r.st.Tracks()
	want := media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	if tr.Video == nil || tr.Audio == nil || *tr.Audio != want {
		t.Fatalf("tracks video %v audio %+v, want H.264 + %+v", tr.Video != nil, tr.Audio, want)
	}
	secs := tl.last.Sub(tl.firstKey).Seconds()
	t.Logf("%d AUs, %d keyframes, %d Opus packets in %.2fs", tl.aus, tl.keyframes, tl.audio, secs)
	if fps := float64(tl.aus) / secs; fps < 15 || fps > 35 || tl.keyframes < 2 {
		t.Errorf("video %.1f fps, %d keyframes: want about 25 fps passed through", fps, tl.keyframes)
	}
	if tl.audio < 75 { // 20 ms Opus frames: ~150 in 3 s
		t.Errorf("%d Opus packets in 3 s", tl.audio)
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "transcoded to Opus") {
		t.Errorf("warnings %q", w)
	}

	pid := int(src.audioPid.Load())
	if pid == 0 {
		t.Fatal("no ffmpeg child")
	}
	p, err := childtest.Read(pid)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ffmpeg cmdline: %q", p.Cmdline)
	if p.Exe() != "ffmpeg" {
		t.Fatalf("pid %d is %q", pid, p.Exe())
	}
	bad := []string{pass, "admin:", "rtsp://", "127.0.0.1:" + strconv.Itoa(srv.Port())}
	for _, v := range secrets {
		bad = append(bad, v)
	}
	if leaks := p.Leaks(bad...); len(leaks) > 0 {
		t.Errorf("leaks: %v", leaks)
	}
	for _, kv := range p.Environ {
		if strings.HasPrefix(kv, "ICEY_") {
			t.Errorf("child environ has %s", kv)
		}
	}
	// ffmpeg reads only its stdin.
	if !strings.Contains(strings.Join(p.Cmdline, " "), "-i pipe:0") {
		t.Errorf("ffmpeg input is not pipe:0: %q", p.Cmdline)
	}

	r.cancel()
	if err := r.wait(t, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Run after cancel = %v", err)
	}
	if !childtest.Gone(pid) {
		t.Errorf("ffmpeg %d not reaped after cancel", pid)
	}
	if strings.Contains(logs.String(), pass) {
		t.Errorf("password in logs")
	}
}
