package intel

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/icey/icey-server/media"
)

// AnalyzerConfig configures the analysis of one path.
type AnalyzerConfig struct {
	// Path is the path's name: the events' source (never a URL).
	Path   string
	Vision VisionConfig
	Speech SpeechConfig
	// FFmpegPath defaults to "ffmpeg" from PATH.
	FFmpegPath string
	// OnVision and OnSpeech receive every event, in the contract's shape,
	// from the analyser's goroutine (they must not block for long).
	OnVision func(VisionEvent)
	OnSpeech func(SpeechPayload)
	// Snapshot, when set, is asked for a picture of the frame at PTS at
	// (snapshots enabled); it returns the artifact it will write, or ok
	// false when rate limited. It must not block: the picture is written
	// in the background and appears shortly after the event.
	Snapshot func(at time.Duration) (a Artifact, ok bool)
	// Clip, when set, is told of every event (clips enabled) and returns
	// the clip that will hold it (written when its post-roll has passed).
	Clip func(at time.Duration) (a Artifact, ok bool)
}

// Artifact is a snapshot or clip as named in events: its path relative
// to its directory and the URL it is served at.
type Artifact struct {
	Path string `json:"path"`
	URL  string `json:"url"`
}

// VisionEvent is the data of an icey:vision message (schema vision.event.v1).
type VisionEvent struct {
	Schema        string            `json:"schema"`
	Type          string            `json:"type"`
	Source        string            `json:"source"`
	Detector      string            `json:"detector"`
	EmittedAtUsec int64             `json:"emittedAtUsec"`
	Frame         VisionFrame       `json:"frame"`
	Detections    []VisionDetection `json:"detections"`
	Tracks        []any             `json:"tracks"`
	Data          VisionData        `json:"data"`
}

// VisionFrame describes the analysed frame.
type VisionFrame struct {
	SourceID       string `json:"sourceId"`
	StreamID       string `json:"streamId"`
	FrameID        uint64 `json:"frameId"`
	PTSUsec        int64  `json:"ptsUsec"`
	ReceivedAtUsec int64  `json:"receivedAtUsec"`
	Width          int    `json:"width"`
	Height         int    `json:"height"`
	PixelFmt       string `json:"pixelFmt"`
	Keyframe       bool   `json:"keyframe"`
}

// VisionDetection is one region with motion.
type VisionDetection struct {
	Label      string         `json:"label"`
	Confidence float64        `json:"confidence"`
	TrackID    int            `json:"trackId"`
	Region     VisionRegion   `json:"region"`
	Data       map[string]any `json:"data"`
}

// VisionRegion is a normalized box (0..1 of the picture).
type VisionRegion struct {
	X      float64 `json:"x"`
	Y      float64 `json:"y"`
	Width  float64 `json:"width"`
	Height float64 `json:"height"`
}

// VisionData is the event's data object.
type VisionData struct {
	Score       float64    `json:"score"`
	GridWidth   int        `json:"gridWidth"`
	GridHeight  int        `json:"gridHeight"`
	Grid        VisionGrid `json:"grid"`
	LatencyUsec int64      `json:"latencyUsec"`
	Snapshot    *Artifact  `json:"snapshot,omitempty"`
	Clip        *Artifact  `json:"clip,omitempty"`
}

// VisionGrid is the per-cell difference, row-major, 0..1.
type VisionGrid struct {
	Width  int       `json:"width"`
	Height int       `json:"height"`
	Cells  []float64 `json:"cells"`
}

// SpeechPayload is the data of an icey:speech message.
type SpeechPayload struct {
	Type     string      `json:"type"`
	Source   string      `json:"source"`
	Detector string      `json:"detector"`
	Time     int64       `json:"time"`
	Audio    SpeechAudio `json:"audio"`
	Active   bool        `json:"active"`
	Level    float64     `json:"level"`
	Peak     float64     `json:"peak"`
	Data     struct {
		StartThreshold float64 `json:"startThreshold"`
		StopThreshold  float64 `json:"stopThreshold"`
	} `json:"data"`
}

// SpeechAudio describes the audio block an event was decided on.
type SpeechAudio struct {
	Sequence   uint64 `json:"sequence"`
	Time       int64  `json:"time"`
	Duration   int64  `json:"duration"`
	SampleRate int    `json:"sampleRate"`
	Channels   int    `json:"channels"`
	NumSamples int    `json:"numSamples"`
	SampleFmt  string `json:"sampleFmt"`
}

// VisionStats are the vision counters of /api/status (the contract's
// names).
type VisionStats struct {
	SourceFps       float64 `json:"sourceFps"`
	SampledFps      float64 `json:"sampledFps"`
	QueueDepth      int     `json:"queueDepth"`
	QueueDropped    uint64  `json:"queueDropped"`
	DetectorSeen    uint64  `json:"detectorSeen"`
	DetectorEmitted uint64  `json:"detectorEmitted"`
	LastScore       float64 `json:"lastScore"`
	LastLatencyUsec int64   `json:"lastLatencyUsec"`
	Snapshots       uint64  `json:"snapshots"`
	Clips           uint64  `json:"clips"`
	DecoderRestarts uint64  `json:"decoderRestarts"`
	DecoderCPU      float64 `json:"decoderCpuSeconds"`
	LastError       string  `json:"lastError,omitempty"`
}

// SpeechStats are the speech counters of /api/status.
type SpeechStats struct {
	QueueDepth   int     `json:"queueDepth"`
	QueueDropped uint64  `json:"queueDropped"`
	Emitted      uint64  `json:"detectorEmitted"`
	VadActive    bool    `json:"vadActive"`
	LastLevel    float64 `json:"lastLevel"`
}

// Analyzer analyses one stream: one decode tap, a motion detector and a
// voice activity detector, events to callbacks.
type Analyzer struct {
	cfg    AnalyzerConfig
	st     *media.Stream
	log    *slog.Logger
	tap    *Tap
	motion *MotionDetector
	vad    atomic.Pointer[VAD]

	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	sampled      atomic.Uint64
	started      time.Time
	latency      atomic.Int64
	snapshots    atomic.Uint64
	clips        atomic.Uint64
	speechEvents atomic.Uint64
}

// NewAnalyzer returns the analyser of st; Start runs it.
func NewAnalyzer(st *media.Stream, cfg AnalyzerConfig, log *slog.Logger) *Analyzer {
	cfg.Vision = cfg.Vision.WithDefaults()
	cfg.Speech = cfg.Speech.WithDefaults()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Analyzer{cfg: cfg, st: st, log: log}
	m := cfg.Vision.Motion
	a.tap = NewTap(st, TapConfig{Video: cfg.Vision.Enabled, Audio: cfg.Speech.Enabled, GridWidth: m.GridWidth, GridHeight: m.GridHeight,
		FrameQueue: cfg.Vision.QueueDepth, AudioQueue: cfg.Speech.QueueDepth, FFmpegPath: cfg.FFmpegPath}, log)
	a.motion = NewMotionDetector(m)
	return a
}

// Start runs the analysis until Close.
func (a *Analyzer) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.started = time.Now()
	a.wg.Add(3)
	go func() { defer a.wg.Done(); a.tap.Run(ctx) }()
	go func() { defer a.wg.Done(); a.vision() }()
	go func() { defer a.wg.Done(); a.speech() }()
}

// Close stops the analysis and waits for it. Idempotent.
func (a *Analyzer) Close() {
	a.once.Do(func() {
		if a.cancel != nil {
			a.cancel()
		}
		a.wg.Wait()
	})
}

// Stats snapshots the counters.
func (a *Analyzer) Stats() (VisionStats, SpeechStats) {
	ts := a.tap.Stats()
	up := time.Since(a.started).Seconds()
	v := VisionStats{QueueDepth: len(a.tap.frames), QueueDropped: ts.FramesDropped,
		DetectorSeen: a.motion.Seen(), DetectorEmitted: a.motion.Emitted(), LastScore: round3(a.motion.LastScore()),
		LastLatencyUsec: a.latency.Load(), Snapshots: a.snapshots.Load(), Clips: a.clips.Load(),
		DecoderRestarts: ts.Restarts, DecoderCPU: ts.CPUSeconds, LastError: ts.LastError}
	if up > 0 {
		v.SourceFps = round3(float64(ts.Frames+ts.FramesDropped) / up)
		v.SampledFps = round3(float64(a.sampled.Load()) / up)
	}
	s := SpeechStats{QueueDepth: len(a.tap.audio), QueueDropped: ts.BlocksDropped, Emitted: a.speechEvents.Load()}
	if vad := a.vad.Load(); vad != nil {
		s.VadActive, s.LastLevel = vad.Active(), round3(vad.LastLevel())
	}
	return v, s
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

// vision samples the decoded frames (every Nth, at least MinInterval of
// media time apart) and runs the motion detector on them.
func (a *Analyzer) vision() {
	vc := a.cfg.Vision
	var n uint64
	var last time.Duration
	haveLast := false
	for f := range a.tap.Frames() {
		n++
		if !vc.Enabled || (n-1)%uint64(vc.EveryNthFrame) != 0 {
			continue
		}
		if haveLast && f.PTS-last < vc.MinInterval && f.PTS >= last {
			continue
		}
		last, haveLast = f.PTS, true
		a.sampled.Add(1)
		vi := a.st.VideoInfo()
		m, ok := a.motion.Detect(Frame{PTS: f.PTS, Luma: f.Luma, Width: vc.Motion.GridWidth, Height: vc.Motion.GridHeight,
			SourceWidth: vi.Width, SourceHeight: vi.Height, Keyframe: f.Keyframe, ID: f.ID})
		if !ok {
			continue
		}
		now := time.Now()
		var lat int64
		if !f.FedAt.IsZero() {
			lat = now.Sub(f.FedAt).Microseconds()
			a.latency.Store(lat)
		}
		ev := VisionEvent{Schema: "vision.event.v1", Type: "detect", Source: a.cfg.Path, Detector: "motion",
			EmittedAtUsec: now.UnixMicro(), Tracks: []any{},
			Frame: VisionFrame{SourceID: a.cfg.Path, StreamID: a.cfg.Path, FrameID: f.ID, PTSUsec: f.PTS.Microseconds(),
				ReceivedAtUsec: f.FedAt.UnixMicro(), Width: vi.Width, Height: vi.Height, PixelFmt: "gray", Keyframe: f.Keyframe},
			Data: VisionData{Score: round3(m.Score), GridWidth: m.GridWidth, GridHeight: m.GridHeight,
				Grid: VisionGrid{Width: m.GridWidth, Height: m.GridHeight, Cells: roundAll(m.Grid)}, LatencyUsec: lat}}
		if f.FedAt.IsZero() {
			ev.Frame.ReceivedAtUsec = 0
		}
		for _, r := range m.Regions {
			ev.Detections = append(ev.Detections, VisionDetection{Label: "motion", Confidence: round3(math.Min(1, r.Score/math.Max(vc.Motion.Threshold, 1e-6)/2)),
				TrackID: -1, Region: VisionRegion{X: round3(r.X), Y: round3(r.Y), Width: round3(r.Width), Height: round3(r.Height)},
				Data: map[string]any{"score": round3(r.Score), "cells": r.Cells}})
		}
		if vc.Snapshots.Enabled && a.cfg.Snapshot != nil {
			if art, ok := a.cfg.Snapshot(f.PTS); ok {
				ev.Data.Snapshot = &art
				a.snapshots.Add(1)
			}
		}
		if vc.Clips.Enabled && a.cfg.Clip != nil {
			if art, ok := a.cfg.Clip(f.PTS); ok {
				ev.Data.Clip = &art
				a.clips.Add(1)
			}
		}
		if a.cfg.OnVision != nil {
			a.cfg.OnVision(ev)
		}
	}
}

func roundAll(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = round3(x)
	}
	return out
}

// speech runs the voice activity detector on the decoded audio.
func (a *Analyzer) speech() {
	sc := a.cfg.Speech
	for b := range a.tap.Audio() {
		if !sc.Enabled {
			continue
		}
		vad := a.vad.Load()
		if vad == nil || vad.SampleRate() != b.SampleRate {
			vad = NewVAD(sc, b.SampleRate)
			a.vad.Store(vad)
		}
		for _, e := range vad.Process(b.PTS, b.Samples) {
			a.speechEvents.Add(1)
			if a.cfg.OnSpeech == nil {
				continue
			}
			p := SpeechPayload{Type: e.Type, Source: a.cfg.Path, Detector: "energy_vad", Time: e.PTS.Microseconds(),
				Audio: SpeechAudio{Sequence: b.Sequence, Time: b.PTS.Microseconds(), Duration: e.Duration.Microseconds(),
					SampleRate: b.SampleRate, Channels: 1, NumSamples: e.NumSamples, SampleFmt: "s16"},
				Active: e.Active, Level: round3(e.Level), Peak: round3(e.Peak)}
			p.Data.StartThreshold, p.Data.StopThreshold = sc.StartThreshold, sc.StopThreshold
			a.cfg.OnSpeech(p)
		}
	}
}
