package app

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/preflight"
)

// doctorSourceWait bounds how long --doctor waits for the source's first media.
const doctorSourceWait = 8 * time.Second

// Doctor runs the preflight checks without serving: binds (and releases)
// the ports, checks TLS, directories and config, and tries the source until
// it delivers media. It prints the /api/ready report and exits 0 when
// ready, 1 when not.
func Doctor(ctx context.Context, cfg config.Config, stdout, stderr io.Writer) int {
	log := newLogger(cfg, stderr)
	a := newApp(cfg, log)
	staticChecks(a.pf, cfg, time.Now())
	if ln, err := bindAll(cfg); err != nil {
		a.pf.Set(preflight.CheckPorts, preflight.Fail, err.Error())
		if be, ok := err.(*bindError); ok && strings.HasPrefix(be.what, "TURN") {
			a.pf.Set(preflight.CheckTURN, preflight.Fail, "TURN is enabled but its port cannot be bound: "+err.Error())
		}
	} else {
		ln.Close()
		a.pf.Set(preflight.CheckPorts, preflight.Pass, portsDetail(cfg))
	}
	a.pf.SetFunc(preflight.CheckSource, a.sourceCheck)
	if cfg.Media.Mode == "stream" {
		a.src, a.srcWarnings, a.srcErr = buildSource(cfg, logging.Module(log, "media"))
	}
	if a.src != nil {
		a.stream = media.NewStream(media.StreamConfig{Name: "doctor"}, logging.Module(log, "media"))
		defer a.stream.Close()
		// The grace period is irrelevant here: not delivering within the
		// wait is a failure the operator should see.
		a.sup = media.NewSupervisor(a.src, a.stream, media.SupervisorConfig{GracePeriod: time.Millisecond},
			logging.Module(log, "media"))
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = a.sup.Run(sctx) }()
		tick := time.NewTicker(50 * time.Millisecond)
		deadline := time.NewTimer(doctorSourceWait)
	wait:
		for {
			select {
			case <-tick.C:
				if a.sup.Status().State == media.SourceUp {
					break wait
				}
			case <-deadline.C:
				break wait
			case <-ctx.Done():
				break wait
			}
		}
		tick.Stop()
		deadline.Stop()
		// Snapshot while the source still runs, so the detail says why it
		// is not delivering (not merely that the doctor stopped it).
		rep := a.pf.Report()
		cancel()
		<-done
		return printReport(stdout, rep)
	}
	return printReport(stdout, a.pf.Report())
}

func printReport(w io.Writer, rep preflight.Report) int {
	b, _ := json.MarshalIndent(rep, "", "  ")
	fmt.Fprintln(w, string(b))
	if !rep.Ready {
		return exitRuntime
	}
	return exitOK
}
