package httpsrc

import (
	"bytes"
	"errors"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
)

// fmp4Clip has ffmpeg write a 4 s fragmented MP4 of the test picture and
// tone with the given codec arguments.
func fmp4Clip(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	testenv.RequireTool(t, "ffmpeg")
	p := filepath.Join(t.TempDir(), name+".mp4")
	all := append([]string{"-t", "4", "-g", "25"}, args...)
	all = append(all, "-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4")
	childtest.WriteClip(t, p, 48000, all...)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func h264AACClip(t *testing.T) []byte {
	return fmp4Clip(t, "h264-aac", "-c:v", "libx264", "-profile:v", "high", "-preset", "veryfast", "-bf", "2",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2")
}

func h265OpusClip(t *testing.T) []byte {
	return fmp4Clip(t, "h265-opus", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "log-level=error:bframes=0",
		"-pix_fmt", "yuv420p", "-tag:v", "hvc1", "-c:a", "libopus", "-b:a", "64k", "-ac", "2")
}

// probePTS is ffprobe's video packets in decoding order: pts in seconds
// and keyframe flags.
func probePTS(t *testing.T, clip []byte) (pts []float64, keys []bool) {
	t.Helper()
	testenv.RequireTool(t, "ffprobe")
	p := filepath.Join(t.TempDir(), "clip.mp4")
	if err := os.WriteFile(p, clip, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time,flags",
		"-of", "csv=p=0", p).Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, ",")
		if len(f) < 2 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			t.Fatalf("ffprobe line %q", line)
		}
		pts = append(pts, v)
		keys = append(keys, strings.HasPrefix(f[1], "K"))
	}
	return pts, keys
}

// serveBody serves body behind basic auth; slow > 0 sends it chunked in
// 8 KiB pieces spread over slow, like a live stream.
func serveBody(t *testing.T, user, pass string, body []byte, slow time.Duration) *childtest.Server {
	return childtest.Serve(t, user, pass, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "video/mp4")
		if slow <= 0 {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			_, _ = w.Write(body)
			return
		}
		const chunk = 8 << 10
		pause := slow / time.Duration(len(body)/chunk+1)
		fl := w.(http.Flusher)
		for off := 0; off < len(body); off += chunk {
			_, err := w.Write(body[off:min(off+chunk, len(body))])
			if err != nil {
				return
			}
			fl.Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(pause):
			}
		}
	}))
}

// teeWriter records what a Source writes and forwards it to a Stream.
type teeWriter struct {
	*media.Stream
	mu    sync.Mutex
	video []time.Duration
	audio []time.Duration
	// ffmpegs are the ffmpeg processes alive at the first and the 100th
	// video write.
	ffmpegs [][]childtest.Proc
}

func (w *teeWriter) noteVideo(pts time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.video = append(w.video, pts)
	if len(w.video) == 1 || len(w.video) == 100 {
		w.ffmpegs = append(w.ffmpegs, childtest.FFmpegs(""))
	}
}

func (w *teeWriter) WriteH264(pts time.Duration, au [][]byte) {
	w.noteVideo(pts)
	w.Stream.WriteH264(pts, au)
}

func (w *teeWriter) WriteH265(pts time.Duration, au [][]byte) {
	w.noteVideo(pts)
	w.Stream.WriteH265(pts, au)
}

func (w *teeWriter) WriteAudio(pts time.Duration, frame []byte) {
	w.mu.Lock()
	w.audio = append(w.audio, pts)
	w.mu.Unlock()
	w.Stream.WriteAudio(pts, frame)
}

// runClip plays clip from an authenticated server through a Source into a
// Stream until the body ends, and checks the video against ffprobe.
func runClip(t *testing.T, clip []byte, slow time.Duration, codec string, bframes bool, during func(*Source)) (*teeWriter, *Source) {
	t.Helper()
	const pass = "Fmp4-Pa55-secret"
	srv := serveBody(t, "viewer", pass, clip, slow)
	url := srv.URLFor("/stream.mp4", "viewer", pass)
	src, err := NewSource(SourceConfig{URL: url, TranscodeAudio: true, Fallback: fallback(url)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: t.Name()}, nil)
	defer st.Close()
	tw := &teeWriter{Stream: st}
	done := make(chan error, 1)
	ctx := t.Context()
	go func() { done <- src.Run(ctx, tw) }()
	if during != nil {
		during(src)
	}
	var runErr error
	select {
	case runErr = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not end with the body")
	}
	t.Logf("Run: %v", runErr)
	if !errors.Is(runErr, media.ErrSourceUnavailable) || !strings.Contains(runErr.Error(), "stream ended") {
		t.Errorf("Run = %v, want the stream to end", runErr)
	}
	if strings.Contains(runErr.Error(), pass) {
		t.Errorf("error holds the password: %v", runErr)
	}
	if src.fellBack.Load() {
		t.Fatal("fell back to a transcode for a fragmented MP4")
	}

	want, keys := probePTS(t, clip)
	tw.mu.Lock()
	got := append([]time.Duration(nil), tw.video...)
	tw.mu.Unlock()
	if len(got) != len(want) {
		t.Fatalf("wrote %d video access units, ffprobe has %d packets", len(got), len(want))
	}
	for i := range got {
		g := (got[i] - got[0]).Seconds()
		w := want[i] - want[0]
		if math.Abs(g-w) > 0.001 {
			t.Fatalf("access unit %d (decoding order): pts %.4f, ffprobe %.4f", i, g, w)
		}
	}
	// The stream's units: same order and times, keyframes where ffprobe
	// has them.
	var units []*media.Unit
	for _, u := range st.Units(0) {
		if u.Kind == media.KindVideo {
			units = append(units, u)
		}
	}
	if len(units) != len(want) {
		t.Fatalf("stream has %d video units, want %d", len(units), len(want))
	}
	nkeys := 0
	for i, u := range units {
		if u.Keyframe != keys[i] {
			t.Errorf("unit %d keyframe %v, ffprobe %v", i, u.Keyframe, keys[i])
		}
		if u.Keyframe {
			nkeys++
		}
		g := (u.PTS - units[0].PTS).Seconds()
		if w := want[i] - want[0]; math.Abs(g-w) > 0.002 {
			t.Errorf("unit %d pts %.4f, ffprobe %.4f", i, g, w)
		}
	}
	if nkeys < 4 {
		t.Errorf("%d keyframes in 4 s with a 1 s GOP", nkeys)
	}
	vi := st.VideoInfo()
	t.Logf("video %+v, %d units, %d keyframes, %d audio frames", vi, len(units), nkeys, len(tw.audio))
	if vi.Codec != codec || vi.BFrames != bframes {
		t.Errorf("VideoInfo %+v, want codec %s, B-frames %v", vi, codec, bframes)
	}
	if tr := st.Tracks(); tr.Audio == nil || tr.Audio.Codec != media.CodecOpus || tr.Video.VideoCodec() != codec {
		t.Errorf("tracks %+v %+v", tr.Video, tr.Audio)
	}
	return tw, src
}

// H.265 and Opus in a fragmented MP4 over HTTP: both pass through, no
// ffmpeg runs at all.
func TestFMP4H265OpusPassesThrough(t *testing.T) {
	testenv.CheckGoroutines(t)
	clip := h265OpusClip(t)
	tw, _ := runClip(t, clip, 0, media.CodecH265, false, nil)
	if len(tw.ffmpegs) != 2 || len(tw.ffmpegs[0])+len(tw.ffmpegs[1]) != 0 {
		t.Errorf("ffmpeg ran while the video was written: %v", tw.ffmpegs)
	}
	// 4 s of 20 ms Opus frames, on the video's timeline.
	if n := len(tw.audio); n < 195 || n > 205 {
		t.Errorf("%d Opus frames in 4 s, want ~200", n)
	}
	if d := tw.audio[0] - tw.video[0]; d > 200*time.Millisecond || d < -200*time.Millisecond {
		t.Errorf("audio starts %v from the video", d)
	}
}

// H.264 High with B-frames and AAC, chunked and paced like a live
// /stream.mp4: video passes through with its presentation times, AAC goes
// to an ffmpeg that reads only stdin and never sees the credentials.
func TestFMP4H264BFramesAACLive(t *testing.T) {
	testenv.CheckGoroutines(t)
	clip := h264AACClip(t)
	t.Setenv("ICEY_AUTH_TOKEN", "fmp4-env-token")
	var checked bool
	tw, src := runClip(t, clip, 3*time.Second, media.CodecH264, true, func(src *Source) {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) && src.audioPid.Load() == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		pid := int(src.audioPid.Load())
		if pid == 0 {
			t.Error("no AAC transcoder started")
			return
		}
		p := childtest.CheckChild(t, pid, "Fmp4-Pa55-secret", "viewer:", "http://", "fmp4-env-token", "ICEY_")
		if cmd := strings.Join(p.Cmdline, " "); !strings.Contains(cmd, "pipe:0") || strings.Contains(cmd, "libx264") || strings.Contains(cmd, "libx265") {
			t.Errorf("audio ffmpeg %q", cmd)
		}
		if ps := childtest.FFmpegs(""); len(ps) != 1 {
			t.Errorf("want only the audio ffmpeg, got %v", ps)
		}
		checked = true
	})
	if !checked {
		t.Fatal("the AAC transcoder was not checked")
	}
	for _, ps := range tw.ffmpegs { // only the audio transcoder, never video
		if len(ps) != 1 || strings.Contains(strings.Join(ps[0].Cmdline, " "), "-map 0:v") {
			t.Errorf("ffmpegs while the video was written: %v", ps)
		}
	}
	if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, "AAC is transcoded") {
		t.Errorf("warnings %q", w)
	}
	// The body takes ~3 s; AAC → Opus comes back at ~50 frames/s.
	if n := len(tw.audio); n < 100 {
		t.Errorf("%d Opus frames from 4 s of AAC", n)
	}
}

// A truncated body, an oversized box, a plain (not fragmented) MP4 and an
// fMP4 without H.264/H.265 fail with clear errors.
func TestFMP4Errors(t *testing.T) {
	clip := h265OpusClip(t)
	huge := append([]byte("\x00\x00\x00\x10ftypiso5\x00\x00\x00\x01"),
		[]byte("\x00\x00\x00\x01moov\x00\x00\x00\x01\x00\x00\x00\x00")...)
	for _, tc := range []struct {
		name  string
		body  []byte
		want  string
		isErr error
	}{
		{"truncated", clip[:len(clip)*2/3], "truncated MP4 box", media.ErrSourceUnavailable},
		{"truncated init", clip[:200], "truncated MP4 box", media.ErrSourceUnavailable},
		{"oversized box", huge, "over the 67108864-byte limit", media.ErrSourceUnavailable},
		{"zero-size box", []byte("\x00\x00\x00\x10ftypiso5\x00\x00\x00\x01\x00\x00\x00\x00moov"), "size 0", media.ErrSourceUnavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const pass = "Fmp4-Err-Pa55"
			srv := serveBody(t, "viewer", pass, tc.body, 0)
			src, err := NewSource(SourceConfig{URL: srv.URLFor("/stream.mp4", "viewer", pass)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = childtest.RunErr(t, src, 20*time.Second)
			if !errors.Is(err, tc.isErr) || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), pass) {
				t.Fatalf("Run = %v, want %v with %q", err, tc.isErr, tc.want)
			}
		})
	}
}

// Not fragmented, or no H.264/H.265: media.ErrUnsupportedCodec without a
// Fallback, a transcode of the same response with one.
func TestFMP4Unsupported(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.mp4")
	childtest.WriteClip(t, plain, 48000, "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-movflags", "+faststart")
	mpeg4 := filepath.Join(dir, "mpeg4.mp4")
	childtest.WriteClip(t, mpeg4, 48000, "-t", "2", "-c:v", "mpeg4", "-c:a", "aac",
		"-movflags", "frag_keyframe+empty_moov+default_base_moof")
	for _, tc := range []struct{ name, path, want string }{
		{"plain", plain, "not fragmented"},
		{"mpeg4 video", mpeg4, "no H.264 or H.265 video"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, err := os.ReadFile(tc.path)
			if err != nil {
				t.Fatal(err)
			}
			srv := serveBody(t, "viewer", "pw", body, 0)
			url := srv.URLFor("/stream.mp4", "viewer", "pw")
			src, err := NewSource(SourceConfig{URL: url}, nil)
			if err != nil {
				t.Fatal(err)
			}
			err = childtest.RunErr(t, src, 20*time.Second)
			if !errors.Is(err, media.ErrUnsupportedCodec) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Run = %v, want ErrUnsupportedCodec with %q", err, tc.want)
			}

			// With a fallback: the same response is transcoded.
			src, err = NewSource(SourceConfig{URL: url, TranscodeAudio: true, Fallback: fallback(url)}, nil)
			if err != nil {
				t.Fatal(err)
			}
			r := childtest.Start(t, src, 40*time.Second)
			tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool { return tl.AUs >= 25 })
			t.Logf("%+v, warnings %q", tl, src.Warnings())
			if !src.fellBack.Load() || srv.Authorized.Load() != 2 {
				t.Fatalf("fell back %v, GETs %d", src.fellBack.Load(), srv.Authorized.Load())
			}
			r.Cancel()
			r.Wait(t, 10*time.Second)
		})
	}
}

// The box framing on its own: sizes, largesize, bounds.
func TestBoxHeader(t *testing.T) {
	for _, tc := range []struct {
		in   string
		typ  string
		size uint64
		hdr  int
		err  string
	}{
		{"\x00\x00\x00\x08free", "free", 8, 8, ""},
		{"\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x00\x00\x20", "mdat", 32, 16, ""},
		{"\x00\x00\x00\x01mdat\x00\x00\x00\x00\x00\x00\x00\x08", "", 0, 0, "smaller than its header"},
		{"\x00\x00\x00\x04free", "", 0, 0, "smaller than its header"},
		{"\x00\x00\x00\x00mdat", "", 0, 0, "size 0"},
		{"\x00\x00\x00\x01mdat\x00\x00", "", 0, 0, "unexpected EOF"},
		{"\x00\x00", "", 0, 0, "unexpected EOF"},
	} {
		h, err := parseBoxHeader([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || h.typ != tc.typ || h.size != tc.size || h.hdr != tc.hdr {
			t.Errorf("%q: %+v %v", tc.in, h, err)
		}
	}
	br := &boxReader{r: bytes.NewReader([]byte("\x00\x00\x00\x01mdat\x00\x00\x00\x01\x00\x00\x00\x00")), limit: 1 << 20}
	h, hdr, err := br.next()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := br.body(h, hdr, nil); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("body of a 4 GiB box: %v", err)
	}
}

// A body that starts with moov (no ftyp) plays too, to its end.
func TestFMP4MoovFirst(t *testing.T) {
	clip := h265OpusClip(t)
	h, err := parseBoxHeader(clip)
	if err != nil || h.typ != "ftyp" {
		t.Fatalf("first box %+v %v", h, err)
	}
	body := clip[h.size:]
	if !isMP4Head(body) {
		t.Fatal("moov first not detected")
	}
	w := &nopWriter{t: t}
	err = playFMP4(t.Context(), bytes.NewReader(body), w, fmp4Options{})
	if !errors.Is(err, io.EOF) || w.n < 300 {
		t.Fatalf("playFMP4 = %v after %d NALUs and frames", err, w.n)
	}
}
