package paths

import (
	"time"

	"github.com/icey/icey-server/media"
)

// keyframeSince reports whether st published a video keyframe at or after
// t (for a stream without video: any media).
func keyframeSince(st *media.Stream, t time.Time) bool {
	s := st.Stats()
	if s.Tracks.Video == nil && s.Tracks.Audio != nil {
		return !s.LastMediaAt.Before(t)
	}
	return !s.LastKeyframeAt.Before(t)
}
