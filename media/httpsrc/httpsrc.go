// Package httpsrc pulls an http:// or https:// media URL with net/http in
// the server's own process, so that the URL's credentials (user:pass@,
// sent as HTTP basic authentication) never reach a child process: the
// body is handed to ffmpeg's stdin through transcode.Config.Feed.
package httpsrc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/icey/icey-server/media"
)

// ErrUnauthorized is wrapped when the server answers 401 or 403.
var ErrUnauthorized = errors.New("unauthorized")

// DefaultHeaderTimeout bounds the wait for the response headers.
const DefaultHeaderTimeout = 10 * time.Second

// Feeder GETs one URL and copies the body.
type Feeder struct {
	url    *url.URL
	safe   string
	pass   string
	client *http.Client
}

// New validates rawURL (http or https). client may be nil: then a client
// with DefaultHeaderTimeout and no overall timeout (the body is a live
// stream) is used. Credentials in the URL are sent as basic authentication
// to that host only (net/http drops them on a redirect to another host).
func New(rawURL string, client *http.Client) (*Feeder, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("httpsrc: invalid URL %q", media.RedactURL(rawURL))
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("httpsrc: unsupported scheme in %q (want http or https)", media.RedactURL(rawURL))
	}
	if u.Host == "" {
		return nil, fmt.Errorf("httpsrc: no host in %q", media.RedactURL(rawURL))
	}
	f := &Feeder{url: u, safe: media.RedactURL(rawURL)}
	if u.User != nil {
		f.pass, _ = u.User.Password()
	}
	if client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = DefaultHeaderTimeout
		tr.DialContext = (&net.Dialer{Timeout: DefaultHeaderTimeout}).DialContext
		client = &http.Client{Transport: tr}
	}
	f.client = client
	return f, nil
}

// IsHTTP reports whether src is an http:// or https:// URL.
func IsHTTP(src string) bool {
	low := strings.ToLower(strings.TrimSpace(src))
	return strings.HasPrefix(low, "http://") || strings.HasPrefix(low, "https://")
}

// String is the URL without credentials.
func (f *Feeder) String() string { return f.safe }

// open GETs the URL; the caller closes the body.
func (f *Feeder) open(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.url.String(), nil)
	if err != nil {
		return nil, f.scrubErr("request", err)
	}
	if f.url.User != nil {
		// net/http would do this too; explicit, so that it is obvious the
		// credentials stay in this process.
		p, _ := f.url.User.Password()
		req.SetBasicAuth(f.url.User.Username(), p)
	}
	req.Header.Set("User-Agent", "icey-server")
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, f.scrubErr("GET", err)
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s: %w", f.safe, resp.Status, ErrUnauthorized)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		resp.Body.Close()
		return nil, fmt.Errorf("GET %s: %s", f.safe, resp.Status)
	}
	return resp.Body, nil
}

// Feed implements transcode.Config.Feed: it GETs the URL and copies the
// body to w until the body ends (nil), ctx is done, or a read or write
// fails. Error texts never hold the credentials.
func (f *Feeder) Feed(ctx context.Context, w io.Writer) error {
	body, err := f.open(ctx)
	if err != nil {
		return err
	}
	defer body.Close()
	if _, err := io.Copy(w, body); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return f.scrubErr("reading", err)
	}
	return nil
}

// scrubErr formats err without the URL's credentials (the original error
// is not wrapped: its text can hold them).
func (f *Feeder) scrubErr(step string, err error) error {
	text := media.RedactURL(err.Error())
	if f.pass != "" {
		text = strings.ReplaceAll(text, f.pass, "***")
		text = strings.ReplaceAll(text, url.PathEscape(f.pass), "***")
	}
	return fmt.Errorf("%s %s: %s", step, f.safe, text)
}
