package signaling

import (
	"fmt"
	"net"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/logging"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"
)

// h264Profiles are the profile-level-id values registered with
// packetization-mode=1. pion matches H.264 formats on profile_idc and the
// constraint byte (not the level), so these cover what browsers offer:
// baseline, constrained baseline, main, high and constrained high. The stream
// is sent as-is; Bind picks the negotiated format whose profile matches the
// stream's SPS.
var h264Profiles = []struct {
	pt   webrtc.PayloadType
	plid string
}{
	{106, "42e01f"},
	{102, "42001f"},
	{127, "4d001f"},
	{112, "64001f"},
	{114, "640c1f"},
}

// newMediaEngine registers the codecs a viewer can be sent and the RTCP
// feedback the sender side understands.
func newMediaEngine() (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	videoFB := []webrtc.RTCPFeedback{
		{Type: "nack"}, {Type: "nack", Parameter: "pli"},
		{Type: webrtc.TypeRTCPFBTransportCC},
	}
	for _, p := range h264Profiles {
		err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType:     webrtc.MimeTypeH264,
				ClockRate:    90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p.plid,
				RTCPFeedback: videoFB,
			},
			PayloadType: p.pt,
		}, webrtc.RTPCodecTypeVideo)
		if err != nil {
			return nil, err
		}
	}
	audioFB := []webrtc.RTCPFeedback{{Type: webrtc.TypeRTCPFBTransportCC}}
	for _, c := range []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
			SDPFmtpLine: "minptime=10;useinbandfec=1", RTCPFeedback: audioFB}, PayloadType: 111},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMU, ClockRate: 8000, Channels: 1,
			RTCPFeedback: audioFB}, PayloadType: 0},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypePCMA, ClockRate: 8000, Channels: 1,
			RTCPFeedback: audioFB}, PayloadType: 8},
	} {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return nil, err
		}
	}
	// Transport-wide sequence numbers on every outgoing packet, so browsers
	// send TWCC feedback (RFC draft-holmer-rmcat-transport-wide-cc-extensions).
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: sdp.TransportCCURI}, kind); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// newInterceptors builds the sender-side interceptor chain. There is no
// NACK responder: NACKs are answered from the stream's shared history (see
// nack.go) instead of a per-viewer copy of every packet sent.
func newInterceptors(lf logging.LoggerFactory) (*interceptor.Registry, error) {
	reg := &interceptor.Registry{}
	// Sender reports carry the RTP/NTP mapping browsers need for lip-sync.
	sr, err := report.NewSenderInterceptor(report.WithSenderLoggerFactory(lf))
	if err != nil {
		return nil, err
	}
	reg.Add(sr)
	twccExt, err := twcc.NewHeaderExtensionInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(twccExt)
	return reg, nil
}

// newSettingEngine configures ICE for a server: one shared UDP mux, no mDNS,
// host candidates only (optionally rewritten to public IPs for NAT 1:1).
func newSettingEngine(cfg *Config, mux ice.UDPMux, lf logging.LoggerFactory) (webrtc.SettingEngine, error) {
	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEUDPMux(mux)
	// mDNS would send multicast and hide the server's address; a server has
	// nothing to hide.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// Fail a dead peer within ~15 s instead of pion's 30 s.
	se.SetICETimeouts(5*time.Second, 15*time.Second, 2*time.Second)
	if cfg.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	} else {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	}
	if len(cfg.PublicIPs) > 0 {
		// NAT 1:1: advertise the public addresses instead of the private
		// host addresses (pion's legacy SetNAT1To1IPs with host candidates).
		if err := se.SetICEAddressRewriteRules(webrtc.ICEAddressRewriteRule{
			External:        cfg.PublicIPs,
			AsCandidateType: webrtc.ICECandidateTypeHost,
			Mode:            webrtc.ICEAddressRewriteReplace,
		}); err != nil {
			return se, fmt.Errorf("signaling: public IPs: %w", err)
		}
	}
	return se, nil
}
