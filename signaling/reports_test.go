package signaling

import (
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// srSeen is a sender report as a viewer received it, with what the viewer
// had received of that track by then.
type srSeen struct {
	sr       rtcp.SenderReport
	at       time.Time
	received uint32    // packets of the track received before it
	lastTS   uint32    // RTP timestamp of the latest of them
	lastAt   time.Time // and when it arrived
}

// Every connected viewer gets RTCP sender reports for each of its tracks,
// about once a second, that match what it receives: its SSRC, a packet and
// octet count in step with the packets received, an NTP time of now, and an
// RTP time that extrapolates the timestamps received (the mapping browsers
// use for lip-sync).
func TestSenderReports(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{}, nil)
	pc := newClientPC(t)
	defer pc.Close()
	var mu sync.Mutex
	seen := map[webrtc.RTPCodecType][]srSeen{}
	pc.OnTrack(func(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
		var tmu sync.Mutex
		var received uint32
		var lastTS uint32
		var lastAt time.Time
		go func() {
			for {
				pkts, _, err := rcv.ReadRTCP()
				if err != nil {
					return
				}
				now := time.Now()
				for _, p := range pkts {
					sr, ok := p.(*rtcp.SenderReport)
					if !ok || sr.SSRC != uint32(tr.SSRC()) {
						continue
					}
					tmu.Lock()
					s := srSeen{sr: *sr, at: now, received: received, lastTS: lastTS, lastAt: lastAt}
					tmu.Unlock()
					mu.Lock()
					seen[tr.Kind()] = append(seen[tr.Kind()], s)
					mu.Unlock()
				}
			}
		}()
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			tmu.Lock()
			received++
			lastTS, lastAt = p.Timestamp, time.Now()
			tmu.Unlock()
		}
	})
	h.postWHEP(t, pc)
	waitFor(t, "three sender reports per track", 20*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seen[webrtc.RTPCodecTypeVideo]) >= 3 && len(seen[webrtc.RTPCodecTypeAudio]) >= 3
	})
	mu.Lock()
	defer mu.Unlock()
	for kind, clock := range map[webrtc.RTPCodecType]float64{webrtc.RTPCodecTypeVideo: 90000, webrtc.RTPCodecTypeAudio: 48000} {
		list := seen[kind]
		for i, s := range list {
			ntp := s.sr.NTPTime
			sec := float64(ntp>>32) - ntpEpochOffset + float64(ntp&0xffffffff)/(1<<32)
			if d := sec - float64(s.at.UnixNano())/1e9; d > 0.5 || d < -0.5 {
				t.Errorf("%s report %d: NTP time %.3f s off the clock", kind, i, d)
			}
			// Counts: what the viewer received, give or take the packets in
			// flight (sent after the count was taken and before the report
			// arrived, or sent before it and still on the way).
			if d := int64(s.sr.PacketCount) - int64(s.received); d < -64 || d > 64 {
				t.Errorf("%s report %d: packet count %d, the viewer had %d", kind, i, s.sr.PacketCount, s.received)
			}
			if s.sr.OctetCount < s.sr.PacketCount*20 {
				t.Errorf("%s report %d: octet count %d for %d packets", kind, i, s.sr.OctetCount, s.sr.PacketCount)
			}
			// RTP time: the latest timestamp received plus the time since,
			// within 150 ms (the pacing of frames and the reports' own delay).
			want := float64(s.lastTS) + s.at.Sub(s.lastAt).Seconds()*clock
			if d := (float64(int32(s.sr.RTPTime - uint32(int64(want))))) / clock; d > 0.15 || d < -0.15 {
				t.Errorf("%s report %d: RTP time %d is %.3f s off the timestamps received", kind, i, s.sr.RTPTime, d)
			}
			if i > 0 {
				gap := s.at.Sub(list[i-1].at)
				if gap < 500*time.Millisecond || gap > 2*time.Second {
					t.Errorf("%s report %d came %v after the previous one", kind, i, gap)
				}
				if s.sr.PacketCount <= list[i-1].sr.PacketCount {
					t.Errorf("%s report %d: packet count did not grow", kind, i)
				}
			}
		}
	}
}
