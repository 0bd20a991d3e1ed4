package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/internal/testpeer"
)

// matrixSource is one row of the codec matrix: a file or an RTSP camera
// of one video and audio codec.
type matrixSource struct {
	path       string
	video      string // testpeer.Media* video
	audio      string // testpeer.Media* audio
	camera     bool
	wantAudio  string // the audio codec viewers get
	h265       bool
	bframes    bool
	rendition  bool // H.264-only viewers get a rendition
	sourceCode string
}

var matrixSources = []matrixSource{
	{path: "f-base", video: testpeer.MediaH264Baseline, audio: testpeer.MediaOpus, wantAudio: "audio/opus"},
	{path: "f-bframes", video: testpeer.MediaH264HighBFrames, audio: testpeer.MediaAAC, wantAudio: "audio/opus", bframes: true, rendition: true},
	{path: "f-h265", video: testpeer.MediaH265, audio: testpeer.MediaOpus, wantAudio: "audio/opus", h265: true, rendition: true},
	{path: "f-mjpeg", video: testpeer.MediaMJPEG, audio: testpeer.MediaPCMU, wantAudio: "audio/opus"},
	{path: "r-base", video: testpeer.MediaH264Baseline, audio: testpeer.MediaAAC, camera: true, wantAudio: "audio/opus"},
	{path: "r-bframes", video: testpeer.MediaH264HighBFrames, audio: testpeer.MediaPCMU, camera: true, wantAudio: "audio/PCMU", bframes: true, rendition: true},
	{path: "r-h265", video: testpeer.MediaH265, audio: testpeer.MediaAAC, camera: true, wantAudio: "audio/opus", h265: true, rendition: true},
	{path: "r-mjpeg", video: testpeer.MediaMJPEG, audio: testpeer.MediaOpus, camera: true, wantAudio: "audio/opus"},
}

// matrixViewers are the pion viewers of every row: the video codecs they
// offer, in order of preference.
var matrixViewers = []struct {
	name   string
	codecs []string
}{
	{"H264-only", []string{testpeer.CodecH264}},
	{"VP8-only", []string{testpeer.CodecVP8}},
	{"H265+H264", []string{testpeer.CodecH265, testpeer.CodecH264}},
}

const matrixFPS = 25

// startMatrixSources makes the files and cameras of the matrix and returns
// the paths config.
func startMatrixSources(t *testing.T) map[string]any {
	t.Helper()
	dir := t.TempDir()
	paths := map[string]any{}
	for _, s := range matrixSources {
		if !s.camera {
			f := testpeer.MakeMedia(t, dir, testpeer.MediaOptions{Video: s.video, Audio: s.audio, FPS: matrixFPS,
				Seconds: 4, Name: s.path + map[bool]string{true: ".mkv", false: ".mp4"}[s.audio == testpeer.MediaPCMU || s.video == testpeer.MediaMJPEG]})
			paths[s.path] = map[string]any{"source": f}
			continue
		}
		o := rtsptest.Options{FPS: matrixFPS, Width: 320, Height: 240}
		switch s.video {
		case testpeer.MediaH264HighBFrames:
			o.Video = rtsptest.VideoH264BFrames
		case testpeer.MediaH265:
			o.Video = rtsptest.VideoH265
		case testpeer.MediaMJPEG:
			o.Video = rtsptest.VideoMJPEGFrames
		}
		o.Audio = map[string]rtsptest.Audio{testpeer.MediaOpus: rtsptest.AudioOpus, testpeer.MediaAAC: rtsptest.AudioAAC,
			testpeer.MediaPCMU: rtsptest.AudioPCMU}[s.audio]
		cam := rtsptest.Start(t, o)
		paths[s.path] = map[string]any{"source": cam.URL(s.path)}
	}
	return paths
}

// The codec matrix with real peers: every source (H.264 baseline, H.264
// High with B-frames, H.265 and M-JPEG, as files and as RTSP cameras, with
// Opus, AAC or PCMU audio) to every pion viewer (offering H.264 only, VP8
// only, or H.265 then H.264): each viewer decodes (ffprobe) its video at
// the source frame rate ±10 %, gets the codec it can play (the source's
// when it can, else a rendition), and receives playable audio (AAC as
// Opus). /api/status names each path's video and its renditions.
func TestCodecMatrix(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	testenv.RequireTool(t, "ffprobe")
	cfg, _ := json.Marshal(map[string]any{
		"media":  map[string]any{"loop": true},
		"webrtc": map[string]any{"maxPendingPerClient": 64},
		"paths":  startMatrixSources(t),
	})
	p := launch(t, []string{"-c", writeConfig(t, string(cfg))})
	p.waitFor(t, "/api/ready", 200, 60*time.Second)

	type cell struct {
		fps        float64
		codec      string
		audio      string
		w, h       int
		rendition  bool
		audioCount uint64
	}
	results := map[string]map[string]cell{}
	for _, src := range matrixSources {
		results[src.path] = map[string]cell{}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		var (
			wg      sync.WaitGroup
			mu      sync.Mutex
			errs    []string
			viewers []*testpeer.Viewer
		)
		for _, mv := range matrixViewers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				fail := func(format string, a ...any) {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s ← %s: ", src.path, mv.name)+fmt.Sprintf(format, a...))
					mu.Unlock()
				}
				v, err := testpeer.Connect(ctx, p.base+"/"+src.path+"/whep", testpeer.Options{VideoCodecs: mv.codecs, Timeout: 30 * time.Second})
				if err != nil {
					fail("connect: %v", err)
					return
				}
				mu.Lock()
				viewers = append(viewers, v)
				mu.Unlock()
				fps, _, err := v.DecodedFPS(ctx, 2*time.Second)
				w, h := v.DecodedSize()
				c := cell{fps: fps, codec: v.VideoCodec(), audio: v.AudioCodec(), w: w, h: h, audioCount: v.AudioPackets.Load()}
				mu.Lock()
				results[src.path][mv.name] = c
				mu.Unlock()
				if err != nil {
					fail("%v", err)
					return
				}
				want := "video/H264"
				switch {
				case mv.name == "VP8-only":
					want = "video/VP8"
				case mv.name == "H265+H264" && src.h265:
					want = "video/H265"
				}
				if !strings.EqualFold(c.codec, want) {
					fail("got %s, want %s", c.codec, want)
				}
				if math.Abs(fps-matrixFPS) > matrixFPS*0.1 {
					fail("decoded %.1f fps, want %d ±10 %%", fps, matrixFPS)
				}
				if w != 320 || h != 240 {
					fail("decoded %dx%d, want 320x240", w, h)
				}
				if !strings.EqualFold(c.audio, src.wantAudio) || c.audioCount < 20 {
					fail("audio %s (%d packets), want %s", c.audio, c.audioCount, src.wantAudio)
				}
			}()
		}
		wg.Wait()
		// While the viewers are on: the path's video and renditions.
		st := statusPaths(t, p)[src.path]
		video, _ := st["video"].(map[string]any)
		rends, _ := st["renditions"].([]any)
		var names []string
		for _, r := range rends {
			m := r.(map[string]any)
			names = append(names, fmt.Sprintf("%v(%v)", m["codec"], m["viewers"]))
		}
		sort.Strings(names)
		t.Logf("%-9s video %v, audio %v, renditions %v", src.path, video, st["audio"], names)
		wantCodec := map[bool]string{true: "H265", false: "H264"}[src.h265]
		if video == nil || video["codec"] != wantCodec || video["bFrames"] != src.bframes {
			errs = append(errs, fmt.Sprintf("%s: status video %v, want codec %s bFrames %v", src.path, video, wantCodec, src.bframes))
		}
		// VP8 always needs a rendition; H.264 one when the source is not
		// plain H.264 (B-frames, H.265).
		wantRends := []string{"VP8(1)"}
		if src.rendition {
			n := 1
			if src.bframes {
				n = 2 // H.264-only and H.265+H.264 viewers
			}
			wantRends = []string{"H264(" + strconv.Itoa(n) + ")", "VP8(1)"}
		}
		if strings.Join(names, ",") != strings.Join(wantRends, ",") {
			errs = append(errs, fmt.Sprintf("%s: renditions %v, want %v", src.path, names, wantRends))
		}
		for _, v := range viewers {
			v.Close()
		}
		cancel()
		if len(errs) > 0 {
			t.Error(strings.Join(errs, "\n"))
		}
	}
	// The table for the closing note.
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s", "source")
	for _, mv := range matrixViewers {
		fmt.Fprintf(&b, " | %-26s", mv.name)
	}
	b.WriteString("\n")
	for _, src := range matrixSources {
		fmt.Fprintf(&b, "%-10s", src.path)
		for _, mv := range matrixViewers {
			c := results[src.path][mv.name]
			fmt.Fprintf(&b, " | %-5s %4.1f fps %-6s", strings.TrimPrefix(c.codec, "video/"), c.fps, strings.TrimPrefix(c.audio, "audio/"))
		}
		b.WriteString("\n")
	}
	t.Logf("decoded fps per cell (source %d fps):\n%s", matrixFPS, b.String())
	if out := os.Getenv("ICEY_MATRIX_OUT"); out != "" {
		_ = os.WriteFile(filepath.Clean(out), []byte(b.String()), 0o644)
	}
}
