package signaling

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/media"
)

// The Location is a capability: the opaque id that status shows cannot act
// on the session, a tampered capability neither, and the real one can.
func TestWHEPResourceIsACapability(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{}, nil)
	time.Sleep(200 * time.Millisecond)
	v := startViewer(t, h)
	waitChan(t, "viewer connected", v.connected, 10*time.Second)
	v.waitFrames(t, 5, 10*time.Second)

	infos := h.m.Sessions()
	if len(infos) != 1 {
		t.Fatalf("sessions %+v", infos)
	}
	id := infos[0].ID
	res := strings.TrimPrefix(v.location, "/whep/")
	if len(res) != 64 || strings.Contains(res, id) {
		t.Fatalf("Location %q must be a 256-bit capability distinct from the id %q", v.location, id)
	}
	shown, _ := json.Marshal(infos)
	if strings.Contains(string(shown), res[:32]) || strings.Contains(string(shown), res[32:]) {
		t.Fatalf("session info shows part of the capability: %s", shown)
	}
	tampered := res[:63] + string("0123456789abcdef"[(strings.IndexByte("0123456789abcdef", res[63])+1)%16])
	for _, path := range []string{"/whep/" + id, "/whep/" + strings.ToUpper(res), "/whep/" + tampered, "/whep/" + res[:32]} {
		if r, _ := h.do(http.MethodDelete, path, "", ""); r.StatusCode != http.StatusNotFound {
			t.Errorf("DELETE %s: %d, want 404", path, r.StatusCode)
		}
		r, _ := h.do(http.MethodPatch, path, "application/trickle-ice-sdpfrag", "a=end-of-candidates\r\n", "If-Match", v.etag)
		if r.StatusCode != http.StatusNotFound {
			t.Errorf("PATCH %s: %d, want 404", path, r.StatusCode)
		}
	}
	before := v.gotFrames.Load()
	v.waitFrames(t, int(before)+15, 10*time.Second) // still playing
	if r, _ := h.do(http.MethodPatch, v.location, "application/trickle-ice-sdpfrag", "a=end-of-candidates\r\n", "If-Match", v.etag); r.StatusCode != http.StatusNoContent {
		t.Errorf("PATCH with the Location and ETag: %d, want 204", r.StatusCode)
	}
	if r, _ := h.do(http.MethodDelete, v.location, "", ""); r.StatusCode != http.StatusOK {
		t.Fatalf("DELETE with the Location: %d", r.StatusCode)
	}
	waitChan(t, "viewer sees the hangup", v.ended, 10*time.Second)
}

func TestIfMatch(t *testing.T) {
	const etag = `"abc"`
	for _, tc := range []struct {
		values []string
		want   matchResult
	}{
		{nil, matchAbsent},
		{[]string{""}, matchAbsent},
		{[]string{" , "}, matchAbsent},
		{[]string{`"abc"`}, matchOK},
		{[]string{` "x", "abc" `}, matchOK},
		{[]string{`"x"`, `"abc"`}, matchOK},
		{[]string{`W/"abc"`}, matchFailed}, // strong comparison
		{[]string{`abc`}, matchFailed},
		{[]string{`"abcd"`}, matchFailed},
		{[]string{"*"}, matchAny},
	} {
		if got := ifMatch(tc.values, etag); got != tc.want {
			t.Errorf("ifMatch(%q) = %d, want %d", tc.values, got, tc.want)
		}
	}
}

func TestClientKey(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:5000":             "127.0.0.1",
		"127.0.0.1":                  "127.0.0.1",
		"[::ffff:10.0.0.1]:1":        "10.0.0.1",
		"[2001:db8:1:2:3:4:5:6]:443": "2001:db8:1:2::/64",
		"[2001:db8:1:2:ffff::1]:443": "2001:db8:1:2::/64",
		"[fe80::1%eth0]:9":           "fe80::/64",
		"not an address":             "not an address",
		"":                           "",
	} {
		if got := clientKey(in); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// Pending sessions are bounded per client and in total, separately from
// the active capacity, refusals say why, and a connected session stops
// counting as pending.
func TestAdmissionPendingLimits(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{MaxSessions: 5, MaxPending: 3, MaxPendingPerClient: 2, HandshakeTimeout: 3 * time.Second}, nil)
	time.Sleep(200 * time.Millisecond)
	_, offer := newOfferPC(t)
	ctx := context.Background()
	newPending := func(remote string) error {
		_, _, err := h.m.NewViewer(ctx, offer, SessionMeta{Remote: remote})
		return err
	}
	reason := func(err error) string {
		var ae *AdmissionError
		if errors.As(err, &ae) && errors.Is(err, ErrCapacity) {
			return ae.Reason
		}
		return fmt.Sprintf("not an admission error: %v", err)
	}
	for _, r := range []string{"192.0.2.1:1", "192.0.2.1:2"} {
		if err := newPending(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := newPending("192.0.2.1:3"); reason(err) != RefusedClientPending {
		t.Fatalf("third from one address: %v", err)
	}
	if err := newPending("192.0.2.2:1"); err != nil {
		t.Fatalf("another address: %v", err)
	}
	if err := newPending("192.0.2.3:1"); reason(err) != RefusedPending {
		t.Fatalf("beyond MaxPending: %v", err)
	}
	if p := h.m.Pending(); p != 3 {
		t.Errorf("Pending = %d, want 3", p)
	}
	// Over HTTP: 503, Retry-After and the reason.
	resp, body := h.do(http.MethodPost, "/whep", "application/sdp", offer)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "reason: pending") {
		t.Errorf("POST while full of pending: %d %q Retry-After %q", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	tot := h.m.Totals()
	if tot.Pending != 3 || tot.Refusals[RefusedClientPending] != 1 || tot.Refusals[RefusedPending] != 2 || tot.Refusals[RefusedCapacity] != 0 {
		t.Errorf("totals %+v", tot)
	}
	// The pending deadline frees the slots; a real viewer then connects
	// and leaves the pending count.
	waitFor(t, "pending sessions expire", 10*time.Second, func() bool { return h.m.Pending() == 0 })
	v := startViewer(t, h)
	waitChan(t, "viewer connected", v.connected, 10*time.Second)
	waitFor(t, "active 1, pending 0", 10*time.Second, func() bool { a, _ := h.m.Counts(); return a == 1 && h.m.Pending() == 0 })
	// Active plus pending stay within MaxSessions: 1 active + 3 pending
	// leaves one slot.
	for _, r := range []string{"192.0.2.10:1", "192.0.2.11:1", "192.0.2.12:1"} {
		if err := newPending(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := newPending("192.0.2.13:1"); reason(err) != RefusedPending {
		t.Fatalf("4th pending: %v", err)
	}
}

func TestAdmissionCapacityCountsActive(t *testing.T) {
	c := getClip(t)
	h := newHarness(t, c, Config{MaxSessions: 2}, nil)
	time.Sleep(200 * time.Millisecond)
	for range 2 {
		v := startViewer(t, h)
		waitChan(t, "viewer connected", v.connected, 10*time.Second)
	}
	waitFor(t, "2 active", 10*time.Second, func() bool { a, _ := h.m.Counts(); return a == 2 })
	_, offer := newOfferPC(t)
	_, _, err := h.m.NewViewer(context.Background(), offer, SessionMeta{Remote: "192.0.2.1:1"})
	var ae *AdmissionError
	if !errors.As(err, &ae) || ae.Reason != RefusedCapacity {
		t.Fatalf("beyond MaxSessions: %v", err)
	}
}

// A manager on a wildcard socket offers loopback candidates besides the
// interface addresses, and CandidateAddrs predicts exactly what it offers.
func TestWildcardBindOffersLoopback(t *testing.T) {
	conn, err := net.ListenPacket("udp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "test"}, nil)
	defer st.Close()
	c := getClip(t)
	f := startFeeder(c, st, nil)
	defer f.stop()
	m, err := NewManager(Config{UDPConn: conn}, OneStream(st, true, false), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close("shutdown")
	_, offer := newOfferPC(t)
	s, answer, err := m.NewViewer(context.Background(), offer, SessionMeta{Remote: "127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close("test")
	var got []netip.Addr
	for _, l := range strings.Split(answer, "\n") {
		if f := strings.Fields(strings.TrimSpace(l)); len(f) >= 8 && strings.HasPrefix(f[0], "a=candidate:") {
			a, err := netip.ParseAddr(f[4])
			if err != nil {
				t.Fatalf("candidate %q", l)
			}
			got = append(got, a.Unmap())
		}
	}
	if !slices.ContainsFunc(got, netip.Addr.IsLoopback) {
		t.Fatalf("answer on a wildcard bind has no loopback candidate:\n%s", answer)
	}
	want, external, err := CandidateAddrs("0.0.0.0", nil)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(got, netip.Addr.Compare)
	slices.SortFunc(want, netip.Addr.Compare)
	if !slices.Equal(slices.Compact(got), slices.Compact(want)) {
		t.Errorf("answer candidates %v, CandidateAddrs %v", got, want)
	}
	t.Logf("candidates %v, usable from outside: %v", got, external)
}

func TestCandidateAddrs(t *testing.T) {
	for _, tc := range []struct {
		host     string
		public   []string
		want     string
		external bool
	}{
		{"127.0.0.1", nil, "127.0.0.1", false},
		{"::1", nil, "::1", false},
		{"198.18.0.1", nil, "198.18.0.1", true},
		{"0.0.0.0", []string{"203.0.113.7"}, "203.0.113.7", true},
		{"localhost", nil, "127.0.0.1", false},
	} {
		addrs, ext, err := CandidateAddrs(tc.host, tc.public)
		if err != nil || len(addrs) != 1 || addrs[0].String() != tc.want || ext != tc.external {
			t.Errorf("CandidateAddrs(%q, %v) = %v, %v, %v; want [%s], %v", tc.host, tc.public, addrs, ext, err, tc.want, tc.external)
		}
	}
	if _, _, err := CandidateAddrs("0.0.0.0", []string{"nope"}); err == nil {
		t.Error("a bad public IP is accepted")
	}
	addrs, _, err := CandidateAddrs("", nil)
	if err != nil || !slices.ContainsFunc(addrs, netip.Addr.IsLoopback) {
		t.Errorf("wildcard: %v, %v; want loopback among them", addrs, err)
	}
}

// Regression (FuzzParseSDPFrag): a bare CR inside a line is not a line
// break that parseSDPFrag may carry into a candidate or a mid.
func TestParseSDPFragRejectsBareCR(t *testing.T) {
	for _, body := range []string{"a=candidate:\r0", "a=mid:0\rx\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n", "a=ice-ufrag:a\x00b\r\n"} {
		if fr, err := parseSDPFrag(body); err == nil {
			t.Errorf("parseSDPFrag(%q) = %+v, want an error", body, fr)
		}
	}
	fr, err := parseSDPFrag("a=mid:0\r\na=candidate:1 1 udp 1 127.0.0.1 9 typ host\r\n\r\n")
	if err != nil || len(fr.candidates) != 1 || fr.candidates[0].mid != "0" {
		t.Errorf("CRLF fragment: %+v, %v", fr, err)
	}
}
