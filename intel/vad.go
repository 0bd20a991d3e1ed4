package intel

import (
	"math"
	"sync/atomic"
	"time"
)

// Speech event types.
const (
	SpeechStart  = "speech:start"
	SpeechUpdate = "speech:update"
	SpeechEnd    = "speech:end"
)

// SpeechEvent is one event of the voice activity state machine. It is tied
// to the audio block that triggered it: PTS, Duration and NumSamples are
// that block's (the contract's time and audio.{time, duration, numSamples}).
type SpeechEvent struct {
	// Type is SpeechStart, SpeechUpdate or SpeechEnd.
	Type string
	// PTS is the media time of the first sample of the block.
	PTS time.Duration
	// Level is the block's mean |sample|/32768, Peak its max |sample|/32768.
	Level, Peak float64
	// Active is true for start and update, false for end.
	Active bool
	// Sequence is the block's number: 0 for the first block given to
	// Process, counting every block, empty ones excepted.
	Sequence uint64
	// Duration is the block's media duration (NumSamples at SampleRate).
	Duration   time.Duration
	NumSamples int
	SampleRate int
	// SpeechStart is the PTS of the speech:start that opened this speech
	// (equal to PTS for a start).
	SpeechStart time.Duration
}

// VAD is the contract's energy voice activity detector. Process is meant
// for one goroutine; Active, LastLevel and LastPeak may be read from any.
type VAD struct {
	cfg        SpeechConfig
	sampleRate int

	seq          uint64
	active       bool
	speechStart  time.Duration
	nextUpdate   time.Duration
	inSilence    bool
	silenceStart time.Duration
	lastPTS      time.Duration
	started      bool // lastPTS valid

	activeFlag atomic.Bool
	lastLevel  atomic.Uint64 // float64 bits
	lastPeak   atomic.Uint64
}

// NewVAD returns a detector for c (after c.WithDefaults()) on mono samples
// at sampleRate (16000 when not positive).
func NewVAD(c SpeechConfig, sampleRate int) *VAD {
	if sampleRate <= 0 {
		sampleRate = 16000
	}
	return &VAD{cfg: c.WithDefaults(), sampleRate: sampleRate}
}

// Config returns the configuration in use (defaults applied).
func (v *VAD) Config() SpeechConfig { return v.cfg }

// SampleRate is the rate the VAD converts sample counts to media time with.
func (v *VAD) SampleRate() int { return v.sampleRate }

// Active reports whether speech is active (between a start and its end).
func (v *VAD) Active() bool { return v.activeFlag.Load() }

// LastLevel is the level of the last block processed.
func (v *VAD) LastLevel() float64 { return math.Float64frombits(v.lastLevel.Load()) }

// LastPeak is the peak of the last block processed.
func (v *VAD) LastPeak() float64 { return math.Float64frombits(v.lastPeak.Load()) }

// Process takes one block of mono samples starting at pts and returns the
// events the contract's state machine emits for it (at most one):
//
//   - inactive: speech:start when level >= StartThreshold;
//   - active: the silence is the run of consecutive blocks whose level is
//     < StopThreshold, from the PTS of its first block; speech:end is
//     emitted by the block whose end (pts + its duration) makes that run
//     reach MinSilence of media time; a block at or above StopThreshold
//     ends the run;
//   - otherwise, while active, speech:update at start + k*UpdateInterval
//     (k = 1, 2, ...), emitted by the first block whose pts reaches the due
//     time (no drift: the schedule does not slip by a block each time).
//
// Times are media times, so results depend on the block size only to the
// block's own resolution. A pts earlier than the previous block's is a
// discontinuity: the running silence and the update schedule restart from
// it. An empty block changes nothing.
func (v *VAD) Process(pts time.Duration, samples []int16) []SpeechEvent {
	if len(samples) == 0 {
		return nil
	}
	var sum int64
	var peak int32
	for _, s := range samples {
		a := int32(s)
		if a < 0 {
			a = -a
		}
		sum += int64(a)
		peak = max(peak, a)
	}
	level := float64(sum) / float64(len(samples)) / 32768
	pk := float64(peak) / 32768
	v.lastLevel.Store(math.Float64bits(level))
	v.lastPeak.Store(math.Float64bits(pk))

	dur := time.Duration(int64(len(samples)) * int64(time.Second) / int64(v.sampleRate))
	seq := v.seq
	v.seq++
	if v.started && pts < v.lastPTS && v.active {
		if v.inSilence {
			v.silenceStart = pts
		}
		v.nextUpdate = pts + v.cfg.UpdateInterval
	}
	v.lastPTS, v.started = pts, true

	ev := SpeechEvent{
		PTS: pts, Level: level, Peak: pk, Sequence: seq,
		Duration: dur, NumSamples: len(samples), SampleRate: v.sampleRate,
	}
	if !v.active {
		if level < v.cfg.StartThreshold {
			return nil
		}
		v.active, v.inSilence = true, false
		v.activeFlag.Store(true)
		v.speechStart = pts
		v.nextUpdate = pts + v.cfg.UpdateInterval
		ev.Type, ev.Active, ev.SpeechStart = SpeechStart, true, pts
		return []SpeechEvent{ev}
	}

	ev.SpeechStart = v.speechStart
	if level < v.cfg.StopThreshold {
		if !v.inSilence {
			v.inSilence, v.silenceStart = true, pts
		}
		if pts+dur-v.silenceStart >= v.cfg.MinSilence {
			v.active, v.inSilence = false, false
			v.activeFlag.Store(false)
			ev.Type, ev.Active = SpeechEnd, false
			return []SpeechEvent{ev}
		}
	} else {
		v.inSilence = false
	}
	if pts < v.nextUpdate {
		return nil
	}
	if v.cfg.UpdateInterval <= 0 {
		v.nextUpdate = pts
	} else {
		v.nextUpdate += v.cfg.UpdateInterval
		if v.nextUpdate <= pts { // a gap in the media time: do not burst
			v.nextUpdate = pts + v.cfg.UpdateInterval
		}
	}
	ev.Type, ev.Active = SpeechUpdate, true
	return []SpeechEvent{ev}
}
