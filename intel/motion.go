package intel

import (
	"math"
	"sort"
	"sync/atomic"
	"time"
)

// MaxRegions is the number of clusters a motion event reports at most.
const MaxRegions = 8

// minCellThreshold is the floor of the per-cell difference that makes a
// cell part of a region: max(threshold/2, minCellThreshold).
const minCellThreshold = 0.02

// Frame is a grey picture exactly GridWidth x GridHeight (the tap
// point-samples the luma plane on the lattice), one byte per cell, row-major.
type Frame struct {
	// PTS is the frame's media time; warmup and cooldown are measured on it.
	PTS time.Duration
	// Luma holds Width*Height cells (more bytes are ignored).
	Luma []byte
	// Width and Height are the grid size; zero means the detector's
	// configured grid.
	Width, Height int
	// SourceWidth and SourceHeight are the decoded picture's size (for the
	// event's frame object; the detector does not use them).
	SourceWidth, SourceHeight int
	Keyframe                  bool
	// ID is the caller's frame number, echoed in Motion.FrameID.
	ID uint64
}

// Region is one cluster of moving cells as a normalized box (0..1 of the
// picture), with the mean difference of its cells and their number.
type Region struct {
	X, Y, Width, Height float64
	Score               float64
	Cells               int
}

// Motion is one emitted motion event.
type Motion struct {
	PTS time.Duration
	// Score is mean |Δluma|/255 over all the cells.
	Score float64
	// Grid is the per-cell |Δluma|/255, row-major, GridWidth*GridHeight
	// values; it belongs to the event (never reused by the detector).
	Grid []float64
	// GridWidth and GridHeight are the size of Grid.
	GridWidth, GridHeight int
	// Regions are the up to MaxRegions largest clusters, largest first; when
	// no cell reaches the region threshold it is one full-frame region
	// {0,0,1,1} with Score the frame's score and Cells all the cells.
	Regions []Region
	FrameID uint64
}

// MotionDetector compares each sampled frame with the previous one, as the
// contract says. Detect is meant for one goroutine; the stats (Seen,
// Emitted, LastScore) may be read from any goroutine.
type MotionDetector struct {
	cfg     MotionConfig
	cellThr float64

	prev         []byte // previous frame's cells (the reference)
	prevW, prevH int
	compared     int // frames compared with a reference since the last reset
	lastEmit     time.Duration
	emittedOnce  bool
	diff         []float64 // scratch per-cell difference
	label        []int32   // scratch cluster labels
	stack        []int32   // scratch flood fill stack

	seen, emitted atomic.Uint64
	lastScore     atomic.Uint64 // float64 bits
}

// NewMotionDetector returns a detector for c (after c.WithDefaults()).
func NewMotionDetector(c MotionConfig) *MotionDetector {
	c = c.WithDefaults()
	return &MotionDetector{
		cfg:     c,
		cellThr: math.Max(c.Threshold/2, minCellThreshold),
	}
}

// Config returns the configuration in use (defaults applied).
func (d *MotionDetector) Config() MotionConfig { return d.cfg }

// Seen is the number of frames given to Detect.
func (d *MotionDetector) Seen() uint64 { return d.seen.Load() }

// Emitted is the number of motion events Detect returned.
func (d *MotionDetector) Emitted() uint64 { return d.emitted.Load() }

// LastScore is the score of the last frame compared (0 before any).
func (d *MotionDetector) LastScore() float64 {
	return math.Float64frombits(d.lastScore.Load())
}

// Reset forgets the reference frame, the warmup and the cooldown (as after
// a discontinuity of the source); the counters stay.
func (d *MotionDetector) Reset() {
	d.prevW, d.prevH = 0, 0
	d.prev = d.prev[:0]
	d.compared = 0
	d.emittedOnce = false
}

// Detect feeds one sampled frame and reports a motion event when the
// contract emits one:
//
//   - the first frame (or the first after Reset or a change of grid size)
//     only becomes the reference;
//   - each later frame is compared with the previous one: score = mean
//     |Δluma|/255 over the cells; the first WarmupFrames compared frames
//     never emit;
//   - an event is emitted when score >= Threshold and at least Cooldown of
//     media time (PTS) has passed since the last event; a PTS earlier than
//     the last event's is a discontinuity and does not hold events back.
//
// A frame whose Luma is shorter than Width*Height (or whose size is not
// positive) is counted as seen and otherwise ignored.
func (d *MotionDetector) Detect(f Frame) (Motion, bool) {
	d.seen.Add(1)
	w, h := f.Width, f.Height
	if w == 0 && h == 0 {
		w, h = d.cfg.GridWidth, d.cfg.GridHeight
	}
	if w <= 0 || h <= 0 || w > len(f.Luma) || h > len(f.Luma)/w {
		return Motion{}, false
	}
	n := w * h
	cur := f.Luma[:n]
	if w != d.prevW || h != d.prevH || len(d.prev) != n {
		d.Reset()
		d.prev = append(d.prev[:0], cur...)
		d.prevW, d.prevH = w, h
		return Motion{}, false
	}

	if cap(d.diff) < n {
		d.diff = make([]float64, n)
	}
	diff := d.diff[:n]
	var sum int
	for i, c := range cur {
		a := int(c) - int(d.prev[i])
		if a < 0 {
			a = -a
		}
		sum += a
		diff[i] = float64(a) / 255
	}
	copy(d.prev, cur)
	score := float64(sum) / 255 / float64(n)
	d.lastScore.Store(math.Float64bits(score))

	d.compared++
	if d.compared <= d.cfg.WarmupFrames {
		return Motion{}, false
	}
	if score < d.cfg.Threshold {
		return Motion{}, false
	}
	if d.emittedOnce && f.PTS >= d.lastEmit && f.PTS-d.lastEmit < d.cfg.Cooldown {
		return Motion{}, false
	}
	d.emittedOnce = true
	d.lastEmit = f.PTS
	d.emitted.Add(1)

	grid := make([]float64, n)
	copy(grid, diff)
	regions := d.regions(diff, w, h)
	if len(regions) == 0 {
		regions = []Region{{X: 0, Y: 0, Width: 1, Height: 1, Score: score, Cells: n}}
	}
	return Motion{
		PTS:        f.PTS,
		Score:      score,
		Grid:       grid,
		GridWidth:  w,
		GridHeight: h,
		Regions:    regions,
		FrameID:    f.ID,
	}, true
}

// regions labels the 4-connected clusters of cells whose difference is at
// least the cell threshold and returns the MaxRegions largest (by cells;
// ties by higher score, then by first cell in row-major order).
func (d *MotionDetector) regions(diff []float64, w, h int) []Region {
	n := w * h
	if cap(d.label) < n {
		d.label = make([]int32, n)
	}
	label := d.label[:n]
	for i := range label {
		label[i] = 0
	}
	type cluster struct {
		first                  int
		minX, minY, maxX, maxY int
		sum                    float64
		cells                  int
	}
	var clusters []cluster
	for start := range n {
		if label[start] != 0 || diff[start] < d.cellThr {
			continue
		}
		id := int32(len(clusters) + 1)
		cl := cluster{first: start, minX: w, minY: h, maxX: -1, maxY: -1}
		label[start] = id
		stack := append(d.stack[:0], int32(start))
		for len(stack) > 0 {
			i := int(stack[len(stack)-1])
			stack = stack[:len(stack)-1]
			x, y := i%w, i/w
			cl.cells++
			cl.sum += diff[i]
			cl.minX, cl.maxX = min(cl.minX, x), max(cl.maxX, x)
			cl.minY, cl.maxY = min(cl.minY, y), max(cl.maxY, y)
			push := func(j int) {
				if label[j] == 0 && diff[j] >= d.cellThr {
					label[j] = id
					stack = append(stack, int32(j))
				}
			}
			if x > 0 {
				push(i - 1)
			}
			if x+1 < w {
				push(i + 1)
			}
			if y > 0 {
				push(i - w)
			}
			if y+1 < h {
				push(i + w)
			}
		}
		d.stack = stack
		clusters = append(clusters, cl)
	}
	sort.SliceStable(clusters, func(a, b int) bool {
		ca, cb := clusters[a], clusters[b]
		if ca.cells != cb.cells {
			return ca.cells > cb.cells
		}
		sa, sb := ca.sum/float64(ca.cells), cb.sum/float64(cb.cells)
		if sa != sb {
			return sa > sb
		}
		return ca.first < cb.first
	})
	if len(clusters) > MaxRegions {
		clusters = clusters[:MaxRegions]
	}
	out := make([]Region, 0, len(clusters))
	fw, fh := float64(w), float64(h)
	for _, c := range clusters {
		out = append(out, Region{
			X:      float64(c.minX) / fw,
			Y:      float64(c.minY) / fh,
			Width:  float64(c.maxX-c.minX+1) / fw,
			Height: float64(c.maxY-c.minY+1) / fh,
			Score:  c.sum / float64(c.cells),
			Cells:  c.cells,
		})
	}
	return out
}
