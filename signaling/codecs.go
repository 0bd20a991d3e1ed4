package signaling

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/media"
)

// ErrNoCodec is returned when a viewer can receive the path's video in no
// codec the server can give it (the message says why: what the path has,
// what the viewer offered, what is missing). WHEP answers 406.
var ErrNoCodec = errors.New("signaling: no codec the viewer can play")

// Renditions is optionally implemented by a Router whose paths can serve
// viewers that cannot play the source's video as it is: Rendition returns
// the stream of st transcoded to codec (media.CodecH264 or
// media.CodecVP8), shared by every viewer of that path and codec; release
// must be called exactly once when the viewer is gone.
type Renditions interface {
	Rendition(ctx context.Context, path string, st *media.Stream, codec string) (*media.Stream, func(), error)
}

// format is one rtpmap of an offer's media section with its fmtp.
type format struct {
	pt         uint8
	name, fmtp string // encoding name as offered (e.g. "H264"), parameters
}

// videoFormats lists the formats of the offer's first active receiving
// video section (RFC 8866 §6.6, §6.15).
func videoFormats(d *sdp.SessionDescription) []format {
	for _, md := range d.MediaDescriptions {
		if md.MediaName.Media != "video" || md.MediaName.Port.Value == 0 {
			continue
		}
		if _, ok := md.Attribute("sendonly"); ok {
			continue
		}
		if _, ok := md.Attribute("inactive"); ok {
			continue
		}
		fmtp := map[string]string{}
		for _, a := range md.Attributes {
			if a.Key == "fmtp" {
				if pt, rest, ok := strings.Cut(a.Value, " "); ok {
					fmtp[pt] = rest
				}
			}
		}
		var out []format
		for _, a := range md.Attributes {
			if a.Key != "rtpmap" {
				continue
			}
			pt, enc, ok := strings.Cut(a.Value, " ")
			n, err := strconv.ParseUint(pt, 10, 7)
			if !ok || err != nil {
				continue
			}
			name, _, _ := strings.Cut(enc, "/")
			out = append(out, format{pt: uint8(n), name: name, fmtp: fmtp[pt]})
		}
		return out
	}
	return nil
}

// offeredVideo lists the video codecs an offer can receive: H264 (with
// packetization-mode=1, RFC 6184 §8.1), H265 and VP8.
func offeredVideo(d *sdp.SessionDescription) map[string]bool {
	out := map[string]bool{}
	for _, f := range videoFormats(d) {
		switch strings.ToUpper(f.name) {
		case "H264":
			if pm, _ := h264Fmtp(f.fmtp); pm == "1" {
				out[media.CodecH264] = true
			}
		case "H265":
			out[media.CodecH265] = true
		case "VP8":
			out[media.CodecVP8] = true
		}
	}
	return out
}

// receivesVideo reports whether the offer has an active video section
// that receives.
func receivesVideo(d *sdp.SessionDescription) bool {
	return offerReceives(d, media.Tracks{Video: &media.VideoParams{}})
}

// videoMime is the WebRTC MIME type of a hub video codec.
func videoMime(codec string) string {
	switch codec {
	case media.CodecH265:
		return webrtc.MimeTypeH265
	case media.CodecVP8:
		return webrtc.MimeTypeVP8
	}
	return webrtc.MimeTypeH264
}

// describeVideo names a stream's video for messages: "H.264 (high, with
// B-frames)".
func describeVideo(codec string, info media.VideoInfo) string {
	name := map[string]string{media.CodecH264: "H.264", media.CodecH265: "H.265", media.CodecVP8: "VP8"}[codec]
	if name == "" {
		name = codec
	}
	var extra []string
	if info.Codec == codec && info.Profile != "" {
		extra = append(extra, info.Profile)
	}
	if codec == media.CodecH264 && info.BFrames {
		extra = append(extra, "with B-frames")
	}
	if len(extra) > 0 {
		name += " (" + strings.Join(extra, ", ") + ")"
	}
	return name
}

// chooseVideo decides what a viewer of st is sent: the stream itself when
// the offer can receive its video codec (H.264 only without B-frames,
// which browsers play at a fraction of their frame rate), else a
// rendition in the first codec of H.264 and VP8 that the offer accepts.
// It returns the stream to attach to and a release for the rendition (nil
// when none); a viewer that receives no video gets st as it is.
func (m *Manager) chooseVideo(ctx context.Context, d *sdp.SessionDescription, path string, st *media.Stream) (*media.Stream, func(), error) {
	tr := st.Tracks()
	if tr.Video == nil || !receivesVideo(d) {
		return st, nil, nil
	}
	src := tr.Video.VideoCodec()
	info := st.VideoInfo()
	offered := offeredVideo(d)
	if offered[src] && !(src == media.CodecH264 && info.BFrames) {
		return st, nil, nil
	}
	var why string
	switch {
	case offered[src]:
		why = fmt.Sprintf("path %q is %s, which browsers do not play smoothly", path, describeVideo(src, info))
	default:
		why = fmt.Sprintf("path %q is %s and the viewer does not accept %s", path, describeVideo(src, info), describeVideo(src, media.VideoInfo{}))
	}
	target := ""
	switch {
	case offered[media.CodecH264]:
		target = media.CodecH264
	case offered[media.CodecVP8]:
		target = media.CodecVP8
	default:
		can := []string{"H.264", "VP8"}
		if src == media.CodecH265 {
			can = []string{"H.265", "H.264", "VP8"}
		}
		return nil, nil, fmt.Errorf("%w: path %q is %s and the viewer accepts none of %s (the video codecs it offers are not served)",
			ErrNoCodec, path, describeVideo(src, info), strings.Join(can, ", "))
	}
	r, ok := m.paths.(Renditions)
	if !ok {
		return nil, nil, fmt.Errorf("%w: %s, and no %s transcode is available here", ErrNoCodec, why, describeVideo(target, media.VideoInfo{}))
	}
	rs, release, err := r.Rendition(ctx, path, st, target)
	if err != nil {
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w: %s, and the %s transcode is not available: %v", ErrNoCodec, why, describeVideo(target, media.VideoInfo{}), err)
	}
	m.log.Debug("viewer gets a rendition", "path", path, "codec", target, "why", why)
	return rs, release, nil
}

// offerCodecs returns the offer's video formats of one MIME type, with the
// offer's payload types and parameters and our RTCP feedback (for H.264
// only packetization-mode=1), for the transceiver's codec preferences: the
// answer then lists only the codec the viewer is sent, under the payload
// types the viewer chose.
func offerCodecs(d *sdp.SessionDescription, mime string) []webrtc.RTPCodecParameters {
	var out []webrtc.RTPCodecParameters
	_, want, _ := strings.Cut(mime, "/")
	for _, f := range videoFormats(d) {
		if !strings.EqualFold(f.name, want) {
			continue
		}
		if pm, _ := h264Fmtp(f.fmtp); strings.EqualFold(want, "H264") && pm != "1" {
			continue
		}
		out = append(out, webrtc.RTPCodecParameters{PayloadType: webrtc.PayloadType(f.pt),
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000,
				SDPFmtpLine: f.fmtp, RTCPFeedback: videoFB}})
	}
	return out
}
