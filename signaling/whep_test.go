package signaling

import (
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// sharedClip is generated once per test binary run (ffmpeg is the slow part).
var (
	clipOnce sync.Once
	theClip  *clip
)

func getClip(t *testing.T) *clip {
	t.Helper()
	clipOnce.Do(func() { theClip = makeClip(t, "320x240", "1M") })
	if theClip == nil {
		t.Fatal("clip generation failed earlier")
	}
	return theClip
}

// A WHEP viewer connects, gets an IDR with SPS/PPS first, payloads within
// 1200 bytes and audio; it counts as active until DELETE ends it.
func TestWHEPViewerReceivesMedia(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{}, nil)
	time.Sleep(300 * time.Millisecond) // let the stream get going (an IDR is cached)

	v := startViewer(t, h)
	waitChan(t, "viewer connected", v.connected, 10*time.Second)
	waitFor(t, "active session", 10*time.Second, func() bool { a, _ := h.m.Counts(); return a == 1 })
	v.waitFrames(t, 60, 15*time.Second)

	frames, maxPayload, audio := v.snapshot()
	first := frames[0]
	if !first.idr || !first.sps || !first.pps {
		t.Fatalf("first frame NAL types %v: want SPS, PPS and IDR", first.nalTypes)
	}
	// SPS/PPS precede every IDR.
	for i, f := range frames {
		if f.idr && !(f.sps && f.pps) && !f.truncated {
			t.Errorf("frame %d: IDR without SPS/PPS (%v)", i, f.nalTypes)
		}
	}
	if maxPayload > 1200 {
		t.Errorf("max RTP payload %d > 1200", maxPayload)
	}
	waitFor(t, "audio packets", 10*time.Second, func() bool { _, _, a := v.snapshot(); return a >= 25 })
	_, _, audio = v.snapshot()
	t.Logf("frames %d, max payload %d, audio packets %d, POST->first frame %v",
		len(frames), maxPayload, audio, first.at.Sub(v.posted).Round(time.Millisecond))

	infos := h.m.Sessions()
	if len(infos) != 1 || infos[0].State != "connected" || infos[0].Role != "viewer" || infos[0].Sent == 0 {
		t.Errorf("sessions: %+v", infos)
	}

	resp, _ := h.do(http.MethodDelete, v.location, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	if a, total := h.m.Counts(); a != 0 || total != 1 {
		t.Errorf("after DELETE counts = %d, %d; want 0, 1", a, total)
	}
	if s := h.m.Session(strings.TrimPrefix(v.location, "/whep/")); s != nil {
		t.Error("session still listed after DELETE")
	}
	waitChan(t, "viewer sees the hangup", v.ended, 10*time.Second)
	resp, _ = h.do(http.MethodDelete, v.location, "", "")
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("second DELETE: %d, want 404", resp.StatusCode)
	}

	// total keeps counting.
	v2 := startViewer(t, h)
	waitChan(t, "second viewer connected", v2.connected, 10*time.Second)
	waitFor(t, "counts 1/2", 10*time.Second, func() bool { a, tot := h.m.Counts(); return a == 1 && tot == 2 })
}

// Every WHEP/WHIP error path answers the status the spec asks for.
func TestWHEPErrors(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{MaxBodyBytes: 16 << 10}, nil)
	noTracks := newHarness(t, nil, Config{}, nil)
	relay := newHarnessRoles(t, nil, Config{}, nil, true, true)
	record := newHarnessRoles(t, nil, Config{}, nil, false, true)
	_, offer := newOfferPC(t)
	_, audioOnlySendonly := newOfferPC(t)
	audioOnlySendonly = strings.ReplaceAll(audioOnlySendonly, "a=recvonly", "a=sendonly")

	tests := []struct {
		name   string
		h      *harness
		method string
		path   string
		ctype  string
		body   string
		hdr    []string
		want   int
		inBody string
	}{
		{"wrong content type", h, "POST", "/whep", "text/plain", offer, nil, 415, "application/sdp"},
		{"no content type", h, "POST", "/whep", "", offer, nil, 415, ""},
		{"body too large", h, "POST", "/whep", "application/sdp", strings.Repeat("a", 20<<10), nil, 413, ""},
		{"empty offer", h, "POST", "/whep", "application/sdp", "", nil, 400, "empty offer"},
		{"malformed SDP", h, "POST", "/whep", "application/sdp", "hello world\r\n", nil, 400, "malformed SDP"},
		{"offer without media", h, "POST", "/whep", "application/sdp",
			"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n", nil, 400, "no media"},
		{"sendonly offer", h, "POST", "/whep", "application/sdp", audioOnlySendonly, nil, 400, "receives neither"},
		{"GET /whep", h, "GET", "/whep", "", "", nil, 405, ""},
		{"PUT session", h, "PUT", "/whep/abc", "", "", nil, 405, ""},
		{"PATCH unknown", h, "PATCH", "/whep/nope", "application/trickle-ice-sdpfrag", "a=end-of-candidates\r\n", nil, 404, ""},
		{"DELETE unknown", h, "DELETE", "/whep/nope", "", "", nil, 404, ""},
		{"no tracks", noTracks, "POST", "/whep", "application/sdp", offer, nil, 503, "source unavailable"},
		{"WHEP in record mode", record, "POST", "/whep", "application/sdp", offer, nil, 403, "does not accept viewers"},
		{"WHEP on an unknown path", h, "POST", "/nope/whep", "application/sdp", offer, nil, 404, "no such path"},
		{"WHIP in stream mode", h, "POST", "/whip", "application/sdp", sendOffer(t, true, true), nil, 403, "does not accept publishers"},
		{"WHIP recvonly offer in relay mode", relay, "POST", "/whip", "application/sdp", offer, nil, 400, "sends no audio or video"},
		{"WHIP wrong type", relay, "POST", "/whip", "text/plain", offer, nil, 415, ""},
		{"WHIP PATCH unknown", relay, "PATCH", "/whip/x", "application/trickle-ice-sdpfrag", "", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := tc.h.do(tc.method, tc.path, tc.ctype, tc.body, tc.hdr...)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.inBody != "" && !strings.Contains(body, tc.inBody) {
				t.Errorf("body %q lacks %q", body, tc.inBody)
			}
			if tc.want == 405 && resp.Header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if tc.want == 503 && resp.Header.Get("Retry-After") == "" {
				t.Error("503 without Retry-After")
			}
		})
	}
	if _, total := h.m.Counts(); total != 0 {
		t.Errorf("failed requests created %d sessions", total)
	}
	if n := len(h.m.Sessions()); n != 0 {
		t.Errorf("%d sessions left", n)
	}
}

func TestWHEPOptionsAndLinkHeaders(t *testing.T) {
	h := newHarness(t, nil, Config{ICEServers: func() []webrtc.ICEServer {
		return []webrtc.ICEServer{{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}, Username: "u1", Credential: "p1"}}
	}}, nil)
	resp, _ := h.do(http.MethodOptions, "/whep", "", "")
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("OPTIONS: %d", resp.StatusCode)
	}
	for k, want := range map[string]string{
		"Allow": "POST", "Accept-Post": "application/sdp",
		"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Headers": "Authorization",
		"Access-Control-Expose-Headers": "Location",
	} {
		if got := resp.Header.Get(k); !strings.Contains(got, want) {
			t.Errorf("%s = %q, want it to contain %q", k, got, want)
		}
	}
	link := resp.Header.Get("Link")
	want := `<turn:127.0.0.1:3478?transport=udp>; rel="ice-server"; username="u1"; credential="p1"; credential-type="password"`
	if link != want {
		t.Errorf("Link = %q\nwant   %q", link, want)
	}
}

// Beyond MaxSessions the server answers 503; a freed slot is reusable.
func TestWHEPCapacity(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{MaxSessions: 2}, nil)
	time.Sleep(200 * time.Millisecond)
	v1 := startViewer(t, h)
	startViewer(t, h)
	if _, err := tryViewer(t, h); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("third viewer: %v, want 503", err)
	}
	resp, _ := h.do(http.MethodDelete, v1.location, "", "")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	v3 := startViewer(t, h)
	waitChan(t, "viewer after a freed slot connects", v3.connected, 10*time.Second)
}
