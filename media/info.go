package media

import (
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
)

// VideoInfo returns what the stream knows of its video from the bitstream
// (zero Codec before the first parameter sets or frame).
func (s *Stream) VideoInfo() VideoInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refreshInfoLocked()
	return s.info
}

// notePTSLocked measures the frame spacing and notices reordering: a
// presentation time earlier than the previous one within a run means
// B-frames (pictures sent before the ones they are shown after).
func (s *Stream) notePTSLocked(pts time.Duration) {
	if s.vHavePTS {
		d := pts - s.vLastPTS
		if d > 0 && d < time.Second {
			s.vFrameDur = d
		}
		if d < 0 && d > -time.Second && !s.reorderSeen {
			s.reorderSeen = true
			s.info.BFrames = true
			if s.log != nil {
				s.log.Info("video has B-frames (reordered presentation times)", "stream", s.cfg.Name)
			}
		}
	}
	s.vLastPTS, s.vHavePTS = pts, true
}

// refreshInfoLocked parses the latest SPS when it changed.
func (s *Stream) refreshInfoLocked() {
	if !s.infoStale {
		return
	}
	s.infoStale = false
	codec := s.tracks.Video.VideoCodec()
	info := VideoInfo{Codec: codec}
	switch codec {
	case CodecH264:
		var sps h264.SPS
		if len(s.sps) == 0 || sps.Unmarshal(s.sps) != nil {
			break
		}
		info.Profile = h264Profile(&sps)
		info.Level = fmt.Sprintf("%d.%d", sps.LevelIdc/10, sps.LevelIdc%10)
		info.Width, info.Height = sps.Width(), sps.Height()
		if v := sps.VUI; v != nil && v.BitstreamRestriction != nil {
			info.BFrames = v.BitstreamRestriction.MaxNumReorderFrames > 0
		} else {
			// Without the VUI's bitstream restriction, a profile with B
			// slices may reorder; whether it does shows in the timestamps.
			info.BFrames = false
		}
	case CodecVP8:
		// The size comes from key frames (WriteVP8).
		if s.info.Codec == CodecVP8 {
			info = s.info
		}
	case CodecH265:
		var sps h265.SPS
		if len(s.sps) == 0 || sps.Unmarshal(s.sps) != nil {
			break
		}
		info.Profile = h265Profile(sps.ProfileTierLevel.GeneralProfileIdc)
		info.Level = fmt.Sprintf("%.1f", float64(sps.ProfileTierLevel.GeneralLevelIdc)/30)
		info.Width, info.Height = sps.Width(), sps.Height()
		for _, n := range sps.MaxNumReorderPics {
			if n > 0 {
				info.BFrames = true
			}
		}
	}
	info.BFrames = info.BFrames || s.reorderSeen
	s.info = info
}

// paramsChangedLocked: a new SPS starts a new bitstream, whose reordering
// is judged anew.
func (s *Stream) paramsChangedLocked() {
	s.infoStale = true
	s.reorderSeen = false
}

// h264Profile names profile_idc (H.264 Annex A.2) with its constraints.
func h264Profile(sps *h264.SPS) string {
	switch sps.ProfileIdc {
	case 66:
		if sps.ConstraintSet1Flag {
			return "constrained baseline"
		}
		return "baseline"
	case 77:
		return "main"
	case 88:
		return "extended"
	case 100:
		return "high"
	case 110:
		return "high 10"
	case 122:
		return "high 4:2:2"
	case 244:
		return "high 4:4:4"
	}
	return fmt.Sprintf("profile %d", sps.ProfileIdc)
}

func h265Profile(idc uint8) string {
	switch idc {
	case 1:
		return "main"
	case 2:
		return "main 10"
	case 3:
		return "main still picture"
	case 4:
		return "range extensions"
	}
	return fmt.Sprintf("profile %d", idc)
}
