package media

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// Stall ends a run that stops delivering media (a demuxer reading a
// connection that stays open but sends nothing): the run calls Touch for
// every piece of media, and when none came for the limit, the run's
// context is cancelled with the cause "no media for ...".
type Stall struct{ last atomic.Int64 }

// WatchStall starts watching; the watch ends with runCtx (cancel it when
// the run returns).
func WatchStall(runCtx context.Context, cancel context.CancelCauseFunc, limit time.Duration) *Stall {
	s := &Stall{}
	s.Touch()
	go func() {
		t := time.NewTicker(min(limit/4, time.Second))
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case now := <-t.C:
				if idle := now.Sub(time.Unix(0, s.last.Load())); idle >= limit {
					cancel(fmt.Errorf("no media for %s", idle.Round(100*time.Millisecond)))
					return
				}
			}
		}
	}()
	return s
}

// Touch records that media came now.
func (s *Stall) Touch() { s.last.Store(time.Now().UnixNano()) }

// RunErr is what a run whose context runCtx derives from ctx returns for
// err: ctx's error when the caller ended it, the run's own cause (a stall)
// when there is one, else err.
func RunErr(ctx, runCtx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if cause := context.Cause(runCtx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}
