package testpeer

import (
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/icey/icey-server/internal/testenv"
)

// Motion clip geometry (MotionClip): a 320x240 picture where a white
// MotionSquare px square sits at (MotionX(t), MotionY).
const (
	MotionSquare = 120
	MotionY      = 60
)

// MotionX is the square's left edge at t seconds: still at 20 until 1 s,
// moving at 300 px/s (jumping back every 180 px) until 3 s, then still.
func MotionX(t float64) float64 {
	if t < 1 || t >= 3 {
		return 20
	}
	x := (t - 1) * 300
	for x >= 180 {
		x -= 180
	}
	return 20 + x
}

// MotionClip writes a 6 s H.264 (baseline, 25 fps, 1 s GOP) + Opus MP4 for
// analysis tests: a still grey picture with a white square that moves from
// t=1 s to t=3 s (see MotionX), and a 440 Hz tone during [0,1), [2,3),
// [4,5) with silence between.
func MotionClip(tb testing.TB, dir string) string {
	tb.Helper()
	var ff string
	if t, ok := tb.(*testing.T); ok {
		ff = testenv.RequireTool(t, "ffmpeg")
	} else if p, err := exec.LookPath("ffmpeg"); err == nil {
		ff = p
	} else {
		tb.Fatal("ffmpeg not found")
	}
	out := filepath.Join(dir, "motion.mp4")
	cmd := exec.Command(ff, "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "color=c=0x404040:s=320x240:r=25",
		"-f", "lavfi", "-i", "color=c=white:s=120x120:r=25",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-filter_complex", "[0][1]overlay=x='if(lt(t,1),20,if(lt(t,3),20+mod((t-1)*300,180),20))':y=60[v];[2]volume=volume=0:enable='gte(mod(t,2),1)'[a]",
		"-map", "[v]", "-map", "[a]", "-t", "6",
		"-c:v", "libx264", "-profile:v", "baseline", "-bf", "0", "-g", "25", "-pix_fmt", "yuv420p",
		"-c:a", "libopus", "-b:a", "64k", "-ac", "2", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		tb.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	return out
}
