package testenv

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"testing"
)

// Probe is what ffprobe reads from a media file.
type Probe struct {
	// Duration of the container in seconds.
	Duration float64
	// Streams by codec type ("video", "audio"): codec name and start time.
	Streams map[string]ProbeStream
	// FirstVideoKey reports whether the first video frame is a keyframe.
	FirstVideoKey bool
}

// ProbeStream is one stream of a Probe.
type ProbeStream struct {
	Codec     string
	StartTime float64
	Width     int
	Height    int
}

// FFprobe probes file with ffprobe (installed by `make test`); it returns
// ffprobe's complaint as an error when the file is unreadable.
func FFprobe(t *testing.T, file string) (Probe, error) {
	t.Helper()
	bin := RequireTool(t, "ffprobe")
	out, err := exec.Command(bin, "-v", "error", "-print_format", "json", "-show_format", "-show_streams", file).Output()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return Probe{}, &probeError{string(ee.Stderr)}
		}
		return Probe{}, err
	}
	var raw struct {
		Format struct {
			Duration string `json:"duration"`
		} `json:"format"`
		Streams []struct {
			CodecType string `json:"codec_type"`
			CodecName string `json:"codec_name"`
			StartTime string `json:"start_time"`
			Width     int    `json:"width"`
			Height    int    `json:"height"`
		} `json:"streams"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return Probe{}, err
	}
	p := Probe{Streams: map[string]ProbeStream{}}
	p.Duration, _ = strconv.ParseFloat(raw.Format.Duration, 64)
	for _, s := range raw.Streams {
		st, _ := strconv.ParseFloat(s.StartTime, 64)
		p.Streams[s.CodecType] = ProbeStream{Codec: s.CodecName, StartTime: st, Width: s.Width, Height: s.Height}
	}
	if _, ok := p.Streams["video"]; ok {
		out, err := exec.Command(bin, "-v", "error", "-print_format", "json", "-select_streams", "v",
			"-show_frames", "-read_intervals", "%+#1", "-show_entries", "frame=key_frame", file).Output()
		if err == nil {
			var fr struct {
				Frames []struct {
					KeyFrame int `json:"key_frame"`
				} `json:"frames"`
			}
			if json.Unmarshal(out, &fr) == nil && len(fr.Frames) > 0 {
				p.FirstVideoKey = fr.Frames[0].KeyFrame == 1
			}
		}
	}
	return p, nil
}

type probeError struct{ msg string }

func (e *probeError) Error() string { return "ffprobe: " + e.msg }
