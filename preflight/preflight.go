// Package preflight keeps the named checks that drive readiness. Components
// report into it (a static result, or a non-blocking function evaluated when
// the report is built); the report is what /api/ready returns and what
// --doctor prints. Contract: README.md (Operations API).
package preflight

import (
	"encoding/json"
	"slices"
	"sync"
)

// Result of one check.
type Result string

const (
	Pass Result = "pass"
	Warn Result = "warn"
	Fail Result = "fail"
)

// Check is one named entry of the report.
type Check struct {
	Name   string `json:"name"`
	Result Result `json:"result"`
	Detail string `json:"detail"`
}

// Report is the preflight report (the /api/ready body).
type Report struct {
	Status   string   `json:"status"` // ok | degraded | error
	Ready    bool     `json:"ready"`
	Product  string   `json:"product"`
	Service  string   `json:"service"`
	Mode     string   `json:"mode"`
	Checks   []Check  `json:"checks"`
	Warnings []string `json:"warnings"`
}

// Names of the checks, in the stable order of the contract.
const (
	CheckConfig       = "config"
	CheckSource       = "source"
	CheckPaths        = "paths"
	CheckTURN         = "turn"
	CheckPorts        = "ports"
	CheckWebRTC       = "webrtc"
	CheckWebRoot      = "web_root"
	CheckTLS          = "tls"
	CheckRecordings   = "recordings"
	CheckIntelligence = "intelligence"
	CheckShutdown     = "shutdown"
)

// webrtc and web_root are additions after the contract's checks; web_root
// appears only when a web root is configured.
var order = []string{CheckConfig, CheckSource, CheckPaths, CheckTURN, CheckPorts, CheckTLS,
	CheckRecordings, CheckIntelligence, CheckWebRTC, CheckWebRoot, CheckShutdown}

// Func computes a check and any warnings that go with it. It runs while a
// report is built (on every probe), so it must not block or do I/O: read
// state the component keeps up to date.
type Func func() (Check, []string)

// Preflight holds the checks. The zero value is not usable; call New.
type Preflight struct {
	mode     string
	mu       sync.RWMutex
	checks   map[string]Func
	warnings []string
	onChange []func(Report)
	lastKey  string
}

// New returns an empty set of checks for the given mode.
func New(mode string) *Preflight {
	return &Preflight{mode: mode, checks: map[string]Func{}}
}

// Set records a static result for a check (replacing any earlier one).
func (p *Preflight) Set(name string, r Result, detail string, warnings ...string) {
	c := Check{Name: name, Result: r, Detail: detail}
	w := append([]string(nil), warnings...)
	p.SetFunc(name, func() (Check, []string) { return c, w })
}

// SetFunc registers a live check.
func (p *Preflight) SetFunc(name string, f Func) {
	p.mu.Lock()
	p.checks[name] = f
	p.mu.Unlock()
	p.notify()
}

// Remove drops a check.
func (p *Preflight) Remove(name string) {
	p.mu.Lock()
	delete(p.checks, name)
	p.mu.Unlock()
	p.notify()
}

// AddWarning adds a report-level warning not tied to one check.
func (p *Preflight) AddWarning(w string) {
	p.mu.Lock()
	p.warnings = append(p.warnings, w)
	p.mu.Unlock()
	p.notify()
}

// OnChange registers a callback run with the new report whenever a
// registration changes readiness or status. Live checks change without a
// registration, so callers that need edge events also call Poll periodically.
func (p *Preflight) OnChange(f func(Report)) {
	p.mu.Lock()
	p.onChange = append(p.onChange, f)
	p.mu.Unlock()
}

// Poll rebuilds the report and fires OnChange callbacks if readiness, status
// or the set of failing checks changed since the last call. Returns the report.
func (p *Preflight) Poll() Report { return p.notify() }

func (p *Preflight) notify() Report {
	r := p.Report()
	key, _ := json.Marshal(struct {
		S string
		R bool
		C []Check
	}{r.Status, r.Ready, failing(r)})
	p.mu.Lock()
	changed := string(key) != p.lastKey
	p.lastKey = string(key)
	cbs := slices.Clone(p.onChange)
	p.mu.Unlock()
	if changed {
		for _, f := range cbs {
			f(r)
		}
	}
	return r
}

func failing(r Report) []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Result != Pass {
			out = append(out, Check{Name: c.Name, Result: c.Result})
		}
	}
	return out
}

// Report builds the report from the current state of every check.
func (p *Preflight) Report() Report {
	p.mu.RLock()
	funcs := make([]Func, 0, len(p.checks))
	var names []string
	for _, n := range order {
		if f, ok := p.checks[n]; ok {
			funcs = append(funcs, f)
			names = append(names, n)
		}
	}
	// Checks outside the contract's list come last, in name order.
	var extra []string
	for n := range p.checks {
		if !known(n) {
			extra = append(extra, n)
		}
	}
	slices.Sort(extra)
	for _, n := range extra {
		funcs = append(funcs, p.checks[n])
	}
	warnings := append([]string{}, p.warnings...)
	p.mu.RUnlock()

	r := Report{Ready: true, Product: "icey", Service: "icey-server", Mode: p.mode,
		Checks: make([]Check, 0, len(funcs)), Warnings: warnings}
	anyWarn := false
	for _, f := range funcs {
		c, w := f()
		r.Checks = append(r.Checks, c)
		r.Warnings = append(r.Warnings, w...)
		switch c.Result {
		case Fail:
			r.Ready = false
		case Warn:
			anyWarn = true
		}
	}
	switch {
	case !r.Ready:
		r.Status = "error"
	case anyWarn || len(r.Warnings) > 0:
		r.Status = "degraded"
	default:
		r.Status = "ok"
	}
	return r
}

// Failing lists the failing checks of a report, one "name: detail" each.
func (r Report) Failing() []string {
	var out []string
	for _, c := range r.Checks {
		if c.Result == Fail {
			out = append(out, c.Name+": "+c.Detail)
		}
	}
	return out
}

func known(n string) bool {
	for _, o := range order {
		if o == n {
			return true
		}
	}
	return false
}
