// Package soakplot keeps the time series of a soak test: a table of
// samples written as CSV (one row per sample, a header naming the
// columns), read back for checks, fitted with least squares, and drawn as
// one PNG with a panel per group of columns, so a reader sees at a glance
// whether memory, goroutines or descriptors creep up over the run.
package soakplot

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// Table is a series of samples: Rows[i][j] is column Columns[j] of sample
// i. NaN marks a value a sample does not have (e.g. no joins in its
// window); CSV writes it as an empty field.
type Table struct {
	Columns []string
	Rows    [][]float64
}

// Add appends a sample; it must have one value per column.
func (t *Table) Add(row ...float64) error {
	if len(row) != len(t.Columns) {
		return fmt.Errorf("soakplot: %d values for %d columns", len(row), len(t.Columns))
	}
	t.Rows = append(t.Rows, append([]float64(nil), row...))
	return nil
}

// Index is the position of column name, or -1.
func (t *Table) Index(name string) int {
	for i, c := range t.Columns {
		if c == name {
			return i
		}
	}
	return -1
}

// Column returns the values of column name (nil when there is none).
func (t *Table) Column(name string) []float64 {
	j := t.Index(name)
	if j < 0 {
		return nil
	}
	out := make([]float64, len(t.Rows))
	for i, r := range t.Rows {
		out[i] = r[j]
	}
	return out
}

// WriteCSV writes the header and the rows; values keep full precision.
func (t *Table) WriteCSV(w io.Writer) error {
	cw := csv.NewWriter(w)
	if err := cw.Write(t.Columns); err != nil {
		return err
	}
	rec := make([]string, len(t.Columns))
	for _, r := range t.Rows {
		for j, v := range r {
			if math.IsNaN(v) {
				rec[j] = ""
			} else {
				rec[j] = strconv.FormatFloat(v, 'g', -1, 64)
			}
		}
		if err := cw.Write(rec); err != nil {
			return err
		}
	}
	cw.Flush()
	return cw.Error()
}

// WriteCSVFile writes the table to file (created or truncated).
func (t *Table) WriteCSVFile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := t.WriteCSV(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// ReadCSV reads what WriteCSV wrote.
func ReadCSV(r io.Reader) (*Table, error) {
	recs, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, errors.New("soakplot: empty CSV")
	}
	t := &Table{Columns: recs[0]}
	for n, rec := range recs[1:] {
		row := make([]float64, len(rec))
		for j, s := range rec {
			if s == "" {
				row[j] = math.NaN()
				continue
			}
			if row[j], err = strconv.ParseFloat(s, 64); err != nil {
				return nil, fmt.Errorf("soakplot: row %d column %q: %w", n+1, t.Columns[j], err)
			}
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}

// Fit is the least-squares line y = Intercept + Slope*x through the points
// whose x and y are both numbers; ok is false with fewer than two such
// points or when every x is the same.
func Fit(xs, ys []float64) (slope, intercept float64, ok bool) {
	var n, sx, sy, sxx, sxy float64
	for i := range xs {
		if i >= len(ys) || math.IsNaN(xs[i]) || math.IsNaN(ys[i]) {
			continue
		}
		n++
		sx += xs[i]
		sy += ys[i]
		sxx += xs[i] * xs[i]
		sxy += xs[i] * ys[i]
	}
	d := n*sxx - sx*sx
	if n < 2 || d == 0 {
		return 0, 0, false
	}
	slope = (n*sxy - sx*sy) / d
	return slope, (sy - slope*sx) / n, true
}

// Panel is one plot of the figure: the named columns against the x column.
type Panel struct {
	Title, YLabel string
	Columns       []string
}

// PlotPNG draws one panel per entry of panels, stacked, with x as the
// shared horizontal axis, into a PNG of w×h pixels (at 96 dpi) at file.
// NaN values are left out of their line.
func (t *Table) PlotPNG(file, x, xLabel string, panels []Panel, w, h int) error {
	xs := t.Column(x)
	if xs == nil {
		return fmt.Errorf("soakplot: no column %q", x)
	}
	if len(panels) == 0 {
		return errors.New("soakplot: no panel")
	}
	xmin, xmax := math.Inf(1), math.Inf(-1)
	for _, v := range xs {
		if !math.IsNaN(v) {
			xmin, xmax = min(xmin, v), max(xmax, v)
		}
	}
	plots := make([][]*plot.Plot, len(panels))
	for i, pn := range panels {
		p := plot.New()
		p.Title.Text = pn.Title
		p.X.Label.Text = xLabel
		p.Y.Label.Text = pn.YLabel
		p.Add(plotter.NewGrid())
		var lines []any
		for _, c := range pn.Columns {
			ys := t.Column(c)
			if ys == nil {
				return fmt.Errorf("soakplot: no column %q", c)
			}
			var pts plotter.XYs
			for k := range ys {
				if !math.IsNaN(xs[k]) && !math.IsNaN(ys[k]) {
					pts = append(pts, plotter.XY{X: xs[k], Y: ys[k]})
				}
			}
			if len(pts) == 0 {
				continue // an empty series draws nothing and breaks the axis range
			}
			lines = append(lines, c, pts)
		}
		if len(lines) > 0 {
			if err := plotutil.AddLinePoints(p, lines...); err != nil {
				return err
			}
		}
		// One time axis for every panel, even where a series has gaps.
		if xmin < xmax {
			p.X.Min, p.X.Max = xmin, xmax
		}
		p.Legend.Top = true
		p.Legend.Left = true
		plots[i] = []*plot.Plot{p}
	}
	const dpi = 96
	img := vgimg.NewWith(vgimg.UseWH(vg.Length(w)*vg.Inch/dpi, vg.Length(h)*vg.Inch/dpi), vgimg.UseDPI(dpi))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(panels), Cols: 1, PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2,
		PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 4, PadY: vg.Millimeter * 4}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
