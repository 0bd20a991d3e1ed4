// Package metrics exposes Prometheus metrics from an injected registry (no
// globals). Most values are read from the components at scrape time
// through small functions, so the media hot path pays nothing for them;
// only events (session ends, first keyframes, HTTP requests) are observed
// as they happen.
package metrics

import (
	"bufio"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric.
const Namespace = "icey"

// PathSnapshot is one configured path read at scrape time. Paths come
// from the configuration, so the path label they give every per-path
// series is bounded by config, never by viewers or publishers.
type PathSnapshot struct {
	Path       string // path name; the series' path label
	State      string // one of PathStates
	Reconnects uint64
	FPS        float64
	Packets    uint64
	Bytes      uint64
	// InvalidVideo counts video access units dropped as not decodable.
	InvalidVideo uint64
	Viewers      int
	Publisher    bool // a publisher is live on the path
	OnDemand     bool // carried for callers; not exported as a series
	// Recording is true while the path writes a recording; RecordedBytes
	// and RecordingFailures count its recordings since start.
	Recording         bool
	RecordedBytes     uint64
	RecordingFailures uint64
	// Renditions are the path's running transcodes.
	Renditions []RenditionSnapshot
	// Intel is the path's analysis (nil when off).
	Intel *IntelSnapshot
}

// IntelSnapshot is a path's analysis counters.
type IntelSnapshot struct {
	VisionEvents, SpeechEvents         uint64
	FramesDropped, AudioDropped        uint64
	DecoderRestarts                    uint64
	DecoderCPUSeconds, LastLatencySecs float64
}

// RenditionSnapshot is one running rendition of a path (one per codec).
type RenditionSnapshot struct {
	Codec      string
	Viewers    int
	Restarts   uint64
	CPUSeconds float64
}

// RTSPSnapshot is the RTSP re-serve read at scrape time. ReadersByPath has
// configured (or template-created, bounded) path names only.
type RTSPSnapshot struct {
	ReadersByPath map[string]int
	SessionsTotal uint64
	AuthFailures  uint64
}

// PathStates are the values of the state label of icey_source_state (the
// path states of /api/status). A state outside this set sets none of them.
var PathStates = []string{"idle", "starting", "up", "reconnecting", "down", "waiting-publisher", "publishing"}

// ViewerSnapshot is one live viewer's counters.
type ViewerSnapshot struct {
	ID      string
	Dropped uint64
}

// TURNSnapshot are the TURN counters.
type TURNSnapshot struct {
	Allocations      int
	AllocationsTotal uint64
	Refusals         map[string]uint64
}

// SessionTotals are cumulative per-role counters of the session layer.
type SessionTotals struct {
	ActiveByRole map[string]int64
	// ActiveByPath is the number of connected sessions by path, then by
	// role. It is exported only for the paths Sources.Paths reports (and
	// not at all without Sources.Paths), so its cardinality stays bounded
	// by config; entries for other paths are ignored (those sessions still
	// count in ActiveByRole).
	ActiveByPath map[string]map[string]int64
	Total        int64
	PacketsSent  uint64
	BytesSent    uint64
	Dropped      uint64
	// Pending is the number of sessions created but not connected yet;
	// Refusals counts sessions refused by admission, by reason. Both are
	// exported only when Refusals is non-nil (the source reports them).
	Pending  int64
	Refusals map[string]uint64
	// Max is the session bound (webrtc.maxSessions; 0: not reported).
	Max int64
	// Send is how the media socket sends, with its counters (nil: not
	// reported).
	Send *SendSnapshot
}

// SendSnapshot describes the media socket's sends (internal/udpgso).
type SendSnapshot struct {
	Mode                                   string // gso | sendmmsg | sendto
	Datagrams, Syscalls, Segmented, Errors uint64
}

// Sources are read at scrape time; nil members are skipped.
type Sources struct {
	Version  string
	Ready    func() bool
	Sessions func() SessionTotals
	Paths    func() []PathSnapshot
	Viewers  func() []ViewerSnapshot
	TURN     func() (TURNSnapshot, bool) // false when TURN is disabled
	// RTSP reads the RTSP re-serve; false when it is disabled.
	RTSP func() (RTSPSnapshot, bool)
}

// Metrics holds the event-driven metrics and the registry.
type Metrics struct {
	reg           *prometheus.Registry
	firstKeyframe prometheus.Histogram
	sessionDrops  prometheus.Histogram
	sessionsEnded *prometheus.CounterVec
	httpDur       *prometheus.HistogramVec
}

// TopViewers bounds the per-viewer drop gauge's cardinality.
const TopViewers = 10

// New registers everything on reg (use prometheus.NewRegistry()).
func New(reg *prometheus.Registry, src Sources) *Metrics {
	m := &Metrics{
		reg: reg,
		firstKeyframe: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "first_keyframe_seconds",
			Help:    "Time from a viewer's session start to its first video keyframe being sent.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2, 4, 8},
		}),
		sessionDrops: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "session_dropped_packets",
			Help:    "Packets dropped for a viewer over its whole session (slow consumer), observed at session end.",
			Buckets: []float64{0, 1, 10, 100, 1000, 10000},
		}),
		sessionsEnded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "sessions_ended_total",
			Help: "WebRTC sessions ended, by role and reason.",
		}, []string{"role", "reason"}),
		httpDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "http_request_duration_seconds",
			Help:    "HTTP request durations by route, method and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5},
		}, []string{"route", "method", "code"}),
	}
	reg.MustRegister(m.firstKeyframe, m.sessionDrops, m.sessionsEnded, m.httpDur,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&scrape{src: src})
	return m
}

// ObserveFirstKeyframe records a viewer's join->first keyframe latency.
func (m *Metrics) ObserveFirstKeyframe(d time.Duration) { m.firstKeyframe.Observe(d.Seconds()) }

// ObserveSessionEnd records a finished session.
func (m *Metrics) ObserveSessionEnd(role, reason string, dropped uint64) {
	m.sessionsEnded.WithLabelValues(role, reasonLabel(reason)).Inc()
	m.sessionDrops.Observe(float64(dropped))
}

// EndReasons are the session end reasons exported as labels (the typed
// set of signaling.EndReason); anything else is "other".
var EndReasons = []string{"hangup", "shutdown", "handshake_timeout", "connection_failed", "peer_closed", "source_closed", "other"}

// reasonLabel keeps the label set bounded.
func reasonLabel(r string) string {
	if slices.Contains(EndReasons, r) {
		return r
	}
	if r == "" {
		return "unknown"
	}
	return "other"
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Instrument wraps an HTTP handler to observe request durations; route maps
// a request to a bounded label.
func (m *Metrics) Instrument(route func(*http.Request) string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &statusWriter{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rw, r)
		m.httpDur.WithLabelValues(route(r), r.Method, strconv.Itoa(rw.code)).Observe(time.Since(start).Seconds())
	})
}

type statusWriter struct {
	http.ResponseWriter
	code  int
	wrote bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.code, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// Flush keeps Server-Sent Events streaming through the wrapper.
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack passes WebSocket upgrades through (gorilla/websocket asserts
// http.Hijacker on the writer it is given). A hijacked request is recorded
// as 101.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && !w.wrote {
		w.code, w.wrote = http.StatusSwitchingProtocols, true
	}
	return conn, rw, err
}

// scrape is a collector that reads the components at scrape time.
type scrape struct{ src Sources }

var (
	dUp           = desc("up", "1 while the server runs.", nil)
	dBuild        = desc("build_info", "Build information.", []string{"version"})
	dReady        = desc("ready", "1 when /api/ready answers 200.", nil)
	dActive       = desc("sessions_active", "WebRTC sessions connected now, by role.", []string{"role"})
	dTotal        = desc("sessions_total", "WebRTC sessions created since start.", nil)
	dPending      = desc("sessions_pending", "WebRTC sessions created but not connected (ICE+DTLS) yet.", nil)
	dMax          = desc("sessions_max", "The bound on concurrent WebRTC sessions, connected plus pending (webrtc.maxSessions): at it new viewers get 503.", nil)
	dSendMode     = desc("media_send_mode", "1 for how the media socket sends: gso (a viewer's packets of one frame in one system call, UDP GSO), sendmmsg, sendto.", []string{"mode"})
	dSendDgrams   = desc("media_send_datagrams_total", "Datagrams the kernel accepted from the media socket.", nil)
	dSendCalls    = desc("media_send_syscalls_total", "System calls that sent them (datagrams per call is the coalescing achieved).", nil)
	dSendSeg      = desc("media_send_segmented_total", "Datagrams sent as UDP GSO segments.", nil)
	dSendErrs     = desc("media_send_errors_total", "Datagrams the kernel refused (lost).", nil)
	dRefusals     = desc("session_refusals_total", "WebRTC sessions refused by admission control, by reason (capacity, pending, client_pending).", []string{"reason"})
	dPktSent      = desc("packets_sent_total", "RTP packets handed to viewers.", nil)
	dBytesSent    = desc("bytes_sent_total", "RTP bytes handed to viewers.", nil)
	dDropped      = desc("packets_dropped_total", "Packets dropped for slow viewers.", nil)
	dViewerDrops  = desc("viewer_dropped_packets", "Dropped packets of the live viewers with the most drops (top 10).", []string{"viewer"})
	dActivePath   = desc("sessions_active_by_path", "WebRTC sessions connected now, by configured path and role.", []string{"path", "role"})
	dSrcState     = desc("source_state", "1 for the path's current state, by path; states are the path states (idle, starting, up, reconnecting, down, waiting-publisher, publishing), which replace the former source states (ended, stopped are gone).", []string{"path", "state"})
	dSrcUp        = desc("source_up", "1 while the path's source or publisher delivers media (state up or publishing), by path.", []string{"path"})
	dSrcReconn    = desc("source_reconnects_total", "Source reconnect attempts, by path.", []string{"path"})
	dSrcFPS       = desc("source_fps", "Measured video frames per second of the path's media, by path.", []string{"path"})
	dSrcPackets   = desc("source_packets_total", "Normalized RTP packets published into the path, by path.", []string{"path"})
	dSrcBytes     = desc("source_bytes_total", "Bytes published into the path, by path.", []string{"path"})
	dSrcInvalid   = desc("source_invalid_video_total", "Video access units from the path's source that no decoder could decode (garbage, broken H.264, a lost reference picture), dropped, by path.", []string{"path"})
	dPathViewers  = desc("path_viewers", "Viewers reading the path now, by path.", []string{"path"})
	dPathPub      = desc("path_publisher", "1 while a publisher is live on the path, by path.", []string{"path"})
	dPathRec      = desc("path_recording", "1 while the path writes a recording, by path.", []string{"path"})
	dRendViewers  = desc("rendition_viewers", "Viewers of each running rendition (a transcode for viewers that cannot play the path's video), by path and target codec.", []string{"path", "codec"})
	dRendRestarts = desc("rendition_restarts_total", "Restarts of the rendition's ffmpeg since the rendition started, by path and target codec.", []string{"path", "codec"})
	dRendCPU      = desc("rendition_cpu_seconds_total", "CPU time of the rendition's ffmpeg since the rendition started, by path and target codec.", []string{"path", "codec"})
	dIntelEvents  = desc("intel_events_total", "Analysis events emitted since start, by path and detector (motion, energy_vad).", []string{"path", "detector"})
	dIntelDropped = desc("intel_dropped_total", "Decoded frames or audio blocks the analysis dropped (it was behind), by path and kind.", []string{"path", "kind"})
	dIntelRestart = desc("intel_decoder_restarts_total", "Restarts of the path's analysis decoder since start, by path.", []string{"path"})
	dIntelCPU     = desc("intel_decoder_cpu_seconds_total", "CPU time of the path's analysis decoder since start, by path.", []string{"path"})
	dIntelLatency = desc("intel_motion_latency_seconds", "Time from a frame given to the decoder to its motion event, for the latest event, by path.", []string{"path"})
	dRecBytes     = desc("recorded_bytes_total", "Bytes written to recordings since start, by path.", []string{"path"})
	dRecFailures  = desc("recording_failures_total", "Recordings cut short by a write error (e.g. a full disk) since start, by path.", []string{"path"})
	dTURNAllocs   = desc("turn_allocations", "Live TURN allocations.", nil)
	dRTSPReaders  = desc("rtsp_readers", "RTSP re-serve readers (sessions set up) now, by path.", []string{"path"})
	dRTSPSessions = desc("rtsp_sessions_total", "RTSP re-serve sessions since start.", nil)
	dRTSPAuthFail = desc("rtsp_auth_failures_total", "RTSP requests refused for wrong credentials since start.", nil)
	dTURNTotal    = desc("turn_allocations_total", "TURN allocations created since start.", nil)
	dTURNRefusals = desc("turn_refusals_total", "TURN requests refused, by reason.", []string{"reason"})
)

func desc(name, help string, labels []string) *prometheus.Desc {
	return prometheus.NewDesc(Namespace+"_"+name, help, labels, nil)
}

func (s *scrape) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dUp, dBuild, dReady, dActive, dTotal, dPending, dMax, dSendMode, dSendDgrams, dSendCalls, dSendSeg, dSendErrs, dRefusals, dPktSent, dBytesSent, dDropped,
		dViewerDrops, dActivePath, dPathViewers, dPathPub, dPathRec, dRendViewers, dRendRestarts, dRendCPU, dIntelEvents, dIntelDropped, dIntelRestart, dIntelCPU, dIntelLatency, dRecBytes, dRecFailures, dSrcState, dSrcUp, dSrcReconn, dSrcFPS, dSrcPackets, dSrcBytes, dSrcInvalid, dTURNAllocs, dTURNTotal, dTURNRefusals, dRTSPReaders, dRTSPSessions, dRTSPAuthFail} {
		ch <- d
	}
}

func (s *scrape) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, l...)
	}
	gauge(dUp, 1)
	gauge(dBuild, 1, s.src.Version)
	if s.src.Ready != nil {
		gauge(dReady, b2f(s.src.Ready()))
	}
	var paths []PathSnapshot
	if s.src.Paths != nil {
		paths = uniquePaths(s.src.Paths())
	}
	if s.src.Sessions != nil {
		t := s.src.Sessions()
		roles := map[string]int64{"viewer": 0}
		for r, n := range t.ActiveByRole {
			roles[r] = n
		}
		for r, n := range roles {
			gauge(dActive, float64(n), r)
		}
		counter(dTotal, float64(t.Total))
		if t.Max > 0 {
			gauge(dMax, float64(t.Max))
		}
		if sd := t.Send; sd != nil {
			for _, m := range []string{"gso", "sendmmsg", "sendto"} {
				gauge(dSendMode, b2f(sd.Mode == m), m)
			}
			counter(dSendDgrams, float64(sd.Datagrams))
			counter(dSendCalls, float64(sd.Syscalls))
			counter(dSendSeg, float64(sd.Segmented))
			counter(dSendErrs, float64(sd.Errors))
		}
		if t.Refusals != nil {
			gauge(dPending, float64(t.Pending))
			for reason, n := range t.Refusals {
				counter(dRefusals, float64(n), reason)
			}
		}
		if t.ActiveByPath != nil && s.src.Paths != nil {
			for _, p := range paths {
				roles := map[string]int64{"viewer": 0}
				for r, n := range t.ActiveByPath[p.Path] {
					roles[r] = n
				}
				for r, n := range roles {
					gauge(dActivePath, float64(n), p.Path, r)
				}
			}
		}
		counter(dPktSent, float64(t.PacketsSent))
		counter(dBytesSent, float64(t.BytesSent))
		counter(dDropped, float64(t.Dropped))
	}
	if s.src.Viewers != nil {
		vs := s.src.Viewers()
		sort.Slice(vs, func(i, j int) bool { return vs[i].Dropped > vs[j].Dropped })
		for i, v := range vs {
			if i == TopViewers || v.Dropped == 0 {
				break
			}
			gauge(dViewerDrops, float64(v.Dropped), v.ID)
		}
	}
	for _, p := range paths {
		for _, name := range PathStates {
			gauge(dSrcState, b2f(p.State == name), p.Path, name)
		}
		gauge(dSrcUp, b2f(p.State == "up" || p.State == "publishing"), p.Path)
		counter(dSrcReconn, float64(p.Reconnects), p.Path)
		gauge(dSrcFPS, p.FPS, p.Path)
		counter(dSrcPackets, float64(p.Packets), p.Path)
		counter(dSrcBytes, float64(p.Bytes), p.Path)
		counter(dSrcInvalid, float64(p.InvalidVideo), p.Path)
		gauge(dPathViewers, float64(p.Viewers), p.Path)
		gauge(dPathPub, b2f(p.Publisher), p.Path)
		gauge(dPathRec, b2f(p.Recording), p.Path)
		counter(dRecBytes, float64(p.RecordedBytes), p.Path)
		counter(dRecFailures, float64(p.RecordingFailures), p.Path)
		if in := p.Intel; in != nil {
			counter(dIntelEvents, float64(in.VisionEvents), p.Path, "motion")
			counter(dIntelEvents, float64(in.SpeechEvents), p.Path, "energy_vad")
			counter(dIntelDropped, float64(in.FramesDropped), p.Path, "frames")
			counter(dIntelDropped, float64(in.AudioDropped), p.Path, "audio")
			counter(dIntelRestart, float64(in.DecoderRestarts), p.Path)
			counter(dIntelCPU, in.DecoderCPUSeconds, p.Path)
			gauge(dIntelLatency, in.LastLatencySecs, p.Path)
		}
		for _, r := range p.Renditions {
			gauge(dRendViewers, float64(r.Viewers), p.Path, r.Codec)
			counter(dRendRestarts, float64(r.Restarts), p.Path, r.Codec)
			counter(dRendCPU, r.CPUSeconds, p.Path, r.Codec)
		}
	}
	if s.src.RTSP != nil {
		if r, ok := s.src.RTSP(); ok {
			for path, n := range r.ReadersByPath {
				gauge(dRTSPReaders, float64(n), path)
			}
			counter(dRTSPSessions, float64(r.SessionsTotal))
			counter(dRTSPAuthFail, float64(r.AuthFailures))
		}
	}
	if s.src.TURN != nil {
		if t, ok := s.src.TURN(); ok {
			gauge(dTURNAllocs, float64(t.Allocations))
			counter(dTURNTotal, float64(t.AllocationsTotal))
			for reason, n := range t.Refusals {
				counter(dTURNRefusals, float64(n), reason)
			}
		}
	}
}

// uniquePaths drops unnamed paths and repeated names (first wins): a
// repeated label set would fail the whole scrape.
func uniquePaths(ps []PathSnapshot) []PathSnapshot {
	seen := make(map[string]bool, len(ps))
	out := make([]PathSnapshot, 0, len(ps))
	for _, p := range ps {
		if p.Path == "" || seen[p.Path] {
			continue
		}
		seen[p.Path] = true
		out = append(out, p)
	}
	return out
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
