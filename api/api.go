// Package api is the operations HTTP surface: /api/health, /api/ready,
// /api/status and /api/config (contract: README.md "Operations API" and
// docs/operations.md). It reads other components
// through the small interfaces declared here and never blocks on I/O.
package api

import (
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"

	"github.com/icey/icey-server/intel"
	"github.com/icey/icey-server/internal/auth"
	"github.com/icey/icey-server/internal/udpgso"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/preflight"
	"github.com/icey/icey-server/renditions"
)

// Product identity fields present in every body.
const (
	Product = "icey"
	Service = "icey-server"
)

// ReportSource yields the live preflight report.
type ReportSource interface{ Report() preflight.Report }

// SessionCounter counts WebRTC sessions: active = connected now, total =
// created since start.
type SessionCounter interface{ Counts() (active, total int64) }

// SessionCapacity is optionally implemented by a SessionCounter: the
// session bound (webrtc.maxSessions) and the sessions still connecting,
// which count against it.
type SessionCapacity interface{ Capacity() (max, pending int64) }

// MediaSender is optionally implemented by a SessionCounter: how the media
// socket sends (UDP GSO or one sendto per datagram) and its counters.
type MediaSender interface {
	SendStats() (udpgso.Stats, bool)
}

// StreamInfo yields the live additive fields of the status "stream" section.
type StreamInfo interface{ StreamDetails() StreamDetails }

// TURNInfo mints browser credentials and reports allocation counters.
type TURNInfo interface {
	Credentials() (username, credential string)
	TURNStats() TURNStats
}

// StreamDetails are the live, additive fields of the status stream section.
type StreamDetails struct {
	State      string     `json:"state,omitempty"` // starting|up|reconnecting|ended|stopped
	StateSince *time.Time `json:"stateSince,omitempty"`
	LastError  string     `json:"lastError,omitempty"`
	Reconnects uint64     `json:"reconnects"`
	FPS        float64    `json:"fps"`
	Video      string     `json:"video,omitempty"` // codec
	Audio      string     `json:"audio,omitempty"`
	Viewers    int        `json:"viewers"`
	Packets    uint64     `json:"packets"`
	Bytes      uint64     `json:"bytes"`
	// InvalidVideo and LastInvalidVideo: as in PathStatus.
	InvalidVideo     uint64 `json:"invalidVideo"`
	LastInvalidVideo string `json:"lastInvalidVideo,omitempty"`
	// Drops is per viewer (opaque ids), shown only when a token protects
	// the API; DroppedTotal always.
	Drops        []ViewerDrops  `json:"drops,omitempty"`
	DroppedTotal uint64         `json:"droppedTotal"`
	Warnings     []string       `json:"warnings,omitempty"`
	Extra        map[string]any `json:"extra,omitempty"`
}

// ViewerDrops is one viewer's drop counter.
type ViewerDrops struct {
	ID      string `json:"id"`
	Sent    uint64 `json:"sent"`
	Dropped uint64 `json:"dropped"`
}

// TURNStats are TURN allocation counters for /api/status.
type TURNStats struct {
	Allocations      int               `json:"allocations"`
	AllocationsTotal uint64            `json:"allocationsTotal"`
	Refusals         map[string]uint64 `json:"refusals"`
}

// Config is what the handlers need; zero interface values mean "absent".
type Config struct {
	Version string
	Mode    string
	// Token protects /api/status and /api/config when non-empty.
	Token   string
	Started time.Time
	Now     func() time.Time // default time.Now

	Preflight ReportSource
	Sessions  SessionCounter
	Stream    StreamInfo
	TURN      TURNInfo
	// Paths lists every path for the status's paths array (nil: none).
	Paths func() []PathStatus
	// Recordings yields the record section's counters (nil: zeros).
	Recordings func() RecordStats
	// RuntimeState returns starting | running | draining.
	RuntimeState func() string
	// StartupDone reports whether startup completed (the startup probe); it
	// must never turn false again. Nil = always started.
	StartupDone func() bool
	// Components yields per-component health for detailed health.
	Components func() []Component
	// Events, when set, serves /api/events; Snapshot is its first event.
	Events   EventSource
	Snapshot func() any

	// Static facts for status and config.
	Source, SourceKind string // Source with credentials stripped
	// SourceRemote: the source is pulled over the network (not a local
	// file, device or the built-in stream).
	SourceRemote bool
	Loop         bool
	RecordDir    string
	// Intelligence reports the default path's analysis (nil: none).
	Intelligence func() Intelligence
	HTTPHost     string
	TLS          bool
	TURNEnabled  bool
	TURNHost     string
	TURNPort     int
	STUNURLs     []string
	HTTPPort     int
	// AllowedOrigins are the extra browser origins (auth.allowedOrigins)
	// allowed besides this server's own; see auth.AllowOrigin.
	AllowedOrigins []string
}

// Handler serves /api/*.
type Handler struct {
	c   Config
	mux *http.ServeMux
}

// New builds the /api/ handler.
func New(c Config) *Handler {
	if c.Now == nil {
		c.Now = time.Now
	}
	h := &Handler{c: c, mux: http.NewServeMux()}
	h.route("/api/health", false, func(w http.ResponseWriter, r *http.Request) {
		if v := r.URL.Query().Get("detailed"); v == "true" || v == "1" {
			h.healthDetailed(w, r)
			return
		}
		h.health(w, r)
	})
	h.route("/api/health/", false, h.component)
	h.route("/api/started", false, h.started)
	h.route("/api/ready", false, h.ready)
	h.route("/api/status", true, h.status)
	h.route("/api/config", true, h.config)
	if c.Events != nil {
		h.mux.Handle("/api/events", onlyGET(requireToken(c.Token, true, http.HandlerFunc(h.events))))
	}
	return h
}

func (h *Handler) route(path string, protected bool, f http.HandlerFunc) {
	var next http.Handler = f
	if protected {
		next = RequireToken(h.c.Token, next)
	}
	h.mux.Handle(path, onlyGET(next))
}

// ServeHTTP routes on the path only (the query string is ignored).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	// A page on another origin gets nothing from the ops API, token or not
	// (no CORS headers are ever sent either): browsers send Origin on every
	// cross-origin request and on WebSocket upgrades; probes and tools send
	// none.
	if !auth.AllowOrigin(r, h.c.AllowedOrigins) {
		WriteError(w, http.StatusForbidden, "origin_not_allowed")
		return
	}
	if _, pattern := h.mux.Handler(r); pattern == "" {
		WriteError(w, http.StatusNotFound, "not_found")
		return
	}
	h.mux.ServeHTTP(w, r)
}

func onlyGET(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RequireToken enforces the API token (constant-time) given as
// "Authorization: Bearer <t>" or "X-Icey-Token: <t>". An empty token leaves
// the handler open.
func RequireToken(token string, next http.Handler) http.Handler {
	return requireToken(token, false, next)
}

// requireToken also accepts ?token= on WebSocket upgrades when wsQuery is
// set: browsers cannot put headers on an upgrade.
func requireToken(token string, wsQuery bool, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := auth.RequestToken(r)
		if wsQuery && websocket.IsWebSocketUpgrade(r) {
			got = auth.QueryToken(r)
		}
		if !TokenOK(token, got) {
			WriteError(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// RequestToken and TokenOK are the one token parser (internal/auth), kept
// here for the callers of this package.
func RequestToken(r *http.Request) string { return auth.RequestToken(r) }

// TokenOK compares in constant time.
func TokenOK(want, got string) bool { return auth.TokenOK(want, got) }

// WriteJSON writes v with the API's headers.
func WriteJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError writes {"status":"error","error":code}.
func WriteError(w http.ResponseWriter, status int, code string) {
	WriteJSON(w, status, map[string]string{"status": "error", "error": code})
}

func requestHost(r *http.Request) string {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.Trim(host, "[]")
}

func hostForURL(h string) string {
	if strings.Contains(h, ":") {
		return "[" + h + "]"
	}
	return h
}

type healthBody struct {
	Status  string `json:"status"`
	Product string `json:"product"`
	Service string `json:"service"`
	Version string `json:"version"`
}

func (h *Handler) health(w http.ResponseWriter, r *http.Request) {
	WriteJSON(w, http.StatusOK, healthBody{"ok", Product, Service, h.c.Version})
}

func (h *Handler) report() preflight.Report {
	if h.c.Preflight == nil {
		return preflight.Report{Status: "ok", Ready: true, Product: Product, Service: Service,
			Mode: h.c.Mode, Checks: []preflight.Check{}, Warnings: []string{}}
	}
	return h.c.Preflight.Report()
}

func (h *Handler) ready(w http.ResponseWriter, r *http.Request) {
	rep := h.report()
	code := http.StatusOK
	if !rep.Ready {
		code = http.StatusServiceUnavailable
	}
	WriteJSON(w, code, rep)
}

// StatusBody is the /api/status document.
type StatusBody struct {
	Status       string            `json:"status"`
	Ready        bool              `json:"ready"`
	Product      string            `json:"product"`
	Service      string            `json:"service"`
	Mode         string            `json:"mode"`
	Version      string            `json:"version"`
	Peer         Peer              `json:"peer"`
	Runtime      Runtime           `json:"runtime"`
	UptimeSec    int64             `json:"uptimeSec"`
	Sessions     Sessions          `json:"sessions"`
	WebRTC       WebRTCSection     `json:"webrtc"`
	HTTP         HTTPInfo          `json:"http"`
	Host         string            `json:"host"`
	Port         int               `json:"port"`
	Stream       StreamSection     `json:"stream"`
	Record       Record            `json:"record"`
	Intelligence Intelligence      `json:"intelligence"`
	TURN         TURNSection       `json:"turn"`
	Checks       []preflight.Check `json:"checks"`
	Warnings     []string          `json:"warnings"`
	// Paths lists every named path; the stream section above describes the
	// default path, as the seed contract has it.
	Paths []PathStatus `json:"paths"`
}

// PathStatus is one path in /api/status (spec/paths.md, Operations).
type PathStatus struct {
	Name string `json:"name"`
	// Source with credentials removed; empty for a publish path.
	Source     string `json:"source"`
	SourceKind string `json:"sourceKind"`
	// State: idle | starting | up | reconnecting | down | waiting-publisher | publishing.
	State     string  `json:"state"`
	OnDemand  bool    `json:"onDemand"`
	FPS       float64 `json:"fps"`
	Viewers   int     `json:"viewers"`
	Publisher bool    `json:"publisher"`
	Recording bool    `json:"recording"`
	// Video is the path's video as its bitstream says (codec, profile,
	// size, bFrames); absent before the first picture. Audio is the audio
	// codec viewers get (AAC sources arrive transcoded to Opus).
	Video *media.VideoInfo `json:"video,omitempty"`
	Audio string           `json:"audio,omitempty"`
	// Renditions are the path's running transcodes for viewers that cannot
	// play its video as it is: codec, viewers, state, restarts, CPU.
	Renditions []renditions.Stats `json:"renditions"`
	BytesIn    uint64             `json:"bytesIn"`
	Required   bool               `json:"required"`
	// InvalidVideo counts the access units of the path's video that no
	// decoder could decode (garbage from the camera, broken H.264, a lost
	// reference picture): dropped, not forwarded; video resumes at the
	// next keyframe. LastInvalidVideo says why the latest one was.
	InvalidVideo     uint64 `json:"invalidVideo"`
	LastInvalidVideo string `json:"lastInvalidVideo,omitempty"`
	// Intelligence is the path's analysis, when enabled.
	Intelligence *Intelligence `json:"intelligence,omitempty"`
}

// Peer is the server's signalling identity.
type Peer struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Type string `json:"type"`
}

// ServerPeer is the server's virtual signalling peer.
var ServerPeer = Peer{ID: "server", Name: "Icey Server", Type: "server"}

// Runtime holds the lifecycle state.
type Runtime struct {
	State string `json:"state"`
}

// Sessions counts WebRTC sessions.
type Sessions struct {
	Active int64 `json:"active"`
	Total  int64 `json:"total"`
	// Max is the bound on concurrent sessions (webrtc.maxSessions), Pending
	// the sessions still connecting (they count against it), and Load
	// (active+pending)/max: at 1 new viewers are refused with 503.
	Max     int64   `json:"max,omitempty"`
	Pending int64   `json:"pending"`
	Load    float64 `json:"load"`
}

// WebRTCSection describes the media transport.
type WebRTCSection struct {
	// Send says how the media socket sends: "gso" (each viewer's packets
	// of one frame in one sendmsg with UDP_SEGMENT) or "sendto" (one
	// system call per packet, with the reason), with its counters.
	Send *udpgso.Stats `json:"send,omitempty"`
}

// StreamSection is the stream part of the status.
type StreamSection struct {
	Source     string `json:"source"`
	SourceKind string `json:"sourceKind"`
	Loop       bool   `json:"loop"`
	StreamDetails
}

// Record is the record part of the status.
type Record struct {
	Dir string `json:"dir"`
	RecordStats
}

// RecordStats are the live recording counters of the status.
type RecordStats struct {
	// Files and Bytes count the recordings on disk (finalized and being
	// written); Active counts recordings being written now.
	Files  int   `json:"files"`
	Bytes  int64 `json:"bytes"`
	Active int   `json:"active"`
}

// Intelligence reports the analysers' state: the seed's booleans (true
// while the analyser runs) and, beside them, their counters.
type Intelligence struct {
	Vision      bool               `json:"vision"`
	Speech      bool               `json:"speech"`
	VisionStats *intel.VisionStats `json:"visionStats,omitempty"`
	SpeechStats *intel.SpeechStats `json:"speechStats,omitempty"`
}

// TURNSection is the additive TURN part of the status.
type TURNSection struct {
	Enabled bool `json:"enabled"`
	Port    int  `json:"port"`
	TURNStats
}

// intelligence is the default path's analysis (zero without one).
func (h *Handler) intelligence() Intelligence {
	if h.c.Intelligence == nil {
		return Intelligence{}
	}
	return h.c.Intelligence()
}

func (h *Handler) status(w http.ResponseWriter, r *http.Request) {
	rep := h.report()
	b := StatusBody{
		Status: rep.Status, Ready: rep.Ready, Product: Product, Service: Service,
		Mode: h.c.Mode, Version: h.c.Version, Peer: ServerPeer,
		Runtime:      Runtime{State: "running"},
		UptimeSec:    int64(h.c.Now().Sub(h.c.Started) / time.Second),
		HTTP:         h.httpInfo(),
		Host:         h.c.HTTPHost,
		Port:         h.c.HTTPPort,
		Stream:       StreamSection{Source: h.c.Source, SourceKind: h.c.SourceKind, Loop: h.c.Loop},
		Record:       Record{Dir: h.c.RecordDir},
		Intelligence: h.intelligence(),
		Checks:       rep.Checks,
		Warnings:     rep.Warnings,
	}
	if h.c.RuntimeState != nil {
		b.Runtime.State = h.c.RuntimeState()
	}
	if h.c.Recordings != nil {
		b.Record.RecordStats = h.c.Recordings()
	}
	b.Paths = []PathStatus{}
	if h.c.Paths != nil {
		b.Paths = append(b.Paths, h.c.Paths()...)
	}
	if h.c.Sessions != nil {
		b.Sessions.Active, b.Sessions.Total = h.c.Sessions.Counts()
		if c, ok := h.c.Sessions.(SessionCapacity); ok {
			b.Sessions.Max, b.Sessions.Pending = c.Capacity()
			if b.Sessions.Max > 0 {
				b.Sessions.Load = float64(b.Sessions.Active+b.Sessions.Pending) / float64(b.Sessions.Max)
			}
		}
		if ms, ok := h.c.Sessions.(MediaSender); ok {
			if st, ok := ms.SendStats(); ok {
				b.WebRTC.Send = &st
			}
		}
	}
	if h.c.Stream != nil {
		b.Stream.StreamDetails = h.c.Stream.StreamDetails()
		// Per-viewer detail only for authorized callers: without a token
		// anyone who reaches the port reads this, so it gets aggregates.
		for _, d := range b.Stream.Drops {
			b.Stream.DroppedTotal += d.Dropped
		}
		if h.c.Token == "" {
			b.Stream.Drops = nil
		}
	}
	b.TURN = TURNSection{Enabled: h.c.TURNEnabled, Port: h.c.TURNPort, TURNStats: TURNStats{Refusals: map[string]uint64{}}}
	if h.c.TURNEnabled && h.c.TURN != nil {
		b.TURN.TURNStats = h.c.TURN.TURNStats()
	}
	WriteJSON(w, http.StatusOK, b)
}

// ConfigBody is the browser-facing /api/config document.
type ConfigBody struct {
	Status  string     `json:"status"`
	Mode    string     `json:"mode"`
	Product string     `json:"product"`
	Service string     `json:"service"`
	Version string     `json:"version"`
	HTTP    HTTPInfo   `json:"http"`
	Source  SourceInfo `json:"source"`
	TURN    TURNConfig `json:"turn"`
	STUN    STUNConfig `json:"stun"`
}

// SourceInfo describes the default path's source as the original icey UI
// reads it (value with credentials stripped, kind, pulled over the network).
type SourceInfo struct {
	Value  string `json:"value"`
	Kind   string `json:"kind"`
	Remote bool   `json:"remote"`
}

// HTTPInfo describes the HTTP listener.
type HTTPInfo struct {
	Host   string `json:"host"`
	Port   int    `json:"port,omitempty"`
	Scheme string `json:"scheme"`
	TLS    bool   `json:"tls"`
}

// TURNConfig carries freshly minted TURN credentials.
type TURNConfig struct {
	Enabled    bool   `json:"enabled"`
	Host       string `json:"host"`
	Port       int    `json:"port"`
	Username   string `json:"username"`
	Credential string `json:"credential"`
}

func (h *Handler) httpInfo() HTTPInfo {
	scheme := "http"
	if h.c.TLS {
		scheme = "https"
	}
	return HTTPInfo{Host: h.c.HTTPHost, Port: h.c.HTTPPort, Scheme: scheme, TLS: h.c.TLS}
}

// STUNConfig lists STUN URLs for browsers.
type STUNConfig struct {
	URLs []string `json:"urls"`
}

func (h *Handler) config(w http.ResponseWriter, r *http.Request) {
	b := ConfigBody{
		Status: "ok", Mode: h.c.Mode, Product: Product, Service: Service, Version: h.c.Version,
		HTTP:   h.httpInfo(),
		Source: SourceInfo{Value: h.c.Source, Kind: h.c.SourceKind, Remote: h.c.SourceRemote},
		TURN:   TURNConfig{Enabled: h.c.TURNEnabled, Host: h.c.TURNHost, Port: h.c.TURNPort},
		STUN:   STUNConfig{URLs: append([]string{}, h.c.STUNURLs...)},
	}
	if b.TURN.Host == "" {
		// Wildcard bind without externalIp: the host the browser reached us
		// by is the best address to hand back.
		b.TURN.Host = requestHost(r)
	}
	if h.c.TURNEnabled && h.c.TURN != nil {
		b.TURN.Username, b.TURN.Credential = h.c.TURN.Credentials()
	}
	if len(b.STUN.URLs) == 0 && h.c.TURNEnabled {
		b.STUN.URLs = []string{"stun:" + hostForURL(b.TURN.Host) + ":" + strconv.Itoa(h.c.TURNPort)}
	}
	WriteJSON(w, http.StatusOK, b)
}
