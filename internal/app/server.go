package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/icey/icey-server/api"
	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/intel"
	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/internal/healthping"
	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/metrics"
	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/preflight"
	"github.com/icey/icey-server/recordings"
	"github.com/icey/icey-server/rtspserve"
	"github.com/icey/icey-server/signaling"
	"github.com/icey/icey-server/signaling/symple"
	"github.com/icey/icey-server/turn"
	"github.com/icey/icey-server/web"
)

// app is one running server: the wiring of every component, in startup
// order, and their shutdown in reverse.
type app struct {
	cfg     config.Config
	log     *slog.Logger
	pf      *preflight.Preflight
	started time.Time
	state   atomic.Value // string: starting | running | draining

	ln     *listeners
	turn   *turn.Server
	stream *media.Stream
	src    media.Source
	srcErr error
	// srcWarnings come from choosing the source (e.g. "transcoding AAC").
	srcWarnings []string
	sup         *media.Supervisor // the default path's, nil for a publish path
	paths       *paths.Set
	sig         *signaling.Manager
	srv         *http.Server

	metricsSrv *http.Server
	pprofSrv   *http.Server

	bus         *events.Bus
	metrics     *metrics.Metrics
	symple      atomic.Pointer[symple.Server] // set once built; path state changes read it
	run         *Runner
	recs        atomic.Pointer[recorders]  // nil when no path records
	intel       map[string]*intel.Analyzer // by path; set at startup
	artifacts   *intelArtifacts            // snapshots and clips; nil when none
	ups         *upstreams                 // servers behind on-demand sources
	rtsp        *rtspserve.Server          // nil unless rtsp.enabled
	errc        chan error                 // a server goroutine failed
	startupDone atomic.Bool
	lastReady   atomic.Int32 // -1 unknown, 0 not ready, 1 ready (for readiness events)
	logTail     *healthping.Tail
	bg          sync.WaitGroup // background loops (readiness watch, pings)
	bgCancel    context.CancelFunc
	// pollNow asks the readiness watch to re-evaluate at once (a source
	// changed state), so readiness events follow the source without the
	// watch's one-second delay; all evaluation stays in the watch's
	// goroutine, so edges are published in order.
	pollNow chan struct{}
}

func newLogger(cfg config.Config, w io.Writer) *slog.Logger {
	lv, _ := logging.ParseLevel(cfg.LogLevel) // validated by config
	return logging.New(w, lv, cfg.LogFormat, cfg.Secrets())
}

func newApp(cfg config.Config, log *slog.Logger) *app {
	a := &app{cfg: cfg, log: log, pf: preflight.New(cfg.Media.Mode), started: time.Now(), bus: events.New(),
		pollNow: make(chan struct{}, 1), run: NewRunner(log), errc: make(chan error, 3)}
	a.state.Store("starting")
	a.lastReady.Store(-1)
	return a
}

// Serve runs the server until ctx is cancelled (SIGINT/SIGTERM), then shuts
// down in order. It returns the process exit code.
func Serve(ctx context.Context, cfg config.Config, stderr io.Writer) int {
	tail := &healthping.Tail{}
	log := newLogger(cfg, io.MultiWriter(stderr, tail))
	a := newApp(cfg, log)
	a.logTail = tail
	if code := a.start(); code != exitOK {
		a.close(context.Background())
		return code
	}
	a.state.Store("running")
	a.startupDone.Store(true)
	log.Info("icey-server serving", "module", "main", "version", Version, "mode", cfg.Media.Mode,
		"url", a.publicURL(), "source", sourceDesc(a),
		"startup", time.Since(a.started).Round(time.Millisecond).String())

	select {
	case <-ctx.Done():
		log.Info("shutdown requested", "module", "main")
	case err := <-a.errc:
		log.Error("HTTP server failed", "module", "main", "err", err)
		a.close(context.Background())
		return exitRuntime
	}
	a.shutdown(hurry(ctx))
	log.Info("shutdown complete", "module", "main")
	return exitOK
}

func sourceDesc(a *app) string {
	if a.src == nil {
		return a.cfg.PublicSource()
	}
	return a.src.Kind() + ": " + a.src.String()
}

func (a *app) publicURL() string {
	host := a.cfg.HTTP.Host
	if config.IsWildcardHost(host) {
		host = "localhost"
	}
	scheme := "http"
	if a.cfg.TLS.Cert != "" {
		scheme = "https"
	}
	return scheme + "://" + hostPort(host, a.cfg.HTTP.Port)
}

// start binds every port, evaluates the startup checks and starts the
// components in order; Runner.Stop undoes them in reverse: the background
// loops, the event streams (so SSE clients do not hold up the HTTP
// shutdown), HTTP (stop accepting), Symple, the sessions (hung up with
// reason shutdown), the sources, TURN, and last the listeners.
func (a *app) start() int {
	cfg, log := a.cfg, a.log
	ctx := context.Background()
	bind := Component{Name: "listeners", Timeout: time.Second,
		Start: func() (err error) { a.ln, err = bindAll(cfg); return err },
		Stop:  func() { a.ln.Close() }}
	if err := a.run.Start(ctx, bind); err != nil {
		msg := strings.TrimPrefix(err.Error(), "listeners: ")
		log.Error(msg, "module", "main")
		a.pf.Set(preflight.CheckPorts, preflight.Fail, msg)
		return exitStartup
	}
	a.pf.Set(preflight.CheckPorts, preflight.Pass, portsDetail(cfg))
	staticChecks(a.pf, cfg, time.Now())
	a.srcErr = a.buildPaths()
	// Fail fast on everything but a live source that may come back: the
	// source check only counts here when a source cannot even be built.
	failing := a.pf.Report().Failing()
	if a.srcErr != nil {
		msg := config.RedactURL(a.srcErr.Error())
		if !strings.HasPrefix(msg, "source:") && !strings.HasPrefix(msg, "path ") {
			msg = "source: " + msg
		}
		failing = append(failing, msg)
	}
	a.pf.SetFunc(preflight.CheckSource, a.sourceCheck)
	if len(failing) > 0 {
		for _, f := range failing {
			log.Error("preflight failed: "+f, "module", "preflight")
		}
		return exitStartup
	}
	if len(cfg.ResolvedPaths()) > 1 {
		a.pf.SetFunc(preflight.CheckPaths, a.pathsCheck)
	}
	a.ups = newUpstreams(cfg.ResolvedPaths())
	err := a.run.Start(ctx,
		Component{Name: "turn", Start: a.startTURN, Timeout: 3 * time.Second,
			Stop: func() {
				if a.turn != nil {
					_ = a.turn.Close()
				}
			}},
		Component{Name: "sources", Start: func() error { a.paths.Start(); return nil }, Stop: a.paths.Close},
		// Recordings are finalized after the sessions hang up and before
		// the sources stop.
		Component{Name: "recordings", Start: a.startRecordings, Stop: a.stopRecordings},
		Component{Name: "intelligence", Start: a.startIntel, Stop: a.stopIntel},
		Component{Name: "sessions", Start: a.startSessions, Stop: func() { a.sig.Close("shutdown") }},
		Component{Name: "rtsp", Start: a.startRTSP, Timeout: 3 * time.Second,
			Stop: func() {
				if a.rtsp != nil {
					a.rtsp.Close()
				}
			}},
		Component{Name: "symple", Start: a.startSymple, Timeout: 3 * time.Second,
			Stop: func() { a.symple.Load().Shutdown() }},
		Component{Name: "http", Start: a.startHTTP, Stop: a.stopHTTP},
		// Event streams (SSE, the events WebSocket) end before HTTP stops:
		// http.Server.Shutdown would wait for SSE clients to hang up, and
		// does not close hijacked connections at all.
		Component{Name: "events", Stop: a.bus.Close},
		Component{Name: "background", Start: func() error { a.startBackground(); return nil },
			Stop: func() { a.bgCancel(); a.bg.Wait() }},
	)
	if err != nil {
		log.Error("startup failed", "module", "main", "err", err)
		return exitStartup
	}
	return exitOK
}

func (a *app) startTURN() (err error) {
	if a.cfg.TURN.Enabled {
		a.turn, err = turn.New(a.turnConfig(), a.ln.turnUDP, a.ln.turnTCP, logging.Module(a.log, "turn"))
	}
	return err
}

func (a *app) startSessions() (err error) {
	cfg := a.cfg
	a.sig, err = signaling.NewManager(signaling.Config{
		UDPConn:             a.ln.media,
		PublicIPs:           cfg.WebRTC.PublicIPs,
		LoopbackOnly:        config.IsLoopbackHost(cfg.HTTP.Host),
		MaxSessions:         cfg.WebRTC.MaxSessions,
		MaxPending:          cfg.WebRTC.MaxPending,
		MaxPendingPerClient: cfg.WebRTC.MaxPendingPerClient,
		SendMode:            cfg.WebRTC.SendMode,
		PerViewerPumps:      cfg.WebRTC.Fanout == "per-viewer",
		HandshakeTimeout:    time.Duration(cfg.WebRTC.PendingTimeoutSeconds) * time.Second,
		ICEServers:          a.iceServers,
		PublicURL:           cfg.HTTP.PublicURL,
		Observer:            observer{a},
	}, a.paths, logging.Module(a.log, "signaling"))
	return err
}

// startRTSP re-serves every path over RTSP when rtsp.enabled; a port
// conflict fails startup (exit 4) like the other ports.
func (a *app) startRTSP() error {
	cfg := a.cfg
	if !cfg.RTSP.Enabled {
		return nil
	}
	rs, err := rtspserve.New(rtspserve.Config{
		Addr:   hostPort(cfg.HTTP.Host, cfg.RTSP.Port),
		UDP:    cfg.RTSP.UDP,
		Router: a.paths,
		Token:  cfg.Auth.Token,
	}, logging.Module(a.log, "rtsp"))
	if err != nil {
		return err
	}
	if err := rs.Start(); err != nil {
		return fmt.Errorf("cannot bind RTSP on %s: %w (rtsp.port, --rtsp-port)", hostPort(cfg.HTTP.Host, cfg.RTSP.Port), err)
	}
	a.rtsp = rs
	a.log.Info("re-serving every path over RTSP", "module", "rtsp", "url", "rtsp://"+hostPort(a.advertisedHost(), cfg.RTSP.Port)+"/<path>")
	return nil
}

func (a *app) startSymple() error {
	cfg := a.cfg
	a.symple.Store(symple.New(symple.Config{
		Mode:           cfg.Media.Mode,
		Paths:          a.symplePaths(),
		Token:          cfg.Auth.Token,
		AllowedOrigins: cfg.Auth.AllowedOrigins,
	}, a.sig, logging.Module(a.log, "symple")))
	return nil
}

// startHTTP builds the HTTP servers and starts serving: the main port,
// the optional metrics and profile listeners.
func (a *app) startHTTP() error {
	cfg, log := a.cfg, a.log
	a.metrics = metrics.New(prometheus.NewRegistry(), a.metricsSources())
	if !config.IsLoopbackHost(cfg.HTTP.Host) && cfg.Metrics.BearerToken == "" && cfg.Metrics.Listen == "" {
		log.Info("/metrics answers clients on this machine; other hosts need metrics.bearerToken (ICEY_METRICS_TOKEN)", "module", "metrics")
	}
	a.srv = &http.Server{
		Handler:           a.metrics.Instrument(routeLabel, guardRequests(a.routes())),
		ReadHeaderTimeout: 10 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		IdleTimeout:       120 * time.Second,
		ErrorLog:          slog.NewLogLogger(logging.Module(log, "http").Handler(), slog.LevelDebug),
	}
	go func() { a.errc <- a.serveHTTP() }()
	if a.ln.metrics != nil {
		mux := http.NewServeMux()
		mux.Handle("/metrics", metricsAuth(a.cfg.Metrics.BearerToken, a.metrics.Handler()))
		a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() { a.errc <- serveOn(a.metricsSrv, a.ln.metrics) }()
	}
	if a.ln.pprof != nil {
		a.pprofSrv = &http.Server{Handler: pprofMux(), ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = a.pprofSrv.Serve(a.ln.pprof) }()
		log.Info("serving Go profiles", "module", "main", "addr", a.ln.pprof.Addr().String())
	}
	return nil
}

// stopHTTP stops accepting and waits (bounded) for requests in flight.
func (a *app) stopHTTP() {
	if a.metricsSrv != nil {
		_ = a.metricsSrv.Close()
	}
	if a.pprofSrv != nil {
		_ = a.pprofSrv.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if err := a.srv.Shutdown(ctx); err != nil {
		_ = a.srv.Close()
	}
}

// serveOn serves srv on ln until it is closed.
func serveOn(srv *http.Server, ln net.Listener) error {
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func (a *app) serveHTTP() error {
	var err error
	if a.cfg.TLS.Cert != "" {
		a.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		err = a.srv.ServeTLS(a.ln.http, a.cfg.TLS.Cert, a.cfg.TLS.Key)
	} else {
		err = a.srv.Serve(a.ln.http)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

func (a *app) routes() http.Handler {
	cfg := a.cfg
	mux := http.NewServeMux()
	if cfg.Metrics.Listen == "" {
		mux.Handle("/metrics", metricsAuth(cfg.Metrics.BearerToken, a.metrics.Handler()))
	}
	mux.Handle("/api/", api.New(api.Config{
		Version:        Version,
		Mode:           cfg.Media.Mode,
		Token:          cfg.Auth.Token,
		Started:        a.started,
		Preflight:      a.pf,
		Sessions:       a.sig,
		Stream:         streamInfo{a},
		TURN:           turnInfo{a},
		Paths:          a.pathStatuses,
		Recordings:     a.recordStats,
		RuntimeState:   func() string { return a.state.Load().(string) },
		StartupDone:    a.startupDone.Load,
		Components:     a.components,
		Events:         a.bus,
		Snapshot:       a.snapshot,
		Source:         cfg.PublicSource(),
		SourceKind:     cfg.SourceKind(),
		SourceRemote:   cfg.SourceKind() == "rtsp" || cfg.SourceKind() == "url",
		HTTPPort:       cfg.HTTP.Port,
		AllowedOrigins: cfg.Auth.AllowedOrigins,
		Loop:           cfg.Media.Loop,
		RecordDir:      cfg.Media.RecordDir,
		Intelligence:   func() api.Intelligence { return a.intelligenceOf(defaultPath) },
		HTTPHost:       cfg.HTTP.Host,
		TLS:            cfg.TLS.Cert != "",
		TURNEnabled:    cfg.TURN.Enabled,
		TURNHost:       a.advertisedHost(),
		TURNPort:       cfg.TURN.Port,
		STUNURLs:       cfg.STUN.URLs,
	}))
	signal := a.signalAuth(a.sig.Handler())
	for _, p := range []string{"/whep", "/whep/", "/whip", "/whip/"} {
		mux.Handle(p, signal)
	}
	sym := a.symple.Load()
	mux.Handle("/ws", sym)
	files, err := web.FS(cfg.WebRoot)
	if err != nil {
		a.log.Warn("web root unusable; serving the embedded UI", "module", "web", "err", err)
		files, _ = web.FS("")
	}
	ui := web.Handler(files)
	// Some Symple clients connect to the bare origin: upgrades of / go to
	// the WebSocket server, everything else to the UI.
	// /{path}/whep and /{path}/whip go to the session layer, /{path}/ to
	// the UI (which reads the path from the URL).
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" && isUpgrade(r) {
			sym.ServeHTTP(w, r)
			return
		}
		if _, _, _, ok := signaling.ParseURL(r.URL.Path); ok {
			signal.ServeHTTP(w, r)
			return
		}
		if rest, ok := a.pathUI(r.URL.Path); ok {
			if rest == "" {
				http.Redirect(w, r, r.URL.Path+"/", http.StatusMovedPermanently)
				return
			}
			r2 := r.Clone(r.Context())
			r2.URL.Path = rest
			ui.ServeHTTP(w, r2)
			return
		}
		ui.ServeHTTP(w, r)
	}))
	rec := a.recordingHandler()
	arts := a.artifactRoutes()
	if rec == nil && len(arts) == 0 {
		return mux
	}
	opts := recordings.HandlerOptions{Token: cfg.Auth.Token, AllowedOrigins: cfg.Auth.AllowedOrigins}
	artHandlers := make([]http.Handler, len(arts))
	for i, x := range arts {
		artHandlers[i] = x.Handler(opts)
	}
	// The recordings routes see the raw path (ServeMux would redirect a
	// path with ".." instead of refusing it). Snapshots and clips first:
	// they claim only /recordings/{snapshots,clips}/<path>/<name>.
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i, x := range arts {
			if x.HandlesPath(r.URL.Path) {
				artHandlers[i].ServeHTTP(w, r)
				return
			}
		}
		if rec != nil && recordings.HandlesPath(r.URL.Path) {
			rec.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// withToken protects WHEP/WHIP. CORS preflights stay open (browsers send
// them without credentials), but an unauthenticated preflight must not
// receive the TURN credentials the WHEP handler advertises in Link headers.
func withToken(token string, next http.Handler) http.Handler {
	protected := api.RequireToken(token, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodOptions {
			if token != "" && !api.TokenOK(token, api.RequestToken(r)) {
				w = &noLinkWriter{ResponseWriter: w}
			}
			next.ServeHTTP(w, r)
			return
		}
		protected.ServeHTTP(w, r)
	})
}

// noLinkWriter drops Link headers (ICE servers with credentials).
type noLinkWriter struct {
	http.ResponseWriter
	done bool
}

func (w *noLinkWriter) WriteHeader(code int) {
	if !w.done {
		w.Header().Del("Link")
		w.done = true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *noLinkWriter) Write(b []byte) (int, error) {
	if !w.done {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// advertisedHost is the address browsers should use for TURN/STUN: the
// external IP, else a specific bind host; "" lets /api/config use the host
// the browser reached us by.
func (a *app) advertisedHost() string {
	if a.cfg.TURN.ExternalIP != "" {
		return a.cfg.TURN.ExternalIP
	}
	if !config.IsWildcardHost(a.cfg.HTTP.Host) {
		return a.cfg.HTTP.Host
	}
	return ""
}

// iceServers are advertised in WHEP Link headers when the host is known.
func (a *app) iceServers() []webrtc.ICEServer {
	host := a.advertisedHost()
	if !a.cfg.TURN.Enabled || a.turn == nil || host == "" {
		return nil
	}
	user, cred := a.turn.Credentials()
	hp := hostPort(host, a.cfg.TURN.Port)
	return []webrtc.ICEServer{
		{URLs: []string{"stun:" + hp}},
		{URLs: []string{"turn:" + hp + "?transport=udp", "turn:" + hp + "?transport=tcp"}, Username: user, Credential: cred},
	}
}

func (a *app) turnConfig() turn.Config {
	cfg := a.cfg
	return turn.Config{
		Realm:           cfg.TURN.Realm,
		Secret:          cfg.TURN.Secret,
		UsernameSuffix:  cfg.TURN.Username,
		RelayIP:         relayIP(cfg),
		RelayBindIP:     net.ParseIP(bindIPv4(cfg.HTTP.Host)),
		CredentialTTL:   time.Duration(cfg.TURN.CredentialTTLSeconds) * time.Second,
		AllowLocalRelay: cfg.TURN.AllowLocalRelay,
		OwnMediaAddrs:   ownMediaAddrs(cfg),
	}
}

func bindIPv4(host string) string {
	if config.IsWildcardHost(host) {
		return "0.0.0.0"
	}
	if host == "localhost" {
		return "127.0.0.1"
	}
	return host
}

// relayIP is the address TURN puts in XOR-RELAYED-ADDRESS: externalIp, the
// bind host, or the primary interface for a wildcard bind.
func relayIP(cfg config.Config) net.IP {
	if ip := net.ParseIP(cfg.TURN.ExternalIP); ip != nil && ip.To4() != nil {
		return ip
	}
	if !config.IsWildcardHost(cfg.HTTP.Host) {
		return net.ParseIP(bindIPv4(cfg.HTTP.Host))
	}
	if ip := primaryIPv4(); ip != nil {
		return ip
	}
	return net.IPv4(127, 0, 0, 1)
}

func primaryIPv4() net.IP {
	ifs, _ := net.Interfaces()
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, _ := ifc.Addrs()
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLinkLocalUnicast() {
				return ipn.IP.To4()
			}
		}
	}
	return nil
}

// ownMediaAddrs are this server's WebRTC media endpoints, which the TURN
// relay may always reach (and, on those IPs, nothing else).
func ownMediaAddrs(cfg config.Config) []netip.AddrPort {
	port := uint16(cfg.WebRTC.Port)
	var out []netip.AddrPort
	add := func(s string) {
		if ip, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.AddrPortFrom(ip.Unmap(), port))
		}
	}
	for _, ip := range cfg.WebRTC.PublicIPs {
		add(ip)
	}
	if !config.IsWildcardHost(cfg.HTTP.Host) {
		add(bindIPv4(cfg.HTTP.Host))
		return out
	}
	addrs, _ := net.InterfaceAddrs()
	for _, ad := range addrs {
		if ipn, ok := ad.(*net.IPNet); ok {
			add(ipn.IP.String())
		}
	}
	return out
}

// sourceCheck is the live `source` check: pass while media flows, warn while
// reconnecting within the grace period, fail past it.
func (a *app) sourceCheck() (preflight.Check, []string) {
	c := preflight.Check{Name: preflight.CheckSource}
	if a.cfg.Media.Mode != "stream" {
		c.Result, c.Detail = preflight.Pass, fmt.Sprintf("Source not required in %s mode", a.cfg.Media.Mode)
		if p := a.paths.Path(defaultPath); p != nil && p.Spec().Publish {
			if p.Status().Publisher {
				c.Detail += "; a publisher is live on path " + defaultPath
			} else {
				c.Detail += "; waiting for a publisher on path " + defaultPath
			}
		}
		return c, nil
	}
	if a.srcErr != nil {
		c.Result, c.Detail = preflight.Fail, config.RedactURL(a.srcErr.Error())
		return c, nil
	}
	if a.src == nil || a.sup == nil {
		c.Result, c.Detail = preflight.Fail, "Source not started"
		return c, nil
	}
	warns := a.sourceWarnings()
	desc := a.src.Kind() + " source " + a.src.String()
	if p := a.paths.Path(defaultPath); p != nil && p.Spec().OnDemand && p.State() == paths.StateIdle {
		c.Result, c.Detail = preflight.Pass, "On demand: "+desc+" connects at the first viewer"
		return c, warns
	}
	st := a.sup.Status()
	switch st.State {
	case media.SourceUp:
		c.Result = preflight.Pass
		c.Detail = fmt.Sprintf("Streaming from %s (%.0f fps)", desc, a.stream.Stats().FPS)
		if v, w := videoSummary(a.stream, renditionsConfig(a.cfg)); v != "" {
			c.Detail += ": " + v
			if w != "" {
				warns = append(warns, w)
			}
		}
	case media.SourceReconnecting:
		since := time.Since(st.Since).Round(time.Second)
		if !st.EverUp {
			c.Result, c.Detail = preflight.Fail, joinNonEmpty(fmt.Sprintf("%s has not delivered media yet (retrying in %s)", desc, st.RetryIn.Round(100*time.Millisecond)), st.LastError)
		} else if st.Failed {
			c.Result, c.Detail = preflight.Fail, joinNonEmpty(fmt.Sprintf("%s unavailable for %s", desc, since), st.LastError)
		} else {
			c.Result, c.Detail = preflight.Warn, joinNonEmpty(fmt.Sprintf("Reconnecting to %s (down for %s)", desc, since), st.LastError)
		}
	case media.SourceEnded:
		c.Result, c.Detail = preflight.Warn, desc+" ended (loop is off); nothing left to stream"
	case media.SourceStopped:
		c.Result, c.Detail = preflight.Fail, joinNonEmpty(desc+" stopped", st.LastError)
	default:
		c.Result, c.Detail = preflight.Fail, joinNonEmpty("Connecting to "+desc, st.LastError)
	}
	return c, warns
}

// startBackground starts the loops that outlive startup: the readiness
// watch (re-evaluates live checks every second so edges are logged and
// published when they happen, not only when a probe asks) and the outbound
// health-check pings.
func (a *app) startBackground() {
	ctx, cancel := context.WithCancel(context.Background())
	a.bgCancel = cancel
	onChange := func(r preflight.Report) {
		if r.Ready {
			a.log.Info("ready", "module", "preflight", "status", r.Status)
		} else {
			a.log.Warn("not ready", "module", "preflight", "failing", r.Failing())
		}
		a.readinessEvent(r)
	}
	a.pf.OnChange(onChange)
	// The state at startup (later edges come from Poll). A source still
	// connecting is expected here, so that is info, not a warning.
	if r := a.pf.Report(); r.Ready {
		onChange(r)
	} else {
		a.log.Info("not ready yet", "module", "preflight", "waiting_for", r.Failing())
		a.readinessEvent(r)
	}
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		t := time.NewTicker(time.Second)
		defer t.Stop()
		refusals := map[string]uint64{}
		for {
			a.pf.Poll()
			a.turnRefusalEvents(refusals)
			select {
			case <-t.C:
			case <-a.pollNow:
			case <-ctx.Done():
				return
			}
		}
	}()
	a.bg.Add(1)
	go func() {
		defer a.bg.Done()
		a.ups.run(ctx, 5*time.Second)
	}()
	if a.cfg.HealthCheckURL != "" {
		p := healthping.New(healthping.Config{
			URL:      a.cfg.HealthCheckURL,
			Interval: time.Duration(a.cfg.HealthCheck.IntervalSeconds) * time.Second,
			Logs:     a.logTail,
		}, logging.Module(a.log, "healthping"))
		a.bg.Add(1)
		go func() {
			defer a.bg.Done()
			p.Run(ctx, func() bool { return a.pf.Report().Ready })
		}()
	}
}

// shutdown drains: readiness 503 first (health still 200), then hang up
// sessions, stop the source, close TURN and HTTP, each step bounded.
func (a *app) shutdown(hurry context.Context) {
	a.state.Store("draining")
	a.pf.Set(preflight.CheckShutdown, preflight.Fail, "Server is shutting down")
	a.bus.Publish(events.ShutdownStarted, map[string]any{"drainSeconds": a.cfg.HTTP.DrainSeconds})
	if d := time.Duration(a.cfg.HTTP.DrainSeconds) * time.Second; d > 0 {
		select {
		case <-time.After(d):
		case <-hurry.Done():
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a.close(ctx)
}

// close stops every component that was started, in reverse order.
func (a *app) close(ctx context.Context) { a.run.Stop(ctx) }

// streamInfo adapts the media stream to the api's StreamInfo.
type streamInfo struct{ a *app }

func (s streamInfo) StreamDetails() api.StreamDetails {
	a := s.a
	var d api.StreamDetails
	if a.stream == nil {
		return d
	}
	st := a.stream.Stats()
	d.FPS = float64(int(st.FPS*10)) / 10
	d.Viewers = st.Subscribers
	d.Packets, d.Bytes = st.PacketsIn, st.BytesIn
	d.InvalidVideo, d.LastInvalidVideo = st.InvalidVideo, st.LastInvalidVideo
	if st.Tracks.Video != nil {
		d.Video = media.CodecH264
	}
	if st.Tracks.Audio != nil {
		d.Audio = st.Tracks.Audio.Codec
	}
	for _, v := range st.Viewers {
		d.Drops = append(d.Drops, api.ViewerDrops{ID: v.ID, Sent: v.Sent, Dropped: v.Dropped})
	}
	if a.sup != nil {
		ss := a.sup.Status()
		since := ss.Since
		d.State, d.StateSince, d.LastError, d.Reconnects = string(ss.State), &since, ss.LastError, ss.Reconnects
	} else if p := a.paths.Path(defaultPath); p != nil {
		d.State = string(p.State()) // a publish path: waiting-publisher | publishing
	}
	if a.src != nil {
		d.Warnings = a.sourceWarnings()
	}
	return d
}

// turnInfo adapts the TURN server to the api's TURNInfo.
type turnInfo struct{ a *app }

func (t turnInfo) Credentials() (string, string) {
	if t.a.turn == nil {
		return "", ""
	}
	return t.a.turn.Credentials()
}

func (t turnInfo) TURNStats() api.TURNStats {
	if t.a.turn == nil {
		return api.TURNStats{Refusals: map[string]uint64{}}
	}
	s := t.a.turn.Stats()
	r := s.Refusals
	if r == nil {
		r = map[string]uint64{}
	}
	return api.TURNStats{Allocations: s.Allocations, AllocationsTotal: s.AllocationsTotal, Refusals: r}
}
