// Command icey-bench is a WHEP load generator. It joins N receive-only
// WebRTC viewers to a WHEP endpoint at a given rate, holds them for a
// steady-state window, and reports what they received (packets, loss from
// sequence gaps, bitrate), how fast each got its first packet and first
// keyframe, and, given the server's PID, the server's CPU time per
// viewer-second and resident memory per viewer, next to its own CPU.
//
// It speaks plain WHEP (POST offer, 201 + answer + Location, DELETE), so it
// measures icey-server and any other WHEP server the same way.
//
//	icey-bench -url http://127.0.0.1:4500/whep -viewers 200 -ramp 25 -duration 20s -pid $(pidof icey-server)
//	icey-bench -summary bench-results/bench-2026-01-01.jsonl
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line settings of one run.
type options struct {
	url             string
	viewers         int
	ramp            float64 // viewers per second
	duration        time.Duration
	settleTime      time.Duration
	connectTimeout  time.Duration
	videoOnly       bool
	token           string
	pid             int
	jsonPath        string
	label           string
	loopback        bool
	receiverReports bool
	nack            bool
	rcvbuf          int
	cpuProfile      string
	summary         string
	vp8Only         bool
}

func parseFlags(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("icey-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.url, "url", "http://127.0.0.1:4500/whep", "WHEP endpoint")
	fs.IntVar(&o.viewers, "viewers", 10, "number of viewers")
	fs.Float64Var(&o.ramp, "ramp", 20, "viewers joined per second")
	fs.DurationVar(&o.duration, "duration", 20*time.Second, "steady-state measurement window")
	fs.DurationVar(&o.settleTime, "settle", 2*time.Second, "pause between the last connection and the window")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 15*time.Second, "how long after the last join to wait for connections")
	fs.BoolVar(&o.videoOnly, "video-only", false, "offer video only (no audio m-line)")
	fs.StringVar(&o.token, "token", "", "bearer token for the WHEP requests")
	fs.IntVar(&o.pid, "pid", 0, "server PID: sample its CPU time and RSS from /proc")
	fs.StringVar(&o.jsonPath, "json", "", `append the JSON result line to this file ("-" = stdout, table then goes to stderr)`)
	fs.StringVar(&o.label, "label", "", "label recorded with the result")
	fs.BoolVar(&o.loopback, "loopback", true, "gather loopback ICE candidates only and require a loopback URL")
	fs.BoolVar(&o.receiverReports, "rtcp-rr", true, "send RTCP receiver reports, as a browser does")
	fs.BoolVar(&o.nack, "nack", true, "send NACKs for missing video packets, as a browser does (loss is then reported raw and after retransmission)")
	fs.IntVar(&o.rcvbuf, "rcvbuf", 4<<20, "receive buffer per viewer socket in bytes, capped by net.core.rmem_max (0: leave the OS default)")
	fs.BoolVar(&o.vp8Only, "vp8-only", false, "offer VP8 as the only video codec (a browser without H.264: an H.264 source is then sent through its VP8 rendition)")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write the generator's own CPU profile here")
	fs.StringVar(&o.summary, "summary", "", "print a table of the JSON lines in this file and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.summary != "" {
		return o, nil
	}
	switch {
	case o.viewers < 1:
		return o, errors.New("-viewers must be at least 1")
	case o.ramp <= 0:
		return o, errors.New("-ramp must be positive")
	case o.duration <= 0:
		return o, errors.New("-duration must be positive")
	case o.rcvbuf < 0:
		return o, errors.New("-rcvbuf must not be negative")
	}
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return o, fmt.Errorf("-url %q is not an http(s) URL", o.url)
	}
	if o.loopback && !isLoopbackHost(u.Hostname()) {
		return o, errNotLoopback
	}
	return o, nil
}

func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "icey-bench: %v\n", err)
		return 2
	}
	if o.summary != "" {
		if err := printSummary(o.summary, stdout); err != nil {
			fmt.Fprintf(stderr, "icey-bench: %v\n", err)
			return 1
		}
		return 0
	}
	if o.cpuProfile != "" {
		f, err := os.Create(o.cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "icey-bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "icey-bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	res, err := bench(ctx, o, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "icey-bench: %v\n", err)
		return 1
	}
	table := stdout
	if o.jsonPath == "-" {
		table = stderr
	}
	res.writeTable(table)
	if o.jsonPath != "" {
		if err := res.writeJSON(o.jsonPath, stdout); err != nil {
			fmt.Fprintf(stderr, "icey-bench: %v\n", err)
			return 1
		}
	}
	return 0
}
