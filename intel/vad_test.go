package intel

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

const tRate = 16000

type tSpan struct{ from, to time.Duration }

// tSignal generates tRate Hz mono samples over [0, total): a 440 Hz tone of
// amplitude amp (of full scale) during the spans, low noise of ±noise
// elsewhere.
func tSignal(total time.Duration, tones []tSpan, amp, noise float64) []int16 {
	n := int(int64(total) * tRate / int64(time.Second))
	out := make([]int16, n)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range out {
		t := time.Duration(int64(i) * int64(time.Second) / tRate)
		v := (r.Float64()*2 - 1) * noise
		for _, s := range tones {
			if t >= s.from && t < s.to {
				v = amp * math.Sin(2*math.Pi*440*float64(i)/tRate)
			}
		}
		out[i] = int16(math.Round(v * 32767))
	}
	return out
}

// tFeed sends the samples to v in blocks of block samples, PTS from the
// sample count, and collects the events.
func tFeed(v *VAD, samples []int16, block int) []SpeechEvent {
	var evs []SpeechEvent
	for i := 0; i < len(samples); i += block {
		pts := time.Duration(int64(i) * int64(time.Second) / tRate)
		evs = append(evs, v.Process(pts, samples[i:min(i+block, len(samples))])...)
	}
	return evs
}

func tAbs(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestVADTone: 440 Hz at amplitude 0.3 (level 2/π·0.3 = 0.19) during
// [0.51 s, 1.73 s) and [2.5 s, 3.09 s), noise of level ~0.005 elsewhere, fed
// in blocks of 20 ms, 10 ms, 62.5 ms and 37 ms (an odd 593 samples). With the
// default config, per tone [on, off):
//
//   - one speech:start with |PTS - on| <= 250 ms (in fact the block holding
//     the onset: PTS <= on < PTS + Duration);
//   - one speech:end with |PTS - (off + MinSilence)| <= 250 ms; exactly,
//     the end is emitted by the block whose end is the first to reach
//     off + MinSilence of silence: off + MinSilence <= PTS + Duration <
//     off + MinSilence + 2 blocks (the block holding the tone's tail may be
//     loud enough not to count as silence);
//   - speech:update events between them, the k-th due at start + k·250 ms
//     and emitted by the first block at or after it (so PTS - due < one
//     block), including during the MinSilence run after the tone;
//   - nothing else (the noise is below StopThreshold so never starts speech).
func TestVADTone(t *testing.T) {
	tones := []tSpan{{510 * time.Millisecond, 1730 * time.Millisecond}, {2500 * time.Millisecond, 3090 * time.Millisecond}}
	samples := tSignal(4*time.Second, tones, 0.3, 0.01)
	for _, block := range []int{320, 160, 1000, 593} {
		v := NewVAD(SpeechConfig{}, tRate)
		c := v.Config()
		bd := time.Duration(int64(block) * int64(time.Second) / tRate)
		evs := tFeed(v, samples, block)
		i := 0
		for _, tone := range tones {
			if i >= len(evs) || evs[i].Type != SpeechStart {
				t.Fatalf("block %d: want a start for %v, events %+v", block, tone, evs[i:])
			}
			st := evs[i]
			if tAbs(st.PTS-tone.from) > 250*time.Millisecond || st.PTS > tone.from || st.PTS+st.Duration <= tone.from {
				t.Errorf("block %d: start at %v, tone at %v", block, st.PTS, tone.from)
			}
			if !st.Active || st.Level < c.StartThreshold || st.NumSamples != block || st.Duration != bd || st.SampleRate != tRate || st.SpeechStart != st.PTS {
				t.Errorf("block %d: start event %+v", block, st)
			}
			i++
			k := 1
			for ; i < len(evs) && evs[i].Type == SpeechUpdate; i++ {
				due := st.PTS + time.Duration(k)*c.UpdateInterval
				if u := evs[i]; u.PTS < due || u.PTS-due >= bd || !u.Active || u.SpeechStart != st.PTS {
					t.Errorf("block %d: update %d at %v, due %v (%+v)", block, k, u.PTS, due, u)
				}
				k++
			}
			if i >= len(evs) || evs[i].Type != SpeechEnd {
				t.Fatalf("block %d: want an end for %v, events %+v", block, tone, evs[i:])
			}
			en := evs[i]
			want := tone.to + c.MinSilence
			if tAbs(en.PTS-want) > 250*time.Millisecond {
				t.Errorf("block %d: end at %v, tone ended at %v (+%v)", block, en.PTS, tone.to, c.MinSilence)
			}
			if e := en.PTS + en.Duration; e < want || e >= want+2*bd {
				t.Errorf("block %d: end block [%v, %v), want its end in [%v, %v)", block, en.PTS, e, want, want+2*bd)
			}
			if en.Active || en.Level >= c.StopThreshold || en.SpeechStart != st.PTS {
				t.Errorf("block %d: end event %+v", block, en)
			}
			// Updates cover the speech: none missing before the end.
			if due := st.PTS + time.Duration(k)*c.UpdateInterval; due+bd <= en.PTS {
				t.Errorf("block %d: update due at %v missing (end at %v)", block, due, en.PTS)
			}
			i++
		}
		if i != len(evs) {
			t.Errorf("block %d: extra events %+v", block, evs[i:])
		}
		if v.Active() {
			t.Errorf("block %d: active after the end", block)
		}
		for j := 1; j < len(evs); j++ {
			if evs[j].Sequence <= evs[j-1].Sequence {
				t.Errorf("block %d: sequences %d then %d", block, evs[j-1].Sequence, evs[j].Sequence)
			}
		}
	}
}

// TestVADSilenceNeverStarts: 10 s of noise at level ~0.015 (below
// StopThreshold 0.020) and of a tone at level 0.03 (between StopThreshold
// and StartThreshold 0.045) never start speech.
func TestVADSilenceNeverStarts(t *testing.T) {
	for _, s := range [][]int16{
		tSignal(10*time.Second, nil, 0, 0.03),
		tSignal(10*time.Second, []tSpan{{0, 10 * time.Second}}, 0.03/(2/math.Pi), 0),
	} {
		v := NewVAD(SpeechConfig{}, tRate)
		if evs := tFeed(v, s, 320); len(evs) != 0 {
			t.Errorf("events %+v", evs[0])
		}
		if v.Active() || v.LastLevel() <= 0 || v.LastLevel() >= v.Config().StartThreshold {
			t.Errorf("active %v level %v", v.Active(), v.LastLevel())
		}
	}
}

// TestVADHysteresis: once active, a level between the thresholds keeps
// speech going (updates, no end); a short dip below StopThreshold (shorter
// than MinSilence) does not end it.
func TestVADHysteresis(t *testing.T) {
	v := NewVAD(SpeechConfig{UpdateInterval: time.Hour}, tRate)
	block := func(level float64) []int16 {
		b := make([]int16, 320)
		for i := range b {
			b[i] = int16(level * 32768)
		}
		return b
	}
	var evs []SpeechEvent
	pts := time.Duration(0)
	add := func(level float64, n int) {
		for range n {
			evs = append(evs, v.Process(pts, block(level))...)
			pts += 20 * time.Millisecond
		}
	}
	add(0.1, 1)   // start
	add(0.03, 50) // between thresholds: 1 s, still active
	add(0.01, 12) // 240 ms of silence < 250 ms
	add(0.03, 5)  // resets the silence
	add(0.01, 12) // 240 ms again
	if len(evs) != 1 || evs[0].Type != SpeechStart || !v.Active() {
		t.Fatalf("events %+v active %v", evs, v.Active())
	}
	add(0.01, 1) // 260 ms of silence
	if len(evs) != 2 || evs[1].Type != SpeechEnd || v.Active() {
		t.Fatalf("events %+v active %v", evs, v.Active())
	}
	if got := v.LastPeak(); math.Abs(got-0.01) > 1e-3 {
		t.Errorf("peak %v", got)
	}
	// Empty blocks change nothing.
	if evs := v.Process(pts, nil); evs != nil {
		t.Errorf("empty block gave %+v", evs)
	}
}

// TestVADLevelPeak: level is mean |sample|/32768 and peak max |sample|/32768.
func TestVADLevelPeak(t *testing.T) {
	v := NewVAD(SpeechConfig{}, 0)
	if v.SampleRate() != 16000 {
		t.Fatalf("tRate %d", v.SampleRate())
	}
	evs := v.Process(time.Second, []int16{-32768, 0, 16384, -16384})
	if len(evs) != 1 {
		t.Fatalf("events %+v", evs)
	}
	e := evs[0]
	if e.Level != 0.5 || e.Peak != 1 || e.Type != SpeechStart || e.PTS != time.Second || e.Duration != 250*time.Microsecond || e.Sequence != 0 {
		t.Errorf("event %+v", e)
	}
}
