// Package paths owns the named paths of a server: each a pulled source
// (shared by every path that names the same source) or a publisher slot,
// with its stream, its policy (who may read and publish) and its state. It
// implements signaling.Router: viewers and publishers find their stream
// here, and a first viewer of an on-demand path starts its source.
package paths

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/renditions"
)

// State of a path as shown in /api/status and events.
type State string

const (
	StateIdle             State = "idle"              // on-demand source not running (no readers)
	StateStarting         State = "starting"          // source connecting, no media yet
	StateUp               State = "up"                // media flowing
	StateReconnecting     State = "reconnecting"      // source failed, retrying within the grace period
	StateDown             State = "down"              // source failing past the grace period, or ended
	StateWaitingPublisher State = "waiting-publisher" // publish path without a publisher
	StatePublishing       State = "publishing"        // publish path with a live publisher
)

// Defaults of Spec.
const (
	DefaultStartTimeout = 10 * time.Second
	DefaultCloseAfter   = 10 * time.Second
)

// Spec is one path's configuration, as the config package resolves it.
// Source is the feed key: paths with the same Source share one
// connection; the built-in stream is "builtin". Zero timeouts take
// DefaultStartTimeout and DefaultCloseAfter.
type Spec = config.PathSpec

// Config of a path set.
type Config struct {
	// Paths to serve; names must be unique.
	Paths []Spec
	// NewSource builds the source of a pulled path. It returns warnings
	// (e.g. "audio transcoded") shown in status. Required when a path has
	// a Source.
	NewSource func(Spec) (media.Source, []string, error)
	// Supervisor configures every source's supervisor (OnStateChange is
	// set by the path set).
	Supervisor media.SupervisorConfig
	// OnState, when set, is told about every path state change (from the
	// goroutine that caused it; must not block).
	OnState func(path string, state State, detail string)
	// Renditions configures the transcodes for viewers that cannot play a
	// path's video as it is (see package renditions).
	Renditions renditions.Config
}

// Set is the running set of paths.
type Set struct {
	cfg  Config
	log  *slog.Logger
	log2 *slog.Logger // for the streams of dynamic paths

	mu        sync.Mutex // guards everything below (paths change with templates)
	closed    bool
	paths     map[string]*Path
	order     []*Path
	feeds     []*feed
	bySource  map[string]*feed
	templates []template
	dynamic   int // paths created from templates, now
	// rends are the renditions of each stream that has had a viewer
	// needing one (created on first need).
	rends map[*media.Stream]*renditions.Set
}

// template is a "~regexp" path: a requested name it matches becomes a
// path of its own, on demand.
type template struct {
	re   *regexp.Regexp
	spec Spec
}

// MaxDynamicPaths bounds the paths created from templates at once: a
// flood of made-up names cannot grow the set without bound (paths whose
// source never delivered are removed when they close).
const MaxDynamicPaths = 256

// Path is one named path.
type Path struct {
	set  *Set
	spec Spec
	feed *feed // pulled paths; nil for publish paths
	st   *media.Stream

	dynamic bool // created from a template

	mu        sync.Mutex
	readers   int
	publisher bool
	state     State
}

// feed is one pulled source shared by the paths that name it.
type feed struct {
	set      *Set
	key      string
	src      media.Source
	warnings []string
	st       *media.Stream
	sv       *media.Supervisor
	onDemand bool // every path using it is on demand
	timeout  time.Duration
	after    time.Duration
	users    []*Path

	mu          sync.Mutex
	readers     int
	running     bool
	activations int
	activeSince time.Time
	cancel      context.CancelFunc
	done        chan struct{}
	idle        *time.Timer
	stopping    chan struct{} // closed when a stop in progress has finished
}

// New builds the paths. Sources are built (not started): a source that
// cannot be built is an error naming its path.
func New(cfg Config, log *slog.Logger) (*Set, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Set{cfg: cfg, log: log.With("module", "paths"), log2: log, paths: map[string]*Path{}, bySource: map[string]*feed{},
		rends: map[*media.Stream]*renditions.Set{}}
	for _, sp := range cfg.Paths {
		if sp.Name == "" {
			return nil, errors.New("paths: a path has no name")
		}
		if sp.Template {
			re, err := regexp.Compile(strings.TrimPrefix(sp.Name, "~"))
			if err != nil || sp.Source == "" {
				return nil, fmt.Errorf("paths: template %q needs a regular expression and a source", sp.Name)
			}
			if cfg.NewSource == nil {
				return nil, errors.New("paths: Config.NewSource is required for pulled paths")
			}
			s.templates = append(s.templates, template{re: re, spec: withDefaults(sp)})
			continue
		}
		if _, dup := s.paths[sp.Name]; dup {
			return nil, fmt.Errorf("paths: duplicate path %q", sp.Name)
		}
		p, err := s.newPath(withDefaults(sp))
		if err != nil {
			return nil, err
		}
		s.paths[sp.Name] = p
		s.order = append(s.order, p)
	}
	return s, nil
}

func withDefaults(sp Spec) Spec {
	if sp.StartTimeout <= 0 {
		sp.StartTimeout = DefaultStartTimeout
	}
	if sp.CloseAfter <= 0 {
		sp.CloseAfter = DefaultCloseAfter
	}
	return sp
}

// newPath builds a path (s.mu held, or during New): a pulled path joins
// the feed of its source, creating it if needed.
func (s *Set) newPath(sp Spec) (*Path, error) {
	p := &Path{set: s, spec: sp}
	switch {
	case sp.Source != "" && sp.Publish:
		return nil, fmt.Errorf("paths: path %q has both a source and publish", sp.Name)
	case sp.Source != "":
		f := s.bySource[sp.Source]
		if f == nil {
			if s.cfg.NewSource == nil {
				return nil, errors.New("paths: Config.NewSource is required for pulled paths")
			}
			src, warns, err := s.cfg.NewSource(sp)
			if err != nil {
				return nil, fmt.Errorf("path %q: %w", sp.Name, err)
			}
			f = &feed{set: s, key: sp.Source, src: src, warnings: warns, onDemand: true,
				st: media.NewStream(media.StreamConfig{Name: sp.Name}, s.log2)}
			svc := s.cfg.Supervisor
			svc.OnStateChange = f.sourceState
			f.sv = media.NewSupervisor(f.src, f.st, svc, s.log2)
			s.bySource[sp.Source] = f
			s.feeds = append(s.feeds, f)
		}
		f.mu.Lock()
		f.users = append(f.users, p)
		f.onDemand = f.onDemand && sp.OnDemand
		f.timeout = max(f.timeout, sp.StartTimeout)
		f.after = max(f.after, sp.CloseAfter)
		running := f.running
		f.mu.Unlock()
		p.feed, p.st = f, f.st
		p.state = StateStarting
		if sp.OnDemand && !running {
			p.state = StateIdle
		}
		if !f.onDemand {
			// An always-on source shared with on-demand paths runs for them too.
			for _, u := range f.users {
				u.mu.Lock()
				u.state = StateStarting
				u.mu.Unlock()
			}
		}
	case sp.Publish:
		p.st = media.NewStream(media.StreamConfig{Name: sp.Name}, s.log2)
		// A publisher brings H.264 and Opus: declared up front so viewers
		// can join (and wait) before the first publisher arrives.
		p.st.SetTracks(PublisherTracks())
		p.state = StateWaitingPublisher
	default:
		return nil, fmt.Errorf("paths: path %q has neither a source nor publish", sp.Name)
	}
	return p, nil
}

// PublisherTracks is what a publish path carries: H.264 video (parameter
// sets learned in-band) and Opus audio.
func PublisherTracks() media.Tracks {
	return media.Tracks{Video: &media.VideoParams{},
		Audio: &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}}
}

// Start starts every always-on source.
func (s *Set) Start() {
	s.mu.Lock()
	feeds := append([]*feed(nil), s.feeds...)
	s.mu.Unlock()
	for _, f := range feeds {
		if !f.onDemand {
			f.mu.Lock()
			f.startLocked()
			f.mu.Unlock()
		}
	}
}

// Close stops every source, waits for them and closes the streams. It is
// idempotent.
func (s *Set) Close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	feeds := append([]*feed(nil), s.feeds...)
	order := append([]*Path(nil), s.order...)
	rends := s.rends
	s.rends = map[*media.Stream]*renditions.Set{}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, rs := range rends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rs.Close()
		}()
	}
	for _, f := range feeds {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f.stop()
		}()
	}
	wg.Wait()
	for _, p := range order {
		p.st.Close()
	}
}

func (s *Set) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Path returns the path of that name, or nil.
func (s *Set) Path(name string) *Path {
	if s == nil { // a server that has not built its paths (--doctor)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.paths[name]
}

// List returns every path in configuration order.
func (s *Set) List() []*Path {
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*Path(nil), s.order...)
}

// Names returns the path names, sorted.
func (s *Set) Names() []string {
	list := s.List()
	out := make([]string, 0, len(list))
	for _, p := range list {
		out = append(out, p.spec.Name)
	}
	sort.Strings(out)
	return out
}

func (s *Set) lookup(name string) (*Path, error) {
	return s.hold(name, false)
}

// hold finds path name, creating it from a matching template, and with
// reader counts one more reader on it before s.mu is released (so an
// idle dynamic path cannot be removed under a new reader).
func (s *Set) hold(name string, reader bool) (*Path, error) {
	if name == "" {
		name = "main"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	p := s.paths[name]
	if p == nil {
		var err error
		if p, err = s.fromTemplateLocked(name); err != nil {
			return nil, err
		}
	}
	if reader && p.spec.Read {
		p.addReader(1)
	}
	return p, nil
}

// fromTemplateLocked creates path name from the first template matching
// it (s.mu held).
func (s *Set) fromTemplateLocked(name string) (*Path, error) {
	if !config.ValidPathName(name) {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	for _, t := range s.templates {
		m := t.re.FindStringSubmatchIndex(name)
		if m == nil {
			continue
		}
		if s.dynamic >= MaxDynamicPaths {
			return nil, fmt.Errorf("%w: too many paths from templates (%d)", ErrUnavailable, MaxDynamicPaths)
		}
		sp := t.spec
		sp.Name, sp.Template, sp.OnDemand = name, false, true
		sp.Source = string(t.re.ExpandString(nil, t.spec.Source, name, m))
		p, err := s.newPath(sp)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		p.dynamic = true
		s.paths[name] = p
		s.order = append(s.order, p)
		s.dynamic++
		s.log.Info("path created from a template", "path", name, "template", t.spec.Name,
			"source", config.RedactSource(sp.Source))
		return p, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrNotFound, name)
}

// Known reports whether name is a configured path or matches a template.
func (s *Set) Known(name string) bool {
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.paths[name] != nil {
		return true
	}
	if !config.ValidPathName(name) {
		return false
	}
	for _, t := range s.templates {
		if t.re.MatchString(name) {
			return true
		}
	}
	return false
}

// dropDynamic removes the dynamic paths of f that have no reader and whose
// source never delivered (a made-up name, a camera the origin lacks);
// paths that did deliver stay, idle, for their next viewer.
func (s *Set) dropDynamic(f *feed) {
	if f.sv.Status().EverUp {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	keep := f.users[:0:0]
	for _, p := range f.users {
		p.mu.Lock()
		idle := p.readers == 0
		p.mu.Unlock()
		if !p.dynamic || !idle {
			keep = append(keep, p)
			continue
		}
		delete(s.paths, p.spec.Name)
		for i, q := range s.order {
			if q == p {
				s.order = append(s.order[:i], s.order[i+1:]...)
				break
			}
		}
		s.dynamic--
		if rs := s.rends[p.st]; rs != nil {
			delete(s.rends, p.st)
			rs.Close() // never delivered: nothing runs
		}
		p.st.Close()
	}
	f.mu.Lock()
	f.users = keep
	empty := len(keep) == 0 && !f.running
	f.mu.Unlock()
	if empty {
		delete(s.bySource, f.key)
		for i, g := range s.feeds {
			if g == f {
				s.feeds = append(s.feeds[:i], s.feeds[i+1:]...)
				break
			}
		}
	}
}

// View implements signaling.Router: it returns the stream of path name
// for a new viewer, starting an on-demand source and waiting (bounded by
// the start timeout and ctx) for its first keyframe; a viewer arriving
// while an always-on source is still starting waits the same way.
func (s *Set) View(ctx context.Context, name string) (*media.Stream, func(), error) {
	p, err := s.hold(name, true)
	if err != nil {
		return nil, nil, err
	}
	if !p.spec.Read {
		return nil, nil, fmt.Errorf("%w: path %q does not accept viewers", ErrNotAllowed, p.spec.Name)
	}
	if p.feed != nil {
		if err := p.feed.acquire(ctx); err != nil {
			p.addReader(-1)
			return nil, nil, err
		}
	}
	var once sync.Once
	return p.st, func() {
		once.Do(func() {
			p.addReader(-1)
			if p.feed != nil {
				p.feed.release()
			}
		})
	}, nil
}

// Publish implements signaling.Router: it claims the publisher slot of
// path name.
func (s *Set) Publish(_ context.Context, name, token string) (*media.Stream, func(), error) {
	p, err := s.lookup(name)
	if err != nil {
		return nil, nil, err
	}
	if !p.spec.Publish {
		return nil, nil, fmt.Errorf("%w: path %q does not accept publishers", ErrNotAllowed, p.spec.Name)
	}
	if want := p.spec.PublishToken; want != "" && subtle.ConstantTimeCompare([]byte(token), []byte(want)) != 1 {
		return nil, nil, fmt.Errorf("%w: publishing on %q needs its publish token", ErrUnauthorized, p.spec.Name)
	}
	p.mu.Lock()
	if p.publisher {
		p.mu.Unlock()
		return nil, nil, fmt.Errorf("%w: %q", ErrBusy, p.spec.Name)
	}
	p.publisher = true
	p.mu.Unlock()
	p.setState(StatePublishing, "")
	var once sync.Once
	return p.st, func() {
		once.Do(func() {
			p.mu.Lock()
			p.publisher = false
			p.mu.Unlock()
			p.setState(StateWaitingPublisher, "publisher left")
		})
	}, nil
}

// PublishTokenRequired reports whether publishing on path name needs the
// path's own token (which then stands in for auth.token on WHIP).
func (s *Set) PublishTokenRequired(name string) bool {
	if name == "" {
		name = "main"
	}
	p := s.Path(name)
	return p != nil && p.spec.PublishToken != ""
}

func (p *Path) addReader(d int) {
	p.mu.Lock()
	p.readers += d
	p.mu.Unlock()
}

func (p *Path) setState(st State, detail string) {
	p.mu.Lock()
	changed := p.state != st
	p.state = st
	p.mu.Unlock()
	if changed {
		if detail != "" {
			p.set.log.Info("path state changed", "path", p.spec.Name, "state", string(st), "detail", detail)
		} else {
			p.set.log.Info("path state changed", "path", p.spec.Name, "state", string(st))
		}
		if f := p.set.cfg.OnState; f != nil {
			f(p.spec.Name, st, detail)
		}
	}
}

// Name is the path's name.
func (p *Path) Name() string { return p.spec.Name }

// Spec is the path's configuration (defaults applied).
func (p *Path) Spec() Spec { return p.spec }

// Stream is the path's stream (shared with the paths of the same source).
func (p *Path) Stream() *media.Stream { return p.st }

// Source is the path's source (nil for a publish path).
func (p *Path) Source() media.Source {
	if p.feed == nil {
		return nil
	}
	return p.feed.src
}

// Supervisor is the path's source supervisor (nil for a publish path).
func (p *Path) Supervisor() *media.Supervisor {
	if p.feed == nil {
		return nil
	}
	return p.feed.sv
}

// Warnings are the source's warnings (chosen at build time and reported
// by the source while it runs).
func (p *Path) Warnings() []string {
	if p.feed == nil {
		return nil
	}
	out := append([]string(nil), p.feed.warnings...)
	if w, ok := p.feed.src.(media.Warner); ok {
		out = append(out, w.Warnings()...)
	}
	return out
}

// Status is a path's snapshot for /api/status.
type Status struct {
	Name       string  `json:"name"`
	Source     string  `json:"source,omitempty"`
	SourceKind string  `json:"sourceKind,omitempty"`
	State      State   `json:"state"`
	OnDemand   bool    `json:"onDemand"`
	FPS        float64 `json:"fps"`
	Viewers    int     `json:"viewers"`
	Publisher  bool    `json:"publisher"`
	Recording  bool    `json:"recording"`
	// Video is what the path's video is, from its bitstream (nil before
	// the first picture); Audio the codec viewers get.
	Video *media.VideoInfo `json:"video,omitempty"`
	Audio string           `json:"audio,omitempty"`
	// Renditions are the running transcodes of the path's stream.
	Renditions []renditions.Stats `json:"renditions"`
	BytesIn    uint64             `json:"bytesIn"`
	Required   bool               `json:"required"`
	Read       bool               `json:"read"`
	Publish    bool               `json:"publish"`
	// Activations counts on-demand source starts.
	Activations int `json:"activations,omitempty"`
	// InvalidVideo counts the video access units the source sent that no
	// decoder could decode (dropped; video resumed at the next keyframe);
	// LastInvalidVideo says why the latest was.
	InvalidVideo     uint64 `json:"invalidVideo"`
	LastInvalidVideo string `json:"lastInvalidVideo,omitempty"`
}

// Status snapshots the path.
func (p *Path) Status() Status {
	st := p.st.Stats()
	p.mu.Lock()
	s := Status{Name: p.spec.Name, Source: config.RedactSource(p.spec.Source), SourceKind: p.spec.SourceKind,
		State: p.state, OnDemand: p.spec.OnDemand, Viewers: p.readers, Publisher: p.publisher,
		Renditions: []renditions.Stats{}, Required: p.spec.Required, Read: p.spec.Read, Publish: p.spec.Publish}
	p.mu.Unlock()
	s.State = p.State()
	s.FPS = float64(int(st.FPS*10)) / 10
	s.BytesIn = st.BytesIn
	s.InvalidVideo, s.LastInvalidVideo = st.InvalidVideo, st.LastInvalidVideo
	if vi := p.st.VideoInfo(); vi.Codec != "" {
		s.Video = &vi
	}
	if st.Tracks.Audio != nil {
		s.Audio = st.Tracks.Audio.Codec
	}
	if rs := p.set.renditionsOf(p.st); len(rs) > 0 {
		s.Renditions = rs
	}
	if p.feed != nil {
		p.feed.mu.Lock()
		s.Activations = p.feed.activations
		p.feed.mu.Unlock()
	}
	return s
}

// Rendition implements signaling.Renditions: the stream of st (the stream
// of path) transcoded to codec, shared by every viewer of st needing it.
func (s *Set) Rendition(ctx context.Context, path string, st *media.Stream, codec string) (*media.Stream, func(), error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, nil, ErrClosed
	}
	rs := s.rends[st]
	if rs == nil {
		rs = renditions.New(path, st, s.cfg.Renditions, s.log2)
		s.rends[st] = rs
	}
	s.mu.Unlock()
	return rs.Acquire(ctx, codec)
}

// renditionsOf returns the running renditions of st.
func (s *Set) renditionsOf(st *media.Stream) []renditions.Stats {
	s.mu.Lock()
	rs := s.rends[st]
	s.mu.Unlock()
	if rs == nil {
		return nil
	}
	return rs.Stats()
}

// State is the path's current state. A source reconnecting past the
// grace period is down.
func (p *Path) State() State {
	p.mu.Lock()
	st := p.state
	p.mu.Unlock()
	if st == StateReconnecting && p.feed != nil && p.feed.sv.Status().Failed {
		st = StateDown
	}
	return st
}

// acquire counts a reader of the feed, starting it when on demand, and
// waits for a keyframe when the source has not delivered one since it
// started.
func (f *feed) acquire(ctx context.Context) error {
	f.mu.Lock()
	f.readers++
	if f.idle != nil {
		f.idle.Stop()
		f.idle = nil
	}
	stopping := f.stopping
	f.mu.Unlock()
	if stopping != nil {
		<-stopping // an idle close in progress finishes first
	}
	f.mu.Lock()
	if !f.running {
		if f.set.isClosed() {
			f.readers--
			f.mu.Unlock()
			return ErrClosed
		}
		f.startLocked()
	}
	since := f.activeSince
	f.mu.Unlock()
	if err := f.waitKeyframe(ctx, since); err != nil {
		f.release()
		return err
	}
	return nil
}

// waitKeyframe waits until the stream published a keyframe after since,
// the start timeout passes, or ctx ends.
func (f *feed) waitKeyframe(ctx context.Context, since time.Time) error {
	if keyframeSince(f.st, since) {
		return nil
	}
	deadline := time.NewTimer(f.timeout)
	defer deadline.Stop()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if keyframeSince(f.st, since) {
				return nil
			}
		case <-deadline.C:
			st := f.sv.Status()
			why := "no keyframe within " + f.timeout.String()
			if st.LastError != "" {
				why += ": " + st.LastError
			}
			return fmt.Errorf("%w: %s", ErrUnavailable, why)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release drops a reader; the last reader of an on-demand feed arms the
// idle timer.
func (f *feed) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.readers--
	if f.readers == 0 && f.onDemand && f.running {
		f.idle = time.AfterFunc(f.after, f.idleClose)
	}
}

func (f *feed) idleClose() {
	f.mu.Lock()
	if f.readers > 0 || !f.running || f.idle == nil {
		f.mu.Unlock()
		return
	}
	f.idle = nil
	wait := f.beginStopLocked()
	f.mu.Unlock()
	f.set.log.Info("closing idle on-demand source", "path", f.users[0].spec.Name, "idle", f.after)
	wait()
	f.set.dropDynamic(f)
}

// startLocked starts the supervisor (f.mu held).
func (f *feed) startLocked() {
	if f.running {
		return
	}
	if f.activations > 0 {
		f.st.Discontinuity() // the old run's cached pictures must not be served
	}
	f.activations++
	f.running = true
	f.activeSince = time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	done := f.done
	for _, p := range f.users {
		p.setState(StateStarting, "")
	}
	go func() {
		defer close(done)
		_ = f.sv.Run(ctx)
	}()
}

// stop stops the supervisor and waits for it.
func (f *feed) stop() {
	f.mu.Lock()
	if f.idle != nil {
		f.idle.Stop()
		f.idle = nil
	}
	if !f.running || f.stopping != nil {
		stopping := f.stopping
		f.mu.Unlock()
		if stopping != nil {
			<-stopping
		}
		return
	}
	wait := f.beginStopLocked()
	f.mu.Unlock()
	wait()
}

// beginStopLocked cancels the running supervisor (f.mu held) and returns
// the function that waits for it and marks the feed stopped. Readers
// arriving meanwhile wait on f.stopping and then start it again.
func (f *feed) beginStopLocked() func() {
	cancel, done := f.cancel, f.done
	stopping := make(chan struct{})
	f.stopping = stopping
	cancel()
	return func() {
		<-done
		f.mu.Lock()
		f.running = false
		f.stopping = nil
		f.mu.Unlock()
		close(stopping)
	}
}

// sourceState maps supervisor states onto the paths using the feed.
func (f *feed) sourceState(s media.SourceState, err error) {
	var st State
	detail := ""
	if err != nil {
		detail = err.Error()
	}
	switch s {
	case media.SourceStarting:
		st = StateStarting
	case media.SourceUp:
		st = StateUp
	case media.SourceReconnecting:
		st = StateReconnecting
		if ss := f.sv.Status(); ss.Failed {
			st = StateDown
		}
	case media.SourceEnded:
		st, detail = StateDown, "source ended"
	case media.SourceStopped:
		if f.onDemand {
			st = StateIdle
		} else {
			st = StateDown
		}
	default:
		return
	}
	for _, p := range f.users {
		p.setState(st, detail)
	}
}
