package media

import (
	"testing"
	"time"
)

// The stream's retransmission history returns every recent published video
// packet by its sequence number (the very packet subscribers got), forgets
// packets older than RetransmitPackets, never returns audio, and is
// emptied by Close.
func TestRecentVideo(t *testing.T) {
	tests := []struct {
		name       string
		cfgPackets int
		wantSize   int
	}{
		{"default", 0, DefaultRetransmitPackets},
		{"rounded up", 20, 32},
		{"capped", 1 << 20, 1 << 15},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := newVideoStream(t, StreamConfig{RetransmitPackets: tc.cfgPackets}, true)
			if got := st.Config().RetransmitPackets; got != tc.wantSize {
				t.Fatalf("RetransmitPackets %d, want %d", got, tc.wantSize)
			}
			sub, err := st.Subscribe("v", SubscribeOptions{QueuePackets: 1 << 16})
			if err != nil {
				t.Fatal(err)
			}
			var pts time.Duration
			for i := 0; i < 40; i++ { // ~200 video packets
				st.WriteAudio(pts, []byte{1, 2, 3})
				if i%10 == 0 {
					st.WriteH264(pts, [][]byte{idr(5000)})
				} else {
					st.WriteH264(pts, [][]byte{slice(4000)})
				}
				pts += frame30
			}
			all := drain(t, sub)
			video := onlyKind(all, KindVideo)
			held := min(len(video), tc.wantSize)
			for i, p := range video {
				got := st.RecentVideo(p.RTP.SequenceNumber)
				if i >= len(video)-held {
					if got != p {
						t.Fatalf("packet %d (seq %d): history returned %p, want the published %p", i, p.RTP.SequenceNumber, got, p)
					}
				} else if got != nil {
					t.Fatalf("packet %d (seq %d) older than the history is still returned", i, p.RTP.SequenceNumber)
				}
			}
			for _, p := range onlyKind(all, KindAudio) {
				if got := st.RecentVideo(p.RTP.SequenceNumber); got != nil && got.Kind != KindVideo {
					t.Fatal("history returned an audio packet")
				}
			}
			last := video[len(video)-1].RTP.SequenceNumber
			if st.RecentVideo(last+1) != nil {
				t.Fatal("history returned a packet not yet published")
			}
			st.Close()
			if st.RecentVideo(last) != nil {
				t.Fatal("history kept packets after Close")
			}
		})
	}
}
