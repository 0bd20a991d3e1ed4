package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestMain lets the test binary serve as the floor's receiver process, which
// runFloor starts by re-executing itself.
func TestMain(m *testing.M) {
	if len(os.Args) == 3 && os.Args[1] == floorRecvArg {
		os.Exit(floorReceivers(os.Args[2], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// TestFloor runs the floor briefly, with sendto and with UDP_SEGMENT: every
// packet reaches the receiver process, the CPU figures are filled in, and
// the JSON line shows in the summary.
func TestFloor(t *testing.T) {
	if testing.Short() {
		t.Skip("sockets and a child process")
	}
	jsonPath := filepath.Join(t.TempDir(), "floor.jsonl")
	for _, gso := range []bool{false, true} {
		args := []string{"-floor", "-viewers", "3", "-duration", "1s", "-json", jsonPath}
		if gso {
			args = append(args, "-gso")
		}
		var stdout, stderr bytes.Buffer
		if code := run(context.Background(), args, &stdout, &stderr); code != 0 {
			if gso && strings.Contains(stderr.String(), "UDP_SEGMENT") {
				t.Logf("no UDP GSO here: %s", stderr.String())
				continue
			}
			t.Fatalf("gso=%v: exit %d\n%s\n%s", gso, code, stdout.String(), stderr.String())
		}
		t.Logf("\n%s", stdout.String())
		if !strings.Contains(stdout.String(), "µs/packet") {
			t.Fatalf("table missing:\n%s", stdout.String())
		}
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	for line := range bytes.SplitSeq(bytes.TrimSpace(b), []byte{'\n'}) {
		var r result
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatal(err)
		}
		f := r.Floor
		if f == nil || r.Server == nil {
			t.Fatalf("not a floor line: %s", line)
		}
		if r.Viewers != 3 || f.PacketsPerFrame != 7 || f.PacketBytes != 12+1200+16 || f.Profile != "SRTP_AEAD_AES_128_GCM" {
			t.Fatalf("floor %+v", f)
		}
		// 1 s of warm-up and 1 s measured, 30 frames of 7 packets each,
		// to 3 receivers; a loaded machine may miss a tick or two.
		if r.Packets < 3*7*25 || f.SentRun < r.Packets || f.ReceivedRun != f.SentRun {
			t.Fatalf("packets %d, sent %d, received %d", r.Packets, f.SentRun, f.ReceivedRun)
		}
		if want := r.Packets; !f.GSO && f.Sends != want || f.GSO && f.Sends*7 != want {
			t.Fatalf("gso=%v: %d send calls for %d packets", f.GSO, f.Sends, r.Packets)
		}
		if r.Server.USPerPacket <= 0 || r.Server.CPUMsPerViewerS <= 0 {
			t.Fatalf("sender CPU not measured: %+v", r.Server)
		}
	}
	var sum bytes.Buffer
	if code := run(context.Background(), []string{"-summary", jsonPath}, &sum, &bytes.Buffer{}); code != 0 || !strings.Contains(sum.String(), "floor-gso") {
		t.Fatalf("summary (exit %d):\n%s", code, sum.String())
	}
}

// TestSummaryRatios: -vs pairs a-X with b-X at the same viewer count and
// prints the ratios of their server figures, with the floors.
func TestSummaryRatios(t *testing.T) {
	srv := func(us, ms, mb float64) *serverResult {
		return &serverResult{PID: 1, cpuResult: cpuResult{USPerPacket: us, CPUMsPerViewerS: ms, RSSPerViewerMB: mb}}
	}
	rows := []result{
		{Label: "floor", Viewers: 200, Server: srv(4, 0.8, 0), Floor: &floorResult{}},
		{Label: "icey-gop1s", Viewers: 200, Server: srv(10, 2, 0.1)},
		{Label: "mediamtx-gop1s", Viewers: 200, Server: srv(25, 5, 0.3)},
		{Label: "mediamtx-gop1s", Viewers: 50, Server: srv(25, 5, 0.3)}, // no icey pair
	}
	path := filepath.Join(t.TempDir(), "r.jsonl")
	var b []byte
	for _, r := range rows {
		l, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		b = append(append(b, l...), '\n')
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, stderr bytes.Buffer
	if code := run(context.Background(), []string{"-summary", path, "-vs", "mediamtx,icey"}, &out, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	s := out.String()
	t.Logf("\n%s", s)
	_, ratios, ok := strings.Cut(s, "# mediamtx ÷ icey")
	if !ok {
		t.Fatalf("no ratio table:\n%s", s)
	}
	lines := strings.Split(strings.TrimSpace(ratios), "\n")
	if len(lines) != 3 { // title rest, header, one pair
		t.Fatalf("want one pair:\n%s", ratios)
	}
	f := strings.Fields(lines[2])
	if f[0] != "gop1s" || f[1] != "200" || f[4] != "2.50" || f[7] != "2.50" || f[10] != "3.00" || !strings.Contains(lines[2], "floor 4.000") {
		t.Fatalf("ratio row %q", lines[2])
	}
}
