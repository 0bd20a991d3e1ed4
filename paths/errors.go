package paths

import "errors"

// Sentinel errors of path resolution. They are returned (wrapped, with a
// reason) by Router.View and Router.Publish; the HTTP and Symple edges map
// them to status codes and call rejections.
var (
	// ErrNotFound: no path of that name (HTTP 404).
	ErrNotFound = errors.New("paths: no such path")
	// ErrNotAllowed: the path does not accept this role (a viewer on a
	// path with read: false, a publisher on a path with a pulled source or
	// without publish: true) (HTTP 403).
	ErrNotAllowed = errors.New("paths: not allowed on this path")
	// ErrUnauthorized: the publisher's token does not match the path's
	// publishToken (HTTP 401).
	ErrUnauthorized = errors.New("paths: unauthorized")
	// ErrBusy: the path already has a live publisher (HTTP 409).
	ErrBusy = errors.New("paths: path already has a publisher")
	// ErrUnavailable: the path's source did not deliver a keyframe within
	// the start timeout, or has failed (HTTP 503 with the reason).
	ErrUnavailable = errors.New("paths: source unavailable")
	// ErrClosed: the path set is shutting down (HTTP 503).
	ErrClosed = errors.New("paths: closed")
)
