package testpeer

import (
	"context"
	"time"

	"github.com/icey/icey-server/media"
)

// Play writes c into w in real time, looping, until ctx ends: the tracks
// first (H.264 with the clip's parameter sets, and Opus when opus is set),
// then each access unit at the clip's frame rate and the 20 ms Opus
// packets whose time has come, on one timeline starting at 0.
func Play(ctx context.Context, w media.Writer, c *Clip, opus bool) {
	tr := media.Tracks{Video: &media.VideoParams{SPS: c.SPS, PPS: c.PPS}}
	if opus {
		tr.Audio = &media.AudioParams{Codec: media.CodecOpus, ClockRate: 48000, Channels: 2}
	}
	w.SetTracks(tr)
	frame := time.Second / time.Duration(c.FPS)
	tick := time.NewTicker(frame)
	defer tick.Stop()
	var pts time.Duration
	a := 0
	for i := 0; ; i++ {
		w.WriteH264(pts, c.AUs[i%len(c.AUs)])
		for ; opus && time.Duration(a)*20*time.Millisecond <= pts; a++ {
			w.WriteAudio(time.Duration(a)*20*time.Millisecond, c.Opus[a%len(c.Opus)])
		}
		pts += frame
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
