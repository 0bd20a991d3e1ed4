package app

import (
	"fmt"
	"strings"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/renditions"
)

// videoSummary describes a stream's video for the source check: what it
// is, from the bitstream, and who gets it how. warn is set when some
// viewers cannot be served (no ffmpeg for the renditions they need).
func videoSummary(st *media.Stream, rc renditions.Config) (detail, warn string) {
	vi := st.VideoInfo()
	if vi.Codec == "" {
		return "", ""
	}
	name := map[string]string{media.CodecH264: "H.264", media.CodecH265: "H.265", media.CodecVP8: "VP8"}[vi.Codec]
	var parts []string
	if vi.Profile != "" {
		parts = append(parts, vi.Profile)
	}
	if vi.Width > 0 {
		parts = append(parts, fmt.Sprintf("%dx%d", vi.Width, vi.Height))
	}
	if vi.BFrames {
		parts = append(parts, "B-frames")
	}
	if len(parts) > 0 {
		name += " " + strings.Join(parts, " ")
	}
	if a := st.Tracks().Audio; a != nil {
		name += ", " + a.Codec
	}
	var who, without string
	switch {
	case vi.Codec == media.CodecH264 && vi.BFrames:
		who = "browsers get an H.264 baseline or VP8 rendition (B-frames do not play smoothly in browsers)"
		without = "every viewer needs a rendition"
	case vi.Codec == media.CodecH265:
		who = "viewers that decode H.265 get it as is, the others an H.264 or VP8 rendition"
		without = "only viewers that decode H.265 can be served"
	default:
		who = "browsers without H.264 get a VP8 rendition"
		without = "browsers without H.264 (e.g. Firefox without its OpenH264 plugin) cannot be served"
	}
	detail = name + "; " + who
	if !rc.Available() {
		warn = "ffmpeg is not installed, so renditions cannot run: " + without
	}
	return detail, warn
}
