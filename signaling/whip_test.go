package signaling

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/testpeer"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/paths"
)

// sendOffer is a complete sendonly H.264 + Opus offer (its peer never
// connects).
func sendOffer(t *testing.T, video, audio bool) string {
	t.Helper()
	pc, offer, err := testpeer.SendOffer(video, audio)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	return offer
}

// tokenRouter is OneStream with a publish token, like a path's publishToken.
type tokenRouter struct {
	Router
	token string
}

func (r tokenRouter) Publish(ctx context.Context, path, token string) (*media.Stream, func(), error) {
	if token != r.token {
		return nil, nil, fmt.Errorf("%w: wrong publish token for %q", paths.ErrUnauthorized, DefaultPath)
	}
	return r.Router.Publish(ctx, path, token)
}

// newRouterHarness is a harness whose manager resolves paths with r (st is
// the stream r serves, closed at the end).
func newRouterHarness(t *testing.T, st *media.Stream, r Router, cfg Config) *harness {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.UDPConn = conn
	cfg.LoopbackOnly = true
	m, err := NewManager(cfg, r, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, m: m, st: st, srv: httptest.NewServer(m.Handler()),
		client: &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second}}
	t.Cleanup(h.close)
	return h
}

// WHIP answers the status codes RFC 9725 and the paths contract ask for.
func TestWHIPErrors(t *testing.T) {
	c := getClip(t)
	stream := newHarness(t, c, Config{}, nil) // read only: a pulled source
	relay := relayHarness(t, Config{})
	st := media.NewStream(media.StreamConfig{Name: "token"}, nil)
	tokened := newRouterHarness(t, st, tokenRouter{OneStream(st, true, true), "s3cret"}, Config{})

	good := sendOffer(t, true, true)
	_, recvonly := newOfferPC(t)
	vp8 := strings.ReplaceAll(good, "H264/90000", "VP8/90000")
	pcmu := strings.ReplaceAll(good, "opus/48000/2", "PCMU/8000")
	inactive := strings.ReplaceAll(good, "a=sendonly", "a=inactive")

	tests := []struct {
		name   string
		h      *harness
		path   string
		ctype  string
		body   string
		hdr    []string
		want   int
		inBody string
	}{
		{"wrong content type", relay, "/whip", "text/plain", good, nil, 415, "application/sdp"},
		{"no content type", relay, "/whip", "", good, nil, 415, ""},
		{"empty offer", relay, "/whip", "application/sdp", "", nil, 400, "empty offer"},
		{"malformed SDP", relay, "/whip", "application/sdp", "hello\r\n", nil, 400, "malformed SDP"},
		{"recvonly offer", relay, "/whip", "application/sdp", recvonly, nil, 400, "sends no audio or video"},
		{"inactive offer", relay, "/whip", "application/sdp", inactive, nil, 400, "sends no audio or video"},
		{"VP8 video", relay, "/whip", "application/sdp", vp8, nil, 400, "H.264 with packetization-mode=1"},
		{"PCMU audio", relay, "/whip", "application/sdp", pcmu, nil, 400, "audio must be Opus"},
		{"read-only path", stream, "/whip", "application/sdp", good, nil, 403, "does not accept publishers"},
		{"unknown path", relay, "/nope/whip", "application/sdp", good, nil, 404, "no such path"},
		{"no token", tokened, "/whip", "application/sdp", good, nil, 401, "wrong publish token"},
		{"wrong token", tokened, "/whip", "application/sdp", good, []string{"Authorization", "Bearer nope"}, 401, ""},
		{"GET /whip", relay, "/whip", "", "", nil, 405, ""},
		{"PATCH unknown", relay, "/whip/nope", "application/trickle-ice-sdpfrag", "a=end-of-candidates\r\n", nil, 404, ""},
		{"DELETE unknown", relay, "/whip/" + strings.Repeat("ab", 32), "", "", nil, 404, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method := http.MethodPost
			switch {
			case strings.HasPrefix(tc.name, "GET"):
				method = http.MethodGet
			case strings.HasPrefix(tc.name, "PATCH"):
				method = http.MethodPatch
			case strings.HasPrefix(tc.name, "DELETE"):
				method = http.MethodDelete
			}
			resp, body := tc.h.do(method, tc.path, tc.ctype, tc.body, tc.hdr...)
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%q), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.inBody != "" && !strings.Contains(body, tc.inBody) {
				t.Errorf("body %q lacks %q", body, tc.inBody)
			}
			if tc.want == 401 && resp.Header.Get("WWW-Authenticate") == "" {
				t.Error("401 without WWW-Authenticate")
			}
		})
	}
	for name, h := range map[string]*harness{"stream": stream, "relay": relay, "tokened": tokened} {
		if _, total := h.m.Counts(); total != 0 || len(h.m.Sessions()) != 0 {
			t.Errorf("%s: failed requests left sessions (total %d, live %d)", name, total, len(h.m.Sessions()))
		}
	}

	// The right token publishes.
	p, err := testpeer.Publish(context.Background(), tokened.srv.URL+"/whip", pubClip(t), testpeer.PublishOptions{Token: "s3cret"})
	if err != nil {
		t.Fatalf("publishing with the token: %v", err)
	}
	p.Close()
}

// A WHIP resource: 201 with the answer, Location, ETag, Accept-Patch and
// Link headers; PATCH trickles, DELETE ends the session and frees the
// path; a viewer's Location cannot act on a publisher and vice versa.
func TestWHIPResource(t *testing.T) {
	h := relayHarness(t, Config{ICEServers: func() []webrtc.ICEServer {
		return []webrtc.ICEServer{{URLs: []string{"turn:127.0.0.1:3478?transport=udp"}, Username: "u1", Credential: "p1"}}
	}})

	// A publisher that never connects: its resource works all the same.
	resp, answer := h.do(http.MethodPost, "/whip", "application/sdp", sendOffer(t, true, true))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST /whip: %d %s", resp.StatusCode, answer)
	}
	loc, etag := resp.Header.Get("Location"), resp.Header.Get("ETag")
	for k, want := range map[string]string{
		"Content-Type": "application/sdp", "Accept-Patch": "application/trickle-ice-sdpfrag",
		"Link": `rel="ice-server"`, "Cache-Control": "no-store",
	} {
		if got := resp.Header.Get(k); !strings.Contains(got, want) {
			t.Errorf("%s = %q, want it to contain %q", k, got, want)
		}
	}
	if !strings.HasPrefix(loc, "/whip/") || etag == "" {
		t.Fatalf("Location %q ETag %q", loc, etag)
	}
	if !strings.Contains(answer, "a=recvonly") || !strings.Contains(answer, "H264") || !strings.Contains(answer, "opus") {
		t.Errorf("answer does not receive H.264 and Opus:\n%s", answer)
	}
	if got := h.m.Sessions(); len(got) != 1 || got[0].Role != "publisher" {
		t.Errorf("sessions: %+v", got)
	}
	res := strings.TrimPrefix(loc, "/whip/")

	frag := "a=ice-ufrag:" + offerUfragOf(t, h, res) + "\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host\r\na=end-of-candidates\r\n"
	if r, body := h.do(http.MethodPatch, loc, "application/trickle-ice-sdpfrag", frag, "If-Match", etag); r.StatusCode != http.StatusNoContent {
		t.Errorf("PATCH: %d %s", r.StatusCode, body)
	}
	if r, _ := h.do(http.MethodPatch, loc, "application/trickle-ice-sdpfrag", frag); r.StatusCode != http.StatusPreconditionRequired {
		t.Errorf("PATCH without If-Match: %d, want 428", r.StatusCode)
	}
	// The publisher's capability under /whep is not a viewer's.
	if r, _ := h.do(http.MethodDelete, "/whep/"+res, "", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE /whep/<publisher>: %d, want 404", r.StatusCode)
	}
	if r, _ := h.do(http.MethodDelete, "/other/whip/"+res, "", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE on another path: %d, want 404", r.StatusCode)
	}
	if len(h.m.Sessions()) != 1 {
		t.Fatal("a wrong DELETE ended the publisher")
	}
	// The path is taken while it lives.
	if r, _ := h.do(http.MethodPost, "/whip", "application/sdp", sendOffer(t, true, false)); r.StatusCode != http.StatusConflict {
		t.Errorf("second publisher: %d, want 409", r.StatusCode)
	}
	if r, _ := h.do(http.MethodDelete, loc, "", ""); r.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %d", r.StatusCode)
	}
	if r, _ := h.do(http.MethodDelete, loc, "", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("second DELETE: %d, want 404", r.StatusCode)
	}
	if n := len(h.m.Sessions()); n != 0 {
		t.Errorf("%d sessions after DELETE", n)
	}

	// DELETE released the path: a real publisher now publishes, and a
	// viewer watches it.
	pub := startPublisher(t, h, testpeer.PublishOptions{})
	waitPublishing(t, h)
	v := startViewer(t, h)
	v.waitFrames(t, 10, 15*time.Second)
	vres := strings.TrimPrefix(v.location, "/whep/")
	pres := pub.Location()[strings.LastIndex(pub.Location(), "/")+1:]
	// Neither capability works under the other's kind.
	if r, _ := h.do(http.MethodDelete, "/whip/"+vres, "", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE /whip/<viewer>: %d, want 404", r.StatusCode)
	}
	if r, _ := h.do(http.MethodDelete, "/whep/"+pres, "", ""); r.StatusCode != http.StatusNotFound {
		t.Errorf("DELETE /whep/<publisher>: %d, want 404", r.StatusCode)
	}
	if got := sessionsByRole(h); got["viewer"] != 1 || got["publisher"] != 1 {
		t.Fatalf("sessions after the wrong DELETEs: %v", got)
	}
	n := v.gotFrames.Load()
	v.waitFrames(t, int(n)+10, 10*time.Second)
	// The publisher's own DELETE ends only the publisher.
	if code, err := pub.Delete(); err != nil || code != http.StatusOK {
		t.Fatalf("publisher DELETE: %d %v", code, err)
	}
	waitFor(t, "publisher gone, viewer kept", 10*time.Second, func() bool {
		got := sessionsByRole(h)
		return got["publisher"] == 0 && got["viewer"] == 1
	})
}

// offerUfragOf is the ICE ufrag the session at res was offered (a trickle
// PATCH carries it).
func offerUfragOf(t *testing.T, h *harness, res string) string {
	t.Helper()
	s := h.m.Session(res)
	if s == nil {
		t.Fatal("no session for the Location")
	}
	return s.remoteUfrag
}
