package app

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/icey/icey-server/api"
	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/preflight"
	"github.com/icey/icey-server/renditions"
	"github.com/icey/icey-server/signaling"
	"github.com/icey/icey-server/signaling/symple"
)

// defaultPath is the path the legacy single-source keys configure.
const defaultPath = signaling.DefaultPath

// buildPaths builds every path's source (a source that cannot be built is
// a startup error naming its path; the default path's error keeps the
// single-source wording) and the path set.
func (a *app) buildPaths() error {
	cfg, log := a.cfg, a.log
	specs := cfg.ResolvedPaths()
	built := map[string]media.Source{}
	warns := map[string][]string{}
	var out []paths.Spec
	build := func(sp paths.Spec) (media.Source, []string, error) {
		c := cfg
		c.Media.Source = sp.Source
		if sp.SourceKind == "builtin" {
			c.Media.Source = ""
		}
		return buildSource(c, logging.Module(log, "media").With("path", sp.Name))
	}
	for _, sp := range specs {
		if sp.Template {
			out = append(out, sp) // its paths' sources are built when asked for
			continue
		}
		if !sp.Publish && sp.Source == "" {
			sp.Source, sp.SourceKind = "builtin", "builtin" // the built-in test stream
		}
		if sp.Source != "" {
			if _, ok := built[sp.Source]; !ok {
				src, w, err := build(sp)
				if err != nil {
					if sp.Name == defaultPath {
						return err
					}
					return fmt.Errorf("path %q: %w", sp.Name, err)
				}
				built[sp.Source], warns[sp.Source] = src, w
			}
		}
		out = append(out, sp)
	}
	set, err := paths.New(paths.Config{
		Paths: out,
		NewSource: func(sp paths.Spec) (media.Source, []string, error) {
			if src, ok := built[sp.Source]; ok {
				return src, warns[sp.Source], nil
			}
			return build(sp) // a path created from a template
		},
		Supervisor: media.SupervisorConfig{GracePeriod: time.Duration(cfg.Media.SourceGraceSeconds) * time.Second},
		OnState:    a.pathState,
		// Renditions use media.video's bitrate when one is configured.
		Renditions: renditionsConfig(cfg),
	}, logging.Module(log, "media"))
	if err != nil {
		return err
	}
	a.paths = set
	if p := set.Path(defaultPath); p != nil {
		a.stream, a.src, a.sup = p.Stream(), p.Source(), p.Supervisor()
		a.srcWarnings = nil
		if a.src != nil {
			a.srcWarnings = warns[p.Spec().Source]
		}
	}
	return nil
}

// pathState is told every path state change: events, Symple notices and
// a readiness re-evaluation.
func (a *app) pathState(name string, st paths.State, detail string) {
	data := map[string]any{"path": name, "state": string(st)}
	if detail != "" {
		data["detail"] = config.RedactURL(detail)
	}
	a.bus.Publish(events.PathState, data)
	if name == defaultPath && a.src != nil {
		a.sourceEventPath(st, detail)
	}
	if r := a.recs.Load(); r != nil {
		r.follow(name, st)
	}
	if sym := a.symple.Load(); sym != nil {
		sym.NotifyPath(name, string(st), config.RedactURL(detail))
	}
	if a.paths != nil {
		if p := a.paths.Path(name); p != nil {
			l := a.log.With("module", "media", "path", name, "state", string(st))
			if src := p.Source(); src != nil {
				l = l.With("source", src.String())
			}
			if detail != "" && (st == paths.StateReconnecting || st == paths.StateDown) {
				l.Warn("path state changed", "err", config.RedactURL(detail))
			} else {
				l.Info("path state changed")
			}
		}
	}
	select {
	case a.pollNow <- struct{}{}:
	default:
	}
}

// sourceEventPath keeps the default path's source.* events.
func (a *app) sourceEventPath(st paths.State, detail string) {
	var s media.SourceState
	switch st {
	case paths.StateUp:
		s = media.SourceUp
	case paths.StateReconnecting:
		s = media.SourceReconnecting
	case paths.StateDown:
		if detail == "source ended" {
			s = media.SourceEnded
		} else {
			return // reported by the readiness edge
		}
	case paths.StateIdle:
		s = media.SourceStopped
	default:
		return
	}
	var err error
	if detail != "" && s == media.SourceReconnecting {
		err = fmt.Errorf("%s", detail)
	}
	a.sourceEvent(s, err)
}

// pathsCheck is the live `paths` check: every path other than the default
// one (which has the `source` check). A required path whose source is down
// fails readiness; any other path down only warns.
func (a *app) pathsCheck() (preflight.Check, []string) {
	c := preflight.Check{Name: preflight.CheckPaths, Result: preflight.Pass}
	if a.paths == nil {
		c.Detail = "No paths"
		return c, nil
	}
	var down, failing, warns []string
	n := 0
	rc := renditionsConfig(a.cfg)
	for _, p := range a.paths.List() {
		if p.Name() == defaultPath {
			continue
		}
		n++
		// Which viewers the path cannot serve without ffmpeg (the default
		// path's source check says it for the default path).
		if _, w := videoSummary(p.Stream(), rc); w != "" {
			warns = append(warns, "path "+p.Name()+": "+w)
		}
		st := p.State()
		sv := p.Supervisor()
		if sv == nil {
			continue
		}
		ss := sv.Status()
		bad := st == paths.StateDown || (st == paths.StateReconnecting && !ss.EverUp) ||
			(st == paths.StateStarting && ss.State == media.SourceReconnecting)
		if !bad {
			continue
		}
		msg := p.Name() + ": " + string(st)
		if ss.LastError != "" {
			msg += " (" + config.RedactURL(ss.LastError) + ")"
		}
		if p.Spec().Required {
			failing = append(failing, msg)
		} else {
			down = append(down, msg)
		}
	}
	if a.ups != nil {
		req, other := a.ups.down()
		failing = append(failing, req...)
		down = append(down, other...)
	}
	switch {
	case len(failing) > 0:
		c.Result, c.Detail = preflight.Fail, "Required path(s) down: "+strings.Join(failing, "; ")
		if len(down) > 0 {
			c.Detail += "; also down: " + strings.Join(down, "; ")
		}
	case len(down) > 0:
		c.Result, c.Detail = preflight.Warn, "Path(s) down: "+strings.Join(down, "; ")
	case n == 0:
		c.Detail = "Only the default path"
	default:
		c.Detail = fmt.Sprintf("%d more path(s) healthy", n)
	}
	return c, warns
}

// pathStatuses adapts the path set to /api/status's paths array.
func (a *app) pathStatuses() []api.PathStatus {
	if a.paths == nil {
		return nil
	}
	var out []api.PathStatus
	for _, p := range a.paths.List() {
		s := p.Status()
		ps := api.PathStatus{Name: s.Name, Source: s.Source, SourceKind: s.SourceKind,
			State: string(s.State), OnDemand: s.OnDemand, FPS: s.FPS, Viewers: s.Viewers,
			Publisher: s.Publisher, Recording: a.recordingOf(s.Name), Video: s.Video, Audio: s.Audio, Renditions: s.Renditions, BytesIn: s.BytesIn,
			Required: s.Required, InvalidVideo: s.InvalidVideo, LastInvalidVideo: s.LastInvalidVideo}
		if a.intel[s.Name] != nil {
			in := a.intelligenceOf(s.Name)
			ps.Intelligence = &in
		}
		out = append(out, ps)
	}
	return out
}

// symplePaths lists the Symple server peers: every path that can be read
// or published.
func (a *app) symplePaths() []symple.Path {
	var out []symple.Path
	for _, p := range a.paths.List() {
		sp := p.Spec()
		if sp.Read || sp.Publish {
			out = append(out, symple.Path{Name: sp.Name, Read: sp.Read, Publish: sp.Publish})
		}
	}
	return out
}

// signalAuth protects WHEP/WHIP with auth.token. A WHIP request on a path
// with its own publishToken is let through: the path's token, checked by
// the path set, is the credential there (narrower than auth.token: it can
// only publish on that path). CORS preflights stay open, but an
// unauthenticated preflight must not receive the TURN credentials the WHEP
// handler advertises in Link headers.
func (a *app) signalAuth(next http.Handler) http.Handler {
	protected := withToken(a.cfg.Auth.Token, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if kind, path, _, ok := signaling.ParseURL(r.URL.Path); ok && kind == signaling.KindWHIP &&
			a.paths.PublishTokenRequired(path) {
			next.ServeHTTP(w, r)
			return
		}
		protected.ServeHTTP(w, r)
	})
}

// pathUI reports whether p (a URL path) is /{path} or /{path}/... for a
// configured path, and returns the rest to serve from the UI.
func (a *app) pathUI(p string) (rest string, ok bool) {
	el := strings.SplitN(strings.TrimPrefix(p, "/"), "/", 2)
	if a.paths == nil || !a.paths.Known(el[0]) {
		return "", false
	}
	if len(el) == 1 {
		return "", true // /{path} redirects to /{path}/
	}
	return "/" + el[1], true
}

// renditionsConfig: the transcodes for viewers that cannot play a path's
// video take media.video.bitrate (when set) as their target bitrate.
func renditionsConfig(cfg config.Config) renditions.Config {
	_, _, _, bitrate := cfg.Media.VideoTarget()
	return renditions.Config{H264Bitrate: bitrate, VP8Bitrate: bitrate}
}
