package app

import (
	"context"

	"github.com/icey/icey-server/api"
	"net/http"
	"sync"
	"time"

	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/recordings"
)

// recorders runs one recorder per recording path, started while the path
// has media (a camera up, a publisher live) and stopped (the file
// finalized) when it has none: one file per publish, a new file after a
// camera outage.
type recorders struct {
	a      *app
	store  *recordings.Store
	byPath map[string]*recordings.Recorder
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// recordedPaths lists the paths that record.
func (a *app) recordedPaths() []*paths.Path {
	var out []*paths.Path
	for _, p := range a.paths.List() {
		if p.Spec().Record {
			out = append(out, p)
		}
	}
	return out
}

// startRecordings opens the store (recovering files cut short by a crash),
// starts retention and a recorder per recording path.
func (a *app) startRecordings() error {
	list := a.recordedPaths()
	if len(list) == 0 {
		return nil
	}
	cfg := a.cfg
	log := logging.Module(a.log, "recordings")
	store, err := recordings.OpenStore(recordings.StoreConfig{
		Dir:           cfg.Media.RecordDir,
		MaxAge:        time.Duration(cfg.Recordings.MaxAgeHours * float64(time.Hour)),
		MaxTotalBytes: int64(cfg.Recordings.MaxTotalGB * 1e9),
		Repair:        recordings.RepairPart,
	}, log)
	if err != nil {
		// The recordings check reports it; serving goes on without recording.
		log.Error("recordings unavailable", "err", err)
		return nil
	}
	if rec, err := store.RecoverParts(); err != nil {
		log.Warn("recovering interrupted recordings", "err", err)
	} else if len(rec) > 0 {
		log.Info("recovered interrupted recordings", "files", rec)
	}
	r := &recorders{a: a, store: store, byPath: map[string]*recordings.Recorder{}}
	for _, p := range list {
		r.byPath[p.Name()] = recordings.NewRecorder(recordings.RecorderConfig{
			Path:            p.Name(),
			Stream:          p.Stream(),
			Store:           store,
			SegmentDuration: time.Duration(cfg.Recordings.SegmentSeconds) * time.Second,
			OnEvent:         a.recordingEvent,
		}, log)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		store.RunRetention(ctx, time.Minute)
	}()
	a.recs.Store(r)
	// Paths already delivering start now; later changes come through
	// pathState.
	for _, p := range list {
		r.follow(p.Name(), p.State())
	}
	return nil
}

// stopRecordings finalizes every recording.
func (a *app) stopRecordings() {
	r := a.recs.Load()
	if r == nil {
		return
	}
	var wg sync.WaitGroup
	for _, rec := range r.byPath {
		wg.Add(1)
		go func() { defer wg.Done(); rec.Close() }()
	}
	wg.Wait()
	r.cancel()
	r.wg.Wait()
}

// follow starts or stops path's recorder for its new state.
func (r *recorders) follow(path string, st paths.State) {
	rec := r.byPath[path]
	if rec == nil {
		return
	}
	switch st {
	case paths.StateUp, paths.StatePublishing:
		rec.Start()
	case paths.StateIdle, paths.StateDown, paths.StateReconnecting, paths.StateWaitingPublisher:
		rec.Stop()
	}
}

// recordingEvent publishes a recorder's events.
func (a *app) recordingEvent(e recordings.Event) {
	data := map[string]any{"path": e.Path, "name": e.Name}
	switch e.Kind {
	case events.RecordingFinalized:
		data["bytes"], data["durationSec"] = e.Bytes, e.Duration.Seconds()
	case events.RecordingFailed:
		if e.Err != nil {
			data["error"] = e.Err.Error()
		}
	}
	a.bus.Publish(e.Kind, data)
	select {
	case a.pollNow <- struct{}{}:
	default:
	}
}

// recordingHandler serves the recordings API and files; nil when nothing
// records.
func (a *app) recordingHandler() http.Handler {
	r := a.recs.Load()
	if r == nil {
		return nil
	}
	return r.store.Handler(recordings.HandlerOptions{Token: a.cfg.Auth.Token, AllowedOrigins: a.cfg.Auth.AllowedOrigins})
}

// recordingOf reports whether path is recording now.
func (a *app) recordingOf(path string) bool {
	r := a.recs.Load()
	if r == nil || r.byPath[path] == nil {
		return false
	}
	return r.byPath[path].Stats().Recording
}

// recordStats adapts the store and recorders to the status's record
// section.
func (a *app) recordStats() api.RecordStats {
	r := a.recs.Load()
	if r == nil {
		return api.RecordStats{}
	}
	var s api.RecordStats
	s.Files, s.Bytes = r.store.Stats()
	for _, rec := range r.byPath {
		if rec.Stats().Recording {
			s.Active++
		}
	}
	return s
}
