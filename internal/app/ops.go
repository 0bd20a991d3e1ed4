package app

import (
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/icey/icey-server/api"
	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/metrics"
	"github.com/icey/icey-server/preflight"
	"github.com/icey/icey-server/signaling"
)

// observer turns session lifecycles into events and metrics.
type observer struct{ a *app }

var _ signaling.Observer = observer{}

func (o observer) SessionStarted(info signaling.SessionInfo) {
	o.a.bus.Publish(events.SessionStarted, map[string]any{"id": info.ID, "role": info.Role, "path": info.Path})
}

func (o observer) FirstKeyframe(id string, d time.Duration) {
	if o.a.metrics != nil {
		o.a.metrics.ObserveFirstKeyframe(d)
	}
}

func (o observer) SessionEnded(info signaling.SessionInfo, reason string) {
	o.a.bus.Publish(events.SessionEnded, map[string]any{"id": info.ID, "role": info.Role, "path": info.Path,
		"reason": reason, "endReason": string(info.EndReason), "sent": info.Sent, "dropped": info.Drops})
	if o.a.metrics != nil {
		o.a.metrics.ObserveSessionEnd(info.Role, string(info.EndReason), info.Drops)
	}
}

// sourceEvent maps supervisor states to events.
func (a *app) sourceEvent(s media.SourceState, err error) {
	data := map[string]any{"state": string(s), "source": a.src.String(), "kind": a.src.Kind()}
	if err != nil {
		data["error"] = config.RedactURL(err.Error())
	}
	switch s {
	case media.SourceUp:
		a.bus.Publish(events.SourceUp, data)
	case media.SourceReconnecting:
		a.bus.Publish(events.SourceReconnect, data)
	case media.SourceEnded:
		a.bus.Publish(events.SourceEnded, data)
	case media.SourceStopped:
		a.bus.Publish(events.SourceDown, data)
	}
}

// readinessEvent publishes readiness edges; a source failing past its grace
// period is reported as source.down too.
func (a *app) readinessEvent(r preflight.Report) {
	if prev := a.lastReady.Swap(int32(b2i(r.Ready))); prev == int32(b2i(r.Ready)) {
		return // status moved (e.g. ok -> degraded) but readiness did not
	}
	a.bus.Publish(events.ReadinessChanged, map[string]any{"ready": r.Ready, "status": r.Status, "failing": r.Failing()})
	for _, c := range r.Checks {
		if c.Name == preflight.CheckSource && c.Result == preflight.Fail && a.sup != nil &&
			a.sup.Status().State == media.SourceReconnecting {
			a.bus.Publish(events.SourceDown, map[string]any{"source": a.src.String(), "kind": a.src.Kind(), "detail": c.Detail})
		}
	}
}

// turnRefusalEvents publishes refusals seen since the last call, aggregated
// per reason (a flood of refusals must not become a flood of events).
func (a *app) turnRefusalEvents(last map[string]uint64) {
	if a.turn == nil {
		return
	}
	for reason, n := range a.turn.Stats().Refusals {
		if d := n - last[reason]; d > 0 {
			a.bus.Publish(events.TURNRefused, map[string]any{"reason": reason, "count": d})
		}
		last[reason] = n
	}
}

// snapshot is the first event of /api/events.
func (a *app) snapshot() any {
	rep := a.pf.Report()
	active, total := a.sig.Counts()
	snap := map[string]any{
		"ready": rep.Ready, "status": rep.Status, "failing": rep.Failing(), "mode": a.cfg.Media.Mode,
		"runtime": a.state.Load().(string), "sessions": map[string]int64{"active": active, "total": total},
		"version": Version,
	}
	if a.sup != nil {
		st := a.sup.Status()
		snap["source"] = map[string]any{"state": string(st.State), "kind": a.src.Kind(), "source": a.src.String()}
	}
	// Per-session detail (client addresses) only when a token protects the
	// stream; without one, anyone who reaches the port reads it.
	if a.cfg.Auth.Token != "" {
		snap["sessionList"] = a.sig.Sessions()
	}
	return snap
}

// components is the detailed health view.
func (a *app) components() []api.Component {
	out := []api.Component{{Name: "http", Status: api.Healthy, Detail: "serving on " + hostPort(a.cfg.HTTP.Host, a.cfg.HTTP.Port)}}
	if a.sig != nil && a.state.Load() != "draining" {
		active, _ := a.sig.Counts()
		out = append(out, api.Component{Name: "webrtc", Status: api.Healthy,
			Detail: "media on " + hostPort(a.cfg.HTTP.Host, a.cfg.WebRTC.Port) + "/udp; " + itoa(active) + " active session(s)"})
	} else {
		out = append(out, api.Component{Name: "webrtc", Status: api.Unhealthy, Detail: "not accepting sessions"})
	}
	switch {
	case !a.cfg.TURN.Enabled:
		out = append(out, api.Component{Name: "turn", Status: api.Disabled, Detail: "TURN disabled"})
	case a.turn != nil:
		st := a.turn.Stats()
		out = append(out, api.Component{Name: "turn", Status: api.Healthy,
			Detail: itoa(int64(st.Allocations)) + " allocation(s) on " + hostPort(a.cfg.HTTP.Host, a.cfg.TURN.Port)})
	default:
		out = append(out, api.Component{Name: "turn", Status: api.Unhealthy, Detail: "TURN not running"})
	}
	src, _ := a.sourceCheck()
	switch {
	case a.cfg.Media.Mode != "stream":
		out = append(out, api.Component{Name: "source", Status: api.Disabled, Detail: src.Detail})
	case a.sup != nil && a.sup.Status().State == media.SourceUp:
		out = append(out, api.Component{Name: "source", Status: api.Healthy, Detail: src.Detail})
	default:
		out = append(out, api.Component{Name: "source", Status: api.Unhealthy, Detail: src.Detail})
	}
	rec, recDetail := recordingsCheck(a.cfg)
	switch {
	case a.paths == nil || len(a.recordedPaths()) == 0:
		out = append(out, api.Component{Name: "recordings", Status: api.Disabled, Detail: recDetail})
	case rec == preflight.Fail || rec == preflight.Warn && strings.Contains(recDetail, "not writable"):
		out = append(out, api.Component{Name: "recordings", Status: api.Unhealthy, Detail: recDetail})
	default:
		out = append(out, api.Component{Name: "recordings", Status: api.Healthy, Detail: recDetail})
	}
	out = append(out, a.signalingComponent())
	return out
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// signalingComponent: WHEP (and the WebSocket server) accept sessions
// until the drain starts.
func (a *app) signalingComponent() api.Component {
	if a.state.Load() == "draining" {
		return api.Component{Name: "signaling", Status: api.Unhealthy, Detail: "draining: not accepting new sessions"}
	}
	d := "WHEP on /whep"
	if sym := a.symple.Load(); sym != nil {
		d += "; Symple WebSocket on /ws with " + itoa(int64(sym.Peers())) + " peer(s)"
	}
	return api.Component{Name: "signaling", Status: api.Healthy, Detail: d}
}

// metricsSources reads the components at scrape time.
func (a *app) metricsSources() metrics.Sources {
	return metrics.Sources{
		Version: Version,
		Ready:   func() bool { return a.pf.Report().Ready },
		Sessions: func() metrics.SessionTotals {
			t := a.sig.Totals()
			_, total := a.sig.Counts()
			out := metrics.SessionTotals{ActiveByRole: t.ActiveByRole, Total: total,
				PacketsSent: t.PacketsSent, BytesSent: t.BytesSent, Dropped: t.Dropped,
				Pending: t.Pending, Refusals: t.Refusals, ActiveByPath: t.ActiveByPath}
			out.Max, _ = a.sig.Capacity()
			if st, ok := a.sig.SendStats(); ok {
				out.Send = &metrics.SendSnapshot{Mode: st.Mode, Datagrams: st.Datagrams, Syscalls: st.Syscalls,
					Segmented: st.Segmented, Errors: st.Errors}
			}
			return out
		},
		Paths: func() []metrics.PathSnapshot {
			var out []metrics.PathSnapshot
			for _, p := range a.paths.List() {
				ps := p.Status()
				snap := metrics.PathSnapshot{Path: ps.Name, State: string(ps.State), FPS: ps.FPS,
					Bytes: ps.BytesIn, Viewers: ps.Viewers, Publisher: ps.Publisher, OnDemand: ps.OnDemand}
				snap.Packets = p.Stream().Stats().PacketsIn
				snap.InvalidVideo = ps.InvalidVideo
				if an := a.intel[ps.Name]; an != nil {
					vs, ss := an.Stats()
					snap.Intel = &metrics.IntelSnapshot{VisionEvents: vs.DetectorEmitted, SpeechEvents: ss.Emitted,
						FramesDropped: vs.QueueDropped, AudioDropped: ss.QueueDropped, DecoderRestarts: vs.DecoderRestarts,
						DecoderCPUSeconds: vs.DecoderCPU, LastLatencySecs: float64(vs.LastLatencyUsec) / 1e6}
				}
				for _, r := range ps.Renditions {
					snap.Renditions = append(snap.Renditions, metrics.RenditionSnapshot{Codec: r.Codec,
						Viewers: r.Viewers, Restarts: r.Restarts, CPUSeconds: r.CPUSeconds})
				}
				if sv := p.Supervisor(); sv != nil {
					snap.Reconnects = sv.Status().Reconnects
				}
				if r := a.recs.Load(); r != nil && r.byPath[ps.Name] != nil {
					rs := r.byPath[ps.Name].Stats()
					snap.Recording, snap.RecordedBytes, snap.RecordingFailures = rs.Recording, uint64(rs.Bytes), uint64(rs.Failures)
				}
				out = append(out, snap)
			}
			return out
		},
		Viewers: func() []metrics.ViewerSnapshot {
			st := a.stream.Stats()
			out := make([]metrics.ViewerSnapshot, 0, len(st.Viewers))
			for _, v := range st.Viewers {
				out = append(out, metrics.ViewerSnapshot{ID: v.ID, Dropped: v.Dropped})
			}
			return out
		},
		RTSP: func() (metrics.RTSPSnapshot, bool) {
			if a.rtsp == nil {
				return metrics.RTSPSnapshot{}, false
			}
			st := a.rtsp.Stats()
			return metrics.RTSPSnapshot{ReadersByPath: st.ReadersByPath, SessionsTotal: st.SessionsTotal, AuthFailures: st.AuthFailures}, true
		},
		TURN: func() (metrics.TURNSnapshot, bool) {
			if a.turn == nil {
				return metrics.TURNSnapshot{}, false
			}
			s := a.turn.Stats()
			return metrics.TURNSnapshot{Allocations: s.Allocations, AllocationsTotal: s.AllocationsTotal, Refusals: s.Refusals}, true
		},
	}
}

// routeLabel maps a request to a bounded label for HTTP metrics.
func routeLabel(r *http.Request) string {
	p := r.URL.Path
	switch {
	case strings.HasPrefix(p, "/api/health/"):
		return "/api/health/:component"
	case p == "/api/health", p == "/api/ready", p == "/api/status", p == "/api/config", p == "/api/started", p == "/api/events", p == "/metrics":
		return p
	case strings.HasPrefix(p, "/api/"):
		return "/api/other"
	case strings.HasPrefix(p, "/whep"):
		return "/whep"
	case strings.HasPrefix(p, "/whip"):
		return "/whip"
	case p == "/ws" || isUpgrade(r):
		return "/ws"
	default:
		return "/ui"
	}
}

func isUpgrade(r *http.Request) bool {
	return strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// metricsAuth guards /metrics: a client on this machine (loopback) may
// always scrape; from elsewhere a bearer token is required, and without one
// configured /metrics stays closed to other hosts. The token is parsed like
// every other token (case-insensitive scheme).
func metricsAuth(token string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token == "" && loopbackClient(r) {
			next.ServeHTTP(w, r)
			return
		}
		if token == "" {
			http.Error(w, "/metrics answers other hosts only with a bearer token: set metrics.bearerToken (ICEY_METRICS_TOKEN) and send Authorization: Bearer <token>", http.StatusForbidden)
			return
		}
		if !api.TokenOK(token, api.RequestToken(r)) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="metrics"`)
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// loopbackClient reports whether the request came from this machine.
func loopbackClient(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
