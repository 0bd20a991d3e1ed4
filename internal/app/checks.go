package app

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/preflight"
	"github.com/icey/icey-server/signaling"
	"github.com/icey/icey-server/web"
)

// Warnings with the seed's exact wording.
const (
	turnWildcardDetail  = "TURN is enabled without externalIp while binding to a wildcard host"
	turnWildcardWarning = "TURN externalIp is unset; remote NAT traversal may fail outside local or host-network testing."
	turnDemoWarning     = "TURN uses static demo credentials (no turn.secret); set turn.secret for time-limited credentials."
	turnDisabledWarning = "TURN is disabled; viewers behind strict NATs or UDP-blocking firewalls may not connect."
	minFreeBytes        = 1 << 30
)

func configCheck(cfg config.Config) (preflight.Result, string, []string) {
	detail := "No config file; using defaults"
	if cfg.Path != "" {
		detail = "Loaded config from " + cfg.Path
	}
	var unknown []string
	for _, w := range cfg.Warnings {
		if strings.HasPrefix(w, "unknown config key") {
			unknown = append(unknown, w)
		}
	}
	if len(unknown) > 0 {
		return preflight.Warn, fmt.Sprintf("%s; %d unknown key(s) ignored", detail, len(unknown)), cfg.Warnings
	}
	return preflight.Pass, detail, cfg.Warnings
}

func turnCheck(cfg config.Config) (preflight.Result, string, []string) {
	t := cfg.TURN
	if !t.Enabled {
		return preflight.Warn, "TURN is disabled", []string{turnDisabledWarning}
	}
	addr := hostPort(cfg.HTTP.Host, t.Port)
	var warns, details []string
	res := preflight.Pass
	switch {
	case t.ExternalIP != "":
		details = append(details, fmt.Sprintf("TURN enabled on %s (UDP+TCP) with externalIp %s", addr, t.ExternalIP))
	case config.IsWildcardHost(cfg.HTTP.Host):
		res = preflight.Warn
		details = append(details, turnWildcardDetail)
		warns = append(warns, turnWildcardWarning)
	default:
		details = append(details, fmt.Sprintf("TURN enabled on %s (UDP+TCP)", addr))
	}
	if t.Secret == "" {
		res = preflight.Warn
		details = append(details, "static demo credentials (no turn.secret)")
		warns = append(warns, turnDemoWarning)
	}
	return res, strings.Join(details, "; "), warns
}

func tlsCheck(cfg config.Config, now time.Time) (preflight.Result, string) {
	c, k := cfg.TLS.Cert, cfg.TLS.Key
	switch {
	case c == "" && k == "":
		return preflight.Pass, "TLS disabled (serve behind a TLS proxy, or set tls.cert and tls.key)"
	case c == "":
		return preflight.Fail, "tls.key is set but tls.cert is not"
	case k == "":
		return preflight.Fail, "tls.cert is set but tls.key is not"
	}
	pair, err := tls.LoadX509KeyPair(c, k)
	if err != nil {
		return preflight.Fail, "cannot load tls.cert/tls.key: " + err.Error()
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return preflight.Fail, "tls.cert: " + err.Error()
	}
	if now.After(leaf.NotAfter) {
		return preflight.Fail, fmt.Sprintf("tls.cert expired on %s", leaf.NotAfter.Format(time.DateOnly))
	}
	return preflight.Pass, fmt.Sprintf("TLS enabled; certificate for %s valid until %s",
		certName(leaf), leaf.NotAfter.Format(time.DateOnly))
}

func certName(c *x509.Certificate) string {
	if len(c.DNSNames) > 0 {
		return c.DNSNames[0]
	}
	if c.Subject.CommonName != "" {
		return c.Subject.CommonName
	}
	return "(unnamed)"
}

// recordingsCheck: in record mode an unusable record dir fails (nothing
// else can work); with record: true paths it warns (the rest serves).
func recordingsCheck(cfg config.Config) (preflight.Result, string) {
	bad := preflight.Fail
	if cfg.Media.Mode != "record" {
		var rec []string
		for _, p := range cfg.ResolvedPaths() {
			if p.Record {
				rec = append(rec, p.Name)
			}
		}
		if len(rec) == 0 {
			return preflight.Pass, fmt.Sprintf("Recordings not used in %s mode", cfg.Media.Mode)
		}
		bad = preflight.Warn
	}
	dir := cfg.Media.RecordDir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return bad, fmt.Sprintf("record dir %s cannot be created: %v", dir, err)
	}
	f, err := os.CreateTemp(dir, ".icey-write-test-*")
	if err != nil {
		return bad, fmt.Sprintf("record dir %s is not writable: %v", dir, err)
	}
	name := f.Name()
	f.Close()
	os.Remove(name)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err == nil {
		free := st.Bavail * uint64(st.Bsize)
		if free < minFreeBytes {
			return preflight.Warn, fmt.Sprintf("record dir %s has only %d MiB free", dir, free>>20)
		}
	}
	abs, _ := filepath.Abs(dir)
	return preflight.Pass, "Recording to " + abs
}

func intelligenceCheck(cfg config.Config) (preflight.Result, string) {
	var vision, speech []string
	for _, p := range cfg.ResolvedPaths() {
		if p.Intelligence.Vision.Enabled {
			vision = append(vision, p.Name)
		}
		if p.Intelligence.Speech.Enabled {
			speech = append(speech, p.Name)
		}
	}
	if len(vision)+len(speech) == 0 {
		return preflight.Pass, "Intelligence disabled"
	}
	var on []string
	if len(vision) > 0 {
		on = append(on, "motion on "+strings.Join(vision, ", "))
	}
	if len(speech) > 0 {
		on = append(on, "voice activity on "+strings.Join(speech, ", "))
	}
	if !ffmpegAvailable() {
		// Analysis never gates serving: warn, never fail.
		return preflight.Warn, "Analysis enabled (" + strings.Join(on, "; ") +
			") but ffmpeg, its decoder, is not installed: motion and Opus voice activity cannot run (G.711 audio is decoded without it)"
	}
	return preflight.Pass, "Analysing " + strings.Join(on, "; ") + " (one decoder per path)"
}

// webrtcCheck says whether browsers on other machines can reach the media
// port: with a wildcard bind and no interface but loopback (a container
// without a network, an offline laptop), only this machine's browsers can.
// addrs are the addresses ICE offers (signaling.CandidateAddrs).
func webrtcCheck(cfg config.Config, addrs []netip.Addr) (preflight.Result, string, []string) {
	port := cfg.WebRTC.Port
	if len(cfg.WebRTC.PublicIPs) > 0 {
		return preflight.Pass, fmt.Sprintf("ICE offers %s (webrtc.publicIps) on UDP port %d", strings.Join(cfg.WebRTC.PublicIPs, ", "), port), nil
	}
	host := cfg.HTTP.Host
	if config.IsLoopbackHost(host) {
		return preflight.Warn, fmt.Sprintf("WebRTC media is bound to loopback (%s): only browsers on this machine can connect", hostPort(host, port)),
			[]string{"WebRTC is bound to loopback: only browsers on this machine can play; bind --host 0.0.0.0 (or a LAN address) to serve other machines."}
	}
	if !config.IsWildcardHost(host) {
		return preflight.Pass, fmt.Sprintf("ICE offers %s on UDP port %d", host, port), nil
	}
	var usable []string
	for _, a := range addrs {
		if a.IsLoopback() || a.IsLinkLocalUnicast() || a.IsUnspecified() || a.IsMulticast() {
			continue
		}
		usable = append(usable, a.Unmap().String())
	}
	if len(usable) == 0 {
		return preflight.Warn, "No network interface besides loopback: ICE offers only loopback candidates, so only browsers on this machine can connect",
			[]string{"No network address besides loopback: only browsers on this machine can play. Attach the server to a network (in a container: publish the UDP port or use host networking) or set webrtc.publicIps."}
	}
	if len(usable) > 4 {
		usable = append(usable[:4], fmt.Sprintf("%d more", len(usable)-4))
	}
	return preflight.Pass, fmt.Sprintf("ICE offers %s and loopback on UDP port %d", strings.Join(usable, ", "), port), nil
}

func portsDetail(cfg config.Config) string {
	d := fmt.Sprintf("HTTP on %s (TCP), WebRTC media on %s (UDP)",
		hostPort(cfg.HTTP.Host, cfg.HTTP.Port), hostPort(cfg.HTTP.Host, cfg.WebRTC.Port))
	if cfg.TURN.Enabled {
		d += fmt.Sprintf(", TURN on %s (UDP+TCP)", hostPort(cfg.HTTP.Host, cfg.TURN.Port))
	}
	if cfg.RTSP.Enabled {
		d += fmt.Sprintf(", RTSP on %s (TCP)", hostPort(cfg.HTTP.Host, cfg.RTSP.Port))
	}
	return d
}

// staticChecks registers the checks that depend only on configuration and
// the host (evaluated once at startup; the report reads the cached result).
func staticChecks(pf *preflight.Preflight, cfg config.Config, now time.Time) {
	r, d, w := configCheck(cfg)
	pf.Set(preflight.CheckConfig, r, d, w...)
	r, d, w = turnCheck(cfg)
	pf.Set(preflight.CheckTURN, r, d, w...)
	r, d = tlsCheck(cfg, now)
	pf.Set(preflight.CheckTLS, r, d)
	r, d = recordingsCheck(cfg)
	pf.Set(preflight.CheckRecordings, r, d)
	r, d = intelligenceCheck(cfg)
	pf.Set(preflight.CheckIntelligence, r, d)
	addrs, _, _ := signaling.CandidateAddrs(cfg.HTTP.Host, nil)
	r, d, w = webrtcCheck(cfg, addrs)
	pf.Set(preflight.CheckWebRTC, r, d, w...)
	if cfg.WebRoot != "" {
		if err := web.CheckRoot(cfg.WebRoot); err != nil {
			pf.Set(preflight.CheckWebRoot, preflight.Fail, err.Error())
		} else {
			pf.Set(preflight.CheckWebRoot, preflight.Pass, "Serving the UI from "+cfg.WebRoot)
		}
	}
}
