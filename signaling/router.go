package signaling

import (
	"context"
	"fmt"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/paths"
)

// DefaultPath is the path a request without one addresses (POST /whep, the
// Symple server peer icey|server).
const DefaultPath = "main"

// Router resolves a path name to the stream a session attaches to. Package
// paths implements it for the server; OneStream serves a single stream.
// Errors wrap the sentinels of package paths (ErrNotFound, ErrNotAllowed,
// ErrUnauthorized, ErrBusy, ErrUnavailable, ErrClosed).
type Router interface {
	// View returns the stream a new viewer of path reads. It may wait,
	// bounded by ctx, for an on-demand source to deliver its first
	// keyframe (a first viewer waits instead of being refused). release
	// must be called exactly once when the viewer is gone, so the path
	// can close an idle on-demand source.
	View(ctx context.Context, path string) (st *media.Stream, release func(), err error)
	// Publish claims the publisher slot of path, checking token against
	// the path's publish policy. The publisher writes into st (the path's
	// stream; it implements media.Writer) and calls release exactly once
	// when it is gone: the path then waits for the next publisher and its
	// viewers keep their sessions.
	Publish(ctx context.Context, path, token string) (st *media.Stream, release func(), err error)
}

// OneStream is a Router with one path, DefaultPath, served from st; it
// accepts viewers only when read and a publisher only when publish
// (one at a time). Tests and single-stream embedders use it.
func OneStream(st *media.Stream, read, publish bool) Router {
	return &oneStream{st: st, read: read, publish: publish, slot: make(chan struct{}, 1)}
}

type oneStream struct {
	st            *media.Stream
	read, publish bool
	slot          chan struct{}
}

func (o *oneStream) check(path string) error {
	if path != "" && path != DefaultPath {
		return fmt.Errorf("%w: %q", paths.ErrNotFound, path)
	}
	return nil
}

func (o *oneStream) View(_ context.Context, path string) (*media.Stream, func(), error) {
	if err := o.check(path); err != nil {
		return nil, nil, err
	}
	if !o.read {
		return nil, nil, fmt.Errorf("%w: path %q does not accept viewers", paths.ErrNotAllowed, DefaultPath)
	}
	return o.st, func() {}, nil
}

func (o *oneStream) Publish(_ context.Context, path, _ string) (*media.Stream, func(), error) {
	if err := o.check(path); err != nil {
		return nil, nil, err
	}
	if !o.publish {
		return nil, nil, fmt.Errorf("%w: path %q does not accept publishers", paths.ErrNotAllowed, DefaultPath)
	}
	select {
	case o.slot <- struct{}{}:
	default:
		return nil, nil, fmt.Errorf("%w: %q", paths.ErrBusy, DefaultPath)
	}
	var once bool
	return o.st, func() {
		if !once {
			once = true
			<-o.slot
		}
	}, nil
}

// URL kinds returned by ParseURL.
const (
	KindWHEP = whepPath
	KindWHIP = whipPath
)

// ParseURL splits a WHEP/WHIP URL (/whep, /{path}/whep, their resources,
// and the same with whip) into its kind (KindWHEP or KindWHIP), path name
// ("" for the default path) and resource ("" for the POST endpoint).
func ParseURL(p string) (kind, path, res string, ok bool) { return splitSignalPath(p) }
