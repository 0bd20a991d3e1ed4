package signaling

import (
	"bufio"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/icey/icey-server/internal/auth"
	"github.com/icey/icey-server/paths"
)

// WHEP (draft-ietf-wish-whep) and WHIP (RFC 9725) HTTP resources.
const (
	whepPath = "/whep"
	whipPath = "/whip"

	mimeSDP     = "application/sdp"
	mimeSDPFrag = "application/trickle-ice-sdpfrag"

	// retryAfterSeconds is suggested when the source is down or the server full.
	retryAfterSeconds = "5"
)

// Handler serves WHEP and WHIP for every path:
//
//	POST /whep, POST /{path}/whep          a viewer's offer (201 + Location)
//	POST /whip, POST /{path}/whip          a publisher's offer
//	PATCH|DELETE <Location>                trickle ICE, hang up
//	OPTIONS on all of them                 CORS preflight
//
// /whep and /whip address DefaultPath. A Location is
// [/{path}]/whep/{resource} (or whip); its resource element is a capability
// (see newResource): without it a session cannot be acted on, whatever else
// the caller knows (its opaque id, a token). Authentication is the
// caller's business (wrap this handler; let OPTIONS through for CORS
// preflight). The bearer token, when present, is passed to the Router as
// the publisher's token.
func (m *Manager) Handler() http.Handler {
	return withCORS(http.HandlerFunc(m.route))
}

// route dispatches by URL shape. It is hand-written because Go's ServeMux
// rejects "/whep/{resource}" next to "/{path}/whep" as conflicting.
func (m *Manager) route(w http.ResponseWriter, r *http.Request) {
	kind, path, res, ok := splitSignalPath(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	if res != "" {
		m.serveResource(w, r, kind, path, res)
		return
	}
	switch r.Method {
	case http.MethodOptions:
		w.Header().Set("Allow", "OPTIONS, POST")
		w.Header().Set("Accept-Post", mimeSDP)
		if kind == whepPath {
			m.setLinkHeaders(w)
		}
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPost:
		if kind == whepPath {
			m.postWHEP(w, r, path)
		} else {
			m.postWHIP(w, r, path)
		}
	default:
		methodNotAllowed(w, "OPTIONS, POST")
	}
}

// splitSignalPath parses /whep, /whep/{res}, /{path}/whep and
// /{path}/whep/{res} (and the same with whip). kind is whepPath or
// whipPath; path is "" for the default path. Two elements starting with
// whep or whip are a resource of the default path (so no path may be named
// whep or whip; config refuses those names).
func splitSignalPath(p string) (kind, path, res string, ok bool) {
	el := strings.Split(strings.TrimPrefix(p, "/"), "/")
	isKind := func(s string) bool { return s == "whep" || s == "whip" }
	switch {
	case len(el) == 1 && isKind(el[0]):
		return "/" + el[0], "", "", true
	case len(el) == 2 && isKind(el[0]) && el[1] != "":
		return "/" + el[0], "", el[1], true
	case len(el) == 2 && el[0] != "" && isKind(el[1]):
		return "/" + el[1], el[0], "", true
	case len(el) == 3 && el[0] != "" && isKind(el[1]) && el[2] != "":
		return "/" + el[1], el[0], el[2], true
	}
	return "", "", "", false
}

// location is the resource URL of session s: absolute on
// Config.PublicURL when set (a node-qualified URL), else relative.
func (m *Manager) location(kind string, s *Session) string {
	loc := "/" + s.path + kind + "/" + s.resource()
	if s.path == DefaultPath {
		loc = kind + "/" + s.resource()
	}
	return strings.TrimSuffix(m.cfg.PublicURL, "/") + loc
}

// withCORS lets browser pages on other origins use WHEP (players embedded
// elsewhere); the bearer token, not the origin, is what authorizes POST,
// and the unguessable Location what authorizes PATCH and DELETE.
func withCORS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Access-Control-Allow-Origin", "*")
		hd.Set("Access-Control-Allow-Methods", "OPTIONS, POST, PATCH, DELETE")
		hd.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, If-Match")
		hd.Set("Access-Control-Expose-Headers", "Location, ETag, Link, Accept-Patch, Accept-Post, Retry-After")
		hd.Set("Access-Control-Max-Age", "600")
		h.ServeHTTP(w, r)
	})
}

func (m *Manager) postWHEP(w http.ResponseWriter, r *http.Request, path string) {
	offer, ok := m.readBody(w, r, mimeSDP)
	if !ok {
		return
	}
	s, answer, err := m.NewViewer(r.Context(), offer, SessionMeta{Remote: r.RemoteAddr, Path: path})
	if err != nil {
		m.writeError(w, r, err)
		return
	}
	loc := m.location(whepPath, s)
	h := w.Header()
	h.Set("Content-Type", mimeSDP)
	h.Set("Location", loc)
	h.Set("Cache-Control", "no-store") // the Location is a capability
	h.Set("ETag", s.etag)
	h.Set("Accept-Patch", mimeSDPFrag)
	m.setLinkHeaders(w)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// serveResource serves OPTIONS, PATCH and DELETE on a session's Location.
func (m *Manager) serveResource(w http.ResponseWriter, r *http.Request, kind, path, res string) {
	const allow = "OPTIONS, PATCH, DELETE"
	if r.Method == http.MethodOptions {
		w.Header().Set("Allow", allow)
		w.Header().Set("Accept-Patch", mimeSDPFrag)
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if r.Method != http.MethodPatch && r.Method != http.MethodDelete {
		methodNotAllowed(w, allow)
		return
	}
	// Only the capability finds a session: an opaque id (from status,
	// events or metrics) answers the same 404 as a guess.
	if path == "" {
		path = DefaultPath
	}
	s := m.byResource(res)
	if s == nil || !s.live.Load() || s.path != path || (kind == whipPath) != (s.role == "publisher") {
		http.Error(w, "no such session", http.StatusNotFound)
		return
	}
	if r.Method == http.MethodDelete {
		s.Close("hangup")
		// Wait (bounded) so the client sees the session gone when we answer.
		select {
		case <-s.Done():
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
		return
	}
	m.patchWHEP(w, r, s)
}

// patchWHEP applies a trickle ICE SDP fragment (RFC 8840, RFC 9725 §4.3).
// Trickle requests must carry the ETag of the 201 in If-Match (RFC 9725
// §4.3.1): none is 428, another is 412. `If-Match: *` is how RFC 9725
// §4.3.2 marks an ICE restart; this server supports trickle ICE but not ICE
// restarts, so such a PATCH is answered 422 (RFC 9725 §4.3.1: a session
// supporting one of the two answers 422 to the other) and the session keeps
// its current ICE session.
func (m *Manager) patchWHEP(w http.ResponseWriter, r *http.Request, s *Session) {
	switch ifMatch(r.Header.Values("If-Match"), s.etag) {
	case matchAbsent:
		http.Error(w, "If-Match with the session's ETag is required", http.StatusPreconditionRequired)
		return
	case matchAny:
		http.Error(w, "ICE restart is not supported", http.StatusUnprocessableEntity)
		return
	case matchFailed:
		http.Error(w, "ETag mismatch", http.StatusPreconditionFailed)
		return
	}
	body, ok := m.readBody(w, r, mimeSDPFrag)
	if !ok {
		return
	}
	frag, err := parseSDPFrag(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if frag.ufrag != "" && s.remoteUfrag != "" && frag.ufrag != s.remoteUfrag {
		http.Error(w, "ICE restart is not supported", http.StatusUnprocessableEntity)
		return
	}
	for _, c := range frag.candidates {
		init := webrtc.ICECandidateInit{Candidate: c.candidate}
		if c.mid != "" {
			mid := c.mid
			init.SDPMid = &mid
		} else {
			idx := uint16(0)
			init.SDPMLineIndex = &idx
		}
		if frag.ufrag != "" {
			u := frag.ufrag
			init.UsernameFragment = &u
		}
		if err := s.AddICECandidate(init); err != nil {
			http.Error(w, "bad candidate: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

// postWHIP answers a publisher's sendonly offer (RFC 9725 §4.2): 201 with
// the answer, the Location of the session resource, its ETag and the ICE
// servers. The bearer token is the publisher's token, checked by the
// Router against the path's publish policy (401 when wrong, 403 when the
// path takes no publisher, 409 while another publisher is live).
func (m *Manager) postWHIP(w http.ResponseWriter, r *http.Request, path string) {
	offer, ok := m.readBody(w, r, mimeSDP)
	if !ok {
		return
	}
	s, answer, err := m.NewPublisher(r.Context(), offer, SessionMeta{Remote: r.RemoteAddr, Path: path, Token: auth.RequestToken(r)})
	if err != nil {
		m.writeError(w, r, err)
		return
	}
	h := w.Header()
	h.Set("Content-Type", mimeSDP)
	h.Set("Location", m.location(whipPath, s))
	h.Set("Cache-Control", "no-store") // the Location is a capability
	h.Set("ETag", s.etag)
	h.Set("Accept-Patch", mimeSDPFrag)
	m.setLinkHeaders(w)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// readBody checks the content type and reads a bounded body, answering 415
// or 413 itself.
func (m *Manager) readBody(w http.ResponseWriter, r *http.Request, want string) (string, bool) {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || !strings.EqualFold(ct, want) {
		http.Error(w, "Content-Type must be "+want, http.StatusUnsupportedMediaType)
		return "", false
	}
	if r.ContentLength > m.cfg.MaxBodyBytes {
		http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		return "", false
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, m.cfg.MaxBodyBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			http.Error(w, "body too large", http.StatusRequestEntityTooLarge)
		} else {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
		}
		return "", false
	}
	return string(b), true
}

// writeError maps session-layer errors to HTTP status codes.
func (m *Manager) writeError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, ErrBadOffer):
		http.Error(w, strings.TrimPrefix(err.Error(), "signaling: "), http.StatusBadRequest)
	case errors.Is(err, ErrWrongMode):
		http.Error(w, strings.TrimPrefix(err.Error(), "signaling: "), http.StatusConflict)
	case errors.Is(err, ErrNoCodec):
		// RFC 9110 §15.5.7: nothing the client accepts can be produced.
		http.Error(w, strings.TrimPrefix(err.Error(), "signaling: "), http.StatusNotAcceptable)
	case errors.Is(err, paths.ErrNotFound):
		http.Error(w, strings.TrimPrefix(err.Error(), "paths: "), http.StatusNotFound)
	case errors.Is(err, paths.ErrNotAllowed):
		http.Error(w, strings.TrimPrefix(err.Error(), "paths: "), http.StatusForbidden)
	case errors.Is(err, paths.ErrUnauthorized):
		w.Header().Set("WWW-Authenticate", `Bearer realm="icey"`)
		http.Error(w, strings.TrimPrefix(err.Error(), "paths: "), http.StatusUnauthorized)
	case errors.Is(err, paths.ErrBusy):
		http.Error(w, strings.TrimPrefix(err.Error(), "paths: "), http.StatusConflict)
	case errors.Is(err, paths.ErrUnavailable):
		w.Header().Set("Retry-After", retryAfterSeconds)
		http.Error(w, strings.TrimPrefix(err.Error(), "paths: "), http.StatusServiceUnavailable)
	case errors.Is(err, paths.ErrClosed):
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	case errors.Is(err, ErrNoSource):
		w.Header().Set("Retry-After", retryAfterSeconds)
		http.Error(w, "source unavailable", http.StatusServiceUnavailable)
	case errors.Is(err, ErrCapacity):
		reason := RefusedCapacity
		var ae *AdmissionError
		if errors.As(err, &ae) {
			reason = ae.Reason
		}
		w.Header().Set("Retry-After", retryAfterSeconds)
		http.Error(w, "too many sessions (reason: "+reason+")", http.StatusServiceUnavailable)
	case errors.Is(err, ErrClosed):
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
	case r.Context().Err() != nil:
		// The client went away during setup; nobody reads this.
		w.WriteHeader(http.StatusRequestTimeout)
	default:
		m.log.Warn("whep session setup failed", "remote", r.RemoteAddr, "err", err)
		http.Error(w, "session setup failed", http.StatusInternalServerError)
	}
}

// setLinkHeaders advertises ICE servers (draft-ietf-wish-whep §4.4, RFC
// 9725 §4.6): Link: <turn:host:3478>; rel="ice-server"; username=...;
// credential=...; credential-type="password".
func (m *Manager) setLinkHeaders(w http.ResponseWriter) {
	if m.cfg.ICEServers == nil {
		return
	}
	for _, srv := range m.cfg.ICEServers() {
		for _, u := range srv.URLs {
			v := "<" + u + `>; rel="ice-server"`
			if srv.Username != "" {
				v += "; username=" + strconv.Quote(srv.Username)
			}
			if cred, ok := srv.Credential.(string); ok && cred != "" {
				v += "; credential=" + strconv.Quote(cred) + `; credential-type="password"`
			}
			w.Header().Add("Link", v)
		}
	}
}

type matchResult int

const (
	matchOK matchResult = iota
	matchAbsent
	matchAny
	matchFailed
)

// ifMatch evaluates If-Match field values (RFC 9110 §13.1.1: "*" or a list
// of entity-tags, strong comparison) against the session's ETag; the
// comparison runs in constant time.
func ifMatch(values []string, etag string) matchResult {
	seen := false
	for _, v := range values {
		for _, t := range strings.Split(v, ",") {
			t = strings.TrimSpace(t)
			if t == "" {
				continue
			}
			seen = true
			if t == "*" {
				return matchAny
			}
			if subtle.ConstantTimeCompare([]byte(t), []byte(etag)) == 1 {
				return matchOK
			}
		}
	}
	if !seen {
		return matchAbsent
	}
	return matchFailed
}

func methodNotAllowed(w http.ResponseWriter, allow string) {
	w.Header().Set("Allow", allow)
	http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
}

type fragCandidate struct {
	mid       string
	candidate string // without the "a=" prefix
}

type sdpFrag struct {
	ufrag, pwd string
	candidates []fragCandidate
	end        bool
}

// parseSDPFrag reads a trickle-ice-sdpfrag body (RFC 8840 §9): optional
// session-level ice-ufrag/ice-pwd, m= lines each followed by a=mid,
// a=candidate and a=end-of-candidates lines.
func parseSDPFrag(body string) (*sdpFrag, error) {
	f := &sdpFrag{}
	mid := ""
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.ContainsAny(line, "\r\x00") {
			// SDP lines end with CRLF; a bare CR inside one (or a NUL)
			// would reach pion and logs as part of a candidate or mid.
			return nil, fmt.Errorf("malformed sdpfrag line %q", line)
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "m="):
			mid = ""
		case strings.HasPrefix(line, "a=mid:"):
			mid = strings.TrimPrefix(line, "a=mid:")
		case strings.HasPrefix(line, "a=ice-ufrag:"):
			f.ufrag = strings.TrimPrefix(line, "a=ice-ufrag:")
		case strings.HasPrefix(line, "a=ice-pwd:"):
			f.pwd = strings.TrimPrefix(line, "a=ice-pwd:")
		case strings.HasPrefix(line, "a=candidate:"):
			f.candidates = append(f.candidates, fragCandidate{mid: mid, candidate: strings.TrimPrefix(line, "a=")})
		case line == "a=end-of-candidates":
			f.end = true
		case len(line) < 2 || line[1] != '=':
			return nil, fmt.Errorf("malformed sdpfrag line %q", line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("malformed sdpfrag: %v", err)
	}
	return f, nil
}
