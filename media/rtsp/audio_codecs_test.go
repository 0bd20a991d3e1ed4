package rtsp

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/description"
	"github.com/bluenviron/gortsplib/v4/pkg/format"
	"github.com/bluenviron/gortsplib/v4/pkg/format/rtpmpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg1audio"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"
	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
	"github.com/icey/icey-server/media/transcode"
)

// Camera audio codecs of startAudioCamera.
const (
	camMP3      = "mp3"     // MPEG-1 layer III, 44.1 kHz mono
	camMP3LSF   = "mp3-22k" // MPEG-2 layer III, 22.05 kHz mono (576-sample frames)
	camMP2      = "mp2"     // MPEG-1 layer II, 48 kHz stereo
	camG722     = "g722"    // G.722, 16 kHz (RTP clock 8000)
	loopLength  = 2 * time.Second
	camPTSStart = 200 * time.Millisecond
)

// startAudioCamera starts an RTSP server (gortsplib) with a password that
// loops a 2 s clip in real time: H.264 Constrained Baseline video and one
// audio track of codec, both cut from the same ffmpeg run so that their
// timestamps agree (a frame at t of the clip has RTP time t on both). It
// returns the URL with the credentials.
func startAudioCamera(t *testing.T, codec, user, pass string) string {
	t.Helper()
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	dir := t.TempDir()
	tsPath, audioPath := filepath.Join(dir, "v.ts"), filepath.Join(dir, "a.raw")
	args := []string{"-hide_banner", "-nostdin", "-loglevel", "error",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-map", "0:v", "-t", "2", "-c:v", "libx264", "-profile:v", "baseline", "-preset", "ultrafast", "-bf", "0",
		"-g", "25", "-pix_fmt", "yuv420p", "-f", "mpegts", "-y", tsPath, "-map", "1:a", "-t", "2"}
	switch codec {
	case camMP3:
		args = append(args, "-c:a", "libmp3lame", "-ar", "44100", "-ac", "1", "-b:a", "64k")
	case camMP3LSF:
		args = append(args, "-c:a", "libmp3lame", "-ar", "22050", "-ac", "1", "-b:a", "32k")
	case camMP2:
		args = append(args, "-c:a", "mp2", "-ar", "48000", "-ac", "2", "-b:a", "128k")
	case camG722:
		args = append(args, "-c:a", "g722", "-ar", "16000", "-ac", "1", "-f", "g722")
	}
	switch codec {
	case camMP2:
		args = append(args, "-f", "mp2")
	case camMP3, camMP3LSF:
		args = append(args, "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3")
	}
	args = append(args, "-y", audioPath)
	if b, err := exec.Command(ffmpeg, args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, b)
	}

	// Video: the access units with their offsets, parameter sets apart.
	f, err := os.Open(tsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r := &mpegts.Reader{R: bufio.NewReader(f)}
	if err := r.Initialize(); err != nil {
		t.Fatal(err)
	}
	var sps, pps []byte
	var events []camEvent
	var td mpegts.TimeDecoder
	var first *int64
	for _, tr := range r.Tracks() {
		if _, ok := tr.Codec.(*tscodecs.H264); ok {
			r.OnDataH264(tr, func(pts, _ int64, au [][]byte) error {
				v := td.Decode(pts)
				if first == nil {
					first = &v
				}
				var keep [][]byte
				for _, n := range au {
					switch h264.NALUType(n[0] & 0x1f) {
					case h264.NALUTypeSPS:
						sps = n
					case h264.NALUTypePPS:
						pps = n
					case h264.NALUTypeAccessUnitDelimiter:
					default:
						keep = append(keep, n)
					}
				}
				at := time.Duration(v-*first)*time.Second/90000 + camPTSStart
				events = append(events, camEvent{send: at, pts: at, video: true, au: keep})
				return nil
			})
		}
	}
	for r.Read() == nil {
	}
	if sps == nil || pps == nil || len(events) < 40 {
		t.Fatalf("clip: %d video AUs, SPS %x PPS %x", len(events), sps, pps)
	}

	// Audio: whole frames that end within the loop, so that loops do not
	// overlap.
	raw, err := os.ReadFile(audioPath)
	if err != nil {
		t.Fatal(err)
	}
	var at time.Duration
	for len(raw) > 0 {
		var n int
		var d time.Duration
		if codec == camG722 {
			n, d = min(160, len(raw)), 20*time.Millisecond // 320 samples at 16 kHz
		} else {
			var h mpeg1audio.FrameHeader
			if err := h.Unmarshal(raw); err != nil {
				t.Fatalf("audio frame at %s: %v", at, err)
			}
			n = min(transcode.MPEGAudioFrameLen(h), len(raw))
			d = time.Duration(h.SampleCount()) * time.Second / time.Duration(h.SampleRate)
		}
		if at+d > loopLength || n < 4 {
			break
		}
		p := at + camPTSStart
		events = append(events, camEvent{send: p, pts: p, au: [][]byte{raw[:n]}})
		raw, at = raw[n:], at+d
	}
	sort.SliceStable(events, func(i, j int) bool { return events[i].send < events[j].send })

	vf := &format.H264{PayloadTyp: 96, SPS: sps, PPS: pps, PacketizationMode: 1}
	var af format.Format
	var encodeAudio func(frame []byte) ([]*rtp.Packet, error)
	if codec == camG722 {
		g := &format.G722{}
		enc, err := g.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		af, encodeAudio = g, func(frame []byte) ([]*rtp.Packet, error) {
			p, err := enc.Encode(frame)
			return []*rtp.Packet{p}, err
		}
	} else {
		m := &format.MPEG1Audio{}
		enc, err := m.CreateEncoder()
		if err != nil {
			t.Fatal(err)
		}
		af, encodeAudio = m, func(frame []byte) ([]*rtp.Packet, error) { return enc.Encode([][]byte{frame}) }
	}
	vm := &description.Media{Type: description.MediaTypeVideo, Formats: []format.Format{vf}}
	am := &description.Media{Type: description.MediaTypeAudio, Formats: []format.Format{af}}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	h := &h265Handler{user: user, pass: pass}
	srv := &gortsplib.Server{Handler: h, RTSPAddress: "127.0.0.1:" + strconv.Itoa(port)}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	h.stream = &gortsplib.ServerStream{Server: srv, Desc: &description.Session{Medias: []*description.Media{vm, am}}}
	if err := h.stream.Initialize(); err != nil {
		t.Fatal(err)
	}
	venc, err := vf.CreateEncoder()
	if err != nil {
		t.Fatal(err)
	}
	var encErrs int
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		start := time.Now()
		for loop := time.Duration(0); ; loop += loopLength {
			for _, e := range events {
				select {
				case <-ctx.Done():
					return
				case <-time.After(time.Until(start.Add(loop + e.send))):
				}
				at := loop + e.pts
				var pkts []*rtp.Packet
				var err error
				media, rate := vm, int64(90000)
				if e.video {
					pkts, err = venc.Encode(e.au)
				} else {
					pkts, err = encodeAudio(e.au[0])
					media, rate = am, int64(af.ClockRate())
				}
				if err != nil {
					encErrs++
					continue
				}
				for _, p := range pkts {
					p.Timestamp += uint32(int64(at) * rate / int64(time.Second))
					_ = h.stream.WritePacketRTP(media, p)
				}
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		h.stream.Close()
		srv.Close()
		if encErrs > 0 {
			t.Errorf("camera: %d frames failed to packetize", encErrs)
		}
	})
	return "rtsp://" + user + ":" + pass + "@127.0.0.1:" + strconv.Itoa(port) + "/cam"
}

// timed is a unit's PTS and when the subscriber got it.
type timed struct {
	pts time.Duration
	at  time.Time
}

// readTimed subscribes (live only) and records the video and audio units
// arriving during d after the first keyframe.
func readTimed(t *testing.T, st *media.Stream, d time.Duration) (video, audio []timed) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if _, err := st.WaitTracks(ctx); err != nil {
		t.Fatalf("no tracks: %v", err)
	}
	sub, err := st.Subscribe("t", media.SubscribeOptions{NoCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	buf := make([]*media.Unit, 64)
	var firstKey time.Time
	for {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("read after %d video, %d audio units: %v", len(video), len(audio), err)
		}
		now := time.Now()
		for _, u := range buf[:n] {
			if u.Kind == media.KindVideo && u.Keyframe && firstKey.IsZero() {
				firstKey = now
			}
			if firstKey.IsZero() {
				continue
			}
			if u.Kind == media.KindAudio {
				if u.Codec != media.CodecOpus {
					t.Fatalf("audio unit of codec %q", u.Codec)
				}
				audio = append(audio, timed{u.PTS, now})
			} else {
				video = append(video, timed{u.PTS, now})
			}
		}
		if !firstKey.IsZero() && now.Sub(firstKey) >= d {
			return video, audio
		}
	}
}

// lead is the smallest (arrival - PTS) of units: the offset of the PTS
// timeline from the wall clock, plus the least delay a unit had.
func lead(units []timed, t0 time.Time) time.Duration {
	best := time.Duration(1 << 62)
	for _, u := range units {
		best = min(best, u.at.Sub(t0)-u.pts)
	}
	return best
}

// A camera with MP3, MP2 or G.722 audio (and H.264) and a password:
// gortsplib pulls it, the video passes through, the audio is written to an
// ffmpeg child's stdin (MPEG-TS for MPEG audio, Matroska for G.722) and
// comes back as Opus, 50 frames a second with increasing timestamps on the
// video's timeline. The child's command line and environment hold neither
// the camera's URL or password nor the server's secrets.
func TestCameraAudioTranscoded(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		codec, warning string
	}{
		{camMP3, "audio MP3/MP2 (MPEG-1/2 Audio) is transcoded to Opus with ffmpeg"},
		{camMP3LSF, "audio MP3/MP2 (MPEG-1/2 Audio) is transcoded to Opus with ffmpeg"},
		{camMP2, "audio MP3/MP2 (MPEG-1/2 Audio) is transcoded to Opus with ffmpeg"},
		{camG722, "audio G.722 is transcoded to Opus with ffmpeg"},
	} {
		t.Run(tc.codec, func(t *testing.T) {
			checkLeaks(t)
			const pass = "Cam-Pa55-audio"
			t.Setenv("ICEY_AUTH_TOKEN", "api-token-in-env-7")
			url := startAudioCamera(t, tc.codec, "admin", pass)
			t.Setenv("ICEY_SOURCE", url)
			log, logs := newLogger()
			src, err := New(Config{URL: url, Transport: TransportTCP, TranscodeAudio: true}, log)
			if err != nil {
				t.Fatal(err)
			}
			r := start(t, src)
			video, audio := readTimed(t, r.st, 3*time.Second)

			tr := r.st.Tracks()
			want := media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
			if tr.Video == nil || tr.Video.Codec != media.CodecH264 || tr.Audio == nil || *tr.Audio != want {
				t.Fatalf("tracks video %+v audio %+v, want H.264 + %+v", tr.Video, tr.Audio, want)
			}
			if len(video) < 60 || len(audio) < 2 {
				t.Fatalf("%d video units, %d audio units in 3 s", len(video), len(audio))
			}
			// ~50 Opus frames a second, timestamps increasing by 20 ms
			// (a loop of the camera may leave a gap of up to a frame).
			span := audio[len(audio)-1].pts - audio[0].pts
			rate := float64(len(audio)-1) / span.Seconds()
			minStep, maxStep := time.Hour, time.Duration(0)
			for i := 1; i < len(audio); i++ {
				d := audio[i].pts - audio[i-1].pts
				minStep, maxStep = min(minStep, d), max(maxStep, d)
			}
			// Alignment: how far the audio's PTS timeline is from the
			// video's, from the earliest arrival of each relative to its
			// PTS. The Opus frames come out of ffmpeg some ms after their
			// input, so audio can only be later (positive); a timeline
			// shift would show here.
			t0 := video[0].at
			skew := lead(audio, t0) - lead(video, t0)
			vspan := video[len(video)-1].pts - video[0].pts
			t.Logf("%d video units over %s, %d Opus frames over %s: %.1f/s, steps %s..%s, audio-video lead %s, audio PTS %s..%s, video PTS %s..%s",
				len(video), vspan, len(audio), span, rate, minStep, maxStep, skew, audio[0].pts, audio[len(audio)-1].pts, video[0].pts, video[len(video)-1].pts)
			if len(audio) < 120 || rate < 45 || rate > 55 {
				t.Errorf("%d Opus frames in 3 s, %.1f/s: want ~50/s", len(audio), rate)
			}
			if minStep < 19*time.Millisecond || maxStep > 50*time.Millisecond {
				t.Errorf("Opus PTS steps %s..%s: want increasing by 20 ms", minStep, maxStep)
			}
			if skew < -100*time.Millisecond || skew > 100*time.Millisecond {
				t.Errorf("audio timeline %s off the video's: want within 100 ms", skew)
			}
			if d := audio[0].pts - video[0].pts; d < -100*time.Millisecond || d > 100*time.Millisecond {
				t.Errorf("first Opus PTS %s, first video PTS %s", audio[0].pts, video[0].pts)
			}
			if w := strings.Join(src.Warnings(), "; "); !strings.Contains(w, tc.warning) {
				t.Errorf("warnings %q, want %q", w, tc.warning)
			}

			pid := int(src.audioPid.Load())
			if pid == 0 {
				t.Fatal("no ffmpeg child")
			}
			p := childtest.CheckChild(t, pid, pass, "admin:", "rtsp://", "127.0.0.1:", "api-token-in-env-7", "ICEY_")
			if p.Exe() != "ffmpeg" {
				t.Fatalf("pid %d is %q", pid, p.Exe())
			}
			argv := " " + strings.Join(p.Cmdline, " ") + " "
			if !strings.Contains(argv, " -i pipe:0 ") || strings.Count(argv, " -i ") != 1 || strings.Contains(argv, "-c:v") {
				t.Errorf("ffmpeg is not the audio pipe reading its stdin: %q", p.Cmdline)
			}
			if n := len(childtest.FFmpegs("")); n != 1 {
				t.Errorf("%d ffmpeg children, want 1", n)
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
		})
	}
}

// The audio of a camera offering several: Opus > G.711 > AAC > MP3 >
// G.722, the last three only with TranscodeAudio.
func TestAudioPreference(t *testing.T) {
	aacCfg := &mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}
	opus := func() format.Format { return &format.Opus{PayloadTyp: 111, ChannelCount: 2} }
	pcmu := func() format.Format {
		return &format.G711{PayloadTyp: 0, MULaw: true, SampleRate: 8000, ChannelCount: 1}
	}
	aac := func() format.Format {
		return &format.MPEG4Audio{PayloadTyp: 97, Config: aacCfg, SizeLength: 13, IndexLength: 3, IndexDeltaLength: 3}
	}
	mp3 := func() format.Format { return &format.MPEG1Audio{} }
	g722 := func() format.Format { return &format.G722{} }
	for _, tc := range []struct {
		name      string
		audio     [][]func() format.Format // medias of formats
		transcode bool
		want      string // Codec() of the chosen format, "" for none
		warn      string
	}{
		{"g722 mp3", [][]func() format.Format{{g722}, {mp3}}, true, "MPEG-1/2 Audio", "MP3/MP2 (MPEG-1/2 Audio) is transcoded"},
		{"mp3 g722 same media", [][]func() format.Format{{g722, mp3}}, true, "MPEG-1/2 Audio", "MP3/MP2 (MPEG-1/2 Audio) is transcoded"},
		{"g722 alone", [][]func() format.Format{{g722}}, true, "G722", "G.722 is transcoded"},
		{"mp3 aac", [][]func() format.Format{{mp3}, {aac}}, true, "MPEG-4 Audio", "MPEG-4 Audio is transcoded"},
		{"aac pcmu", [][]func() format.Format{{aac}, {pcmu, g722}}, true, "G711", ""},
		{"pcmu opus", [][]func() format.Format{{pcmu}, {mp3, opus}}, true, "Opus", ""},
		{"mp3 without transcode", [][]func() format.Format{{mp3}, {g722}}, false, "", "MP3/MP2 (MPEG-1/2 Audio) dropped"},
		{"g722 mp3 pcmu without transcode", [][]func() format.Format{{g722, mp3}, {pcmu}}, false, "G711", "G.722 dropped"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			medias := []*description.Media{{Type: description.MediaTypeVideo,
				Formats: []format.Format{&format.H264{PayloadTyp: 96, PacketizationMode: 1}}}}
			for _, fs := range tc.audio {
				m := &description.Media{Type: description.MediaTypeAudio}
				for _, f := range fs {
					m.Formats = append(m.Formats, f())
				}
				medias = append(medias, m)
			}
			src, err := New(Config{URL: "rtsp://127.0.0.1:1/cam", TranscodeAudio: tc.transcode}, nil)
			if err != nil {
				t.Fatal(err)
			}
			sel, err := src.selectTracks(&description.Session{Medias: medias})
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if sel.audio != nil {
				got = sel.audioFormat.Codec()
			}
			w := strings.Join(sel.warnings, "; ")
			if got != tc.want || !strings.Contains(w, tc.warn) {
				t.Errorf("chose %q with warnings %q, want %q and %q", got, w, tc.want, tc.warn)
			}
			if sel.transcoded() != (got == "MPEG-4 Audio" || got == "MPEG-1/2 Audio" || got == "G722") {
				t.Errorf("transcoded() = %v for %q", sel.transcoded(), got)
			}
		})
	}
}

// mpaDepacketizer returns the frames of MPEG-1 and MPEG-2 audio (whose
// layer III frames gortsplib's decoder sizes wrongly), whole, aggregated
// or fragmented by gortsplib's packetizer, and drops a frame whose first
// fragment was lost.
func TestMPADepacketizer(t *testing.T) {
	ffmpeg := testenv.RequireTool(t, "ffmpeg")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"mpeg1-l3", []string{"-c:a", "libmp3lame", "-ar", "48000", "-b:a", "320k", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3"}},
		{"mpeg2-l3", []string{"-c:a", "libmp3lame", "-ar", "24000", "-b:a", "64k", "-write_xing", "0", "-id3v2_version", "0", "-f", "mp3"}},
		{"mpeg1-l2", []string{"-c:a", "mp2", "-ar", "48000", "-b:a", "192k", "-f", "mp2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "a")
			args := append([]string{"-hide_banner", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
				"sine=frequency=440:sample_rate=48000", "-t", "1"}, tc.args...)
			if b, err := exec.Command(ffmpeg, append(args, "-y", path)...).CombinedOutput(); err != nil {
				t.Fatalf("ffmpeg: %v %s", err, b)
			}
			raw, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			var frames [][]byte
			for len(raw) > 4 {
				var h mpeg1audio.FrameHeader
				if err := h.Unmarshal(raw); err != nil {
					t.Fatal(err)
				}
				n := transcode.MPEGAudioFrameLen(h)
				frames, raw = append(frames, raw[:n]), raw[n:]
			}
			for _, maxSize := range []int{1450, 200} {
				enc := &rtpmpeg1audio.Encoder{PayloadMaxSize: maxSize}
				if err := enc.Init(); err != nil {
					t.Fatal(err)
				}
				var dec mpaDepacketizer
				var got [][]byte
				for i := 0; i < len(frames); i += 2 {
					pkts, err := enc.Encode(frames[i:min(i+2, len(frames))])
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range pkts {
						fs, err := dec.decode(p.Payload)
						if err != nil {
							t.Fatalf("packet of %d bytes: %v", len(p.Payload), err)
						}
						got = append(got, fs...)
					}
				}
				if len(got) != len(frames) {
					t.Fatalf("max %d: %d frames out of %d", maxSize, len(got), len(frames))
				}
				for i := range got {
					if !bytes.Equal(got[i], frames[i]) {
						t.Fatalf("max %d: frame %d differs", maxSize, i)
					}
				}
			}
			// A frame fragmented over three packets loses its first: the
			// rest is dropped, the next frame comes out.
			enc := &rtpmpeg1audio.Encoder{PayloadMaxSize: len(frames[0])/3 + 8}
			if err := enc.Init(); err != nil {
				t.Fatal(err)
			}
			pkts, err := enc.Encode(frames[:1])
			if err != nil || len(pkts) < 3 {
				t.Fatalf("%d packets, %v", len(pkts), err)
			}
			var dec mpaDepacketizer
			for _, p := range pkts[1:] {
				if fs, err := dec.decode(p.Payload); len(fs) != 0 || err != nil {
					t.Fatalf("from fragments without their start: %d frames, %v", len(fs), err)
				}
			}
			pkts, _ = enc.Encode(frames[1:2])
			var got [][]byte
			for _, p := range pkts {
				fs, _ := dec.decode(p.Payload)
				got = append(got, fs...)
			}
			if len(got) != 1 || !bytes.Equal(got[0], frames[1]) {
				t.Errorf("after a lost fragment: %d frames", len(got))
			}
		})
	}
}
