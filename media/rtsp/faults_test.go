package rtsp

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/rtsptest"
	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
)

// TestFaultRTSPMalformedServer plays a camera that breaks the protocol in
// one way per subtest (internal/rtsptest.BadServer) under media.Supervisor,
// as the server runs sources. Each broken camera must end the run with an
// error that names the problem, shown in Supervisor.Status; the supervisor
// must retry with a growing backoff (counted as connections at the fake
// camera), not in a hot loop; nothing panics and no goroutine is left
// behind. A camera that only omits CSeq is tolerated and plays.
func TestFaultRTSPMalformedServer(t *testing.T) {
	leaktest.Check(t) // subtests run in parallel; checked once they all ended
	const (
		readTimeout = time.Second
		minBackoff  = 200 * time.Millisecond
		maxBackoff  = 2 * time.Second
		window      = 4500 * time.Millisecond
	)
	type scenario struct {
		mode rtsptest.BadMode
		// want: substrings of Status().LastError (and the Run error);
		// anyOf: at least one of these too.
		want, anyOf []string
		// log: a line the source logged (aggregated problems).
		log string

		bad      *rtsptest.BadServer
		logs     *logBuf
		sv       *media.Supervisor
		errs     chan error // the first failure
		cancel   context.CancelFunc
		done     chan error
		status   media.SupervisorStatus
		attempts []time.Time
	}
	scenarios := []*scenario{
		{mode: rtsptest.BadWrongCSeq, want: []string{"DESCRIBE", "request timed out"}},
		{mode: rtsptest.BadHugeHeaderLine, want: []string{"DESCRIBE", "buffer length exceeds 2048"}},
		{mode: rtsptest.BadManyHeaders, want: []string{"DESCRIBE", "headers count exceeds 255"}},
		{mode: rtsptest.BadSDPGarbage, want: []string{"DESCRIBE", "invalid SDP"}},
		{mode: rtsptest.BadSDPNoMedia, want: []string{"DESCRIBE", "no media streams are present in SDP"}},
		{mode: rtsptest.BadSDPBrokenSprop, want: []string{"DESCRIBE", "invalid sprop-parameter-sets"}},
		// gortsplib's TCP read timeout and the source's media watchdog
		// race: both say that nothing playable arrived.
		{mode: rtsptest.BadInterleavedGarbage, anyOf: []string{"no media for 1s", "connection: TCP timeout"}, log: "RTP decode error"},
		{mode: rtsptest.BadSilent, want: []string{"DESCRIBE", "request timed out"}},
		{mode: rtsptest.BadCloseMidReply, want: []string{"DESCRIBE", "value is missing"}},
	}
	// All cameras run at once (the machine has 2 cores, so t.Parallel
	// would run two at a time), then each is checked in a subtest.
	t0 := time.Now()
	for _, sc := range scenarios {
		sc.bad = rtsptest.StartBad(t, sc.mode)
		var log *slog.Logger
		log, sc.logs = newLogger()
		src, err := New(Config{URL: sc.bad.URL("cam"), Transport: TransportTCP, ReadTimeout: readTimeout}, log)
		if err != nil {
			t.Fatal(err)
		}
		st := media.NewStream(media.StreamConfig{Name: string(sc.mode)}, nil)
		t.Cleanup(st.Close)
		sc.errs = make(chan error, 1)
		sc.sv = media.NewSupervisor(src, st, media.SupervisorConfig{
			MinBackoff: minBackoff, MaxBackoff: maxBackoff,
			OnStateChange: func(s media.SourceState, err error) {
				if s == media.SourceReconnecting {
					select {
					case sc.errs <- err:
					default:
					}
				}
			},
		}, log)
		var ctx context.Context
		ctx, sc.cancel = context.WithCancel(context.Background())
		sc.done = make(chan error, 1)
		go func() { sc.done <- sc.sv.Run(ctx) }()
		t.Cleanup(func() {
			sc.cancel()
			select {
			case <-sc.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: supervisor did not stop within 10 s of cancel", sc.mode)
			}
		})
	}
	time.Sleep(window - time.Since(t0))
	for _, sc := range scenarios {
		sc.status = sc.sv.Status()
		sc.attempts = sc.bad.Attempts()
	}
	for _, sc := range scenarios {
		t.Run(string(sc.mode), func(t *testing.T) {
			status, attempts := sc.status, sc.attempts
			var firstErr error
			select {
			case firstErr = <-sc.errs:
			default:
				t.Fatalf("no failure reported in %s; status %+v", window, status)
			}
			// The error names the problem, and Status shows it.
			if !errors.Is(firstErr, media.ErrSourceUnavailable) {
				t.Errorf("error %q is not %v", firstErr, media.ErrSourceUnavailable)
			}
			for _, w := range sc.want {
				if !strings.Contains(firstErr.Error(), w) || !strings.Contains(status.LastError, w) {
					t.Errorf("error %q / status %q: want %q in both", firstErr, status.LastError, w)
				}
			}
			if len(sc.anyOf) > 0 && !slices.ContainsFunc(sc.anyOf, func(w string) bool { return strings.Contains(status.LastError, w) }) {
				t.Errorf("status %q: want one of %q", status.LastError, sc.anyOf)
			}
			// What the camera sent reaches the API and the logs printable
			// and bounded (a bad SDP line is quoted in the error).
			if len(status.LastError) > 512 || !utf8.ValidString(status.LastError) ||
				strings.ContainsFunc(status.LastError, func(r rune) bool { return !unicode.IsPrint(r) }) {
				t.Errorf("status error is not short printable text (%d bytes): %q", len(status.LastError), status.LastError)
			}
			if status.State != media.SourceReconnecting || !status.Failed || status.EverUp {
				t.Errorf("status %+v: want reconnecting, failed, never up", status)
			}
			if sc.log != "" && !strings.Contains(sc.logs.String(), sc.log) {
				t.Errorf("no %q in the logs:\n%s", sc.log, sc.logs.String())
			}

			// Retried, with waits that grow: the n-th wait is drawn from
			// [d/2, d) with d = MinBackoff doubled n times (capped at
			// MaxBackoff), so the n-th gap between connections is at
			// least d/2 (less a little scheduling slack at accept), and
			// at most 1 + (how many such lower bounds fit) connections
			// happen in the window. A hot loop would show hundreds.
			gaps := make([]time.Duration, 0, len(attempts))
			for i := 1; i < len(attempts); i++ {
				gaps = append(gaps, attempts[i].Sub(attempts[i-1]))
			}
			t.Logf("%s: %d connections in %s, gaps %v, reconnects %d, retry in %s; error (%d bytes): %.160q",
				sc.mode, len(attempts), window, roundAll(gaps), status.Reconnects, status.RetryIn.Round(time.Millisecond), len(status.LastError), status.LastError)
			if len(attempts) < 2 {
				t.Errorf("%d connection(s) in %s: the supervisor did not retry", len(attempts), window)
			}
			maxAttempts := 1
			for sum, d := time.Duration(0), minBackoff; sum+d/2 <= window; d = min(2*d, maxBackoff) {
				sum += d / 2
				maxAttempts++
			}
			if len(attempts) > maxAttempts {
				t.Errorf("%d connections in %s, at most %d possible with this backoff: retrying too fast", len(attempts), window, maxAttempts)
			}
			const slack = 50 * time.Millisecond
			for i, d := 0, minBackoff; i < len(gaps); i, d = i+1, min(2*d, maxBackoff) {
				if gaps[i] < d/2-slack {
					t.Errorf("gap %d is %s, below the least wait %s of its backoff", i, gaps[i], d/2)
				}
			}
			if status.Reconnects == 0 || status.RetryIn < minBackoff/2 {
				t.Errorf("status %+v: want reconnects counted and a retry wait", status)
			}
		})
	}

	// A camera that omits CSeq (RFC 2326 §12.17 wants it echoed) but is
	// otherwise sound plays: gortsplib accepts such responses.
	t.Run(string(rtsptest.BadNoCSeq), func(t *testing.T) {
		t.Parallel()
		bad := rtsptest.StartBad(t, rtsptest.BadNoCSeq)
		// gortsplib's TCP read timeout counts whole seconds (the time of
		// the latest frame is stored as Unix seconds), so a ReadTimeout of
		// 1 s can fire while frames flow every 100 ms: 3 s cannot.
		const playTimeout = 3 * time.Second
		src, err := New(Config{URL: bad.URL("cam"), Transport: TransportTCP, ReadTimeout: playTimeout}, nil)
		if err != nil {
			t.Fatal(err)
		}
		st := media.NewStream(media.StreamConfig{Name: "nocseq"}, nil)
		defer st.Close()
		sv := media.NewSupervisor(src, st, media.SupervisorConfig{MinBackoff: minBackoff, MaxBackoff: maxBackoff}, nil)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		t0 := time.Now()
		go func() { done <- sv.Run(ctx) }()
		defer func() { cancel(); <-done }()
		for sv.Status().State != media.SourceUp {
			if time.Since(t0) > 10*time.Second {
				t.Fatalf("not up after 10 s: %+v", sv.Status())
			}
			time.Sleep(20 * time.Millisecond)
		}
		up := time.Since(t0)
		const hold = 4 * time.Second // still up past the read timeout
		time.Sleep(hold)
		s := sv.Status()
		n := len(bad.Attempts())
		t.Logf("no-cseq: up after %s, after %s more: state %s, %d connection(s), reconnects %d", up.Round(time.Millisecond), hold, s.State, n, s.Reconnects)
		if s.State != media.SourceUp || n != 1 || s.Reconnects != 0 {
			t.Errorf("status %+v, %d connections: want up on the first connection", s, n)
		}
	})
}

// TestFaultRTSPMalformedServerRecovers: a camera answers garbage for a
// while, then a real camera takes its address over (a reboot into working
// firmware): the same supervised source plays without any help, within
// the backoff in force.
func TestFaultRTSPMalformedServerRecovers(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	leaktest.Check(t)
	const maxBackoff = 2 * time.Second
	bad := rtsptest.StartBad(t, rtsptest.BadSDPGarbage)
	src, err := New(Config{URL: bad.URL("cam"), Transport: TransportTCP, ReadTimeout: 3 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st := media.NewStream(media.StreamConfig{Name: "recovers"}, nil)
	defer st.Close()
	sv := media.NewSupervisor(src, st, media.SupervisorConfig{MinBackoff: 200 * time.Millisecond, MaxBackoff: maxBackoff}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for len(bad.Attempts()) < 3 {
		time.Sleep(20 * time.Millisecond)
	}
	badTries, lastErr := len(bad.Attempts()), sv.Status().LastError
	port := bad.Port()
	bad.Close()
	cam := rtsptest.Start(t, rtsptest.Options{Port: port})
	t0 := time.Now()
	for sv.Status().State != media.SourceUp {
		if time.Since(t0) > maxBackoff+10*time.Second {
			t.Fatalf("not up %s after the real camera started: %+v", time.Since(t0), sv.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	up := time.Since(t0)
	// Media flows: a subscriber gets a keyframe from the real camera.
	sub, err := st.Subscribe("check", media.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	buf := make([]*media.Unit, 64)
	for key := false; !key; {
		n, err := sub.Read(rctx, buf)
		if err != nil {
			t.Fatalf("no keyframe after recovery: %v", err)
		}
		for _, u := range buf[:n] {
			key = key || u.Keyframe
		}
	}
	s := sv.Status()
	t.Logf("recovers: %d garbage connections (%.100q), up %s after the real camera started (max backoff %s), reconnects %d, %d AUs sent",
		badTries, lastErr, up.Round(time.Millisecond), maxBackoff, s.Reconnects, cam.SentAUs())
	if up > maxBackoff+5*time.Second {
		t.Errorf("up %s after the camera came back, max backoff %s", up, maxBackoff)
	}
	if s.Failed || !s.EverUp {
		t.Errorf("status %+v after recovery", s)
	}
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
