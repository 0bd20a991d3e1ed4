package media

import "github.com/icey/icey-server/internal/redact"

// RedactURL removes the userinfo (user:pass@) of every URL inside s, for
// errors and descriptions that end up in logs or the API:
// `dial rtsp://admin:secret@10.0.0.5/live: timeout` becomes
// `dial rtsp://10.0.0.5/live: timeout`. A password containing a raw '@'
// is removed whole (the authority ends at the last '@' before '/').
func RedactURL(s string) string { return redact.URL(s) }

// redactedError strips credentials from an error's text while keeping it
// matchable with errors.Is / errors.As.
type redactedError struct{ err error }

func (e redactedError) Error() string { return RedactURL(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

// redactError wraps err so that its text carries no URL credentials.
func redactError(err error) error {
	if err == nil {
		return nil
	}
	return redactedError{err}
}
