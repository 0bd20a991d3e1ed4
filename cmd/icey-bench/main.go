// Command icey-bench is a WHEP load generator. It joins N receive-only
// WebRTC viewers to a WHEP endpoint at a given rate, holds them for a
// steady-state window, and reports what they received (packets, loss from
// sequence gaps, bitrate), how fast each got its first packet and first
// keyframe, and, given the server's PID, the server's CPU time per
// viewer-second and resident memory per viewer, next to its own CPU.
//
// With -floor it measures instead the floor of a fan-out on this machine:
// one goroutine SRTP-encrypting and sending a paced 720p30 2 Mb/s stream to
// N loopback receivers in a child process (one sendto per packet, or with
// -gso one sendmsg per receiver and frame), reporting the sender's CPU per
// packet and per viewer-second, the figures a server cannot go below.
//
// It speaks plain WHEP (POST offer, 201 + answer + Location, DELETE), so it
// measures icey-server and any other WHEP server the same way.
//
//	icey-bench -url http://127.0.0.1:4500/whep -viewers 200 -ramp 25 -duration 20s -pid $(pidof icey-server)
//	icey-bench -floor -viewers 200 -duration 10s [-gso] -json out.jsonl
//	icey-bench -summary bench-results/bench-2026-01-01.jsonl [-vs mediamtx,icey]
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
	"strings"
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
	vs              string // -summary: "a,b" compares labels a-X with b-X

	floor     bool
	gso       bool
	floorRate float64
	floorSize int
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
	fs.StringVar(&o.vs, "vs", "", `with -summary: "a,b" adds the ratios a÷b of CPU per packet, CPU per viewer-second and RSS per viewer for every label pair a-X, b-X at the same viewer count`)
	fs.BoolVar(&o.floor, "floor", false, "measure the fan-out floor of this machine for -viewers over -duration instead of a WHEP server")
	fs.BoolVar(&o.gso, "gso", false, "with -floor: send each receiver's packets of one frame in one sendmsg with UDP_SEGMENT")
	fs.Float64Var(&o.floorRate, "floor-rate", 213, "with -floor: packets per second per viewer (720p30 2 Mb/s is about 213)")
	fs.IntVar(&o.floorSize, "floor-size", 1200, "with -floor: RTP payload bytes per packet")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.summary != "" {
		if o.vs != "" {
			if a, b, ok := strings.Cut(o.vs, ","); !ok || a == "" || b == "" || strings.Contains(b, ",") {
				return o, errors.New(`-vs wants two label prefixes, "a,b"`)
			}
		}
		return o, nil
	}
	if o.vs != "" {
		return o, errors.New("-vs goes with -summary")
	}
	if o.floor {
		switch {
		case o.viewers < 1:
			return o, errors.New("-viewers must be at least 1")
		case o.duration <= 0:
			return o, errors.New("-duration must be positive")
		case o.floorRate <= 0:
			return o, errors.New("-floor-rate must be positive")
		case o.floorSize < 1 || o.floorSize > 1400:
			return o, errors.New("-floor-size must be between 1 and 1400")
		}
		return o, nil
	}
	if o.gso {
		return o, errors.New("-gso goes with -floor")
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
	if len(args) == 2 && args[0] == floorRecvArg { // the floor's child process
		return floorReceivers(args[1], os.Stdin, stdout, stderr)
	}
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "icey-bench: %v\n", err)
		return 2
	}
	if o.summary != "" {
		if err := printSummary(o.summary, o.vs, stdout); err != nil {
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

	var res *result
	if o.floor {
		label := o.label
		if label == "" {
			label = "floor"
			if o.gso {
				label = "floor-gso"
			}
		}
		res, err = runFloor(ctx, floorOptions{viewers: o.viewers, duration: o.duration, rate: o.floorRate, size: o.floorSize, gso: o.gso}, label, stderr)
	} else {
		res, err = bench(ctx, o, stderr)
	}
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
