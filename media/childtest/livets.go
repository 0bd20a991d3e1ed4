package childtest

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os/exec"
	"strconv"
	"sync/atomic"
	"testing"
)

// Server is an HTTP test server on 127.0.0.1, behind HTTP basic
// authentication when its user is set.
type Server struct {
	srv        *httptest.Server
	user, pass string
	// Authorized and Rejected count requests with right and wrong/missing credentials.
	Authorized, Rejected atomic.Int64
}

// Serve starts a Server that hands the authorized requests to h; it is
// closed by t.Cleanup. user "" serves without authentication.
func Serve(t testing.TB, user, pass string, h http.Handler) *Server {
	t.Helper()
	s := &Server{user: user, pass: pass}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user != "" {
			u, p, ok := r.BasicAuth()
			if !ok || u != user || p != pass {
				s.Rejected.Add(1)
				w.Header().Set("WWW-Authenticate", `Basic realm="cam"`)
				http.Error(w, "unauthorized", http.StatusUnauthorized)
				return
			}
		}
		s.Authorized.Add(1)
		h.ServeHTTP(w, r)
	}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.srv.Listener = ln
	s.srv.Start()
	t.Cleanup(s.Close)
	return s
}

// URLFor is the URL of path on the server with user:pass in the userinfo
// (none for user "").
func (s *Server) URLFor(path, user, pass string) string {
	u, _ := url.Parse(s.srv.URL + path)
	if user != "" {
		u.User = url.UserPassword(user, pass)
	}
	return u.String()
}

// Close stops the server and every response in flight.
func (s *Server) Close() {
	s.srv.CloseClientConnections()
	s.srv.Close()
}

// LiveTS is a Server that streams a live MPEG-TS (320x240 H.264 at 25 fps
// with a 1 s GOP, and AAC audio) generated in real time by ffmpeg.
type LiveTS struct {
	*Server
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
	return &LiveTS{Serve(t, user, pass, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
				return
			}
		}
	}))}
}

// testSource is ffmpeg's input arguments for the test picture (320x240
// at 25 fps) and a 440 Hz tone at sampleRate.
func testSource(sampleRate int) []string {
	return []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=" + strconv.Itoa(sampleRate)}
}

// WriteClip has ffmpeg write the test picture and a 440 Hz tone at
// sampleRate to path; args are the output options (duration, codecs,
// format).
func WriteClip(t testing.TB, path string, sampleRate int, args ...string) {
	t.Helper()
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		t.Fatalf("ffmpeg not found (apt-get install -y ffmpeg): %v", err)
	}
	all := append([]string{"-hide_banner", "-loglevel", "error", "-nostdin"}, testSource(sampleRate)...)
	all = append(append(all, args...), "-y", path)
	if b, err := exec.Command(ffmpeg, all...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v: %s", err, b)
	}
}

// LiveTSCommand is the ffmpeg command that writes the live MPEG-TS
// (H.264 + AAC, real time) to its stdout; videoArgs replace the H.264
// encoder arguments.
func LiveTSCommand(ctx context.Context, ffmpeg string, videoArgs ...string) *exec.Cmd {
	if len(videoArgs) == 0 {
		videoArgs = []string{"-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-tune", "zerolatency",
			"-bf", "0", "-pix_fmt", "yuv420p"}
	}
	args := append([]string{"-hide_banner", "-nostdin", "-loglevel", "error", "-re"}, testSource(48000)...)
	args = append(args, "-g", "25")
	args = append(args, videoArgs...)
	args = append(args, "-c:a", "aac", "-ac", "2",
		"-f", "mpegts", "-muxdelay", "0", "-flush_packets", "1", "pipe:1")
	return exec.CommandContext(ctx, ffmpeg, args...)
}

// URL of the stream, with the server's credentials in the userinfo.
func (l *LiveTS) URL() string { return l.URLWithCredentials(l.user, l.pass) }

// URLWithCredentials is the stream's URL with other credentials (none for user "").
func (l *LiveTS) URLWithCredentials(user, pass string) string {
	return l.URLFor("/live.ts", user, pass)
}
