package rtsp

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/rtsptest"
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
		// slow: each run fails only after ReadTimeout.
		slow bool
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
		{mode: rtsptest.BadWrongCSeq, want: []string{"DESCRIBE", "request timed out"}, slow: true},
		{mode: rtsptest.BadHugeHeaderLine, want: []string{"DESCRIBE", "buffer length exceeds 2048"}},
		{mode: rtsptest.BadManyHeaders, want: []string{"DESCRIBE", "headers count exceeds 255"}},
		{mode: rtsptest.BadSDPGarbage, want: []string{"DESCRIBE", "invalid SDP"}},
		{mode: rtsptest.BadSDPNoMedia, want: []string{"DESCRIBE", "no media streams are present in SDP"}},
		{mode: rtsptest.BadSDPBrokenSprop, want: []string{"DESCRIBE", "invalid sprop-parameter-sets"}},
		// gortsplib's TCP read timeout and the source's media watchdog
		// race: both say that nothing playable arrived.
		{mode: rtsptest.BadInterleavedGarbage, anyOf: []string{"no media for 1s", "connection: TCP timeout"}, slow: true, log: "RTP decode error"},
		{mode: rtsptest.BadSilent, want: []string{"DESCRIBE", "request timed out"}, slow: true},
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
			if status.State != media.SourceReconnecting || !status.Failed || status.EverUp {
				t.Errorf("status %+v: want reconnecting, failed, never up", status)
			}
			if sc.log != "" && !strings.Contains(sc.logs.String(), sc.log) {
				t.Errorf("no %q in the logs:\n%s", sc.log, sc.logs.String())
			}

			// Retried, with waits that grow: each wait is drawn from
			// [d/2, d) and d doubles, so until the cap each gap between
			// connections exceeds the one before. A hot loop would show
			// hundreds of connections here.
			gaps := make([]time.Duration, 0, len(attempts))
			for i := 1; i < len(attempts); i++ {
				gaps = append(gaps, attempts[i].Sub(attempts[i-1]))
			}
			t.Logf("%s: %d connections in %s, gaps %v, reconnects %d, retry in %s; error (%d bytes): %.160q",
				sc.mode, len(attempts), window, roundAll(gaps), status.Reconnects, status.RetryIn.Round(time.Millisecond), len(status.LastError), status.LastError)
			if len(attempts) < 2 {
				t.Errorf("%d connection(s) in %s: the supervisor did not retry", len(attempts), window)
			}
			// Fast failures: waits of at least 100+200+400+800 ms fit
			// at most 6 connections in 4.5 s; slow ones fewer.
			if len(attempts) > 6 {
				t.Errorf("%d connections in %s: retrying too fast", len(attempts), window)
			}
			for i, g := range gaps {
				if g < minBackoff/2 {
					t.Errorf("gap %d is %s, below the minimum wait %s", i, g, minBackoff/2)
				}
			}
			if !sc.slow && len(gaps) >= 2 && gaps[len(gaps)-1] <= gaps[0] {
				t.Errorf("gaps %v do not grow", gaps)
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
		src, err := New(Config{URL: bad.URL("cam"), Transport: TransportTCP, ReadTimeout: readTimeout}, nil)
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
		time.Sleep(2 * readTimeout) // still up well past the read timeout
		s := sv.Status()
		n := len(bad.Attempts())
		t.Logf("no-cseq: up after %s, after %s more: state %s, %d connection(s), reconnects %d", up.Round(time.Millisecond), 2*readTimeout, s.State, n, s.Reconnects)
		if s.State != media.SourceUp || n != 1 || s.Reconnects != 0 {
			t.Errorf("status %+v, %d connections: want up on the first connection", s, n)
		}
	})
}

func roundAll(ds []time.Duration) []time.Duration {
	out := make([]time.Duration, len(ds))
	for i, d := range ds {
		out[i] = d.Round(time.Millisecond)
	}
	return out
}
