package recordings

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// t0 is a fixed start time (millisecond precision, as in file names).
var t0 = time.Date(2026, 11, 30, 15, 4, 5, 123e6, time.UTC)

func openTestStore(t *testing.T, cfg StoreConfig) *Store {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	s, err := OpenStore(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// record writes a finalized recording of path started at start, size
// bytes long, that ended at end (its mtime).
func record(t *testing.T, s *Store, path string, start time.Time, size int, end time.Time) string {
	t.Helper()
	name, f := createPart(t, s, path, start, size)
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Finalize(name); err != nil {
		t.Fatal(err)
	}
	setMtime(t, filepath.Join(s.Dir(), name), end)
	return name
}

// createPart starts a recording (active) with size bytes written.
func createPart(t *testing.T, s *Store, path string, start time.Time, size int) (string, *os.File) {
	t.Helper()
	name, f, err := s.Create(path, start)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, size)); err != nil {
		t.Fatal(err)
	}
	return name, f
}

func setMtime(t *testing.T, file string, mtime time.Time) {
	t.Helper()
	if err := os.Chtimes(file, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, file string, size int, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(file, bytes.Repeat([]byte{'y'}, size), 0o644); err != nil {
		t.Fatal(err)
	}
	setMtime(t, file, mtime)
}

func names(list []Info) []string {
	var out []string
	for _, in := range list {
		out = append(out, in.Name)
	}
	return out
}

func exists(t *testing.T, file string) bool {
	t.Helper()
	_, err := os.Lstat(file)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return err == nil
}

func TestParseRecording(t *testing.T) {
	good := FileName("cam-1", t0)
	if p, st, ok := parseRecording(good); !ok || p != "cam-1" || !st.Equal(t0) {
		t.Fatalf("parseRecording(%q) = %q %v %v", good, p, st, ok)
	}
	for _, bad := range []string{
		"", "x.mp4", good + ".part", "../" + good, "a/" + good, ".hidden-2026-11-30T15-04-05.123Z.mp4",
		"main-2026-11-30T15-04-05Z.mp4", "main-2026-11-30T15-04-05.123Z.MP4", "main-2026-13-30T15-04-05.123Z.mp4",
	} {
		if _, _, ok := parseRecording(bad); ok {
			t.Errorf("parseRecording(%q) accepted", bad)
		}
	}
}

func TestListNewestFirstFiltersAndStrays(t *testing.T) {
	leaktest.Check(t)
	s := openTestStore(t, StoreConfig{})
	dir := s.Dir()
	a := record(t, s, "main", t0, 100, t0.Add(60*time.Second))
	b := record(t, s, "cam-1", t0.Add(2*time.Minute), 250, t0.Add(3*time.Minute))
	c := record(t, s, "main", t0.Add(10*time.Minute), 40, t0.Add(10*time.Minute+1500*time.Millisecond))
	active, f := createPart(t, s, "main", t0.Add(20*time.Minute), 7)
	defer func() { f.Close(); s.Discard(active) }()
	setMtime(t, filepath.Join(dir, active+".part"), t0.Add(21*time.Minute))

	// Strays: not named like a recording, directories, symlinks, broken parts.
	writeFile(t, filepath.Join(dir, "notes.txt"), 3, t0)
	writeFile(t, filepath.Join(dir, "clip.mp4"), 3, t0)
	writeFile(t, filepath.Join(dir, FileName("main", t0.Add(time.Hour))+".broken"), 3, t0)
	writeFile(t, filepath.Join(dir, ".x-"+FileName("main", t0.Add(time.Hour))), 3, t0)
	if err := os.Mkdir(filepath.Join(dir, "snapshots"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, FileName("main", t0.Add(2*time.Hour))), 0o755); err != nil {
		t.Fatal(err)
	}
	outside := filepath.Join(t.TempDir(), "secret.mp4")
	writeFile(t, outside, 9, t0)
	if err := os.Symlink(outside, filepath.Join(dir, FileName("main", t0.Add(3*time.Hour)))); err != nil {
		t.Fatal(err)
	}

	list, err := s.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := names(list), []string{active, c, b, a}; !slices.Equal(got, want) {
		t.Fatalf("List = %q, want %q", got, want)
	}
	want := Info{
		Path: "main", Name: c, Start: t0.Add(10 * time.Minute), End: t0.Add(10*time.Minute + 1500*time.Millisecond),
		DurationSec: 1.5, Bytes: 40, Complete: true, URL: "/recordings/main/" + c,
	}
	if got := list[1]; !got.Start.Equal(want.Start) || !got.End.Equal(want.End) || got.DurationSec != want.DurationSec ||
		got.Bytes != want.Bytes || !got.Complete || got.URL != want.URL || got.Path != want.Path {
		t.Errorf("List[1] = %+v, want %+v", got, want)
	}
	if in := list[0]; in.Complete || in.Bytes != 7 || in.DurationSec != 60 || in.Path != "main" {
		t.Errorf("active = %+v, want incomplete, 7 bytes, 60 s", in)
	}
	if in := list[2]; in.Path != "cam-1" || in.Bytes != 250 || in.DurationSec != 60 {
		t.Errorf("cam-1 = %+v", in)
	}

	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{Path: "main"}, []string{active, c, a}},
		{Filter{Path: "cam-1"}, []string{b}},
		{Filter{Path: "nope"}, nil},
		// Overlap: a ended at t0+60s, b runs 2–3 min.
		{Filter{From: t0.Add(61 * time.Second)}, []string{active, c, b}},
		{Filter{From: t0.Add(60 * time.Second)}, []string{active, c, b, a}},
		{Filter{To: t0.Add(2 * time.Minute)}, []string{b, a}},
		{Filter{To: t0.Add(2*time.Minute - time.Millisecond)}, []string{a}},
		{Filter{From: t0.Add(150 * time.Second), To: t0.Add(170 * time.Second)}, []string{b}},
		{Filter{Path: "main", From: t0.Add(5 * time.Minute), To: t0.Add(15 * time.Minute)}, []string{c}},
	} {
		got, err := s.List(tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(names(got), tc.want) {
			t.Errorf("List(%+v) = %q, want %q", tc.f, names(got), tc.want)
		}
	}

	if n, by := s.Stats(); n != 4 || by != 100+250+40+7 {
		t.Errorf("Stats = %d, %d; want 4, 397", n, by)
	}
}

func TestListEmptyAndMissingDir(t *testing.T) {
	s := openTestStore(t, StoreConfig{})
	list, err := s.List(Filter{})
	if err != nil || list == nil || len(list) != 0 {
		t.Fatalf("List = %v, %v; want empty, non-nil", list, err)
	}
	if err := os.Remove(s.Dir()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.List(Filter{}); err == nil {
		t.Error("List of a removed directory: no error")
	}
	if n, b := s.Stats(); n != 0 || b != 0 {
		t.Errorf("Stats = %d, %d", n, b)
	}
}

// logBuffer collects log output safely across goroutines.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestRecoverParts(t *testing.T) {
	leaktest.Check(t)
	dir := t.TempDir()
	var repaired []string
	repair := func(part string) error {
		repaired = append(repaired, filepath.Base(part))
		if filepath.Base(part) == FileName("bad", t0)+".part" {
			return errors.New("no complete fragment")
		}
		return os.Truncate(part, 10) // "the last complete fragment"
	}
	var logs logBuffer
	s, err := OpenStore(StoreConfig{Dir: dir, Repair: repair}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	good := FileName("main", t0)
	bad := FileName("bad", t0)
	end := t0.Add(42 * time.Second)
	writeFile(t, filepath.Join(dir, good+".part"), 100, end)
	writeFile(t, filepath.Join(dir, bad+".part"), 100, end)
	writeFile(t, filepath.Join(dir, "stray.part"), 5, end)
	active, f := createPart(t, s, "live", t0, 30)
	defer func() { f.Close(); s.Discard(active) }()

	// Before recovery, leftovers are listed as incomplete.
	if list, _ := s.List(Filter{Path: "main"}); len(list) != 1 || list[0].Complete {
		t.Fatalf("before recovery: %+v", list)
	}

	rec, err := s.RecoverParts()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rec, []string{good}) {
		t.Errorf("recovered %q, want %q", rec, []string{good})
	}
	slices.Sort(repaired)
	if want := []string{bad + ".part", good + ".part"}; !slices.Equal(repaired, want) {
		t.Errorf("repaired %q, want %q (never the active part or a stray)", repaired, want)
	}
	fi, err := os.Stat(filepath.Join(dir, good))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 10 || !fi.ModTime().Equal(end) {
		t.Errorf("recovered file: %d bytes, mtime %v; want 10 bytes, mtime %v", fi.Size(), fi.ModTime(), end)
	}
	if exists(t, filepath.Join(dir, good+".part")) {
		t.Error("the recovered .part is still there")
	}
	if !exists(t, filepath.Join(dir, bad+".broken")) || exists(t, filepath.Join(dir, bad+".part")) || exists(t, filepath.Join(dir, bad)) {
		t.Error("an unrepairable part is not renamed to .broken")
	}
	if !bytes.Contains([]byte(logs.String()), []byte(bad+".broken")) {
		t.Errorf("the broken file is not logged: %s", logs.String())
	}
	if !exists(t, filepath.Join(dir, active+".part")) || !exists(t, filepath.Join(dir, "stray.part")) {
		t.Error("RecoverParts touched an active part or a stray")
	}
	list, err := s.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := names(list); !slices.Equal(got, []string{active, good}) { // same start: by path
		t.Fatalf("after recovery: %q", got)
	}
	if in := list[1]; !in.Complete || in.Bytes != 10 || in.DurationSec != 42 {
		t.Errorf("recovered = %+v, want complete, 10 bytes, 42 s", in)
	}

	// Without Repair, parts are renamed as they are.
	s2 := openTestStore(t, StoreConfig{})
	p := FileName("main", t0)
	writeFile(t, filepath.Join(s2.Dir(), p+".part"), 77, end)
	if rec, err := s2.RecoverParts(); err != nil || !slices.Equal(rec, []string{p}) {
		t.Fatalf("RecoverParts = %q, %v", rec, err)
	}
	if fi, err := os.Stat(filepath.Join(s2.Dir(), p)); err != nil || fi.Size() != 77 {
		t.Errorf("renamed file: %v, %v", fi, err)
	}
}

func TestSweepByAge(t *testing.T) {
	leaktest.Check(t)
	now := t0.Add(48 * time.Hour)
	s := openTestStore(t, StoreConfig{MaxAge: 24 * time.Hour})
	old := record(t, s, "main", t0, 10, t0.Add(time.Hour))                         // ended 47 h ago
	edge := record(t, s, "main", t0.Add(23*time.Hour), 10, now.Add(-24*time.Hour)) // exactly 24 h ago: kept
	fresh := record(t, s, "cam", t0.Add(40*time.Hour), 10, t0.Add(41*time.Hour))   // 7 h ago
	oldActive, f := createPart(t, s, "main", t0.Add(-time.Hour), 10)               // being written
	defer func() { f.Close(); s.Discard(oldActive) }()
	setMtime(t, filepath.Join(s.Dir(), oldActive+".part"), t0)

	deleted, err := s.Sweep(now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{old}) {
		t.Fatalf("deleted %q, want %q", deleted, []string{old})
	}
	list, _ := s.List(Filter{})
	if got, want := names(list), []string{fresh, edge, oldActive}; !slices.Equal(got, want) {
		t.Errorf("left %q, want %q", got, want)
	}
	if deleted, err := s.Sweep(now); err != nil || len(deleted) != 0 {
		t.Errorf("second sweep: %q, %v", deleted, err)
	}
}

func TestSweepBySize(t *testing.T) {
	leaktest.Check(t)
	s := openTestStore(t, StoreConfig{MaxTotalBytes: 1000})
	now := t0.Add(time.Hour)
	// Oldest first by start: the active part is the oldest and must stay.
	active, f := createPart(t, s, "main", t0, 300)
	defer func() { f.Close(); s.Discard(active) }()
	r1 := record(t, s, "cam", t0.Add(1*time.Minute), 200, now) // mtime order differs from start order
	r2 := record(t, s, "main", t0.Add(2*time.Minute), 200, t0.Add(3*time.Minute))
	r3 := record(t, s, "main", t0.Add(4*time.Minute), 200, t0.Add(5*time.Minute))
	r4 := record(t, s, "cam", t0.Add(6*time.Minute), 200, t0.Add(7*time.Minute))
	// Total 1100 > 1000: the oldest finalized (r1) goes, 900 is left.
	deleted, err := s.Sweep(now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{r1}) {
		t.Fatalf("deleted %q, want %q", deleted, []string{r1})
	}
	// The active part grows to 700: total 1300 → r2, r3 go (900), r4 stays
	// (the active file is never deleted).
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, 400)); err != nil {
		t.Fatal(err)
	}
	deleted, err = s.Sweep(now)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(deleted, []string{r2, r3}) {
		t.Fatalf("deleted %q, want %q", deleted, []string{r2, r3})
	}
	// Over the limit with only the active file and r4: r4 goes, the
	// active file stays even though the total is still over.
	if _, err := f.Write(bytes.Repeat([]byte{'x'}, 400)); err != nil {
		t.Fatal(err)
	}
	deleted, _ = s.Sweep(now)
	if !slices.Equal(deleted, []string{r4}) {
		t.Fatalf("deleted %q, want %q", deleted, []string{r4})
	}
	list, _ := s.List(Filter{})
	if got := names(list); !slices.Equal(got, []string{active}) {
		t.Errorf("left %q, want only the active file", got)
	}
}

func TestSweepNoLimits(t *testing.T) {
	s := openTestStore(t, StoreConfig{})
	record(t, s, "main", t0, 10, t0)
	if deleted, err := s.Sweep(t0.Add(1000 * time.Hour)); err != nil || len(deleted) != 0 {
		t.Fatalf("Sweep without limits: %q, %v", deleted, err)
	}
}

func TestRunRetention(t *testing.T) {
	leaktest.Check(t)
	s := openTestStore(t, StoreConfig{MaxAge: time.Hour})
	old := record(t, s, "main", t0, 10, time.Now().Add(-2*time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.RunRetention(ctx, 10*time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for exists(t, filepath.Join(s.Dir(), old)) {
		if time.Now().After(deadline) {
			t.Fatal("retention did not delete an expired recording")
		}
		time.Sleep(5 * time.Millisecond)
	}
	// A recording expiring later is deleted by a later tick.
	later := record(t, s, "main", t0.Add(time.Minute), 10, time.Now().Add(-2*time.Hour))
	for exists(t, filepath.Join(s.Dir(), later)) {
		if time.Now().After(deadline) {
			t.Fatal("retention did not sweep again")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}

func TestDelete(t *testing.T) {
	leaktest.Check(t)
	s := openTestStore(t, StoreConfig{})
	name := record(t, s, "main", t0, 10, t0)
	active, f := createPart(t, s, "main", t0.Add(time.Minute), 10)
	defer func() { f.Close(); s.Discard(active) }()
	outside := filepath.Join(t.TempDir(), "victim.mp4")
	writeFile(t, outside, 3, t0)
	link := FileName("main", t0.Add(time.Hour))
	if err := os.Symlink(outside, filepath.Join(s.Dir(), link)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		path, name string
		want       error
	}{
		{"main", "nope.mp4", ErrNotFound},
		{"main", FileName("main", t0.Add(time.Second)), ErrNotFound}, // valid name, no file
		{"cam", name, ErrNotFound},                                   // path differs
		{"main", name + ".part", ErrNotFound},
		{"main", "../" + name, ErrNotFound},
		{"main", link, ErrNotFound}, // a symlink is not a recording
		{"main", active, ErrActive},
	} {
		if err := s.Delete(tc.path, tc.name); !errors.Is(err, tc.want) {
			t.Errorf("Delete(%q, %q) = %v, want %v", tc.path, tc.name, err, tc.want)
		}
	}
	if !exists(t, outside) || !exists(t, filepath.Join(s.Dir(), link)) {
		t.Error("Delete removed a symlink or its target")
	}
	if !exists(t, filepath.Join(s.Dir(), active+".part")) {
		t.Error("Delete removed the active file")
	}
	if err := s.Delete("main", name); err != nil {
		t.Fatal(err)
	}
	if exists(t, filepath.Join(s.Dir(), name)) {
		t.Error("the file is still there")
	}
	if err := s.Delete("main", name); !errors.Is(err, ErrNotFound) {
		t.Errorf("second Delete = %v, want ErrNotFound", err)
	}
}

func TestWritable(t *testing.T) {
	s := openTestStore(t, StoreConfig{})
	if err := s.Writable(); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(s.Dir())
	if len(entries) != 0 {
		t.Errorf("the probe was left behind: %v", entries)
	}
	if os.Geteuid() == 0 {
		t.Skip("root writes to read-only directories")
	}
	if err := os.Chmod(s.Dir(), 0o555); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Chmod(s.Dir(), 0o755) })
	if err := s.Writable(); err == nil {
		t.Error("Writable on a read-only directory: no error")
	}
}
