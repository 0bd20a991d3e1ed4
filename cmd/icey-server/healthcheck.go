package main

import (
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/icey/icey-server/config"
)

// healthcheck probes a running server, for container HEALTHCHECKs in images
// without curl: exit 0 when the endpoint answers 200, 1 otherwise.
func healthcheck(args []string, stdout, stderr io.Writer, getenv config.Getenv) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	ready := fs.Bool("ready", false, "probe /api/ready instead of /api/health")
	url := fs.String("url", "", "base URL (default http://127.0.0.1:$ICEY_PORT)")
	timeout := fs.Duration("timeout", 3*time.Second, "request timeout")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	base := *url
	if base == "" {
		port := config.DefaultPort
		if v, ok := getenv("ICEY_PORT"); ok && v != "" {
			if n, err := strconv.Atoi(v); err == nil {
				port = n
			}
		}
		scheme := "http"
		if v, ok := getenv("ICEY_TLS_CERT"); ok && v != "" {
			scheme = "https"
		}
		base = scheme + "://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	path := "/api/health"
	if *ready {
		path = "/api/ready"
	}
	client := &http.Client{Timeout: *timeout, Transport: &http.Transport{
		// The probe talks to its own container; the certificate names a public host.
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		Proxy:           nil,
	}}
	resp, err := client.Get(base + path)
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
