package soakplot

import (
	"bytes"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"
)

func sample() *Table {
	t := &Table{Columns: []string{"elapsed_s", "rss_mb", "goroutines", "first_frame_p50_ms"}}
	for i := 0; i < 12; i++ {
		ff := 300 + 10*float64(i%3)
		if i == 4 {
			ff = math.NaN() // no joins in that window
		}
		if err := t.Add(float64(10*i), 40+0.125*float64(i), 200+float64(i%2), ff); err != nil {
			panic(err)
		}
	}
	return t
}

// The CSV round-trips exactly, NaN included, and the PNG decodes to the
// size asked for with more than one colour drawn.
func TestCSVAndPNG(t *testing.T) {
	tab := sample()
	var buf bytes.Buffer
	if err := tab.WriteCSV(&buf); err != nil {
		t.Fatal(err)
	}
	back, err := ReadCSV(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Columns) != len(tab.Columns) || len(back.Rows) != len(tab.Rows) {
		t.Fatalf("read back %d columns %d rows, want %d %d", len(back.Columns), len(back.Rows), len(tab.Columns), len(tab.Rows))
	}
	for i, r := range tab.Rows {
		for j, v := range r {
			got := back.Rows[i][j]
			if got != v && !(math.IsNaN(got) && math.IsNaN(v)) {
				t.Fatalf("row %d %s: %v, want %v", i, tab.Columns[j], got, v)
			}
		}
	}
	if err := tab.Add(1, 2); err == nil {
		t.Fatal("a short row was accepted")
	}

	file := filepath.Join(t.TempDir(), "soak.png")
	err = tab.PlotPNG(file, "elapsed_s", "elapsed (s)", []Panel{
		{Title: "memory", YLabel: "MB", Columns: []string{"rss_mb"}},
		{Title: "goroutines", YLabel: "count", Columns: []string{"goroutines"}},
		{Title: "first frame", YLabel: "ms", Columns: []string{"first_frame_p50_ms"}},
	}, 800, 900)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(file)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("PNG: %v", err)
	}
	f, _ := os.Open(file)
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	b := img.Bounds()
	if b.Dx() != 800 || b.Dy() != 900 {
		t.Fatalf("PNG is %dx%d, want 800x900", b.Dx(), b.Dy())
	}
	colours := map[uint32]bool{}
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[r>>8<<16|g>>8<<8|bl>>8] = true
		}
	}
	t.Logf("soak.png: %d bytes, %dx%d, %d colours sampled", fi.Size(), b.Dx(), b.Dy(), len(colours))
	if len(colours) < 3 {
		t.Fatalf("the PNG is nearly blank: %d colours", len(colours))
	}
	if err := tab.PlotPNG(file, "nope", "", []Panel{{Columns: []string{"rss_mb"}}}, 100, 100); err == nil {
		t.Fatal("an unknown x column was accepted")
	}
}

// Fit recovers a known line and ignores NaN points.
func TestFit(t *testing.T) {
	xs := []float64{0, 1, 2, 3, math.NaN(), 5}
	ys := []float64{1, 3, 5, 7, 100, 11}
	s, c, ok := Fit(xs, ys)
	if !ok || math.Abs(s-2) > 1e-9 || math.Abs(c-1) > 1e-9 {
		t.Fatalf("fit %v %v %v, want slope 2 intercept 1", s, c, ok)
	}
	if _, _, ok := Fit([]float64{1}, []float64{2}); ok {
		t.Fatal("one point fitted")
	}
	if _, _, ok := Fit([]float64{1, 1}, []float64{2, 3}); ok {
		t.Fatal("a vertical line fitted")
	}
}
