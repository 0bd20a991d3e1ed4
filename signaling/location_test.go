package signaling

import (
	"strings"
	"testing"
)

// With Config.PublicURL the Location is absolute on that node's URL, and
// its path still addresses the session (PATCH/DELETE through it work).
func TestPublicURLLocation(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{PublicURL: "https://node-3.example.com/"}, nil)
	_, offer := newOfferPC(t)
	resp, body := h.do("POST", "/whep", "application/sdp", offer)
	if resp.StatusCode != 201 {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	rel, ok := strings.CutPrefix(loc, "https://node-3.example.com/whep/")
	if !ok || rel == "" {
		t.Fatalf("Location %q is not absolute on the public URL", loc)
	}
	if resp, body := h.do("DELETE", "/whep/"+rel, "", ""); resp.StatusCode != 200 {
		t.Fatalf("DELETE through the Location's path: %d %s", resp.StatusCode, body)
	}
}
