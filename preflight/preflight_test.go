package preflight

import (
	"sync/atomic"
	"testing"
)

func TestReportStatusAndOrder(t *testing.T) {
	p := New("stream")
	if r := p.Report(); !r.Ready || r.Status != "ok" || r.Checks == nil || r.Warnings == nil {
		t.Fatalf("empty report: %+v", r)
	}
	p.Set(CheckTLS, Pass, "TLS disabled")
	p.Set(CheckConfig, Pass, "No config file; using defaults")
	p.Set("zz-extra", Pass, "extra")
	var srcResult atomic.Value
	srcResult.Store(Pass)
	p.SetFunc(CheckSource, func() (Check, []string) {
		return Check{Name: CheckSource, Result: srcResult.Load().(Result), Detail: "live"}, nil
	})
	r := p.Report()
	want := []string{CheckConfig, CheckSource, CheckTLS, "zz-extra"}
	for i, c := range r.Checks {
		if c.Name != want[i] {
			t.Fatalf("order %v, want %v", r.Checks, want)
		}
	}
	if r.Status != "ok" || !r.Ready || r.Product != "icey" || r.Service != "icey-server" || r.Mode != "stream" {
		t.Fatalf("report %+v", r)
	}
	srcResult.Store(Warn)
	if r := p.Report(); r.Status != "degraded" || !r.Ready {
		t.Fatalf("warn: %+v", r)
	}
	srcResult.Store(Fail)
	if r := p.Report(); r.Status != "error" || r.Ready || len(r.Failing()) != 1 {
		t.Fatalf("fail: %+v", r)
	}
	srcResult.Store(Pass)
	p.Set(CheckTURN, Warn, "wildcard", "TURN externalIp is unset")
	r = p.Report()
	if r.Status != "degraded" || len(r.Warnings) != 1 {
		t.Fatalf("warning: %+v", r)
	}
	p.Remove(CheckTURN)
	p.AddWarning("global")
	if r := p.Report(); r.Status != "degraded" || r.Warnings[0] != "global" {
		t.Fatalf("global warning: %+v", r)
	}
}

func TestOnChangeFiresOnReadinessEdges(t *testing.T) {
	p := New("stream")
	var edges []bool
	p.OnChange(func(r Report) { edges = append(edges, r.Ready) })
	var res atomic.Value
	res.Store(Pass)
	p.SetFunc(CheckSource, func() (Check, []string) {
		return Check{Name: CheckSource, Result: res.Load().(Result)}, nil
	})
	p.Poll()
	res.Store(Fail)
	p.Poll()
	p.Poll() // no change: no event
	res.Store(Pass)
	p.Poll()
	if len(edges) != 3 || edges[0] != true || edges[1] != false || edges[2] != true {
		t.Fatalf("edges %v", edges)
	}
}
