package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/icey/icey-server/config"
)

// healthcheck probes a running server, for container HEALTHCHECKs in images
// without curl: exit 0 when the endpoint answers 200, 1 otherwise. It reads
// the same configuration as the server (config file, ICEY_* environment and
// the server's flags, e.g. -c, --port, --host, --tls-cert), so the probe
// finds the server wherever its configuration put it.
func healthcheck(args []string, stdout, stderr io.Writer, getenv config.Getenv) int {
	ready, url, timeout, rest, err := healthcheckFlags(args)
	if err != nil {
		fmt.Fprintf(stderr, "icey-server healthcheck: %v\n", err)
		fmt.Fprintln(stderr, "Usage: icey-server healthcheck [--ready] [--url URL] [--timeout 3s] [server flags such as -c FILE, --port N]")
		return exitUsage
	}
	base := url
	if base == "" {
		opts, err := config.Parse(rest, getenv)
		if err != nil {
			fmt.Fprintf(stderr, "icey-server healthcheck: %v\n", err)
			if errors.Is(err, config.ErrUsage) {
				return exitUsage
			}
			return exitConfig
		}
		base = probeBase(opts.Config)
	}
	path := "/api/health"
	if ready {
		path = "/api/ready"
	}
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		// The probe talks to its own container; the certificate names a public host.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		Proxy:           nil,
	}}
	resp, err := client.Get(strings.TrimRight(base, "/") + path)
	if err != nil {
		fmt.Fprintf(stderr, "healthcheck: %v\n", err)
		return exitRuntime
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "healthcheck: %s answered %d\n", path, resp.StatusCode)
		return exitRuntime
	}
	fmt.Fprintf(stdout, "ok: %s %d\n", path, resp.StatusCode)
	return exitOK
}

// probeBase is the URL of the server cfg describes, as seen from the same
// host: a wildcard bind is probed on loopback.
func probeBase(cfg config.Config) string {
	host := cfg.HTTP.Host
	switch {
	case config.IsWildcardHost(host):
		host = "127.0.0.1"
		if cfg.HTTP.Host == "::" {
			host = "::1"
		}
	case host == "localhost":
		host = "127.0.0.1"
	}
	scheme := "http"
	if cfg.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + net.JoinHostPort(host, strconv.Itoa(cfg.HTTP.Port))
}

// healthcheckFlags takes the probe's own flags (--ready, --url, --timeout,
// in -x, --x, -x=v and --x v forms) out of args; the rest are server flags.
func healthcheckFlags(args []string) (ready bool, url string, timeout time.Duration, rest []string, err error) {
	timeout = 3 * time.Second
	for i := 0; i < len(args); i++ {
		a := args[i]
		name, val, hasVal := strings.Cut(strings.TrimLeft(a, "-"), "=")
		if !strings.HasPrefix(a, "-") {
			name = ""
		}
		value := func() (string, error) {
			if hasVal {
				return val, nil
			}
			if i+1 >= len(args) {
				return "", fmt.Errorf("flag needs an argument: %s", a)
			}
			i++
			return args[i], nil
		}
		switch name {
		case "ready":
			ready = true
			if hasVal {
				if ready, err = strconv.ParseBool(val); err != nil {
					return false, "", 0, nil, fmt.Errorf("invalid value %q for --ready", val)
				}
			}
		case "url":
			if url, err = value(); err != nil {
				return
			}
		case "timeout":
			var v string
			if v, err = value(); err != nil {
				return
			}
			if timeout, err = time.ParseDuration(v); err != nil || timeout <= 0 {
				return false, "", 0, nil, fmt.Errorf("invalid value %q for --timeout (e.g. 3s)", v)
			}
		default:
			rest = append(rest, a)
		}
	}
	return ready, url, timeout, rest, nil
}
