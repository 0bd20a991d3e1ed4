package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBenchAgainstWHEPServer runs the generator end to end against a real
// (pion) WHEP server on loopback: viewers beyond the server's capacity are
// refused with 503 and counted, the others connect, receive a lossless
// stream, see a keyframe, are measured against this process's /proc
// entries, and leave with a WHEP DELETE.
func TestBenchAgainstWHEPServer(t *testing.T) {
	if testing.Short() {
		t.Skip("real peers")
	}
	const fps = 10
	aus := encodeClip(t, 3*time.Second, fps, fps) // GOP 1 s
	tests := []struct {
		name      string
		videoOnly bool
		mlines    int
	}{
		{"audio and video", false, 2},
		{"video only", true, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			goroutines := runtime.NumGoroutine()
			srv := startWHEPServer(t, aus, fps, 3, "s3cret")
			jsonPath := filepath.Join(t.TempDir(), "out.jsonl")
			args := []string{
				"-url", srv.url, "-viewers", "4", "-ramp", "20", "-duration", "2s", "-settle", "300ms",
				"-connect-timeout", "30s", "-token", "s3cret", "-pid", strconv.Itoa(os.Getpid()),
				"-json", jsonPath, "-label", "test",
			}
			if tt.videoOnly {
				args = append(args, "-video-only")
			}
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
				t.Fatalf("exit %d\n%s\n%s", code, stdout.String(), stderr.String())
			}
			t.Logf("\n%s", stdout.String())

			b, err := os.ReadFile(jsonPath)
			if err != nil {
				t.Fatal(err)
			}
			var r result
			if err := json.Unmarshal(b, &r); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if r.Connected != 3 || r.Failed != 1 || r.Rejected != 1 || r.Dropped != 0 {
				t.Fatalf("connected=%d failed=%d rejected=%d dropped=%d, want 3 1 1 0", r.Connected, r.Failed, r.Rejected, r.Dropped)
			}
			if r.Packets == 0 || r.Bytes == 0 || r.MbpsPerViewer <= 0 || r.Expected < r.Packets/2 {
				t.Fatalf("no traffic counted: %+v", r)
			}
			// Loopback at ~1 Mb/s: anything beyond a stray packet is a bug.
			if r.LossPct > 1 {
				t.Fatalf("loss %.3f %% on loopback", r.LossPct)
			}
			if !r.NACK || r.RcvbufBytes <= 0 || r.RunUnrecovered > r.RunGaps {
				t.Fatalf("nack=%v rcvbuf=%d gaps=%d unrecovered=%d", r.NACK, r.RcvbufBytes, r.RunGaps, r.RunUnrecovered)
			}
			if r.FirstPacket.N != 3 || r.FirstIDR.N != 3 || r.NoIDR != 0 {
				t.Fatalf("first packet n=%d, first IDR n=%d, none=%d", r.FirstPacket.N, r.FirstIDR.N, r.NoIDR)
			}
			if r.FirstIDR.P50 < r.FirstPacket.P50 || r.FirstIDR.Max <= 0 {
				t.Fatalf("implausible latencies: packet %+v IDR %+v", r.FirstPacket, r.FirstIDR)
			}
			if r.Server == nil || r.Server.SampleErrorsSeen != "" || r.Server.RSSMB <= 0 || r.Server.CPUMs < 0 {
				t.Fatalf("server sample: %+v", r.Server)
			}
			if r.Generator.CPUMsTotal <= 0 {
				t.Fatalf("generator CPU not measured: %+v", r.Generator)
			}
			if !strings.Contains(stdout.String(), "join->first IDR") {
				t.Fatalf("table missing:\n%s", stdout.String())
			}

			srv.mu.Lock()
			deletes, rejected, mlines := srv.deletes, srv.rejected, srv.mlines
			srv.mu.Unlock()
			if deletes != 3 || rejected != 1 {
				t.Fatalf("server saw %d DELETEs and %d rejections, want 3 and 1", deletes, rejected)
			}
			for _, m := range mlines {
				if m != tt.mlines {
					t.Fatalf("offer had %d m-lines, want %d", m, tt.mlines)
				}
			}

			var sum bytes.Buffer
			if code := run(context.Background(), []string{"-summary", jsonPath}, &sum, &stderr); code != 0 ||
				!strings.Contains(sum.String(), "test") || strings.Count(sum.String(), "\n") != 2 {
				t.Fatalf("summary (exit %d):\n%s", code, sum.String())
			}

			srv.close()
			waitGoroutines(t, goroutines)
		})
	}
}

// TestBenchStopsWhenNobodyAnswers: a URL where nothing listens makes every
// join fail quickly; the run still completes and counts the failures.
func TestBenchStopsWhenNobodyAnswers(t *testing.T) {
	srv := startWHEPServer(t, []accessUnit{{nals: [][]byte{{0x65, 0}}, idr: true}}, 10, 0, "")
	srv.close() // its port is now closed
	var stdout, stderr bytes.Buffer
	start := time.Now()
	code := run(context.Background(), []string{"-url", srv.url, "-viewers", "3", "-ramp", "100",
		"-duration", "100ms", "-settle", "0", "-json", "-"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var r result
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatalf("%v: %q", err, stdout.String())
	}
	if r.Connected != 0 || r.Failed != 3 || len(r.Errors) == 0 {
		t.Fatalf("connected=%d failed=%d errors=%v", r.Connected, r.Failed, r.Errors)
	}
	if time.Since(start) > time.Minute {
		t.Fatalf("took %v", time.Since(start))
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		ok   bool
	}{
		{"defaults", nil, true},
		{"ipv6 loopback", []string{"-url", "http://[::1]:4500/whep"}, true},
		{"localhost", []string{"-url", "http://localhost:4500/whep"}, true},
		{"remote host refused", []string{"-url", "http://192.0.2.1/whep"}, false},
		{"remote allowed without -loopback", []string{"-url", "http://192.0.2.1/whep", "-loopback=false"}, true},
		{"not http", []string{"-url", "rtsp://127.0.0.1/x"}, false},
		{"zero viewers", []string{"-viewers", "0"}, false},
		{"zero ramp", []string{"-ramp", "0"}, false},
		{"stray argument", []string{"x"}, false},
		{"floor", []string{"-floor", "-viewers", "200", "-gso"}, true},
		{"gso without floor", []string{"-gso"}, false},
		{"floor bad size", []string{"-floor", "-floor-size", "2000"}, false},
		{"summary vs", []string{"-summary", "f", "-vs", "mediamtx,icey"}, true},
		{"summary vs one label", []string{"-summary", "f", "-vs", "mediamtx"}, false},
		{"vs without summary", []string{"-vs", "a,b"}, false},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		_, err := parseFlags(tt.args, &stderr)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v", tt.name, err)
		}
	}
}

func TestSampleProc(t *testing.T) {
	s, err := sampleProc(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.rss <= 0 || s.cpu < 0 {
		t.Fatalf("sample %+v", s)
	}
	if _, err := sampleProc(-1); err == nil {
		t.Fatal("no error for a missing process")
	}
}

// waitGoroutines fails if goroutines started by the test outlive it.
func waitGoroutines(t *testing.T, before int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:n])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
