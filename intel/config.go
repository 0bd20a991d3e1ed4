// Package intel analyses a path's media once, whatever the number of
// viewers: motion in its video and voice activity in its audio, with the
// algorithms and thresholds of the original icey-server (see the contract
// /work/shared/spec/intelligence.md, section "Algorithms").
//
// The package holds only the pure-Go detectors. The decode tap (an ffmpeg
// child that gives small grey frames and 16 kHz mono PCM) and the wiring
// that turns detections into Symple messages, /api/events entries,
// snapshots and clips live elsewhere; they call MotionDetector.Detect and
// VAD.Process. Every time the detectors reason about (warmup, cooldown,
// silence, update interval) is media time, taken from the PTS the caller
// passes, never the wall clock, so the same input always gives the same
// events.
//
// Configuration follows the project's convention: a zero value takes the
// contract's default (WithDefaults). A negative duration or count means an
// explicit "none" (for example Cooldown: -1 is no cooldown, WarmupFrames: -1
// is no warmup), since zero cannot say so; WithDefaults turns it into 0.
package intel

import "time"

// Contract defaults (media.intelligence.*).
const (
	DefaultEveryNthFrame       = 6
	DefaultVisionMinInterval   = 200 * time.Millisecond
	DefaultVisionQueueDepth    = 8
	DefaultGridWidth           = 32
	DefaultGridHeight          = 18
	DefaultWarmupFrames        = 2
	DefaultMotionThreshold     = 0.08
	DefaultMotionCooldown      = 500 * time.Millisecond
	DefaultSnapshotMinInterval = time.Second
	DefaultClipPreRoll         = time.Second
	DefaultClipPostRoll        = 3 * time.Second

	DefaultSpeechQueueDepth     = 32
	DefaultSpeechStartThreshold = 0.045
	DefaultSpeechStopThreshold  = 0.020
	DefaultSpeechMinSilence     = 250 * time.Millisecond
	DefaultSpeechUpdateInterval = 250 * time.Millisecond
)

// MotionConfig is media.intelligence.vision.motion.
type MotionConfig struct {
	// GridWidth x GridHeight is the lattice the luma is sampled on (32x18).
	GridWidth, GridHeight int
	// WarmupFrames are analysed frames that never emit (2).
	WarmupFrames int
	// Threshold is the mean |Δluma|/255 over the cells that is motion (0.08).
	Threshold float64
	// Cooldown is the least media time between two events (500ms).
	Cooldown time.Duration
}

// WithDefaults returns c with zero values replaced by the contract's
// defaults and negative ones by zero.
func (c MotionConfig) WithDefaults() MotionConfig {
	if c.GridWidth <= 0 {
		c.GridWidth = DefaultGridWidth
	}
	if c.GridHeight <= 0 {
		c.GridHeight = DefaultGridHeight
	}
	c.WarmupFrames = orInt(c.WarmupFrames, DefaultWarmupFrames)
	c.Threshold = orFloat(c.Threshold, DefaultMotionThreshold)
	c.Cooldown = orDur(c.Cooldown, DefaultMotionCooldown)
	return c
}

// SnapshotConfig is media.intelligence.vision.snapshots.
type SnapshotConfig struct {
	Enabled bool
	// Dir defaults to <recordDir>/snapshots, which is the caller's to fill.
	Dir string
	// MinInterval between two snapshots (1s).
	MinInterval time.Duration
}

// ClipConfig is media.intelligence.vision.clips.
type ClipConfig struct {
	Enabled bool
	// Dir defaults to <recordDir>/clips, which is the caller's to fill.
	Dir string
	// PreRoll and PostRoll: what a clip holds before and after its events
	// (1s and 3s).
	PreRoll, PostRoll time.Duration
}

// VisionConfig is media.intelligence.vision (or paths.<name>.intelligence.vision).
type VisionConfig struct {
	Enabled bool
	// EveryNthFrame analyses one decoded frame in N (6).
	EveryNthFrame int
	// MinInterval is the least media time between two analysed frames (200ms).
	MinInterval time.Duration
	// QueueDepth bounds the frames waiting for analysis (8).
	QueueDepth int
	Motion     MotionConfig
	Snapshots  SnapshotConfig
	Clips      ClipConfig
}

// WithDefaults returns c with zero values replaced by the contract's
// defaults (the Dirs excepted: they depend on the record dir and stay "").
func (c VisionConfig) WithDefaults() VisionConfig {
	if c.EveryNthFrame <= 0 {
		c.EveryNthFrame = DefaultEveryNthFrame
	}
	c.MinInterval = orDur(c.MinInterval, DefaultVisionMinInterval)
	if c.QueueDepth <= 0 {
		c.QueueDepth = DefaultVisionQueueDepth
	}
	c.Motion = c.Motion.WithDefaults()
	c.Snapshots.MinInterval = orDur(c.Snapshots.MinInterval, DefaultSnapshotMinInterval)
	c.Clips.PreRoll = orDur(c.Clips.PreRoll, DefaultClipPreRoll)
	c.Clips.PostRoll = orDur(c.Clips.PostRoll, DefaultClipPostRoll)
	return c
}

// SpeechConfig is media.intelligence.speech (or paths.<name>.intelligence.speech).
type SpeechConfig struct {
	Enabled bool
	// QueueDepth bounds the audio blocks waiting for analysis (32).
	QueueDepth int
	// StartThreshold and StopThreshold are mean |sample| levels, 0..1
	// (0.045 and 0.020).
	StartThreshold, StopThreshold float64
	// MinSilence is the media time the level must stay below StopThreshold
	// to end speech (250ms); UpdateInterval is the media time between two
	// speech:update events while speech is active (250ms).
	MinSilence, UpdateInterval time.Duration
}

// WithDefaults returns c with zero values replaced by the contract's
// defaults and negative ones by zero.
func (c SpeechConfig) WithDefaults() SpeechConfig {
	if c.QueueDepth <= 0 {
		c.QueueDepth = DefaultSpeechQueueDepth
	}
	c.StartThreshold = orFloat(c.StartThreshold, DefaultSpeechStartThreshold)
	c.StopThreshold = orFloat(c.StopThreshold, DefaultSpeechStopThreshold)
	c.MinSilence = orDur(c.MinSilence, DefaultSpeechMinSilence)
	c.UpdateInterval = orDur(c.UpdateInterval, DefaultSpeechUpdateInterval)
	return c
}

func orInt(v, def int) int {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func orDur(v, def time.Duration) time.Duration {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// orFloat also maps NaN to the default.
func orFloat(v, def float64) float64 {
	switch {
	case v == 0 || v != v:
		return def
	case v < 0:
		return 0
	}
	return v
}
