package signaling

import (
	"time"

	"github.com/pion/rtcp"

	"github.com/icey/icey-server/media"
)

// reportInterval is how often every viewer gets an RTCP sender report per
// track (what pion's report interceptor sends by default).
const reportInterval = time.Second

// reportLoop sends every connected viewer its RTCP sender reports (RFC 3550
// §6.4.1: the RTP/NTP mapping browsers need for lip-sync, and the packet
// and octet counts) from one goroutine for the whole server. pion's report
// interceptor would do the same with a goroutine and a ticker per peer and a
// lock and a clock read per packet; here the counts are the tracks' own
// atomic counters and the mapping is the stream's (RTPClock: every viewer of
// a stream is sent its timestamps).
func (m *Manager) reportLoop() {
	defer close(m.reportsDone)
	t := time.NewTicker(reportInterval)
	defer t.Stop()
	var list []*Session
	var pkts []rtcp.Packet
	for {
		select {
		case <-m.stopReports:
			return
		case <-t.C:
		}
		m.mu.Lock()
		list = list[:0]
		for _, s := range m.sessions {
			if s.activeCounted && s.role == "viewer" {
				list = append(list, s)
			}
		}
		m.mu.Unlock()
		now := time.Now()
		for i, s := range list {
			pkts = s.senderReports(now, pkts[:0])
			if len(pkts) > 0 && s.ctx.Err() == nil {
				// A failure is the peer going away; its session notices.
				_ = s.pc.WriteRTCP(pkts)
			}
			list[i] = nil
		}
	}
}

// senderReports appends a sender report for each of the session's tracks
// that has sent media.
func (s *Session) senderReports(now time.Time, out []rtcp.Packet) []rtcp.Packet {
	for _, x := range []struct {
		t    *viewerTrack
		kind media.Kind
	}{{s.video, media.KindVideo}, {s.audio, media.KindAudio}} {
		if x.t == nil {
			continue
		}
		b := x.t.bound()
		n := x.t.packets.Load()
		if b == nil || n == 0 || b.clock == 0 {
			continue
		}
		ts, at, ok := s.st.RTPClock(x.kind)
		if !ok {
			continue
		}
		out = append(out, &rtcp.SenderReport{
			SSRC:        b.ssrc,
			NTPTime:     ntpTime(now),
			RTPTime:     ts + uint32(int64(now.Sub(at))*int64(b.clock)/int64(time.Second)),
			PacketCount: uint32(n + x.t.rtxPackets.Load()),
			OctetCount:  uint32(x.t.octets.Load() + x.t.rtxOctets.Load()),
		})
	}
	return out
}

// ntpEpochOffset is the seconds from 1900-01-01 (NTP) to 1970-01-01 (Unix).
const ntpEpochOffset = 2208988800

// ntpTime is t as a 64-bit NTP timestamp: seconds since 1900 in the upper
// 32 bits, the fraction of a second in the lower.
func ntpTime(t time.Time) uint64 {
	ns := t.UnixNano()
	sec := uint64(ns/1e9) + ntpEpochOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return sec<<32 | frac
}
