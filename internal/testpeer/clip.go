package testpeer

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/icey/icey-server/internal/testenv"
)

// ClipOptions describe a generated clip. Zero fields take the defaults.
type ClipOptions struct {
	Size    string // WxH, default "320x240"
	Bitrate string // H.264 bitrate, default "1M"
	FPS     int    // default 30
	GOP     int    // frames between IDRs, default 60 (2 s at 30 fps)
	Seconds int    // length, default 4
}

// MakeClip generates a clip with ffmpeg (testsrc2 pattern, 440 Hz tone):
// H.264 Constrained Baseline without B-frames, one access unit per frame
// (grouped by the AUD x264 emits), and 20 ms Opus packets. It fails tb
// when ffmpeg is missing or the output is not what it should be.
func MakeClip(tb *testing.T, o ClipOptions) *Clip {
	tb.Helper()
	if o.Size == "" {
		o.Size = "320x240"
	}
	if o.Bitrate == "" {
		o.Bitrate = "1M"
	}
	if o.FPS == 0 {
		o.FPS = 30
	}
	if o.GOP == 0 {
		o.GOP = 60
	}
	if o.Seconds == 0 {
		o.Seconds = 4
	}
	ffmpeg := testenv.RequireTool(tb, "ffmpeg")
	dir := tb.TempDir()
	vpath, apath := filepath.Join(dir, "v.h264"), filepath.Join(dir, "a.ogg")
	run := func(args ...string) {
		cmd := exec.Command(ffmpeg, append([]string{"-nostdin", "-v", "error", "-y"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("ffmpeg %v: %v\n%s", args, err, out)
		}
	}
	run("-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%s:rate=%d", o.Size, o.FPS), "-t", fmt.Sprint(o.Seconds),
		"-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-tune", "zerolatency",
		"-pix_fmt", "yuv420p", "-g", fmt.Sprint(o.GOP), "-keyint_min", fmt.Sprint(o.GOP), "-sc_threshold", "0",
		"-bf", "0", "-b:v", o.Bitrate, "-maxrate", o.Bitrate, "-bufsize", o.Bitrate, "-x264-params", "aud=1", "-f", "h264", vpath)
	run("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", fmt.Sprint(o.Seconds),
		"-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-frame_duration", "20", "-f", "ogg", apath)

	raw, err := os.ReadFile(vpath)
	if err != nil {
		tb.Fatal(err)
	}
	c := &Clip{FPS: o.FPS}
	var cur [][]byte
	flush := func() {
		if len(cur) == 0 {
			return
		}
		idr := false
		for _, n := range cur {
			idr = idr || n[0]&0x1f == 5
		}
		c.AUs = append(c.AUs, cur)
		c.IsIDR = append(c.IsIDR, idr)
		cur = nil
	}
	for _, n := range SplitAnnexB(raw) {
		switch n[0] & 0x1f {
		case 9: // AUD starts an access unit (x264 aud=1)
			flush()
		case 7:
			if c.SPS == nil {
				c.SPS = n
			}
		case 8:
			if c.PPS == nil {
				c.PPS = n
			}
		}
		cur = append(cur, n)
	}
	flush()
	if len(c.AUs) < o.FPS*o.Seconds-1 || c.SPS == nil || c.PPS == nil || !c.IsIDR[0] {
		tb.Fatalf("unexpected clip: %d AUs, sps %v, pps %v", len(c.AUs), c.SPS != nil, c.PPS != nil)
	}
	araw, err := os.ReadFile(apath)
	if err != nil {
		tb.Fatal(err)
	}
	pk, err := oggPackets(araw)
	if err != nil || len(pk) < 102 {
		tb.Fatalf("opus: %d packets, %v", len(pk), err)
	}
	c.Opus = pk[2:] // skip OpusHead and OpusTags
	return c
}

// oggPackets splits an Ogg stream into packets (RFC 3533 lacing).
func oggPackets(b []byte) ([][]byte, error) {
	var out [][]byte
	var cur []byte
	for len(b) >= 27 {
		if string(b[:4]) != "OggS" {
			return nil, fmt.Errorf("bad ogg page")
		}
		nseg := int(b[26])
		if len(b) < 27+nseg {
			return nil, fmt.Errorf("short ogg page")
		}
		lacing := b[27 : 27+nseg]
		body := b[27+nseg:]
		off := 0
		for _, l := range lacing {
			if off+int(l) > len(body) {
				return nil, fmt.Errorf("short ogg page")
			}
			cur = append(cur, body[off:off+int(l)]...)
			off += int(l)
			if l < 255 {
				out = append(out, cur)
				cur = nil
			}
		}
		b = body[off:]
	}
	return out, nil
}

// SplitAnnexB splits an H.264 Annex B byte stream into NAL units (without
// start codes).
func SplitAnnexB(b []byte) [][]byte {
	var out [][]byte
	for {
		i := bytes.Index(b, []byte{0, 0, 1})
		if i < 0 {
			break
		}
		b = b[i+3:]
		j := bytes.Index(b, []byte{0, 0, 1})
		n := b
		if j >= 0 {
			n = b[:j]
			if len(n) > 0 && n[len(n)-1] == 0 {
				n = n[:len(n)-1] // 4-byte start code of the next NALU
			}
			b = b[j:]
		} else {
			b = nil
		}
		if len(n) > 0 {
			out = append(out, n)
		}
		if b == nil {
			break
		}
	}
	return out
}
