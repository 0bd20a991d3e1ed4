package childtest

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"sync/atomic"
	"testing"
)

// LiveTS is an HTTP server on 127.0.0.1 that streams a live MPEG-TS
// (320x240 H.264 at 25 fps with a 1 s GOP, and AAC audio) generated in
// real time by ffmpeg, behind HTTP basic authentication when User is set.
type LiveTS struct {
	srv        *httptest.Server
	user, pass string
	// Authorized and Rejected count requests with right and wrong/missing credentials.
	Authorized, Rejected atomic.Int64
}

// ServeLiveTS starts a LiveTS; it is closed by t.Cleanup. user "" serves
// without authentication.
//
// videoArgs, when given, replace the H.264 encoder arguments (e.g.
// "-c:v", "mpeg2video" for a stream the server cannot pass through).
func ServeLiveTS(t testing.TB, user, pass string, videoArgs ...string) *LiveTS {
	t.Helper()
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg not found (apt-get install -y ffmpeg): %v", err)
	}
	l := &LiveTS{user: user, pass: pass}
	l.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				l.Rejected.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="cam"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		l.Authorized.Add(1)
		cmd := LiveTSCommand(r.Context(), ffmpeg, videoArgs...)
		out, err := cmd.StdoutPipe()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		if err := cmd.Start(); err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
		w.Header().Set("Content-Type", "video/mp2t")
		w.WriteHeader(http.StatusOK)
		fl, _ := w.(http.Flusher)
		buf := make([]byte, 188*20)
		for {
			n, err := out.Read(buf)
			if n > 0 {
				if _, werr := w.Write(buf[:n]); werr != nil {
					return
				}
				if fl != nil {
					fl.Flush()
				}
			}
			if err != nil {
				if err != io.EOF {
					return
				}
				return
			}
		}
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l.srv.Listener = ln
	l.srv.Start()
	t.Cleanup(l.Close)
	return l
}

// LiveTSCommand is the ffmpeg command that writes the live MPEG-TS
// (H.264 + AAC, real time) to its stdout; videoArgs replace the H.264
// encoder arguments.
func LiveTSCommand(ctx context.Context, ffmpeg string, videoArgs ...string) *exec.Cmd {
	if len(videoArgs) == 0 {
		videoArgs = []string{"-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-tune", "zerolatency",
			"-bf", "0", "-pix_fmt", "yuv420p"}
	}
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-g", "25"}
	args = append(args, videoArgs...)
	args = append(args, "-c:a", "aac", "-ac", "2",
		"-f", "mpegts", "-muxdelay", "0", "-flush_packets", "1", "pipe:1")
	return exec.CommandContext(ctx, ffmpeg, args...)
}

// URL of the stream, with the server's credentials in the userinfo.
func (l *LiveTS) URL() string { return l.URLWithCredentials(l.user, l.pass) }

// URLWithCredentials is the stream's URL with other credentials (none for user "").
func (l *LiveTS) URLWithCredentials(user, pass string) string {
	u, _ := url.Parse(l.srv.URL + "/live.ts")
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u.String()
}

// Close stops the server and every stream.
func (l *LiveTS) Close() {
	l.srv.CloseClientConnections()
	l.srv.Close()
}
