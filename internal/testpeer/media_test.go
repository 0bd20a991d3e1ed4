package testpeer

import (
	"encoding/json"
	"os/exec"
	"testing"

	"github.com/icey/icey-server/internal/testenv"
)

func TestMakeMedia(t *testing.T) {
	ffprobe := testenv.RequireTool(t, "ffprobe")
	dir := t.TempDir()
	for _, tc := range []struct {
		opts           MediaOptions
		ext            string
		video, audio   string
		profile        string
		bframes, width int
	}{
		{MediaOptions{Audio: MediaOpus}, ".mp4", "h264", "opus", "Constrained Baseline", 0, 320},
		{MediaOptions{Video: MediaH264HighBFrames, Audio: MediaAAC}, ".mp4", "h264", "aac", "High", 2, 320},
		{MediaOptions{Video: MediaH265, Audio: MediaAAC, Size: "640x360"}, ".mp4", "hevc", "aac", "Main", 0, 640},
		{MediaOptions{Video: MediaH264Baseline, Audio: MediaPCMU}, ".mkv", "h264", "pcm_mulaw", "Constrained Baseline", 0, 320},
		{MediaOptions{Video: MediaMJPEG, Audio: MediaPCMU}, ".mkv", "mjpeg", "pcm_mulaw", "", 0, 320},
		{MediaOptions{Video: MediaMJPEG, Audio: MediaOpus}, ".mkv", "mjpeg", "opus", "", 0, 320},
		{MediaOptions{Video: MediaVP8, Audio: MediaOpus}, ".webm", "vp8", "opus", "", 0, 320},
		{MediaOptions{Video: MediaH265, Container: "hevc"}, ".h265", "hevc", "", "Main", 0, 320},
		{MediaOptions{Video: "none", Audio: MediaAAC}, ".mp4", "", "aac", "", 0, 0},
	} {
		name := tc.opts.Video + "+" + tc.opts.Audio
		tc.opts.Seconds = 1
		tc.opts.Name = name + tc.ext
		path := MakeMedia(t, dir, tc.opts)
		out, err := exec.Command(ffprobe, "-v", "error", "-show_entries",
			"stream=codec_type,codec_name,profile,has_b_frames,width,avg_frame_rate", "-of", "json", path).Output()
		if err != nil {
			t.Fatalf("%s: ffprobe: %v", name, err)
		}
		var res struct {
			Streams []struct {
				CodecType  string `json:"codec_type"`
				CodecName  string `json:"codec_name"`
				Profile    string `json:"profile"`
				HasBFrames int    `json:"has_b_frames"`
				Width      int    `json:"width"`
			} `json:"streams"`
		}
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatal(err)
		}
		var video, audio string
		for _, s := range res.Streams {
			switch s.CodecType {
			case "video":
				video = s.CodecName
				if tc.profile != "" && s.Profile != tc.profile {
					t.Errorf("%s: profile %q, want %q", name, s.Profile, tc.profile)
				}
				if s.HasBFrames != tc.bframes {
					t.Errorf("%s: has_b_frames %d, want %d", name, s.HasBFrames, tc.bframes)
				}
				if s.Width != tc.width {
					t.Errorf("%s: width %d, want %d", name, s.Width, tc.width)
				}
			case "audio":
				audio = s.CodecName
			}
		}
		if video != tc.video || audio != tc.audio {
			t.Errorf("%s: streams %q/%q, want %q/%q", name, video, audio, tc.video, tc.audio)
		}
	}
}
