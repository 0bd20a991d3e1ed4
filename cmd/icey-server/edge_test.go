package main

// Scale-out on one machine: three hosts (network namespaces joined by veth
// links, routed through the test's namespace): an origin pulls the test
// camera and re-serves it over RTSP; two edges pull from it on demand
// through a template path and serve WebRTC viewers.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/icey/icey-server/internal/hosttest"
	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testpeer"
)

// arrivals records when each video frame (keyed by its first packet's
// payload, identical at origin and edge since nothing is re-encoded or
// re-fragmented) reached a viewer.
type arrivals struct {
	mu sync.Mutex
	at map[uint64]time.Time
}

func (a *arrivals) on(p *rtp.Packet, at time.Time) {
	if len(p.Payload) < 2 {
		return
	}
	// The first packet of a frame: a single NAL unit, a STAP-A or an FU-A
	// start fragment.
	if t := p.Payload[0] & 0x1f; t == 28 && p.Payload[1]&0x80 == 0 {
		return
	}
	h := fnv.New64a()
	_, _ = h.Write(p.Payload)
	_ = binary.Write(h, binary.BigEndian, uint32(len(p.Payload)))
	k := h.Sum64()
	a.mu.Lock()
	if _, seen := a.at[k]; !seen {
		a.at[k] = at
	}
	a.mu.Unlock()
}

func TestOriginAndEdges(t *testing.T) {
	hOrigin, hA, hB := hosttest.New(t, 1), hosttest.New(t, 2), hosttest.New(t, 3)
	// The camera lives in the test's namespace, on the origin's link.
	cam := rtsptest.Start(t, rtsptest.Options{Host: hOrigin.Gateway, FPS: 30, GOPFrames: 30, ClipDuration: 6 * time.Second})
	rport := 8554
	originCfg, _ := json.Marshal(map[string]any{
		"media": map[string]any{"sourceGraceSeconds": 30},
		"paths": map[string]any{"front": map[string]any{"source": cam.URL("front")}},
	})
	originArgs := []string{"-c", writeConfig(t, string(originCfg)), "--no-turn"}
	// /metrics answers other hosts with the bearer token only.
	originEnv := []string{"ICEY_RTSP=true", "ICEY_RTSP_PORT=" + strconv.Itoa(rport), "ICEY_METRICS_TOKEN=edge-test"}
	origin := launchOn(t, hOrigin, originArgs, originEnv...)
	origin.waitFor(t, "/api/ready", 200, 20*time.Second)

	edgeCfg, _ := json.Marshal(map[string]any{
		"media": map[string]any{"sourceGraceSeconds": 30},
		"paths": map[string]any{"~^(.+)$": map[string]any{
			"source":                          fmt.Sprintf("rtsp://%s:%d/$1", hOrigin.Addr, rport),
			"sourceOnDemandCloseAfterSeconds": 2,
		}},
	})
	edgeA := launchOn(t, hA, []string{"-c", writeConfig(t, string(edgeCfg)), "--no-turn"})
	edgeB := launchOn(t, hB, []string{"-c", writeConfig(t, string(edgeCfg)), "--no-turn"})
	edgeA.waitFor(t, "/api/ready", 200, 20*time.Second)
	edgeB.waitFor(t, "/api/ready", 200, 20*time.Second)

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	atOrigin, atEdge := &arrivals{at: map[uint64]time.Time{}}, &arrivals{at: map[uint64]time.Time{}}
	vo, err := testpeer.Connect(ctx, origin.base+"/front/whep", testpeer.Options{VideoOnly: true, OnVideo: atOrigin.on, LocalIP: net.ParseIP(hOrigin.Gateway)})
	if err != nil {
		t.Fatal(err)
	}
	defer vo.Close()
	va, err := testpeer.Connect(ctx, edgeA.base+"/front/whep", testpeer.Options{VideoOnly: true, OnVideo: atEdge.on, LocalIP: net.ParseIP(hA.Gateway)})
	if err != nil {
		t.Fatal(err)
	}
	defer va.Close()
	vb, err := testpeer.Connect(ctx, edgeB.base+"/front/whep", testpeer.Options{VideoOnly: true, LocalIP: net.ParseIP(hB.Gateway)})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []*testpeer.Viewer{vo, va, vb} {
		if err := v.WaitVideo(100, 15*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if cam.Opened() != 1 {
		t.Fatalf("the camera was opened %d times, want once (by the origin)", cam.Opened())
	}
	readers := func() float64 {
		code, body := scrape(t, origin.base+"/metrics", "Authorization", "Bearer edge-test")
		if code != 200 {
			t.Fatalf("origin /metrics: %d", code)
		}
		var n float64
		fmt.Sscanf(findLine(body, `icey_rtsp_readers{path="front"}`), "%g", &n)
		return n
	}
	if n := readers(); n != 2 {
		t.Fatalf("origin RTSP readers of front: %v, want one per edge", n)
	}

	// The hop's latency: the same frames at a viewer of the origin and at
	// a viewer of an edge, once both play live (not the cached burst a
	// joining viewer gets).
	// The clip loops every 6 s: frames are told apart within 4 s.
	for _, a := range []*arrivals{atOrigin, atEdge} {
		a.mu.Lock()
		a.at = map[uint64]time.Time{}
		a.mu.Unlock()
	}
	time.Sleep(4 * time.Second)
	atOrigin.mu.Lock()
	atEdge.mu.Lock()
	var d []time.Duration
	for k, te := range atEdge.at {
		if to, ok := atOrigin.at[k]; ok {
			d = append(d, te.Sub(to))
		}
	}
	atEdge.mu.Unlock()
	atOrigin.mu.Unlock()
	if len(d) < 30 {
		t.Fatalf("only %d frames matched between origin and edge viewers", len(d))
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	t.Logf("edge hop latency over %d frame-start packets: p50 %v, p95 %v", len(d), d[len(d)/2].Round(100*time.Microsecond),
		d[len(d)*95/100].Round(100*time.Microsecond))

	// Edge B's last viewer leaves: after the idle time it holds no origin
	// connection.
	vb.Close()
	deadline := time.Now().Add(10 * time.Second)
	for readers() != 1 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := readers(); n != 1 {
		t.Fatalf("origin readers after edge B went idle: %v, want 1", n)
	}

	// The origin host restarts (its namespace and link go with the
	// process): edge A's viewer keeps its session and plays again.
	if err := origin.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	origin.wait(t, 10*time.Second)
	hOrigin2 := hosttest.New(t, 1)
	origin2 := launchOn(t, hOrigin2, originArgs, originEnv...)
	origin2.waitFor(t, "/api/ready", 200, 20*time.Second)
	before := va.VideoPackets.Load()
	if err := va.WaitVideo(before+100, 30*time.Second); err != nil {
		t.Fatalf("edge viewer after the origin restart: %v", err)
	}
	_, st, _ := edgeA.get(t, "/api/status")
	if st["sessions"].(map[string]any)["active"] != float64(1) {
		t.Fatalf("edge A sessions %v", st["sessions"])
	}
}

// findLine returns what follows prefix on its line in body ("" if none).
func findLine(body, prefix string) string {
	for _, line := range strings.Split(body, "\n") {
		if rest, ok := strings.CutPrefix(line, prefix+" "); ok {
			return rest
		}
	}
	return ""
}
