package testpeer

import (
	"fmt"
	"strings"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Video codec names for Options.VideoCodecs.
const (
	CodecH264 = "H264"
	CodecH265 = "H265"
	CodecVP8  = "VP8"
)

var videoFeedback = []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}

// videoCodecParams are the payload types a viewer offers per codec name:
// pion's defaults (RegisterDefaultCodecs, with their RTX), plus H.264
// 640c1f (Constrained High, as Chromium offers) on a free payload type.
func videoCodecParams(name string) ([]webrtc.RTPCodecParameters, error) {
	vid := func(mime, fmtp string, pt, rtx uint8) []webrtc.RTPCodecParameters {
		return []webrtc.RTPCodecParameters{
			{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: mime, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: videoFeedback}, PayloadType: webrtc.PayloadType(pt)},
			{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: fmt.Sprintf("apt=%d", pt)}, PayloadType: webrtc.PayloadType(rtx)},
		}
	}
	var out []webrtc.RTPCodecParameters
	switch strings.ToUpper(name) {
	case CodecH264:
		for _, c := range []struct {
			fmtp    string
			pt, rtx uint8
		}{
			{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f", 102, 103},
			{"level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42001f", 104, 105},
			{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f", 106, 107},
			{"level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=42e01f", 108, 109},
			{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f", 127, 125},
			{"level-asymmetry-allowed=1;packetization-mode=0;profile-level-id=4d001f", 39, 40},
			{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f", 112, 113},
			{"level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=640c1f", 114, 115},
		} {
			out = append(out, vid(webrtc.MimeTypeH264, c.fmtp, c.pt, c.rtx)...)
		}
	case CodecH265:
		out = vid(webrtc.MimeTypeH265, "", 116, 117)
	case CodecVP8:
		out = vid(webrtc.MimeTypeVP8, "", 96, 97)
	default:
		return nil, fmt.Errorf("testpeer: unknown video codec %q (want H264, H265 or VP8)", name)
	}
	return out, nil
}

// newMediaEngine registers pion's default codecs when videoCodecs is
// empty, else the audio defaults and exactly the named video codecs (in
// that order of preference).
func newMediaEngine(videoCodecs []string) (*webrtc.MediaEngine, error) {
	me := &webrtc.MediaEngine{}
	if len(videoCodecs) == 0 {
		return me, me.RegisterDefaultCodecs()
	}
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeG722, ClockRate: 8000}, PayloadType: rtp.PayloadTypeG722},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000}, PayloadType: rtp.PayloadTypePCMU},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000}, PayloadType: rtp.PayloadTypePCMA},
	} {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	for _, name := range videoCodecs {
		params, err := videoCodecParams(name)
		if err != nil {
			return nil, err
		}
		for _, c := range params {
			if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
				return nil, err
			}
		}
	}
	return me, nil
}
