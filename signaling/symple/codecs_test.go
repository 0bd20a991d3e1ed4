package symple

import (
	"net"
	"strings"
	"testing"

	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/signaling"
)

// A browser that can play none of the codecs the path can be sent in (here
// VP8 only, with no transcoding behind the session layer) gets a
// call:hangup whose reason says what the path is and what is missing,
// instead of a call that plays nothing.
func TestCallNoPlayableCodec(t *testing.T) {
	checkLeaks(t)
	l := newSessionLayerMode(t, signaling.Config{}, "stream", true)
	ts := newTestServer(t, Config{Mode: "stream"}, l.m)
	c := mustDial(t, ts.url)
	c.login("viewer", "")

	me := &webrtc.MediaEngine{}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, PayloadType: 96}, webrtc.RTPCodecTypeVideo); err != nil {
		t.Fatal(err)
	}
	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetIPFilter(func(ip net.IP) bool { return ip.IsLoopback() })
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	pc, err := webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	if _, err := pc.AddTransceiverFromKind(webrtc.RTPCodecTypeVideo, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
		t.Fatal(err)
	}
	b := &browser{t: t, c: c, pc: pc, to: ServerAddress, local: map[string]*webrtc.TrackLocalStaticRTP{}}
	b.callMsg("call:init", map[string]any{})
	c.expect("call:accept", isSub("call:accept"))
	b.callMsg("call:offer", map[string]any{"type": "offer", "sdp": b.offer()})
	m := c.expect("call:hangup", func(m map[string]any) bool { return isSub("call:hangup")(m) || isSub("call:answer")(m) })
	reason, _ := callData(m)["reason"].(string)
	if m["subtype"] != "call:hangup" || !strings.Contains(reason, "H.264") || !strings.Contains(reason, "VP8") {
		t.Fatalf("got %v %q, want call:hangup naming H.264 and the missing VP8 transcode", m["subtype"], reason)
	}
	t.Logf("reason: %s", reason)
}
