// Package srt is the SRT pull source: the server connects itself with
// gosrt (caller mode), so the passphrase and stream id stay in its
// process, and demuxes the MPEG-TS it carries with media/tsdemux: H.264
// and Opus pass through, AAC becomes Opus through an ffmpeg child fed on
// stdin. Reconnection is the supervisor's job: Run returns on any failure.
package srt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	gosrt "github.com/datarhei/gosrt"

	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/tsdemux"
)

// Defaults of Config.
const (
	DefaultDialTimeout = 5 * time.Second
	DefaultReadTimeout = 10 * time.Second
)

// Config configures a Source. Only URL is required.
type Config struct {
	// URL is srt://host:port?streamid=...&passphrase=...&latency=... (the
	// query is SRT's usual option set, as libsrt and ffmpeg read it; only
	// caller mode is supported).
	URL string
	// DialTimeout bounds the handshake (default 5 s).
	DialTimeout time.Duration
	// ReadTimeout ends a run without media for this long (default 10 s).
	ReadTimeout time.Duration
	// TranscodeAudio turns AAC into Opus with ffmpeg (stdin only).
	TranscodeAudio bool
	// FFmpegPath for TranscodeAudio (default "ffmpeg" from PATH).
	FFmpegPath string
}

// Source plays one SRT URL. It implements media.Source.
type Source struct {
	cfg     Config
	addr    string
	srtCfg  gosrt.Config
	safe    string
	secrets []string
	log     *slog.Logger

	media.WarningSet // warnings of the latest run

	audioPid atomic.Int64 // ffmpeg of the AAC transcode, for tests
}

// IsSRT reports whether src is an srt:// URL.
func IsSRT(src string) bool {
	return strings.HasPrefix(strings.ToLower(strings.TrimSpace(src)), "srt://")
}

// CallerMode reports whether an srt:// URL asks for caller mode (the
// default), the only one Source supports; listener and rendezvous URLs are
// left to ffmpeg.
func CallerMode(src string) bool {
	u, err := url.Parse(strings.TrimSpace(src))
	if err != nil {
		return false
	}
	m := u.Query().Get("mode")
	return m == "" || m == "caller"
}

// New validates cfg. log may be nil.
func New(cfg Config, log *slog.Logger) (*Source, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	raw := strings.TrimSpace(cfg.URL)
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "srt" || u.Host == "" {
		return nil, fmt.Errorf("srt: invalid URL %q (want srt://host:port?...)", safeURL(raw))
	}
	if mode := u.Query().Get("mode"); mode != "" && mode != "caller" {
		return nil, fmt.Errorf("srt: mode %q: only caller mode is supported", mode)
	}
	q := u.Query()
	q.Del("mode")
	u.RawQuery = q.Encode()
	sc := gosrt.DefaultConfig()
	addr, err := sc.UnmarshalURL(u.String())
	if err != nil {
		return nil, fmt.Errorf("srt: %s: %s", safeURL(raw), scrub(err.Error(), sc.Passphrase, sc.StreamId))
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	sc.ConnectionTimeout = cfg.DialTimeout
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("srt: %s: %s", safeURL(raw), scrub(err.Error(), sc.Passphrase, sc.StreamId))
	}
	s := &Source{cfg: cfg, addr: addr, srtCfg: sc, safe: safeURL(raw),
		secrets: []string{sc.Passphrase, sc.StreamId}}
	s.log = log.With("module", "srt", "source", s.safe)
	return s, nil
}

// safeURL keeps scheme and host: the query holds the passphrase and the
// stream id (often a key).
func safeURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "srt://?"
	}
	return (&url.URL{Scheme: u.Scheme, Host: u.Host}).String()
}

func scrub(text string, secrets ...string) string {
	text = media.RedactURL(text)
	for _, s := range secrets {
		if s != "" {
			text = strings.ReplaceAll(text, s, "***")
		}
	}
	return text
}

// Kind implements media.Source.
func (s *Source) Kind() string { return "url" }

// String implements media.Source: scheme and host only.
func (s *Source) String() string { return s.safe }

var _ media.Warner = (*Source)(nil)

// Run implements media.Source.
func (s *Source) Run(ctx context.Context, st media.Writer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	type dialed struct {
		c   gosrt.Conn
		err error
	}
	ch := make(chan dialed, 1)
	go func() {
		c, err := gosrt.Dial("srt", s.addr, s.srtCfg)
		ch <- dialed{c, err}
	}()
	var conn gosrt.Conn
	select {
	case d := <-ch:
		if d.err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("%w: srt %s: connect: %s", media.ErrSourceUnavailable, s.safe, scrub(d.err.Error(), s.secrets...))
		}
		conn = d.c
	case <-ctx.Done():
		go func() {
			if d := <-ch; d.c != nil {
				d.c.Close()
			}
		}()
		return ctx.Err()
	}
	defer conn.Close()
	s.log.Info("connected")

	err := tsdemux.Play(ctx, conn, st, tsdemux.Options{
		TranscodeAudio: s.cfg.TranscodeAudio,
		FFmpegPath:     s.cfg.FFmpegPath,
		StallTimeout:   s.cfg.ReadTimeout,
		Close:          func() { conn.Close() },
		OnTracks: func(w []string) {
			s.SetWarnings(w)
		},
		OnAudioPid: func(pid int) { s.audioPid.Store(int64(pid)) },
		Log:        s.log,
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case errors.Is(err, media.ErrUnsupportedCodec):
		return fmt.Errorf("srt %s: %w", s.safe, err)
	}
	return fmt.Errorf("%w: srt %s: %s", media.ErrSourceUnavailable, s.safe, scrub(err.Error(), s.secrets...))
}
