// Command icey-server streams a camera, a media file or a built-in test
// stream to browsers over WebRTC, with an operations API on the same port.
//
// main is thin: run() takes the arguments, environment and output streams,
// so the whole binary is testable in-process as well as black-box.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/internal/app"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0"

// Exit codes (README.md, Configuration).
const (
	exitOK     = app.ExitOK
	exitUsage  = app.ExitUsage
	exitConfig = app.ExitConfig
	// exitRuntime: a probe or run failed.
	exitRuntime = app.ExitRuntime
)

func main() {
	ctx, stop := app.SignalContext()
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv config.Getenv) int {
	if len(args) > 0 && args[0] == "healthcheck" {
		return healthcheck(args[1:], stdout, stderr, getenv)
	}
	opts, err := config.Parse(args, getenv)
	if err != nil {
		fmt.Fprintf(stderr, "icey-server: %v\n", err)
		switch {
		case errors.Is(err, config.ErrUsage):
			fmt.Fprintln(stderr, "Run 'icey-server --help' for usage.")
			return exitUsage
		default:
			return exitConfig
		}
	}
	if opts.Help {
		fmt.Fprint(stdout, opts.Usage)
		return exitOK
	}
	if opts.Version {
		fmt.Fprintf(stdout, "icey-server %s\n", version)
		return exitOK
	}
	if opts.Doctor {
		return app.Doctor(ctx, opts.Config, stdout, stderr)
	}
	app.Version = version
	return app.Serve(ctx, opts.Config, stderr)
}
