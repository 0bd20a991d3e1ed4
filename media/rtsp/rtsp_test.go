package rtsp

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
)

// checkLeaks: see testenv.CheckGoroutines.
func checkLeaks(t *testing.T) { t.Helper(); testenv.CheckGoroutines(t) }

// logBuf captures the source's logs to check that no secret reaches them.
type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newLogger() (*slog.Logger, *logBuf) {
	lb := &logBuf{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

// running is one Run of a source in the background.
type running struct {
	st     *media.Stream
	cancel context.CancelFunc
	done   chan error
}

func start(t *testing.T, src *Source) *running {
	t.Helper()
	st := media.NewStream(media.StreamConfig{Name: "test"}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{st: st, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- src.Run(ctx, st) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return after cancel")
		}
		st.Close()
	})
	return r
}

// wait returns Run's error, failing the test after d.
func (r *running) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("Run did not return within %s", d)
		return nil
	}
}

type tally struct {
	aus, keyframes, audio int
	firstKey              time.Time
	last                  time.Time
	// videoCodecs counts the video units by codec, videoPTS lists their
	// PTS in arrival order (both from the first keyframe on).
	videoCodecs map[string]int
	videoPTS    []time.Duration
}

// read subscribes (live only, no cached burst) and counts what arrives
// during d after the first keyframe.
func (r *running) read(t *testing.T, d time.Duration) tally {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := r.st.WaitTracks(ctx); err != nil {
		t.Fatalf("no tracks: %v", err)
	}
	sub, err := r.st.Subscribe("t", media.SubscribeOptions{NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	var tl tally
	buf := make([]*media.Unit, 64)
	for {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("read after %d AUs: %v", tl.aus, err)
		}
		now := time.Now()
		for _, u := range buf[:n] {
			if u.Kind == media.KindAudio {
				if !tl.firstKey.IsZero() {
					tl.audio += len(u.Packets)
				}
				continue
			}
			if u.Keyframe {
				if tl.firstKey.IsZero() {
					tl.firstKey = now
				}
				tl.keyframes++
			}
			if !tl.firstKey.IsZero() {
				tl.aus++
				if tl.videoCodecs == nil {
					tl.videoCodecs = map[string]int{}
				}
				tl.videoCodecs[u.Codec]++
				tl.videoPTS = append(tl.videoPTS, u.PTS)
			}
		}
		if !tl.firstKey.IsZero() && now.Sub(tl.firstKey) >= d {
			tl.last = now
			return tl
		}
	}
}

func TestPlay(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		name      string
		opts      rtsptest.Options
		transport string
		audio     *media.AudioParams
		warning   string
	}{
		{"opus-tcp", rtsptest.Options{Audio: rtsptest.AudioOpus}, "tcp",
			&media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}, ""},
		{"pcmu-udp", rtsptest.Options{Audio: rtsptest.AudioPCMU, UDP: true}, "udp",
			&media.AudioParams{Codec: media.CodecPCMU, ClockRate: 8000, Channels: 1}, ""},
		{"aac-auto-falls-back-to-tcp", rtsptest.Options{Audio: rtsptest.AudioAAC}, "auto", nil, "MPEG-4 Audio"},
		{"rtsps-auth-opus", rtsptest.Options{Audio: rtsptest.AudioOpus, TLS: true, User: "admin", Pass: "s3cret-pw"}, "tcp",
			&media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			srv := rtsptest.Start(t, tc.opts)
			log, logs := newLogger()
			src, err := New(Config{URL: srv.URL("cam"), Transport: tc.transport, TLSConfig: srv.ClientTLSConfig()}, log)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, src)
			tl := r.read(t, 3*time.Second)

			tr := r.st.Tracks()
			if tr.Video == nil {
				t.Fatal("no video track declared")
			}
			if string(tr.Video.SPS) != string(srv.SDPSPS()) {
				t.Error("SPS from the SDP not passed to SetTracks")
			}
			switch {
			case tc.audio == nil && tr.Audio != nil:
				t.Errorf("audio track %+v declared, want none", *tr.Audio)
			case tc.audio != nil && (tr.Audio == nil || *tr.Audio != *tc.audio):
				t.Errorf("audio track %+v, want %+v", tr.Audio, *tc.audio)
			}
			secs := tl.last.Sub(tl.firstKey).Seconds()
			fps := float64(tl.aus) / secs
			t.Logf("%d AUs in %.2fs (%.1f fps, source 25), %d keyframes, %d audio packets", tl.aus, secs, fps, tl.keyframes, tl.audio)
			// Generous bounds: the machine is shared and -race is slow.
			if fps < 15 || fps > 35 {
				t.Errorf("video at %.1f fps, want about 25", fps)
			}
			if tl.keyframes < 2 {
				t.Errorf("%d keyframes in 3 s of a 1 s GOP", tl.keyframes)
			}
			if tc.audio != nil && tl.audio < 50 { // 20 ms frames: ~150 in 3 s
				t.Errorf("%d audio packets", tl.audio)
			}
			if tc.audio == nil && tl.audio != 0 {
				t.Errorf("%d audio packets, want none", tl.audio)
			}
			w := strings.Join(src.Warnings(), "; ")
			if tc.warning != "" && !strings.Contains(w, tc.warning) {
				t.Errorf("warnings %q, want one about %s", w, tc.warning)
			}
			if tc.warning == "" && w != "" {
				t.Errorf("unexpected warnings %q", w)
			}

			r.cancel()
			if err := r.wait(t, 5*time.Second); !errors.Is(err, context.Canceled) {
				t.Errorf("Run after cancel = %v, want context.Canceled", err)
			}
			if tc.opts.Pass != "" {
				for what, s := range map[string]string{"logs": logs.String(), "String()": src.String()} {
					if strings.Contains(s, tc.opts.Pass) {
						t.Errorf("password in %s: %s", what, s)
					}
				}
			}
		})
	}
}

func TestUnauthorized(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	srv := rtsptest.Start(t, rtsptest.Options{User: "admin", Pass: "right-password"})
	for name, url := range map[string]string{
		"wrong-password": srv.URLWithCredentials("cam", "admin", "wrong-password-42"),
		"no-credentials": srv.URLWithCredentials("cam", "", ""),
	} {
		t.Run(name, func(t *testing.T) {
			log, logs := newLogger()
			src, err := New(Config{URL: url, Transport: "tcp"}, log)
			if err != nil {
				t.Fatal(err)
			}
			st := media.NewStream(media.StreamConfig{}, nil)
			defer st.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			err = src.Run(ctx, st)
			t.Logf("error: %v", err)
			if !errors.Is(err, media.ErrSourceUnavailable) || !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Run = %v, want ErrSourceUnavailable and ErrUnauthorized", err)
			}
			if !strings.Contains(err.Error(), "unauthorized (401)") {
				t.Errorf("error %q does not say unauthorized (401)", err)
			}
			for _, s := range []string{err.Error(), logs.String(), src.String()} {
				if strings.Contains(s, "wrong-password-42") {
					t.Errorf("password leaked: %s", s)
				}
			}
			if st.Tracks().Video != nil {
				t.Error("tracks declared although DESCRIBE failed")
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	checkLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close() // now nothing listens there: connection refused

	src, err := New(Config{URL: "rtsp://user:topsecret@127.0.0.1:" + strconv.Itoa(port) + "/cam"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	t0 := time.Now()
	err = src.Run(context.Background(), st)
	if !errors.Is(err, media.ErrSourceUnavailable) {
		t.Fatalf("Run = %v, want ErrSourceUnavailable", err)
	}
	if d := time.Since(t0); d > 3*time.Second {
		t.Errorf("took %s to fail on a refused connection", d)
	}
	if strings.Contains(err.Error(), "topsecret") {
		t.Errorf("password in error: %v", err)
	}
}

func TestNoH264(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	srv := rtsptest.Start(t, rtsptest.Options{Video: rtsptest.VideoMJPEG, Audio: rtsptest.AudioOpus})
	src, err := New(Config{URL: srv.URL("cam")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{}, nil)
	defer st.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err = src.Run(ctx, st)
	if !errors.Is(err, media.ErrUnsupportedCodec) || !strings.Contains(err.Error(), "M-JPEG") {
		t.Fatalf("Run = %v, want ErrUnsupportedCodec naming M-JPEG", err)
	}
}

func TestSourceLost(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	const readTimeout = 2 * time.Second
	for _, tc := range []struct {
		name   string
		break_ func(*rtsptest.Server)
	}{
		{"server-stopped", (*rtsptest.Server).Stop},
		{"camera-stalled", (*rtsptest.Server).Pause},
	} {
		t.Run(tc.name, func(t *testing.T) {
			checkLeaks(t)
			srv := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioPCMU})
			src, err := New(Config{URL: srv.URL("cam"), Transport: "tcp", ReadTimeout: readTimeout}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, src)
			r.read(t, 500*time.Millisecond)
			t0 := time.Now()
			tc.break_(srv)
			err = r.wait(t, readTimeout+5*time.Second)
			d := time.Since(t0)
			t.Logf("Run returned after %s: %v", d.Round(time.Millisecond), err)
			if !errors.Is(err, media.ErrSourceUnavailable) {
				t.Fatalf("Run = %v, want ErrSourceUnavailable", err)
			}
			if d > readTimeout+2*time.Second {
				t.Errorf("took %s, ReadTimeout is %s", d, readTimeout)
			}
		})
	}
}

// TestRestartSamePort is what the supervisor relies on: after the camera
// comes back on the same address, a new Run of the same Source plays again.
func TestRestartSamePort(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	srv := rtsptest.Start(t, rtsptest.Options{Audio: rtsptest.AudioOpus})
	src, err := New(Config{URL: srv.URL("cam"), Transport: "tcp", ReadTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := start(t, src)
	r.read(t, 500*time.Millisecond)
	srv.Stop()
	if err := r.wait(t, 10*time.Second); !errors.Is(err, media.ErrSourceUnavailable) {
		t.Fatalf("Run = %v", err)
	}

	// While the camera is down a run fails promptly.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	err = src.Run(ctx, r.st)
	cancel()
	if !errors.Is(err, media.ErrSourceUnavailable) {
		t.Fatalf("Run while down = %v", err)
	}

	srv.Restart()
	r2 := &running{st: r.st, done: make(chan error, 1)}
	ctx, r2.cancel = context.WithCancel(context.Background())
	go func() { r2.done <- src.Run(ctx, r.st) }()
	tl := r2.read(t, time.Second)
	if tl.aus < 10 || tl.audio == 0 {
		t.Errorf("after restart: %d AUs, %d audio packets", tl.aus, tl.audio)
	}
	r2.cancel()
	if err := r2.wait(t, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("Run = %v", err)
	}
}

// TestSupervised runs the source under media.Supervisor through a camera
// outage: up, reconnecting, up again, with media flowing on the same stream.
func TestSupervised(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	srv := rtsptest.Start(t, rtsptest.Options{})
	src, err := New(Config{URL: srv.URL("cam"), Transport: "tcp", ReadTimeout: 2 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "sup"}, nil)
	defer st.Close()
	sv := media.NewSupervisor(src, st, media.SupervisorConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: 500 * time.Millisecond}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	waitState := func(want media.SourceState) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for sv.Status().State != want {
			if time.Now().After(deadline) {
				t.Fatalf("state %s, want %s", sv.Status().State, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState(media.SourceUp)
	sub, err := st.Subscribe("viewer", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	srv.Stop()
	waitState(media.SourceReconnecting)
	srv.Restart()
	waitState(media.SourceUp)
	// The same subscriber gets fresh media after the outage.
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	buf := make([]*media.Unit, 256)
	sawKey := false
	for !sawKey {
		n, err := sub.Read(rctx, buf)
		if err != nil {
			t.Fatalf("subscriber after restart: %v", err)
		}
		for _, u := range buf[:n] {
			sawKey = sawKey || (u.Keyframe && !u.FromCache)
		}
	}
}

func TestNewValidates(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{URL: "http://a:b@cam/x"}, "unsupported scheme"},
		{Config{URL: "rtsp://cam/x", Transport: "quic"}, "transport"},
		{Config{URL: "rtsp://"}, "host"},
	} {
		_, err := New(tc.cfg, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), ":b@") {
			t.Errorf("credentials in %v", err)
		}
	}
	s, err := New(Config{URL: "rtsps://admin:pw@cam.local:322/live?ch=1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.String() != "rtsps://cam.local:322/live?ch=1" || s.Kind() != "rtsp" {
		t.Errorf("String() = %q, Kind() = %q", s.String(), s.Kind())
	}
}
