package intel

import (
	"math/rand/v2"
	"testing"
	"time"
)

const (
	tBG     = 20
	tBright = 235
)

// tSquare draws a background frame with a size x size tBright square at (x, y).
func tSquare(w, h, x, y, size int) []byte {
	b := make([]byte, w*h)
	for i := range b {
		b[i] = tBG
	}
	for yy := y; yy < y+size && yy < h; yy++ {
		for xx := x; xx < x+size && xx < w; xx++ {
			b[yy*w+xx] = tBright
		}
	}
	return b
}

type tBox struct{ x0, y0, x1, y1 float64 } // normalized, half-open

func (b tBox) overlaps(o tBox) bool {
	return b.x0 < o.x1 && o.x0 < b.x1 && b.y0 < o.y1 && o.y0 < b.y1
}

func (b tBox) contains(o tBox) bool {
	const eps = 1e-9
	return o.x0 >= b.x0-eps && o.y0 >= b.y0-eps && o.x1 <= b.x1+eps && o.y1 <= b.y1+eps
}

func tCellBox(w, h, x, y, size int) tBox {
	return tBox{float64(x) / float64(w), float64(y) / float64(h),
		float64(x+size) / float64(w), float64(y+size) / float64(h)}
}

// TestMotionMovingSquare: a static background, a tBright 4x4-cell square
// still for 1 s, moving 2 cells per sampled frame (bouncing across the
// grid) from 1 s to 4 s, then still for 2 s. Frames come every 200 ms of
// media time (30 fps, every 6th frame sampled by the caller). The grid is
// 16x9 so that the square's leading and trailing edges (16 cells of 215/255)
// make a score (~0.094) above the default threshold 0.08; on the default
// 32x18 grid a 4x4 square can never reach 0.08.
//
// Asserted: no event before motion starts or after it stops (+300 ms); the
// first event within [start, start+300 ms]; without cooldown the last event
// within 300 ms of the stop, with the default cooldown (500 ms) the last
// event within cooldown+step of the stop; consecutive events at least
// Cooldown apart; the largest region lies inside the tBox covering the
// square's previous and current positions and overlaps it.
func TestMotionMovingSquare(t *testing.T) {
	const (
		w, h, size = 16, 9, 4
		step       = 200 * time.Millisecond
	)
	start, stop, end := time.Second, 4*time.Second, 6*time.Second
	for _, tc := range []struct {
		name     string
		cooldown time.Duration
	}{{"cooldown-none", -1}, {"cooldown-default", 0}} {
		t.Run(tc.name, func(t *testing.T) {
			d := NewMotionDetector(MotionConfig{GridWidth: w, GridHeight: h, Cooldown: tc.cooldown})
			cfg := d.Config()
			x, dx, y := 0, 2, 2
			prevX := x
			var events []Motion
			var id uint64
			for pts := time.Duration(0); pts <= end; pts += step {
				prevX = x
				if pts >= start && pts <= stop {
					if x+dx < 0 || x+dx+size > w {
						dx = -dx
					}
					x += dx
				}
				id++
				m, ok := d.Detect(Frame{PTS: pts, Luma: tSquare(w, h, x, y, size), Width: w, Height: h, ID: id})
				if !ok {
					continue
				}
				events = append(events, m)
				if m.FrameID != id || m.PTS != pts || len(m.Grid) != w*h || m.GridWidth != w || m.GridHeight != h {
					t.Fatalf("event fields: %+v", m)
				}
				if m.Score < cfg.Threshold {
					t.Errorf("event at %v with score %v < threshold", pts, m.Score)
				}
				if len(m.Regions) == 0 {
					t.Fatalf("event at %v without regions", pts)
				}
				r := m.Regions[0]
				rb := tBox{r.X, r.Y, r.X + r.Width, r.Y + r.Height}
				lo, hi := min(prevX, x), max(prevX, x)
				span := tBox{float64(lo) / w, float64(y) / h, float64(hi+size) / w, float64(y+size) / h}
				if !span.contains(rb) || !rb.overlaps(span) {
					t.Errorf("at %v largest region %+v not within the square's span %+v", pts, rb, span)
				}
				if !rb.overlaps(tCellBox(w, h, prevX, y, size)) && !rb.overlaps(tCellBox(w, h, x, y, size)) {
					t.Errorf("at %v largest region %+v overlaps neither square position", pts, rb)
				}
			}
			if len(events) == 0 {
				t.Fatal("no motion event")
			}
			first, last := events[0].PTS, events[len(events)-1].PTS
			if first < start || first > start+300*time.Millisecond {
				t.Errorf("first event at %v, motion starts at %v", first, start)
			}
			for _, e := range events {
				if e.PTS < start || e.PTS > stop+300*time.Millisecond {
					t.Errorf("event at %v outside the motion [%v, %v]", e.PTS, start, stop)
				}
			}
			slack := 300 * time.Millisecond
			if cfg.Cooldown > 0 {
				slack = cfg.Cooldown + step
			}
			if last < stop-slack {
				t.Errorf("last event at %v, motion stops at %v (slack %v)", last, stop, slack)
			}
			for i := 1; i < len(events); i++ {
				if g := events[i].PTS - events[i-1].PTS; g < cfg.Cooldown {
					t.Errorf("events %v apart, cooldown %v", g, cfg.Cooldown)
				}
			}
			if tc.cooldown < 0 {
				// Every moving frame emits: 16 frames from 1.0 s to 4.0 s.
				if want := int((stop-start)/step) + 1; len(events) != want {
					t.Errorf("%d events, want %d", len(events), want)
				}
			} else if len(events) != 6 { // 1.0, 1.6, 2.2, 2.8, 3.4, 4.0
				t.Errorf("%d events with cooldown, want 6", len(events))
			}
			if d.Seen() != id || d.Emitted() != uint64(len(events)) {
				t.Errorf("stats seen %d emitted %d", d.Seen(), d.Emitted())
			}
			if d.LastScore() != 0 {
				t.Errorf("last score %v after a still frame", d.LastScore())
			}
		})
	}
}

// TestMotionWarmup: every frame differs completely from the previous one;
// the first frame is the reference and the next WarmupFrames compared frames
// never emit, so the first event is frame 1+WarmupFrames+1.
func TestMotionWarmup(t *testing.T) {
	for _, warm := range []int{-1, 0, 1, 5} {
		d := NewMotionDetector(MotionConfig{GridWidth: 4, GridHeight: 3, WarmupFrames: warm, Cooldown: -1})
		wf := d.Config().WarmupFrames
		if warm == 0 && wf != DefaultWarmupFrames || warm < 0 && wf != 0 {
			t.Fatalf("warmup %d -> %d", warm, wf)
		}
		firstEvent := 0
		for i := 1; i <= 20; i++ {
			v := byte(0)
			if i%2 == 0 {
				v = 255
			}
			luma := []byte{v, v, v, v, v, v, v, v, v, v, v, v}
			_, ok := d.Detect(Frame{PTS: time.Duration(i) * time.Second, Luma: luma})
			if ok && firstEvent == 0 {
				firstEvent = i
			}
			if !ok && firstEvent != 0 {
				t.Errorf("warmup %d: frame %d did not emit after the warmup", wf, i)
			}
		}
		if want := 1 + wf + 1; firstEvent != want {
			t.Errorf("warmup %d: first event on frame %d, want %d", wf, firstEvent, want)
		}
	}
}

// TestMotionCooldown: constant motion every 100 ms of media time; events
// are exactly Cooldown apart (cooldown a multiple of the step), measured on
// PTS; a PTS going back (new source timeline) is not held back.
func TestMotionCooldown(t *testing.T) {
	d := NewMotionDetector(MotionConfig{GridWidth: 2, GridHeight: 2, WarmupFrames: -1, Cooldown: 500 * time.Millisecond})
	var got []time.Duration
	for i := range 30 {
		v := byte(0)
		if i%2 == 1 {
			v = 200
		}
		pts := time.Duration(i) * 100 * time.Millisecond
		if _, ok := d.Detect(Frame{PTS: pts, Luma: []byte{v, v, v, v}}); ok {
			got = append(got, pts)
		}
	}
	want := []time.Duration{100, 600, 1100, 1600, 2100, 2600}
	if len(got) != len(want) {
		t.Fatalf("events at %v, want %v ms", got, want)
	}
	for i := range want {
		if got[i] != want[i]*time.Millisecond {
			t.Fatalf("events at %v, want %v ms", got, want)
		}
	}
	// Discontinuity: PTS restarts at 0; the next moving frame emits.
	if _, ok := d.Detect(Frame{PTS: 0, Luma: []byte{0, 0, 0, 0}}); !ok {
		t.Error("a PTS going back held the event back")
	}
}

// TestMotionNoiseBelowThreshold: sensor noise of ±10 luma on a mid grey
// background (mean |Δ| about 7/255 = 0.026) emits nothing at the default
// threshold, on the default grid.
func TestMotionNoiseBelowThreshold(t *testing.T) {
	d := NewMotionDetector(MotionConfig{})
	c := d.Config()
	r := rand.New(rand.NewPCG(1, 2))
	n := c.GridWidth * c.GridHeight
	for i := range 500 {
		luma := make([]byte, n)
		for j := range luma {
			luma[j] = byte(128 + r.IntN(21) - 10)
		}
		if m, ok := d.Detect(Frame{PTS: time.Duration(i) * 200 * time.Millisecond, Luma: luma, Width: c.GridWidth, Height: c.GridHeight}); ok {
			t.Fatalf("noise emitted %+v", m.Score)
		}
	}
	if s := d.LastScore(); s <= 0 || s >= c.Threshold {
		t.Errorf("noise score %v", s)
	}
}

// TestMotionRegionsCap: 12 separate horizontal runs of 1..12 changed cells;
// the event reports the 8 largest (12 down to 5 cells), largest first, with
// their exact boxes.
func TestMotionRegionsCap(t *testing.T) {
	const w, h = 32, 18
	d := NewMotionDetector(MotionConfig{GridWidth: w, GridHeight: h, WarmupFrames: -1})
	prev := make([]byte, w*h)
	cur := make([]byte, w*h)
	type run struct{ x, y, n int }
	var runs []run
	for k := 1; k <= 12; k++ {
		x, y := 0, 2*(k-1)
		if k > 6 {
			x, y = 16, 2*(k-7)
		}
		runs = append(runs, run{x, y, k})
		for i := range k {
			cur[y*w+x+i] = 255
		}
	}
	d.Detect(Frame{Luma: prev})
	m, ok := d.Detect(Frame{PTS: time.Second, Luma: cur})
	if !ok {
		t.Fatalf("no event, score %v", d.LastScore())
	}
	if len(m.Regions) != MaxRegions {
		t.Fatalf("%d regions, want %d", len(m.Regions), MaxRegions)
	}
	for i, r := range m.Regions {
		want := runs[11-i]
		exp := Region{X: float64(want.x) / w, Y: float64(want.y) / h, Width: float64(want.n) / w, Height: 1.0 / h, Score: 1, Cells: want.n}
		if r != exp {
			t.Errorf("region %d = %+v, want %+v", i, r, exp)
		}
	}
	if want := 78.0 / (w * h); m.Score < want-1e-12 || m.Score > want+1e-12 {
		t.Errorf("score %v, want %v", m.Score, want)
	}
}

// TestMotionFullFrameRegion: a uniform change of 4/255 (0.0157) is above a
// 0.01 threshold but below the cell floor max(0.01/2, 0.02): no cluster,
// so the event has one full-frame region.
func TestMotionFullFrameRegion(t *testing.T) {
	const w, h = 8, 6
	d := NewMotionDetector(MotionConfig{GridWidth: w, GridHeight: h, WarmupFrames: -1, Threshold: 0.01})
	a, b := make([]byte, w*h), make([]byte, w*h)
	for i := range b {
		a[i], b[i] = 100, 104
	}
	d.Detect(Frame{Luma: a})
	m, ok := d.Detect(Frame{PTS: time.Second, Luma: b})
	if !ok {
		t.Fatal("no event")
	}
	if len(m.Regions) != 1 {
		t.Fatalf("regions %+v", m.Regions)
	}
	r := m.Regions[0]
	if r.X != 0 || r.Y != 0 || r.Width != 1 || r.Height != 1 || r.Cells != w*h || r.Score != m.Score {
		t.Errorf("full-frame region %+v (score %v)", r, m.Score)
	}
}

// TestMotionBadFrames: short, empty and resized frames never panic; a new
// grid size restarts from a reference frame.
func TestMotionBadFrames(t *testing.T) {
	d := NewMotionDetector(MotionConfig{GridWidth: 4, GridHeight: 4, WarmupFrames: -1, Cooldown: -1})
	for _, f := range []Frame{{}, {Luma: make([]byte, 15)}, {Width: -1, Height: 4, Luma: make([]byte, 16)}, {Width: 1 << 40, Height: 1 << 40, Luma: make([]byte, 16)}} {
		if _, ok := d.Detect(f); ok {
			t.Errorf("frame %+v emitted", f)
		}
	}
	d.Detect(Frame{Luma: make([]byte, 16)})
	full := make([]byte, 16)
	for i := range full {
		full[i] = 255
	}
	if _, ok := d.Detect(Frame{Width: 2, Height: 2, Luma: full}); ok {
		t.Error("a new grid size emitted against the old reference")
	}
	if _, ok := d.Detect(Frame{Width: 2, Height: 2, Luma: make([]byte, 4)}); !ok {
		t.Error("no event on the new grid size")
	}
	if d.Seen() != 7 {
		t.Errorf("seen %d", d.Seen())
	}
}

func TestConfigDefaults(t *testing.T) {
	v := VisionConfig{}.WithDefaults()
	if v.EveryNthFrame != 6 || v.MinInterval != 200*time.Millisecond || v.QueueDepth != 8 ||
		v.Motion != (MotionConfig{32, 18, 2, 0.08, 500 * time.Millisecond}) ||
		v.Snapshots.MinInterval != time.Second || v.Snapshots.Dir != "" ||
		v.Clips.PreRoll != time.Second || v.Clips.PostRoll != 3*time.Second || v.Clips.Dir != "" || v.Enabled {
		t.Errorf("vision defaults %+v", v)
	}
	s := SpeechConfig{}.WithDefaults()
	if s != (SpeechConfig{QueueDepth: 32, StartThreshold: 0.045, StopThreshold: 0.020, MinSilence: 250 * time.Millisecond, UpdateInterval: 250 * time.Millisecond}) {
		t.Errorf("speech defaults %+v", s)
	}
	kept := MotionConfig{GridWidth: 1, GridHeight: 1, WarmupFrames: -3, Threshold: 0.5, Cooldown: -time.Second}.WithDefaults()
	if kept != (MotionConfig{1, 1, 0, 0.5, 0}) {
		t.Errorf("explicit values %+v", kept)
	}
}

// FuzzMotionDetect feeds arbitrary bytes as frames to detectors of any grid
// size (1x1 included), with arbitrary frame sizes and PTS: Detect must never
// panic and its events must be well formed.
func FuzzMotionDetect(f *testing.F) {
	f.Add(uint8(1), uint8(1), uint8(0), uint8(0), []byte{0, 255, 0, 255, 7})
	f.Add(uint8(32), uint8(18), uint8(8), uint8(2), make([]byte, 32*18*3))
	f.Add(uint8(4), uint8(3), uint8(200), uint8(255), []byte("0123456789abcdefghijklmnopqrstuvwxyz"))
	f.Fuzz(func(t *testing.T, gw, gh, thr, mode uint8, data []byte) {
		cfg := MotionConfig{
			GridWidth:    int(gw%64) + 1,
			GridHeight:   int(gh%64) + 1,
			WarmupFrames: int(mode%4) - 1,
			Threshold:    float64(thr) / 255,
			Cooldown:     time.Duration(int(mode>>2)-16) * 100 * time.Millisecond,
		}
		d := NewMotionDetector(cfg)
		c := d.Config()
		n := c.GridWidth * c.GridHeight
		var pts time.Duration
		for i := 0; len(data) > 0 && i < 64; i++ {
			fw, fh := 0, 0
			if mode&0x80 != 0 && len(data) >= 2 { // arbitrary frame sizes
				fw, fh = int(int8(data[0])), int(int8(data[1]))
				data = data[2:]
			}
			take := min(n, len(data))
			if fw > 0 && fh > 0 {
				take = min(fw*fh, len(data))
			}
			luma := data[:take]
			data = data[take:]
			pts += time.Duration(int(thr)-64) * time.Millisecond
			m, ok := d.Detect(Frame{PTS: pts, Luma: luma, Width: fw, Height: fh, ID: uint64(i)})
			if !ok {
				continue
			}
			if len(m.Grid) != m.GridWidth*m.GridHeight || len(m.Regions) == 0 || len(m.Regions) > MaxRegions {
				t.Fatalf("bad event %+v", m)
			}
			if m.Score < c.Threshold || m.Score > 1 {
				t.Fatalf("score %v", m.Score)
			}
			for _, r := range m.Regions {
				if r.X < 0 || r.Y < 0 || r.Width <= 0 || r.Height <= 0 || r.X+r.Width > 1+1e-9 || r.Y+r.Height > 1+1e-9 || r.Cells <= 0 {
					t.Fatalf("bad region %+v", r)
				}
			}
		}
	})
}
