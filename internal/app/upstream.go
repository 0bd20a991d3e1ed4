package app

import (
	"context"
	"net"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/icey/icey-server/config"
)

// upstreams watches whether the servers behind required on-demand network
// sources answer (an edge's origin): an idle on-demand path has no
// connection to tell, so its host is dialled (TCP connect, nothing sent)
// every interval; while it does not answer, readiness fails: an edge whose
// origin is gone should not get new viewers.
type upstreams struct {
	mu    sync.Mutex
	state map[string]upstream // by host:port
}

type upstream struct {
	ok      bool
	err     string
	checked bool
	paths   []string // the paths pulling from it
	needed  bool     // a required path pulls from it
}

// upstreamHost is the host:port of a network source ("" for others).
func upstreamHost(src string) string {
	u, err := url.Parse(src)
	if err != nil || u.Host == "" {
		return ""
	}
	port := u.Port()
	if port == "" {
		switch strings.ToLower(u.Scheme) {
		case "rtsp":
			port = "554"
		case "rtsps":
			port = "322"
		case "rtmp":
			port = "1935"
		case "http":
			port = "80"
		case "https":
			port = "443"
		default:
			return ""
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// newUpstreams lists the upstreams of the on-demand paths and templates.
func newUpstreams(specs []config.PathSpec) *upstreams {
	u := &upstreams{state: map[string]upstream{}}
	for _, sp := range specs {
		// Only required paths: a probe is a TCP connection the upstream
		// sees, and an optional on-demand path must open none before its
		// first viewer.
		if !sp.OnDemand || !sp.Required {
			continue
		}
		h := upstreamHost(strings.ReplaceAll(sp.Source, "$", "x"))
		if h == "" {
			continue
		}
		st := u.state[h]
		st.paths = append(st.paths, sp.Name)
		st.needed = st.needed || sp.Required
		u.state[h] = st
	}
	return u
}

// run dials every upstream each interval until ctx ends.
func (u *upstreams) run(ctx context.Context, every time.Duration) {
	u.mu.Lock()
	hosts := make([]string, 0, len(u.state))
	for h := range u.state {
		hosts = append(hosts, h)
	}
	u.mu.Unlock()
	if len(hosts) == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, h := range hosts {
			d := net.Dialer{Timeout: 2 * time.Second}
			c, err := d.DialContext(ctx, "tcp", h)
			if ctx.Err() != nil {
				return
			}
			u.mu.Lock()
			st := u.state[h]
			st.checked, st.ok, st.err = true, err == nil, ""
			if err != nil {
				st.err = err.Error()
			} else {
				_ = c.Close()
			}
			u.state[h] = st
			u.mu.Unlock()
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

// down lists the unreachable upstreams ("host (paths): error"); all of
// them serve required paths.
func (u *upstreams) down() (required, other []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for h, st := range u.state {
		if !st.checked || st.ok {
			continue
		}
		msg := h + " (" + strings.Join(st.paths, ", ") + ") unreachable: " + config.RedactURL(st.err)
		if st.needed {
			required = append(required, msg)
		} else {
			other = append(other, msg)
		}
	}
	sort.Strings(required)
	sort.Strings(other)
	return required, other
}
