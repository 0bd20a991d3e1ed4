// Package config loads icey-server's configuration: built-in defaults <
// config file (JSON, compatible with existing icey config.json files) <
// ICEY_* environment < command-line flags, validated once and immutable
// afterwards. The contract is in README.md (Configuration).
package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"runtime"
	"strconv"
	"strings"

	"github.com/icey/icey-server/internal/redact"
)

// Defaults that are not zero values.
const (
	DefaultHost                 = "0.0.0.0"
	DefaultPort                 = 4500
	DefaultTURNPort             = 3478
	DefaultRealm                = "icey"
	DefaultCredentialTTLSeconds = 3600
	MaxCredentialTTLSeconds     = 86400
	// SessionsPerCPU sizes the default webrtc.maxSessions: per CPU the
	// process may use (GOMAXPROCS, which follows a container's CPU limit).
	// Measured (docs/performance.md): a core fans a 2 Mb/s path out to
	// ~750 viewers; 300 leaves room for twice the bitrate, joins, GOP
	// bursts, renditions and recording.
	SessionsPerCPU            = 300
	DefaultRecordDir          = "./recordings"
	DefaultSourceGraceSeconds = 10
	DefaultConfigFile         = "config.json"
)

// DefaultMaxSessions is webrtc.maxSessions when not configured:
// SessionsPerCPU for each CPU the process may use.
func DefaultMaxSessions() int { return SessionsPerCPU * max(1, runtime.GOMAXPROCS(0)) }

// ErrInvalid marks configuration errors (exit code 3); ErrUsage marks bad
// flags or flag values (exit code 2).
var (
	ErrInvalid = errors.New("invalid configuration")
	ErrUsage   = errors.New("usage error")
)

// Config is the whole server configuration. JSON tags are the file keys.
type Config struct {
	HTTP    HTTP    `json:"http"`
	WebRTC  WebRTC  `json:"webrtc"`
	TLS     TLS     `json:"tls"`
	Auth    Auth    `json:"auth"`
	TURN    TURN    `json:"turn"`
	STUN    STUN    `json:"stun"`
	Media   Media   `json:"media"`
	RTSP    RTSP    `json:"rtsp"`
	Metrics Metrics `json:"metrics"`
	// HealthCheck configures outbound healthchecks.io-style pings.
	HealthCheck HealthCheck `json:"healthCheck"`
	// Recordings configures recording files (record mode and record: true
	// paths); the directory is media.recordDir.
	Recordings Recordings `json:"recordings"`
	// WebRoot serves the UI from a directory instead of the embedded copy.
	WebRoot string `json:"webRoot"`
	// Paths are the named streams besides the default path main (which the
	// media keys define unless Paths has "main"); ICEY_PATHS replaces them.
	// See ResolvedPaths.
	// It defaults to none.
	Paths map[string]PathConfig `json:"paths"`

	// Not file keys: log settings (env and flags only) and where the
	// config came from.
	LogLevel  string `json:"-"` // debug|info|warn|error, default info
	LogFormat string `json:"-"` // text|json, default text
	// Path is the config file that was loaded ("" when none).
	Path string `json:"-"`
	// Warnings collected while loading (unknown keys, clamped values).
	Warnings []string `json:"-"`
	// PprofListen serves net/http/pprof on a separate loopback listener
	// (flag --pprof-listen / ICEY_PPROF_LISTEN only; empty = off).
	PprofListen string `json:"-"`
	// HealthCheckURL is the outbound healthchecks.io-style ping URL (env/flag only: it may embed a key).
	HealthCheckURL string `json:"-"`
}

// HTTP is the listener for the API, UI, WebSocket and WHEP.
type HTTP struct {
	Host string `json:"host"` // default 0.0.0.0
	Port int    `json:"port"` // default 4500
	// DrainSeconds: after SIGTERM, how long /api/ready answers 503 (while
	// everything keeps serving) before sessions are hung up, so load
	// balancers stop sending new viewers first. Default 1; a second signal
	// skips the wait.
	DrainSeconds int `json:"drainSeconds"`
	// PublicURL, when set (e.g. https://node-3.example.com), makes WHEP and
	// WHIP Location URLs absolute on it, so a follow-up PATCH or DELETE
	// reaches this node behind a load balancer. It defaults to empty
	// (relative Locations).
	PublicURL string `json:"publicUrl"`
}

// RTSP configures the RTSP re-serve: every path readable as
// rtsp://host:port/<path> (for edges, NVRs, VLC, ffplay).
type RTSP struct {
	// Enabled turns the RTSP server on. It defaults to false.
	Enabled bool `json:"enabled"`
	// Port is the RTSP TCP port (with UDP on, RTP and RTCP use the first
	// even port above it and the next: 8556 and 8557 for 8554). It
	// defaults to 8554.
	Port int `json:"port"`
	// UDP also offers the UDP transport. It defaults to false (TCP only,
	// which crosses NATs and firewalls).
	UDP bool `json:"udp"`
}

// WebRTC holds the media transport settings.
type WebRTC struct {
	Port        int      `json:"port"`        // UDP; default: the HTTP port number
	PublicIPs   []string `json:"publicIps"`   // NAT 1:1 addresses; default turn.externalIp
	MaxSessions int      `json:"maxSessions"` // default DefaultMaxSessions(): 300 per CPU
	// MaxPending bounds sessions that have not connected yet (ICE and DTLS
	// in progress), in total and per client address (IPv6: per /64); a
	// pending session that does not connect within PendingTimeoutSeconds is
	// closed. Defaults 64, 8 and 10 s. Raise the per-client bound behind a
	// reverse proxy (every viewer then has the proxy's address) or for load
	// generators.
	MaxPending            int `json:"maxPending"`
	MaxPendingPerClient   int `json:"maxPendingPerClient"`
	PendingTimeoutSeconds int `json:"pendingTimeoutSeconds"`
	// SendMode is how the media socket sends: "gso" (default: each
	// viewer's packets of one frame in one system call with UDP generic
	// segmentation offload, falling back to "sendmmsg" where the kernel
	// cannot), "sendmmsg" (one system call per viewer and frame, one
	// message per packet) or "sendto" (one system call per packet).
	SendMode string `json:"sendMode"`
	// Fanout is who writes a live viewer's packets: "shared" (default: a
	// few writers per stream, one per CPU, each writing every unit to its
	// share of the viewers) or "per-viewer" (a goroutine per viewer).
	Fanout string `json:"fanout"`
}

// TLS enables HTTPS when both files are set.
type TLS struct {
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// Auth protects the API, WebSocket, WHEP and artifacts.
type Auth struct {
	Token          string   `json:"token"` // secret: file or env only
	AllowedOrigins []string `json:"allowedOrigins"`
}

// TURN configures the embedded TURN/STUN server.
type TURN struct {
	Enabled              bool   `json:"enabled"` // default true
	Port                 int    `json:"port"`    // default 3478 (UDP+TCP)
	Realm                string `json:"realm"`   // default icey
	ExternalIP           string `json:"externalIp"`
	Secret               string `json:"secret"`   // secret: file or env only
	Username             string `json:"username"` // optional suffix of minted REST usernames
	CredentialTTLSeconds int    `json:"credentialTtlSeconds"`
	AllowLocalRelay      bool   `json:"allowLocalRelay"`
}

// STUN lists the STUN URLs handed to browsers (default: the embedded server).
type STUN struct {
	URLs []string `json:"urls"`
}

// Media selects the mode and source.
type Media struct {
	Mode      string `json:"mode"`   // stream|record|relay
	Source    string `json:"source"` // empty = built-in test stream
	RecordDir string `json:"recordDir"`
	Loop      bool   `json:"loop"` // default true (files only)
	// SourceGraceSeconds: how long a live source may be reconnecting before
	// the source check fails (default 10).
	SourceGraceSeconds int `json:"sourceGraceSeconds"`
	// Transcode targets and analysers of existing icey configs; kept as-is.
	Video        json.RawMessage `json:"video,omitempty"`
	Audio        json.RawMessage `json:"audio,omitempty"`
	Intelligence Intelligence    `json:"intelligence"`
}

// VideoTarget reads the transcode targets of media.video (existing icey
// configs: width, height, fps, bitrate in bits/s). Unknown keys are kept
// but ignored; absent or malformed values are zero (keep the input's).
func (m Media) VideoTarget() (width, height, fps, bitrate int) {
	var v struct {
		Width   int `json:"width"`
		Height  int `json:"height"`
		FPS     int `json:"fps"`
		Bitrate int `json:"bitrate"`
	}
	if len(m.Video) > 0 {
		_ = json.Unmarshal(m.Video, &v)
	}
	return v.Width, v.Height, v.FPS, v.Bitrate
}

// Intelligence configures the analysis of a path's media (motion in its
// video, voice activity in its audio), run once per path. The keys are the
// original icey-server's; zero values take the defaults noted.
type Intelligence struct {
	Vision Vision `json:"vision"`
	Speech Speech `json:"speech"`
}

// Vision is media.intelligence.vision.
type Vision struct {
	// Enabled runs motion detection. It defaults to false.
	Enabled bool `json:"enabled"`
	// EveryNthFrame analyses one decoded frame in N. It defaults to 6.
	EveryNthFrame int `json:"everyNthFrame"`
	// MinIntervalUsec is the least media time between two analysed frames.
	// It defaults to 200000.
	MinIntervalUsec int64 `json:"minIntervalUsec"`
	// QueueDepth bounds the frames waiting for analysis (more are dropped
	// and counted). It defaults to 8.
	QueueDepth int `json:"queueDepth"`
	Motion     struct {
		// GridWidth x GridHeight is the lattice the luma is sampled on.
		// They default to 32 and 18.
		GridWidth  int `json:"gridWidth"`
		GridHeight int `json:"gridHeight"`
		// WarmupFrames are analysed frames that never emit. It defaults to 2.
		WarmupFrames int `json:"warmupFrames"`
		// Threshold is the mean luma difference (0..1) that is motion. It
		// defaults to 0.08.
		Threshold float64 `json:"threshold"`
		// CooldownUsec is the least media time between two events. It
		// defaults to 500000.
		CooldownUsec int64 `json:"cooldownUsec"`
	} `json:"motion"`
	Snapshots struct {
		// Enabled writes a picture of the frame nearest each event (rate
		// limited). It defaults to false.
		Enabled bool `json:"enabled"`
		// Dir defaults to <recordDir>/snapshots.
		Dir string `json:"dir"`
		// MinIntervalUsec between two snapshots. It defaults to 1000000.
		MinIntervalUsec int64 `json:"minIntervalUsec"`
	} `json:"snapshots"`
	Clips struct {
		// Enabled cuts an MP4 around each event from the path's history
		// (no re-encode). It defaults to false.
		Enabled bool `json:"enabled"`
		// Dir defaults to <recordDir>/clips.
		Dir string `json:"dir"`
		// PreRollUsec and PostRollUsec: what a clip holds before and after
		// its events. They default to 1000000 and 3000000.
		PreRollUsec  int64 `json:"preRollUsec"`
		PostRollUsec int64 `json:"postRollUsec"`
	} `json:"clips"`
}

// Speech is media.intelligence.speech.
type Speech struct {
	// Enabled runs voice activity detection. It defaults to false.
	Enabled bool `json:"enabled"`
	// QueueDepth bounds the audio blocks waiting for analysis. It defaults
	// to 32.
	QueueDepth int `json:"queueDepth"`
	// StartThreshold and StopThreshold are mean absolute levels (0..1).
	// They default to 0.045 and 0.020.
	StartThreshold float64 `json:"startThreshold"`
	StopThreshold  float64 `json:"stopThreshold"`
	// MinSilenceUsec below StopThreshold ends speech. It defaults to 250000.
	MinSilenceUsec int64 `json:"minSilenceUsec"`
	// UpdateIntervalUsec between speech:update events. It defaults to 250000.
	UpdateIntervalUsec int64 `json:"updateIntervalUsec"`
}

// Enabled reports whether any analysis is on.
func (i Intelligence) Enabled() bool { return i.Vision.Enabled || i.Speech.Enabled }

// validate adds the errors of an intelligence object at key.
func (i Intelligence) validate(key string, add func(key, format string, a ...any)) {
	v, sp := i.Vision, i.Speech
	rangeInt := func(k string, n, lo, hi int64) {
		if n != 0 && (n < lo || n > hi) {
			add(key+"."+k, "must be between %d and %d (got %d)", lo, hi, n)
		}
	}
	rangeF := func(k string, f float64) {
		if f < 0 || f > 1 {
			add(key+"."+k, "must be between 0 and 1 (got %g)", f)
		}
	}
	rangeInt("vision.everyNthFrame", int64(v.EveryNthFrame), 1, 1000)
	rangeInt("vision.minIntervalUsec", v.MinIntervalUsec, 1, 3600e6)
	rangeInt("vision.queueDepth", int64(v.QueueDepth), 1, 1024)
	rangeInt("vision.motion.gridWidth", int64(v.Motion.GridWidth), 1, 256)
	rangeInt("vision.motion.gridHeight", int64(v.Motion.GridHeight), 1, 256)
	rangeInt("vision.motion.warmupFrames", int64(v.Motion.WarmupFrames), 0, 1000)
	rangeF("vision.motion.threshold", v.Motion.Threshold)
	rangeInt("vision.motion.cooldownUsec", v.Motion.CooldownUsec, 0, 3600e6)
	rangeInt("vision.snapshots.minIntervalUsec", v.Snapshots.MinIntervalUsec, 1, 3600e6)
	rangeInt("vision.clips.preRollUsec", v.Clips.PreRollUsec, 0, 60e6)
	rangeInt("vision.clips.postRollUsec", v.Clips.PostRollUsec, 0, 600e6)
	rangeInt("speech.queueDepth", int64(sp.QueueDepth), 1, 4096)
	rangeF("speech.startThreshold", sp.StartThreshold)
	rangeF("speech.stopThreshold", sp.StopThreshold)
	rangeInt("speech.minSilenceUsec", sp.MinSilenceUsec, 0, 3600e6)
	rangeInt("speech.updateIntervalUsec", sp.UpdateIntervalUsec, 1, 3600e6)
	if sp.StartThreshold != 0 && sp.StopThreshold > sp.StartThreshold {
		add(key+".speech.stopThreshold", "must not exceed startThreshold (%g > %g)", sp.StopThreshold, sp.StartThreshold)
	}
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen      string `json:"listen"`      // optional separate listener host:port
	BearerToken string `json:"bearerToken"` // secret: required when exposed beyond loopback
}

// HealthCheck: the ping URL itself comes from --health-check-url or
// ICEY_HEALTH_CHECK_URL (it embeds the check's key).
// Recordings configures recording files.
type Recordings struct {
	// SegmentSeconds rotates a recording into a new file after this long.
	// It defaults to 3600.
	SegmentSeconds int `json:"segmentSeconds"`
	// MaxAgeHours deletes finalized recordings older than this; 0 keeps
	// them. It defaults to 0.
	MaxAgeHours float64 `json:"maxAgeHours"`
	// MaxTotalGB deletes the oldest finalized recordings while all of them
	// take more than this many gigabytes (10^9 bytes); 0 sets no limit.
	// It defaults to 0.
	MaxTotalGB float64 `json:"maxTotalGB"`
}

type HealthCheck struct {
	IntervalSeconds int `json:"intervalSeconds"` // success pings while ready; default 60
}

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		HTTP:   HTTP{Host: DefaultHost, Port: DefaultPort, DrainSeconds: 1},
		WebRTC: WebRTC{MaxSessions: DefaultMaxSessions(), MaxPending: 64, MaxPendingPerClient: 8, PendingTimeoutSeconds: 10, SendMode: "gso", Fanout: "shared"},
		TURN: TURN{Enabled: true, Port: DefaultTURNPort, Realm: DefaultRealm,
			CredentialTTLSeconds: DefaultCredentialTTLSeconds},
		Media: Media{Mode: "stream", RecordDir: DefaultRecordDir, Loop: true,
			SourceGraceSeconds: DefaultSourceGraceSeconds},
		HealthCheck: HealthCheck{IntervalSeconds: 60},
		Recordings:  Recordings{SegmentSeconds: 3600},
		RTSP:        RTSP{Port: 8554},
		LogLevel:    "info",
		LogFormat:   "text",
	}
}

// SourceKind classifies Media.Source: builtin, file, rtsp, device or url.
func (c *Config) SourceKind() string { return SourceKind(c.Media.Source) }

// SourceKind classifies a source string.
func SourceKind(src string) string {
	s := strings.TrimSpace(src)
	low := strings.ToLower(s)
	switch {
	case s == "":
		return "builtin"
	case strings.HasPrefix(low, "rtsp://"), strings.HasPrefix(low, "rtsps://"):
		return "rtsp"
	case strings.HasPrefix(low, "v4l2:"), strings.HasPrefix(low, "/dev/video"):
		return "device"
	case strings.Contains(low, "://"):
		return "url"
	default:
		return "file"
	}
}

// RedactURL removes user:pass@ from a URL-looking string (and from every URL
// inside a longer string).
func RedactURL(s string) string { return redact.URL(s) }

// PublicSource is the source as shown in logs and the API.
func (c *Config) PublicSource() string { return RedactSource(c.Media.Source) }

// secretQueryKey matches query parameters that carry credentials in source
// URLs: RTMP ?token=, SRT passphrase= and streamid=, signed HTTP URLs.
var secretQueryKey = regexp.MustCompile(`(?i)pass|token|secret|key|auth|sig|cred|streamid|session`)

// RedactSource is a source URL fit to show: userinfo removed, the values
// of credential-like query parameters replaced by "[redacted]" and any
// fragment dropped; everything else is kept as written.
func RedactSource(src string) string {
	out := RedactURL(src)
	scheme := strings.Index(out, "://")
	if scheme < 0 {
		return out
	}
	if h := strings.IndexByte(out[scheme:], '#'); h >= 0 {
		out = out[:scheme+h]
	}
	q := strings.IndexByte(out[scheme:], '?')
	if q < 0 {
		return out
	}
	q += scheme
	params := strings.Split(out[q+1:], "&")
	for n, p := range params {
		k, _, hasValue := strings.Cut(p, "=")
		key := k
		if unescaped, err := url.QueryUnescape(k); err == nil {
			key = unescaped
		}
		if hasValue && secretQueryKey.MatchString(key) {
			params[n] = k + "=[redacted]"
		}
	}
	return out[:q+1] + strings.Join(params, "&")
}

// querySecrets are the values of credential-like query parameters of src.
func querySecrets(src string) []string {
	u, err := url.Parse(src)
	if err != nil {
		return nil
	}
	var out []string
	for k, vs := range u.Query() {
		if !secretQueryKey.MatchString(k) {
			continue
		}
		for _, v := range vs {
			if len(v) >= 3 {
				out = append(out, v, url.QueryEscape(v))
			}
		}
	}
	return out
}

// Secrets returns the secret values in use, so that loggers can scrub them.
func (c *Config) Secrets() []string {
	var out []string
	all := append([]string{c.Auth.Token, c.TURN.Secret, c.Metrics.BearerToken, sourcePassword(c.Media.Source)}, querySecrets(c.Media.Source)...)
	for _, s := range append(all, c.pathsSecrets()...) {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func sourcePassword(src string) string {
	u, err := url.Parse(src)
	if err != nil || u.User == nil {
		return ""
	}
	p, _ := u.User.Password()
	if len(p) < 3 { // too short to scrub safely from arbitrary text
		return ""
	}
	return p
}

// Redacted returns a copy safe to print: secrets masked, URL credentials removed.
func (c Config) Redacted() Config {
	mask := func(s string) string {
		if s == "" {
			return ""
		}
		return "[redacted]"
	}
	c.Auth.Token = mask(c.Auth.Token)
	c.TURN.Secret = mask(c.TURN.Secret)
	c.Metrics.BearerToken = mask(c.Metrics.BearerToken)
	c.Media.Source = RedactURL(c.Media.Source)
	c.HealthCheckURL = mask(c.HealthCheckURL)
	c.Paths = redactedPaths(c.Paths, mask)
	return c
}

// IsLoopbackHost reports whether host is a loopback address or "localhost".
func IsLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsWildcardHost reports whether host binds every interface.
func IsWildcardHost(host string) bool {
	if host == "" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsUnspecified()
}

// Validate checks ranges and enumerations; errors name the key.
func (c *Config) Validate() error {
	var errs []string
	add := func(key, format string, a ...any) {
		errs = append(errs, key+": "+fmt.Sprintf(format, a...))
	}
	port := func(key string, p int) {
		if p < 1 || p > 65535 {
			add(key, "port %d out of range (1-65535)", p)
		}
	}
	port("http.port", c.HTTP.Port)
	port("webrtc.port", c.WebRTC.Port)
	port("turn.port", c.TURN.Port)
	port("rtsp.port", c.RTSP.Port)
	if u := c.HTTP.PublicURL; u != "" {
		if pu, err := url.Parse(u); err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" || (pu.Path != "" && pu.Path != "/") || pu.RawQuery != "" || pu.User != nil {
			add("http.publicUrl", "%q must be an http(s) origin such as https://node-1.example.com", u)
		}
	}
	if c.HTTP.DrainSeconds < 0 || c.HTTP.DrainSeconds > 300 {
		add("http.drainSeconds", "%d out of range (0-300)", c.HTTP.DrainSeconds)
	}
	if c.HTTP.Host != "" && c.HTTP.Host != "localhost" && net.ParseIP(c.HTTP.Host) == nil {
		add("http.host", "%q is not an IP address (use 0.0.0.0, ::, 127.0.0.1 or an interface address)", c.HTTP.Host)
	}
	switch c.Media.Mode {
	case "stream", "record", "relay":
	default:
		add("media.mode", "unknown mode %q (want stream, record or relay)", c.Media.Mode)
	}
	c.Media.Intelligence.validate("media.intelligence", add)
	if c.WebRTC.MaxSessions < 1 || c.WebRTC.MaxSessions > 100000 {
		add("webrtc.maxSessions", "%d out of range (1-100000)", c.WebRTC.MaxSessions)
	}
	if c.WebRTC.MaxPending < 1 || c.WebRTC.MaxPending > 100000 {
		add("webrtc.maxPending", "%d out of range (1-100000)", c.WebRTC.MaxPending)
	}
	if c.WebRTC.MaxPendingPerClient < 1 || c.WebRTC.MaxPendingPerClient > 100000 {
		add("webrtc.maxPendingPerClient", "%d out of range (1-100000)", c.WebRTC.MaxPendingPerClient)
	}
	switch c.WebRTC.SendMode {
	case "", "gso", "sendmmsg", "sendto":
	default:
		add("webrtc.sendMode", "%q is not one of gso, sendmmsg, sendto", c.WebRTC.SendMode)
	}
	switch c.WebRTC.Fanout {
	case "", "shared", "per-viewer":
	default:
		add("webrtc.fanout", "%q is not one of shared, per-viewer", c.WebRTC.Fanout)
	}
	if c.WebRTC.PendingTimeoutSeconds < 1 || c.WebRTC.PendingTimeoutSeconds > 120 {
		add("webrtc.pendingTimeoutSeconds", "%d out of range (1-120)", c.WebRTC.PendingTimeoutSeconds)
	}
	for _, ip := range c.WebRTC.PublicIPs {
		if net.ParseIP(ip) == nil {
			add("webrtc.publicIps", "%q is not an IP address", ip)
		}
	}
	if c.TURN.ExternalIP != "" && net.ParseIP(c.TURN.ExternalIP) == nil {
		add("turn.externalIp", "%q is not an IP address", c.TURN.ExternalIP)
	}
	if c.TURN.CredentialTTLSeconds < 1 {
		add("turn.credentialTtlSeconds", "must be positive, got %d", c.TURN.CredentialTTLSeconds)
	}
	if strings.TrimSpace(c.TURN.Realm) == "" {
		add("turn.realm", "must not be empty")
	}
	for _, u := range c.STUN.URLs {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") {
			add("stun.urls", "%q is not a stun: or stuns: URL", u)
		}
	}
	if c.Media.SourceGraceSeconds < 1 || c.Media.SourceGraceSeconds > 3600 {
		add("media.sourceGraceSeconds", "%d out of range (1-3600)", c.Media.SourceGraceSeconds)
	}
	if r := c.Recordings.SegmentSeconds; r < 1 || r > 86400 {
		add("recordings.segmentSeconds", "%d out of range (1-86400)", r)
	}
	if c.Recordings.MaxAgeHours < 0 {
		add("recordings.maxAgeHours", "%v is negative", c.Recordings.MaxAgeHours)
	}
	if c.Recordings.MaxTotalGB < 0 {
		add("recordings.maxTotalGB", "%v is negative", c.Recordings.MaxTotalGB)
	}
	if c.HealthCheck.IntervalSeconds < 1 || c.HealthCheck.IntervalSeconds > 86400 {
		add("healthCheck.intervalSeconds", "%d out of range (1-86400)", c.HealthCheck.IntervalSeconds)
	}
	if c.HealthCheckURL != "" {
		if u, err := url.Parse(c.HealthCheckURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("health check URL", "not an http(s) URL")
		}
	}
	if c.PprofListen != "" {
		host, _, err := net.SplitHostPort(c.PprofListen)
		if err != nil || !IsLoopbackHost(host) {
			add("pprof listen", "%q must be a loopback host:port (profiles expose internals)", c.PprofListen)
		}
	}
	if c.Metrics.Listen != "" {
		host, port, err := net.SplitHostPort(c.Metrics.Listen)
		if err != nil {
			add("metrics.listen", "%q is not host:port", c.Metrics.Listen)
		} else if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			add("metrics.listen", "port %q out of range (1-65535)", port)
		} else if !IsLoopbackHost(host) && c.Metrics.BearerToken == "" {
			add("metrics.bearerToken", "required when metrics.listen binds a non-loopback address (%s); set it in the file or ICEY_METRICS_TOKEN", c.Metrics.Listen)
		}
	}
	c.validatePaths(add)
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		add("log level", "unknown level %q (want debug, info, warn or error)", c.LogLevel)
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		add("log format", "unknown format %q (want text or json)", c.LogFormat)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	return nil
}
