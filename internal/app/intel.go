package app

import (
	"strings"

	"github.com/icey/icey-server/api"
	"time"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/intel"
	"github.com/icey/icey-server/internal/events"
	"github.com/icey/icey-server/internal/logging"
	"github.com/icey/icey-server/paths"
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

// startIntel starts one analyser per path with analysis enabled: its
// events go to the path's Symple peers and to /api/events.
func (a *app) startIntel() error {
	list := a.analysedPaths()
	if len(list) == 0 {
		return nil
	}
	log := logging.Module(a.log, "intelligence")
	a.intel = map[string]*intel.Analyzer{}
	for _, p := range list {
		name := p.Name()
		vc, sc := intelConfig(p.Spec().Intelligence)
		an := intel.NewAnalyzer(p.Stream(), intel.AnalyzerConfig{Path: name, Vision: vc, Speech: sc,
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
		}, log.With("path", name))
		an.Start()
		a.intel[name] = an
	}
	return nil
}

func (a *app) stopIntel() {
	for _, an := range a.intel {
		an.Close()
	}
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
