package signaling

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
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

var videoFB = []webrtc.RTCPFeedback{
	{Type: "nack"}, {Type: "nack", Parameter: "pli"},
	{Type: webrtc.TypeRTCPFBTransportCC},
}

// videoCodecs are the video formats a viewer can be sent: H.264 in every
// profile above (the source or a rendition), VP8 (a rendition, for
// browsers without H.264) and H.265 (an H.265 source passed through).
// Publishers send H.264 only (h264Only).
func videoCodecs(h264Only bool) []webrtc.RTPCodecParameters {
	var out []webrtc.RTPCodecParameters
	for _, p := range h264Profiles {
		out = append(out, webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType:     webrtc.MimeTypeH264,
				ClockRate:    90000,
				SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + p.plid,
				RTCPFeedback: videoFB,
			},
			PayloadType: p.pt,
		})
	}
	if h264Only {
		return out
	}
	return append(out,
		webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8,
			ClockRate: 90000, RTCPFeedback: videoFB}, PayloadType: 96},
		webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH265,
			ClockRate: 90000, SDPFmtpLine: "level-id=93;profile-id=1;tier-flag=0;tx-mode=SRST",
			RTCPFeedback: videoFB}, PayloadType: 116})
}

// newMediaEngine registers the codecs a viewer can be sent (or, for a
// publisher, that can be received) and the RTCP feedback the sender side
// understands.
func newMediaEngine(viewer bool) (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	for _, c := range videoCodecs(!viewer) {
		if err := m.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
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

// newInterceptors builds the sender-side interceptor chain: only the
// transport-wide sequence numbers. There is no NACK responder (NACKs are
// answered from the stream's shared history, see nack.go) and no report
// interceptor (sender reports come from one loop for every viewer, see
// reports.go): neither costs anything per packet or per viewer here.
func newInterceptors() (*interceptor.Registry, error) {
	reg := &interceptor.Registry{}
	twccExt, err := twcc.NewHeaderExtensionInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(twccExt)
	return reg, nil
}

// newSettingEngine configures ICE for a server: one shared UDP mux, no mDNS,
// host candidates only (optionally rewritten to public IPs for NAT 1:1).
// Loopback candidates are always offered: on a loopback bind they are the
// only ones, on a wildcard bind they come with every usable interface
// address, so a browser on the same machine connects even where the machine
// has no other interface (a container, a namespace, a laptop offline).
func newSettingEngine(cfg *Config, mux ice.UDPMux, lf logging.LoggerFactory) (webrtc.SettingEngine, error) {
	se := webrtc.SettingEngine{LoggerFactory: lf}
	se.SetICEUDPMux(mux)
	// mDNS would send multicast and hide the server's address; a server has
	// nothing to hide.
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	// A silent peer is disconnected after 5 s and failed (its session ends)
	// 15 s later, ~20 s in all, instead of pion's 5 + 25 s.
	se.SetICETimeouts(5*time.Second, 15*time.Second, 2*time.Second)
	if cfg.LoopbackOnly {
		se.SetIncludeLoopbackCandidate(true)
		se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	} else {
		se.SetIncludeLoopbackCandidate(true)
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

// CandidateAddrs reports the host candidate addresses the session layer
// offers in its answers when its media socket is bound to bindHost (an IP
// address or a host name; "" or a wildcard means every interface), with
// publicIPs (webrtc.publicIps) replacing them as NewManager does. It follows
// pion's gathering rules for a UDP mux: on a wildcard bind every address of
// every interface that is up, loopback included, IPv6 link-local, site-local
// and IPv4-compatible addresses excluded; on a specific address just that
// one. external reports whether any address is usable from outside this
// machine (not loopback): when it is false only a browser on this machine
// can connect, and an empty list means no viewer can connect at all. This
// is what a preflight "webrtc" check reports.
func CandidateAddrs(bindHost string, publicIPs []string) (addrs []netip.Addr, external bool, err error) {
	if len(publicIPs) > 0 {
		for _, p := range publicIPs {
			a, err := netip.ParseAddr(p)
			if err != nil {
				return nil, false, fmt.Errorf("signaling: public IP %q is not an IP address", p)
			}
			addrs = append(addrs, a.Unmap())
		}
		return addrs, anyExternal(addrs), nil
	}
	host := strings.Trim(bindHost, "[]")
	var bind netip.Addr
	if host == "" {
		bind = netip.IPv6Unspecified()
	} else if a, err := netip.ParseAddr(host); err == nil {
		bind = a.Unmap()
	} else {
		ips, err := net.DefaultResolver.LookupNetIP(context.Background(), "ip", host)
		if err != nil || len(ips) == 0 {
			return nil, false, fmt.Errorf("signaling: bind host %q: %v", bindHost, err)
		}
		bind = ips[0].Unmap()
		for _, ip := range ips { // Go's listeners prefer IPv4
			if ip.Unmap().Is4() {
				bind = ip.Unmap()
				break
			}
		}
	}
	if !bind.IsUnspecified() {
		return []netip.Addr{bind}, anyExternal([]netip.Addr{bind}), nil
	}
	// "udp" on 0.0.0.0 or :: is one dual-stack socket (what the server
	// binds), so both families count.
	ifaces, err := net.Interfaces()
	if err != nil {
		return nil, false, fmt.Errorf("signaling: listing interfaces: %w", err)
	}
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		list, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range list {
			var ip net.IP
			switch v := a.(type) {
			case *net.IPNet:
				ip = v.IP
			case *net.IPAddr:
				ip = v.IP
			}
			na, ok := netip.AddrFromSlice(ip)
			if !ok {
				continue
			}
			na = na.Unmap()
			if na.Is6() {
				b := na.As16()
				if isZero(b[:12]) || b[0] == 0xfe && b[1]&0xc0 == 0xc0 || na.IsLinkLocalUnicast() {
					continue // pion never offers these
				}
			}
			addrs = append(addrs, na)
		}
	}
	return addrs, anyExternal(addrs), nil
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func anyExternal(addrs []netip.Addr) bool {
	for _, a := range addrs {
		if !a.IsLoopback() && !a.IsUnspecified() {
			return true
		}
	}
	return false
}
