// Package app is the composition root of icey-server: it binds the ports,
// runs the preflight checks and starts the components in order (TURN, the
// paths and their sources, the WebRTC session layer, Symple, HTTP, the
// event streams, the background loops), and stops them in reverse with
// bounded steps (see Runner). cmd/icey-server only parses the command
// line and calls Serve or Doctor.
package app

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// Version is reported by the ops API and metrics; the command sets it.
var Version = "0.0.0"

// Exit codes (README.md, Configuration).
const (
	ExitOK      = 0
	ExitRuntime = 1
	ExitUsage   = 2
	ExitConfig  = 3
	ExitStartup = 4

	exitOK      = ExitOK
	exitRuntime = ExitRuntime
	exitStartup = ExitStartup
)

type sigKey struct{}

// SignalContext delivers SIGINT/SIGTERM: the returned context ends at the
// first signal (a graceful shutdown starts); a second signal skips the
// drain delay.
func SignalContext() (context.Context, func()) {
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	first, cancelFirst := context.WithCancel(context.Background())
	second, cancelSecond := context.WithCancel(context.Background())
	go func() {
		<-ch
		cancelFirst()
		<-ch
		cancelSecond()
	}()
	ctx := context.WithValue(first, sigKey{}, second)
	return ctx, func() { signal.Stop(ch); cancelFirst(); cancelSecond() }
}

// hurry returns a context cancelled by a second signal (never, in tests).
func hurry(ctx context.Context) context.Context {
	if c, ok := ctx.Value(sigKey{}).(context.Context); ok {
		return c
	}
	return context.Background()
}
