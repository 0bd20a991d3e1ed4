package signaling

import (
	"context"
	"errors"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testenv"
)

// endObserver records what Observer.SessionEnded reports.
type endObserver struct {
	mu    sync.Mutex
	ended map[string]endReport // by session id
}

type endReport struct {
	reason string
	end    EndReason
	state  string
}

func (o *endObserver) SessionStarted(SessionInfo)              {}
func (o *endObserver) FirstKeyframe(string, time.Duration)     {}
func (o *endObserver) SessionEnded(info SessionInfo, r string) { o.record(info, r) }

func (o *endObserver) record(info SessionInfo, reason string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ended == nil {
		o.ended = map[string]endReport{}
	}
	o.ended[info.ID] = endReport{reason: reason, end: info.EndReason, state: info.State}
}

func (o *endObserver) get(id string) (endReport, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	r, ok := o.ended[id]
	return r, ok
}

// pendingSession is a WHEP session the fault tests leave unfinished.
type pendingSession struct {
	name     string
	s        *Session
	location string
	posted   time.Time // the answer arrived
}

// postPending posts offer to /whep and returns the session it created.
func (h *harness) postPending(t *testing.T, name, offer string) (*pendingSession, string) {
	t.Helper()
	resp, body := h.do(http.MethodPost, "/whep", "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("%s: POST /whep: %d %s", name, resp.StatusCode, body)
	}
	p := &pendingSession{name: name, location: resp.Header.Get("Location"), posted: time.Now()}
	p.s = h.m.Session(strings.TrimPrefix(p.location, "/whep/"))
	if p.s == nil {
		t.Fatalf("%s: session %s not found", name, p.location)
	}
	return p, body
}

// checkReaped waits for p's session to end and checks that it ended at the
// handshake deadline for the right reason, was reported as such, and is
// gone from the manager and from HTTP. It returns the time to reap,
// counted from the answer.
func (h *harness) checkReaped(t *testing.T, p *pendingSession, obs *endObserver, deadline time.Duration) time.Duration {
	t.Helper()
	waitChan(t, p.name+" session end", p.s.Done(), deadline+15*time.Second)
	reap := time.Since(p.posted)
	if !errors.Is(p.s.Err(), ErrHandshakeTimeout) {
		t.Errorf("%s: Err = %v, want %v", p.name, p.s.Err(), ErrHandshakeTimeout)
	}
	// The timer starts when the session is created, a little before the
	// answer is sent; -race and a busy machine make it late, never early.
	if reap < deadline*8/10 || reap > deadline+3*time.Second {
		t.Errorf("%s: reaped %s after the answer, deadline %s", p.name, reap, deadline)
	}
	r, ok := obs.get(p.s.ID())
	if !ok {
		t.Errorf("%s: no SessionEnded reported", p.name)
	} else if r.end != EndHandshakeTimeout || r.reason != ErrHandshakeTimeout.Error() || r.state != "closed" {
		t.Errorf("%s: SessionEnded %+v, want reason %q, end reason %q, state closed", p.name, r, ErrHandshakeTimeout, EndHandshakeTimeout)
	}
	if h.m.Session(p.s.ID()) != nil {
		t.Errorf("%s: reaped session still listed", p.name)
	}
	// The client's resource is gone too: hanging up now is a 404.
	if resp, body := h.do(http.MethodDelete, p.location, "", ""); resp.StatusCode != http.StatusNotFound {
		t.Errorf("%s: DELETE after the reap: %d %s, want 404", p.name, resp.StatusCode, body)
	}
	return reap
}

// checkDrained checks that nothing is left of the sessions in the
// manager's status and that the goroutines are back to base.
func (h *harness) checkDrained(t *testing.T, created int64, base int) int {
	t.Helper()
	if n := h.m.Pending(); n != 0 {
		t.Errorf("pending %d after the reap, want 0", n)
	}
	if tot := h.m.Totals(); tot.Pending != 0 || len(tot.ActiveByRole) != 0 {
		t.Errorf("totals after the reap: pending %d, active %v", tot.Pending, tot.ActiveByRole)
	}
	if ss := h.m.Sessions(); len(ss) != 0 {
		t.Errorf("sessions after the reap: %+v", ss)
	}
	if a, total := h.m.Counts(); a != 0 || total != created {
		t.Errorf("counts %d active, %d total; want 0, %d", a, total, created)
	}
	h.client.CloseIdleConnections() // keep-alive goroutines are not the session's
	testenv.WaitGoroutines(t, base, 15*time.Second)
	return runtime.NumGoroutine()
}

// TestFaultICENeverCompletes: WHEP clients post a real offer and then never
// send a single STUN check: one closed its peer connection right after
// taking the offer (its candidates lead nowhere), the other sent an offer
// without candidates and never trickled any. Each session must be reaped
// at the handshake deadline (HandshakeTimeout): reported as
// handshake_timeout, gone from the manager's status and from HTTP, and its
// goroutines gone while the server keeps running.
func TestFaultICENeverCompletes(t *testing.T) {
	leaktest.Check(t)
	const deadline = 2 * time.Second
	c := getClip(t)
	obs := &endObserver{}
	h := newHarness(t, c, Config{HandshakeTimeout: deadline, Observer: obs}, nil)
	base := runtime.NumGoroutine()

	pc, offer := newOfferPC(t)
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	pc2, offer2 := newOfferPC(t)
	if err := pc2.Close(); err != nil {
		t.Fatal(err)
	}
	offer2 = stripCandidates(offer2)
	if strings.Contains(offer2, "a=candidate") {
		t.Fatal("candidates left in the offer")
	}
	gone, _ := h.postPending(t, "client-gone", offer)
	silent, _ := h.postPending(t, "no-candidates", offer2)
	if n := h.m.Pending(); n != 2 {
		t.Errorf("pending %d, want 2", n)
	}
	for _, si := range h.m.Sessions() {
		if si.State != "connecting" {
			t.Errorf("session %+v, want connecting", si)
		}
	}
	during := runtime.NumGoroutine()
	reapGone := h.checkReaped(t, gone, obs, deadline)
	reapSilent := h.checkReaped(t, silent, obs, deadline)
	after := h.checkDrained(t, 2, base)
	t.Logf("ICE never completes: reaped %s (client gone) and %s (no candidates) after the answer, deadline %s; reason %q; pending 2 -> %d; goroutines %d, %d while pending, %d after",
		reapGone.Round(time.Millisecond), reapSilent.Round(time.Millisecond), deadline, ReasonOf(gone.s.Err()), h.m.Pending(), base, during, after)
}

// TestFaultDTLSNeverCompletes: a client completes ICE with the server
// (a pion/ice agent using the ufrag, password and candidates of the
// server's answer) and then never speaks DTLS. The session must be reaped
// at the handshake deadline like one whose ICE never completes.
func TestFaultDTLSNeverCompletes(t *testing.T) {
	leaktest.Check(t)
	const deadline = 3 * time.Second
	c := getClip(t)
	obs := &endObserver{}
	h := newHarness(t, c, Config{HandshakeTimeout: deadline, Observer: obs}, nil)
	base := runtime.NumGoroutine()

	agent, err := ice.NewAgentWithOptions(
		ice.WithNetworkTypes([]ice.NetworkType{ice.NetworkTypeUDP4}),
		ice.WithCandidateTypes([]ice.CandidateType{ice.CandidateTypeHost}),
		ice.WithMulticastDNSMode(ice.MulticastDNSModeDisabled),
		ice.WithIncludeLoopback(),
		ice.WithIPFilter(func(ip net.IP) bool { return ip.IsLoopback() }),
	)
	if err != nil {
		t.Fatal(err)
	}
	agentClosed := false
	closeAgent := func() {
		if !agentClosed {
			agentClosed = true
			if err := agent.Close(); err != nil {
				t.Errorf("agent close: %v", err)
			}
		}
	}
	defer closeAgent()
	var cands []string
	gathered := make(chan struct{})
	if err := agent.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			close(gathered)
			return
		}
		cands = append(cands, c.Marshal())
	}); err != nil {
		t.Fatal(err)
	}
	if err := agent.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	waitChan(t, "ICE gathering", gathered, 10*time.Second)
	if len(cands) == 0 {
		t.Fatal("the agent gathered no loopback candidate")
	}
	ufrag, pwd, err := agent.GetLocalUserCredentials()
	if err != nil {
		t.Fatal(err)
	}

	// A real offer (codecs, fingerprint) whose ICE is the agent's.
	pc, offer := newOfferPC(t)
	if err := pc.Close(); err != nil {
		t.Fatal(err)
	}
	offer = withICE(stripCandidates(offer), ufrag, pwd, cands)
	p, answer := h.postPending(t, "ice-only", offer)
	rufrag, rpwd, rcands, setup := answerICE(answer)
	if rufrag == "" || rpwd == "" || len(rcands) == 0 {
		t.Fatalf("no ICE credentials or candidates in the answer:\n%s", answer)
	}
	for _, rc := range rcands {
		cand, err := ice.UnmarshalCandidate(rc)
		if err != nil {
			t.Fatalf("answer candidate %q: %v", rc, err)
		}
		if err := agent.AddRemoteCandidate(cand); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	conn, err := agent.Dial(ctx, rufrag, rpwd) // controlling: nominates a pair
	cancel()
	if err != nil {
		t.Fatalf("ICE did not complete within %s: %v", deadline, err)
	}
	iceAt := time.Since(p.posted)

	// What the server sends over the ICE connection: with a=setup:active
	// in its answer it is the DTLS client and sends ClientHellos (DTLS
	// record type 22, RFC 6347 §4.1) that are never answered.
	var got, hellos atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 1500)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			got.Add(1)
			if n > 13 && buf[0] == 22 {
				hellos.Add(1)
			}
		}
	}()

	if st := h.m.Sessions(); len(st) != 1 || st[0].State != "connecting" {
		t.Errorf("with ICE up and no DTLS, sessions: %+v", st)
	}
	if a, _ := h.m.Counts(); a != 0 {
		t.Errorf("%d active with ICE up and no DTLS", a)
	}
	during := runtime.NumGoroutine() // the agent's included
	reap := h.checkReaped(t, p, obs, deadline)
	closeAgent()
	waitChan(t, "agent reader end", readDone, 10*time.Second)
	if setup == "active" && hellos.Load() == 0 {
		t.Error("the server is the DTLS client but sent no handshake record over the connected ICE pair")
	}
	after := h.checkDrained(t, 1, base)
	t.Logf("DTLS never completes: ICE up %s after the answer, server a=setup:%s sent %d datagrams (%d DTLS handshake records); reaped %s after the answer, deadline %s; reason %q; goroutines %d, %d while pending (agent included), %d after",
		iceAt.Round(time.Millisecond), setup, got.Load(), hellos.Load(), reap.Round(time.Millisecond), deadline, ReasonOf(p.s.Err()), base, during, after)
}

// stripCandidates removes every candidate line from an SDP.
func stripCandidates(sdp string) string {
	var out []string
	for _, l := range strings.Split(sdp, "\r\n") {
		if strings.HasPrefix(l, "a=candidate:") || l == "a=end-of-candidates" {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\r\n")
}

// withICE replaces the ICE credentials of every media section with ufrag
// and pwd and adds the candidates after them.
func withICE(sdp, ufrag, pwd string, cands []string) string {
	var out []string
	for _, l := range strings.Split(sdp, "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:"):
			l = "a=ice-ufrag:" + ufrag
		case strings.HasPrefix(l, "a=ice-pwd:"):
			out = append(out, "a=ice-pwd:"+pwd)
			for _, c := range cands {
				out = append(out, "a=candidate:"+c)
			}
			out = append(out, "a=end-of-candidates")
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\r\n")
}

// answerICE returns the ICE credentials and candidates of the first media
// section of an answer (BUNDLE: one transport), and its DTLS setup role.
func answerICE(sdp string) (ufrag, pwd string, cands []string, setup string) {
	seen := map[string]bool{}
	for _, l := range strings.Split(sdp, "\r\n") {
		switch {
		case strings.HasPrefix(l, "a=ice-ufrag:") && ufrag == "":
			ufrag = strings.TrimPrefix(l, "a=ice-ufrag:")
		case strings.HasPrefix(l, "a=ice-pwd:") && pwd == "":
			pwd = strings.TrimPrefix(l, "a=ice-pwd:")
		case strings.HasPrefix(l, "a=setup:") && setup == "":
			setup = strings.TrimPrefix(l, "a=setup:")
		case strings.HasPrefix(l, "a=candidate:"):
			c := strings.TrimPrefix(l, "a=")
			if !seen[c] {
				seen[c] = true
				cands = append(cands, c)
			}
		}
	}
	return ufrag, pwd, cands, setup
}
