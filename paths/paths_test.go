package paths

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/builtin"
	"github.com/icey/icey-server/media/rtsp"
)

// newSource builds the real sources the tests use.
func newSource(sp Spec) (media.Source, []string, error) {
	if sp.Source == "builtin" {
		return builtin.New(nil), nil, nil
	}
	s, err := rtsp.New(rtsp.Config{URL: sp.Source}, nil)
	return s, nil, err
}

func newSet(t *testing.T, specs ...Spec) (*Set, *stateLog) {
	t.Helper()
	sl := &stateLog{}
	s, err := New(Config{Paths: specs, NewSource: newSource, OnState: sl.add,
		Supervisor: media.SupervisorConfig{MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	s.Start()
	return s, sl
}

// stateLog records OnState calls.
type stateLog struct {
	mu  sync.Mutex
	got []string
}

func (l *stateLog) add(path string, st State, _ string) {
	l.mu.Lock()
	l.got = append(l.got, path+"="+string(st))
	l.mu.Unlock()
}

func (l *stateLog) has(s string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, g := range l.got {
		if g == s {
			return true
		}
	}
	return false
}

func waitFor(t *testing.T, what string, d time.Duration, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// keyframes counts the keyframe units a subscriber of st receives within d.
func readsKeyframe(t *testing.T, st *media.Stream, d time.Duration) {
	t.Helper()
	sub, err := st.Subscribe("test", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	buf := make([]*media.Unit, 16)
	for {
		n, err := sub.Read(ctx, buf)
		if err != nil {
			t.Fatalf("no keyframe read: %v", err)
		}
		for _, u := range buf[:n] {
			if u.Kind == media.KindVideo && u.Keyframe {
				return
			}
		}
	}
}

// An on-demand path opens no connection before its first reader; the first
// View waits for the first keyframe; the source closes after the idle time
// and opens again for the next reader.
func TestOnDemand(t *testing.T) {
	leaktest.Check(t)
	testenv.RequireTool(t, "ffmpeg")
	cam := rtsptest.Start(t, rtsptest.Options{})
	s, states := newSet(t, Spec{Name: "cam", Source: cam.URL("cam"), SourceKind: "rtsp", Read: true,
		OnDemand: true, CloseAfter: 300 * time.Millisecond})
	p := s.Path("cam")
	time.Sleep(300 * time.Millisecond)
	if cam.Opened() != 0 || p.State() != StateIdle {
		t.Fatalf("before any reader: %d RTSP connections, state %s", cam.Opened(), p.State())
	}
	for round := 1; round <= 2; round++ {
		start := time.Now()
		st, release, err := s.View(context.Background(), "cam")
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("round %d: on-demand start (View → first keyframe available) %v", round, time.Since(start).Round(time.Millisecond))
		if got := st.Stats().LastKeyframeAt; got.Before(start) {
			t.Fatalf("View returned before a keyframe of this activation (last %v, start %v)", got, start)
		}
		readsKeyframe(t, st, 5*time.Second)
		// The supervisor reports "up" from its own goroutine, woken by the
		// same publish that made the keyframe available: allow it a moment.
		waitFor(t, "state up", 2*time.Second, func() bool { return p.State() == StateUp })
		if p.Status().Viewers != 1 {
			t.Fatalf("status %+v", p.Status())
		}
		release()
		release() // idempotent
		waitFor(t, "idle close", 5*time.Second, func() bool { return cam.Conns() == 0 && p.State() == StateIdle })
		if got := cam.Opened(); got != int64(round) {
			t.Fatalf("round %d: %d RTSP connections opened", round, got)
		}
		if p.Status().Activations != round || p.Status().Viewers != 0 {
			t.Fatalf("status %+v", p.Status())
		}
	}
	if !states.has("cam=starting") || !states.has("cam=up") || !states.has("cam=idle") {
		t.Fatalf("state events %v", states.got)
	}
}

// A reader arriving during the idle time keeps the source open.
func TestOnDemandReaderKeepsOpen(t *testing.T) {
	leaktest.Check(t)
	testenv.RequireTool(t, "ffmpeg")
	cam := rtsptest.Start(t, rtsptest.Options{})
	// The idle time is long against the 100 ms gap, so a loaded machine
	// cannot make the second reader late.
	s, _ := newSet(t, Spec{Name: "cam", Source: cam.URL("cam"), Read: true, OnDemand: true, CloseAfter: 2 * time.Second})
	_, r1, err := s.View(context.Background(), "cam")
	if err != nil {
		t.Fatal(err)
	}
	r1()
	time.Sleep(100 * time.Millisecond)
	_, r2, err := s.View(context.Background(), "cam")
	if err != nil {
		t.Fatal(err)
	}
	defer r2()
	time.Sleep(2500 * time.Millisecond) // past the idle time the first release armed
	if cam.Conns() != 1 || cam.Opened() != 1 {
		t.Fatalf("conns %d opened %d", cam.Conns(), cam.Opened())
	}
}

// Paths naming the same source share one connection and one stream.
func TestSharedSource(t *testing.T) {
	leaktest.Check(t)
	testenv.RequireTool(t, "ffmpeg")
	cam := rtsptest.Start(t, rtsptest.Options{})
	s, _ := newSet(t,
		Spec{Name: "a", Source: cam.URL("cam"), Read: true},
		Spec{Name: "b", Source: cam.URL("cam"), Read: true, OnDemand: true})
	sa, ra, err := s.View(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	defer ra()
	sb, rb, err := s.View(context.Background(), "b")
	if err != nil {
		t.Fatal(err)
	}
	defer rb()
	if sa != sb {
		t.Fatal("two streams for one source")
	}
	readsKeyframe(t, sb, 5*time.Second)
	if cam.Opened() != 1 {
		t.Fatalf("%d RTSP connections for one source", cam.Opened())
	}
	if s.Path("a").Status().Viewers != 1 || s.Path("b").Status().Viewers != 1 {
		t.Fatal("viewers are counted per path")
	}
}

// A first viewer of a source that never delivers gets ErrUnavailable after
// the start timeout, with the reason.
func TestStartTimeout(t *testing.T) {
	leaktest.Check(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s, _ := newSet(t, Spec{Name: "dead", Source: "rtsp://" + addr + "/x", Read: true, OnDemand: true,
		StartTimeout: 700 * time.Millisecond})
	start := time.Now()
	_, _, err = s.View(context.Background(), "dead")
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("View = %v", err)
	}
	if el := time.Since(start); el < 600*time.Millisecond || el > 5*time.Second {
		t.Fatalf("answered after %v, want the start timeout", el)
	}
	if s.Path("dead").Status().Viewers != 0 {
		t.Fatal("a refused viewer still counted")
	}
	// The caller's context bounds the wait too.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, _, err := s.View(ctx, "dead"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("View with a short context = %v", err)
	}
}

// Publish paths: one publisher at a time, tokens, roles; the path waits for
// the next publisher when one leaves, and viewers may join any time.
func TestPublishSlot(t *testing.T) {
	leaktest.Check(t)
	s, states := newSet(t,
		Spec{Name: "stage", Publish: true, Read: true},
		Spec{Name: "secret", Publish: true, PublishToken: "tok-123"},
		Spec{Name: "cam", Source: "builtin", Read: true})
	st, rel, err := s.Publish(context.Background(), "stage", "")
	if err != nil {
		t.Fatal(err)
	}
	if s.Path("stage").State() != StatePublishing || !s.Path("stage").Status().Publisher {
		t.Fatalf("status %+v", s.Path("stage").Status())
	}
	if _, _, err := s.Publish(context.Background(), "stage", ""); !errors.Is(err, ErrBusy) {
		t.Fatalf("second publisher: %v", err)
	}
	vst, vrel, err := s.View(context.Background(), "stage")
	if err != nil || vst != st {
		t.Fatalf("viewer: %v", err)
	}
	vrel()
	rel()
	rel()
	if s.Path("stage").State() != StateWaitingPublisher || !states.has("stage=waiting-publisher") {
		t.Fatalf("after the publisher left: %s", s.Path("stage").State())
	}
	if _, rel2, err := s.Publish(context.Background(), "stage", ""); err != nil {
		t.Fatalf("next publisher: %v", err)
	} else {
		rel2()
	}
	for _, tc := range []struct {
		path, token string
		want        error
	}{
		{"secret", "", ErrUnauthorized},
		{"secret", "tok-12", ErrUnauthorized},
		{"cam", "", ErrNotAllowed},
		{"nope", "", ErrNotFound},
	} {
		if _, _, err := s.Publish(context.Background(), tc.path, tc.token); !errors.Is(err, tc.want) {
			t.Errorf("Publish(%s, %q) = %v, want %v", tc.path, tc.token, err, tc.want)
		}
	}
	if _, rel3, err := s.Publish(context.Background(), "secret", "tok-123"); err != nil {
		t.Fatalf("with the token: %v", err)
	} else {
		rel3()
	}
	if _, _, err := s.View(context.Background(), "secret"); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("viewer on a path without read: %v", err)
	}
	if !s.PublishTokenRequired("secret") || s.PublishTokenRequired("stage") {
		t.Fatal("PublishTokenRequired")
	}
}

// Bad specs are refused with the path's name.
func TestNewErrors(t *testing.T) {
	leaktest.Check(t)
	for _, tc := range []struct {
		specs []Spec
		want  string
	}{
		{[]Spec{{Name: "a", Source: "builtin", Publish: true}}, "both"},
		{[]Spec{{Name: "a"}}, "neither"},
		{[]Spec{{Name: "a", Publish: true}, {Name: "a", Publish: true}}, "duplicate"},
		{[]Spec{{Name: "a", Source: "rtsp://127.0.0.1:1/x"}, {Name: "b", Source: "bad"}}, `"b"`},
	} {
		_, err := New(Config{Paths: tc.specs, NewSource: func(sp Spec) (media.Source, []string, error) {
			if sp.Source == "bad" {
				return nil, nil, fmt.Errorf("unusable source")
			}
			return newSource(sp)
		}}, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want %q", tc.specs, err, tc.want)
		}
	}
}

// A viewer arriving while an always-on source is still starting waits for
// its first keyframe instead of being refused.
func TestViewerWaitsForStartingSource(t *testing.T) {
	leaktest.Check(t)
	testenv.RequireTool(t, "ffmpeg")
	cam := rtsptest.Start(t, rtsptest.Options{})
	s, _ := newSet(t, Spec{Name: "cam", Source: cam.URL("cam"), Read: true})
	if st := s.Path("cam").State(); st != StateStarting {
		t.Fatalf("state right after Start: %s", st)
	}
	start := time.Now()
	st, release, err := s.View(context.Background(), "cam")
	if err != nil {
		t.Fatalf("a viewer of a starting source was refused: %v", err)
	}
	defer release()
	if st.Stats().LastKeyframeAt.IsZero() {
		t.Fatal("View returned before the first keyframe")
	}
	t.Logf("waited %v for the starting source", time.Since(start).Round(time.Millisecond))
}

// A template path ("~regexp") makes any matching name a path of its own,
// on demand, pulling the source with the name's submatches; names that
// never delivered are dropped again when they close.
func TestTemplatePaths(t *testing.T) {
	leaktest.Check(t)
	testenv.RequireTool(t, "ffmpeg")
	cam := rtsptest.Start(t, rtsptest.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := ln.Addr().String()
	ln.Close()
	base := strings.TrimSuffix(cam.URL("x"), "x")
	s, _ := newSet(t,
		Spec{Name: "~^cam-(.+)$", Template: true, Source: base + "$1", Read: true, CloseAfter: 300 * time.Millisecond},
		Spec{Name: "~^dead-(.+)$", Template: true, Source: "rtsp://" + dead + "/$1", Read: true,
			StartTimeout: 500 * time.Millisecond, CloseAfter: 200 * time.Millisecond})
	if !s.Known("cam-front") || s.Known("other") || s.Known("../cam-x") {
		t.Fatal("Known")
	}
	st, release, err := s.View(context.Background(), "cam-front")
	if err != nil {
		t.Fatal(err)
	}
	readsKeyframe(t, st, 5*time.Second)
	p := s.Path("cam-front")
	if p == nil || p.Spec().Source != base+"front" || !p.Spec().OnDemand {
		t.Fatalf("dynamic path %+v", p)
	}
	// The same name again shares the path and its connection.
	st2, release2, err := s.View(context.Background(), "cam-front")
	if err != nil || st2 != st || cam.Opened() != 1 {
		t.Fatalf("second viewer: %v, %d connections", err, cam.Opened())
	}
	release()
	release2()
	waitFor(t, "idle close", 5*time.Second, func() bool { return cam.Conns() == 0 })
	if s.Path("cam-front") == nil {
		t.Fatal("a path that delivered was dropped at idle")
	}
	for _, bad := range []string{"whep", "nope", "cam-"} {
		if _, _, err := s.View(context.Background(), bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("View(%q) = %v", bad, err)
		}
	}
	// A name whose source never delivers: refused after the start timeout,
	// then forgotten.
	if _, _, err := s.View(context.Background(), "dead-x"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("dead origin: %v", err)
	}
	waitFor(t, "dead path dropped", 5*time.Second, func() bool { return s.Path("dead-x") == nil })
}
