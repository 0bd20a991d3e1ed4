package httpsrc

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/media"
)

// nopWriter is a media.Writer that checks nothing is written before the
// tracks and keeps no references.
type nopWriter struct {
	t      *testing.T
	tracks bool
	n      int
}

func (w *nopWriter) SetTracks(media.Tracks) { w.tracks = true }
func (w *nopWriter) WriteH264(_ time.Duration, au [][]byte) {
	w.wrote(au)
}
func (w *nopWriter) WriteH265(_ time.Duration, au [][]byte) {
	w.wrote(au)
}
func (w *nopWriter) WriteAudio(_ time.Duration, frame []byte) { w.wrote([][]byte{frame}) }
func (w *nopWriter) Discontinuity()                           {}

func (w *nopWriter) wrote(au [][]byte) {
	if !w.tracks {
		w.t.Fatal("write before SetTracks")
	}
	w.n += len(au)
}

// fuzzSeedClip is a short fragmented MP4 (H.264 + Opus), when ffmpeg is
// installed.
func fuzzSeedClip(f *testing.F) []byte {
	ffmpeg, err := exec.LookPath("ffmpeg")
	if err != nil {
		return nil
	}
	dir := f.TempDir()
	p := filepath.Join(dir, "seed.mp4")
	cmd := exec.Command(ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin",
		"-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "0.6", "-g", "3", "-c:v", "libx264", "-preset", "ultrafast", "-bf", "2", "-c:a", "libopus",
		"-movflags", "frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", "-y", p)
	if err := cmd.Run(); err != nil {
		return nil
	}
	b, _ := os.ReadFile(p)
	return b
}

// FuzzFMP4 feeds arbitrary bytes to the box framing (parseBoxHeader,
// boxReader) and to the whole fragmented-MP4 demuxer: errors are fine;
// panics, hangs, writes before SetTracks and boxes read past the limit are
// not. `go test` runs the seeds; `go test -fuzz FuzzFMP4` explores.
func FuzzFMP4(f *testing.F) {
	if clip := fuzzSeedClip(f); clip != nil {
		f.Add(clip)
		f.Add(clip[:len(clip)/2])
		if h, err := parseBoxHeader(clip); err == nil && h.typ == "ftyp" {
			f.Add(clip[h.size:]) // starts with moov
		}
	}
	f.Add([]byte("\x00\x00\x00\x08ftyp"))
	f.Add([]byte("\x00\x00\x00\x10ftypiso5\x00\x00\x00\x01\x00\x00\x00\x01moov\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Add([]byte("\x00\x00\x00\x10moov\x00\x00\x00\x08mvex\x00\x00\x00\x01moof\x00\x00\x00\x00\x00\x00\x00\x10"))
	f.Add([]byte("\x00\x00\x00\x00mdat"))
	f.Fuzz(func(t *testing.T, b []byte) {
		// Framing: a parsed header is consistent with its bytes.
		if h, err := parseBoxHeader(b); err == nil {
			if h.hdr != 8 && h.hdr != 16 || h.size < uint64(h.hdr) || len(b) < h.hdr {
				t.Fatalf("header %+v from %d bytes", h, len(b))
			}
			if h.hdr == 8 && uint64(binary.BigEndian.Uint32(b)) != h.size {
				t.Fatalf("size %d from %x", h.size, b[:8])
			}
		}
		const limit = 1 << 16
		br := &boxReader{r: bytes.NewReader(b), limit: limit}
		for i := 0; ; i++ {
			h, hdr, err := br.next()
			if err != nil {
				break
			}
			if i%2 == 0 {
				box, err := br.body(h, hdr, nil)
				if err != nil {
					break
				}
				if uint64(len(box)) != h.size || len(box) > limit {
					t.Fatalf("box %+v read as %d bytes", h, len(box))
				}
			} else if err := br.skip(h); err != nil {
				break
			}
			if br.off > uint64(len(b)) {
				t.Fatalf("offset %d past the %d input bytes", br.off, len(b))
			}
		}

		// The demuxer (no ffmpeg: AAC is dropped).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		w := &nopWriter{t: t}
		err := playFMP4(ctx, bytes.NewReader(b), w, fmp4Options{MaxBox: limit})
		switch {
		case err == nil:
			t.Fatal("playFMP4 returned nil")
		case errors.Is(err, context.DeadlineExceeded):
			t.Fatal("playFMP4 hung")
		case errors.Is(err, media.ErrUnsupportedCodec) && w.tracks:
			t.Fatalf("%v after SetTracks", err)
		case !errors.Is(err, io.EOF) && strings.TrimSpace(err.Error()) == "":
			t.Fatal("empty error")
		}
	})
}
