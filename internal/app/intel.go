package app

import (
	"context"
	"path/filepath"
	"strings"
	"sync"

	"github.com/icey/icey-server/api"
	"time"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/intel"
	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/media/transcode"
	"github.com/icey/icey-server/paths"
	"github.com/icey/icey-server/recordings"
	"github.com/icey/icey-server/renditions"
)

// intelConfig converts a path's intelligence keys to the analyser's
// configuration (zero values take the contract's defaults there).
func intelConfig(in config.Intelligence) (intel.VisionConfig, intel.SpeechConfig) {
	us := func(n int64) time.Duration { return time.Duration(n) * time.Microsecond }
	v := in.Vision
	vc := intel.VisionConfig{Enabled: v.Enabled, EveryNthFrame: v.EveryNthFrame, MinInterval: us(v.MinIntervalUsec),
		QueueDepth: v.QueueDepth, Motion: intel.MotionConfig{GridWidth: v.Motion.GridWidth, GridHeight: v.Motion.GridHeight,
			WarmupFrames: v.Motion.WarmupFrames, Threshold: v.Motion.Threshold, Cooldown: us(v.Motion.CooldownUsec)}}
	vc.Snapshots.Enabled, vc.Snapshots.Dir, vc.Snapshots.MinInterval = v.Snapshots.Enabled, v.Snapshots.Dir, us(v.Snapshots.MinIntervalUsec)
	vc.Clips.Enabled, vc.Clips.Dir = v.Clips.Enabled, v.Clips.Dir
	vc.Clips.PreRoll, vc.Clips.PostRoll = us(v.Clips.PreRollUsec), us(v.Clips.PostRollUsec)
	s := in.Speech
	sc := intel.SpeechConfig{Enabled: s.Enabled, QueueDepth: s.QueueDepth, StartThreshold: s.StartThreshold,
		StopThreshold: s.StopThreshold, MinSilence: us(s.MinSilenceUsec), UpdateInterval: us(s.UpdateIntervalUsec)}
	return vc, sc
}

// analysedPaths are the paths with analysis enabled.
func (a *app) analysedPaths() []*paths.Path {
	var out []*paths.Path
	for _, p := range a.paths.List() {
		if p.Spec().Intelligence.Enabled() {
			out = append(out, p)
		}
	}
	return out
}

// intelArtifacts are the snapshots and clips of the analysed paths: one
// directory of each for the server, listed, retained and served like
// recordings under /recordings/snapshots/ and /recordings/clips/.
type intelArtifacts struct {
	snaps, clips     *recordings.Artifacts
	snapDir, clipDir string
	cancel           context.CancelFunc
	wg               sync.WaitGroup
	snapshots        map[string]*intel.Snapshots
	clippers         map[string]*intel.Clipper
}

// artifactDirs: the first directory a path configures, else the default
// under media.recordDir; a path asking for another one is warned about.
func (a *app) artifactDirs(list []*paths.Path) (snapDir, clipDir string) {
	for _, p := range list {
		v := p.Spec().Intelligence.Vision
		for _, x := range []struct {
			on       bool
			dir, key string
			into     *string
		}{{v.Snapshots.Enabled, v.Snapshots.Dir, "snapshots", &snapDir}, {v.Clips.Enabled, v.Clips.Dir, "clips", &clipDir}} {
			switch {
			case !x.on || x.dir == "":
			case *x.into == "":
				*x.into = x.dir
			case *x.into != x.dir:
				a.log.Warn("one "+x.key+" directory serves every path; this path's is ignored", "module", "intelligence",
					"path", p.Name(), "dir", x.dir, "using", *x.into)
			}
		}
	}
	if snapDir == "" {
		snapDir = filepath.Join(a.cfg.Media.RecordDir, "snapshots")
	}
	if clipDir == "" {
		clipDir = filepath.Join(a.cfg.Media.RecordDir, "clips")
	}
	return snapDir, clipDir
}

// startIntel starts one analyser per path with analysis enabled: its
// events go to the path's Symple peers and to /api/events; snapshots and
// clips, when enabled, are written beside the recordings.
func (a *app) startIntel() error {
	list := a.analysedPaths()
	if len(list) == 0 {
		return nil
	}
	log := logging.Module(a.log, "intelligence")
	a.intel = map[string]*intel.Analyzer{}
	art := &intelArtifacts{snapshots: map[string]*intel.Snapshots{}, clippers: map[string]*intel.Clipper{}}
	art.snapDir, art.clipDir = a.artifactDirs(list)
	ctx, cancel := context.WithCancel(context.Background())
	art.cancel = cancel
	a.artifacts = art
	retention := func(dir, prefix string) *recordings.Artifacts {
		x, err := recordings.OpenArtifacts(recordings.ArtifactsConfig{Dir: dir, Prefix: prefix,
			MaxAge:        time.Duration(a.cfg.Recordings.MaxAgeHours * float64(time.Hour)),
			MaxTotalBytes: int64(a.cfg.Recordings.MaxTotalGB * 1e9)}, log)
		if err != nil {
			log.Error("analysis artifacts unavailable", "dir", dir, "err", err)
			return nil
		}
		art.wg.Add(1)
		go func() { defer art.wg.Done(); x.RunRetention(ctx, time.Minute) }()
		return x
	}
	for _, p := range list {
		name := p.Name()
		vc, sc := intelConfig(p.Spec().Intelligence)
		cfg := intel.AnalyzerConfig{Path: name, Vision: vc, Speech: sc,
			OnVision: func(e intel.VisionEvent) {
				if sym := a.symple.Load(); sym != nil {
					sym.SendPath(name, "icey:vision", e)
				}
				a.bus.Publish(events.VisionDetect, struct {
					Path string `json:"path"`
					intel.VisionEvent
				}{name, e})
			},
			OnSpeech: func(e intel.SpeechPayload) {
				if sym := a.symple.Load(); sym != nil {
					sym.SendPath(name, "icey:speech", e)
				}
				a.bus.Publish("speech."+strings.TrimPrefix(e.Type, "speech:"), struct {
					Path string `json:"path"`
					intel.SpeechPayload
				}{name, e})
			},
		}
		if vc.Enabled && vc.Snapshots.Enabled {
			if art.snaps == nil {
				art.snaps = retention(art.snapDir, recordings.SnapshotsPrefix)
			}
			ffmpeg, ferr := transcode.FFmpegPath("")
			if ferr != nil {
				log.Warn("snapshots need ffmpeg, which is not installed", "path", name)
			} else if snaps, err := intel.NewSnapshots(art.snapDir, vc.Snapshots.MinInterval, ffmpeg, log); err != nil {
				log.Error("snapshots unavailable", "path", name, "err", err)
			} else {
				art.snapshots[name] = snaps
				st := p.Stream()
				cfg.Snapshot = func(at time.Duration) (intel.Artifact, bool) {
					n, u, ok := snaps.Go(name, st, at, time.Now())
					return intel.Artifact{Path: n, URL: u}, ok
				}
			}
		}
		if vc.Enabled && vc.Clips.Enabled {
			if art.clips == nil {
				art.clips = retention(art.clipDir, recordings.ClipsPrefix)
				if s, err := recordings.OpenStore(recordings.StoreConfig{Dir: art.clipDir, Repair: recordings.RepairPart}, log); err == nil {
					if rec, err := s.RecoverParts(); err == nil && len(rec) > 0 {
						log.Info("recovered interrupted clips", "files", rec)
					}
				}
			}
			cc := vc.Clips
			cc.Dir = art.clipDir
			clipper, err := intel.NewClipper(cc, p.Stream(), name, func(ci intel.ClipInfo) {
				a.bus.Publish(events.ClipFinalized, map[string]any{"path": name, "name": ci.Name, "url": ci.URL, "bytes": ci.Size})
			}, log)
			if err != nil {
				log.Error("clips unavailable", "path", name, "err", err)
			} else {
				art.clippers[name] = clipper
				cfg.Clip = func(at time.Duration) (intel.Artifact, bool) {
					n, u := clipper.Trigger(at, time.Now())
					return intel.Artifact{Path: n, URL: u}, n != ""
				}
			}
		}
		an := intel.NewAnalyzer(p.Stream(), cfg, log.With("path", name))
		an.Start()
		a.intel[name] = an
	}
	return nil
}

func (a *app) stopIntel() {
	for _, an := range a.intel {
		an.Close()
	}
	if art := a.artifacts; art != nil {
		for _, c := range art.clippers {
			c.Close()
		}
		for _, s := range art.snapshots {
			s.Close()
		}
		art.cancel()
		art.wg.Wait()
	}
}

// artifactRoutes serves snapshots and clips (nil when none is written).
func (a *app) artifactRoutes() []*recordings.Artifacts {
	if a.artifacts == nil {
		return nil
	}
	var out []*recordings.Artifacts
	for _, x := range []*recordings.Artifacts{a.artifacts.snaps, a.artifacts.clips} {
		if x != nil {
			out = append(out, x)
		}
	}
	return out
}

// ffmpegAvailable reports whether ffmpeg is installed (the analysis decoder).
func ffmpegAvailable() bool { return renditions.Config{}.Available() }

// intelligenceOf is path's analysis for /api/status: the booleans are true
// while the analyser runs.
func (a *app) intelligenceOf(path string) api.Intelligence {
	an := a.intel[path]
	if an == nil {
		return api.Intelligence{}
	}
	vs, ss := an.Stats()
	in := a.paths.Path(path).Spec().Intelligence
	out := api.Intelligence{Vision: in.Vision.Enabled, Speech: in.Speech.Enabled}
	if out.Vision {
		out.VisionStats = &vs
	}
	if out.Speech {
		out.SpeechStats = &ss
	}
	return out
}
