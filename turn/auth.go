package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST (coturn use-auth-secret) mandates HMAC-SHA1
	"encoding/base64"
	"net"
	"strconv"
	"strings"

	pionturn "github.com/pion/turn/v4"
)

// Credentials mints a username/credential pair for a browser's ICE server
// entry: TURN REST style with a Secret, the static demo pair otherwise.
func (s *Server) Credentials() (username, credential string) {
	if s.cfg.Secret == "" {
		return s.cfg.StaticUsername, s.cfg.StaticPassword
	}
	username = strconv.FormatInt(s.cfg.Now().Add(s.cfg.CredentialTTL).Unix(), 10)
	if s.cfg.UsernameSuffix != "" {
		username += ":" + s.cfg.UsernameSuffix
	}
	return username, restPassword(s.cfg.Secret, username)
}

// restPassword is base64(HMAC-SHA1(secret, username)), as coturn computes it.
func restPassword(secret, username string) string {
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseRESTUsername returns the expiry of "<unix expiry>[:<suffix>]". The
// suffix must be exactly the configured one (absent when none is configured).
func parseRESTUsername(username, suffix string) (int64, bool) {
	ts, rest, hasSuffix := strings.Cut(username, ":")
	if hasSuffix != (suffix != "") || rest != suffix {
		return 0, false
	}
	if ts == "" || len(ts) > 19 {
		return 0, false
	}
	for i := 0; i < len(ts); i++ {
		if ts[i] < '0' || ts[i] > '9' {
			return 0, false
		}
	}
	exp, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || exp <= 0 {
		return 0, false
	}
	return exp, true
}

// authenticate is pion's AuthHandler: it returns the long-term key for
// username, which pion then checks against MESSAGE-INTEGRITY (a forged
// password is counted in onAuth). It runs for every authenticated request,
// not only Allocate. Requests with bad credentials normally never reach it:
// inspect answers them with 401 first (pion would answer 400).
func (s *Server) authenticate(username, realm string, src net.Addr) ([]byte, bool) {
	key, reason := s.lookupKey(username, realm, src)
	if reason != "" {
		s.refuse(reason, src.String())
		return nil, false
	}
	return key, true
}

// lookupKey returns the long-term key of username, or the refusal reason.
func (s *Server) lookupKey(username, realm string, src net.Addr) (key []byte, reason string) {
	if realm != s.cfg.Realm {
		return nil, reasonAuth
	}
	if s.cfg.Secret == "" {
		if username != s.cfg.StaticUsername {
			return nil, reasonAuth
		}
		return pionturn.GenerateAuthKey(username, realm, s.cfg.StaticPassword), ""
	}
	exp, ok := parseRESTUsername(username, s.cfg.UsernameSuffix)
	if !ok {
		return nil, reasonAuth
	}
	now := s.cfg.Now()
	if exp > now.Add(s.cfg.MaxTTL).Unix() {
		return nil, reasonTooFar
	}
	// An expired username may still refresh the allocation it created (as
	// coturn keeps a session's key): the expiry gates new allocations, it does
	// not cut a viewer off mid-stream when its credential ages out.
	if exp < now.Unix() && !s.hasAllocation(src, username) {
		return nil, reasonExpired
	}
	return pionturn.GenerateAuthKey(username, realm, restPassword(s.cfg.Secret, username)), ""
}

// onAuth counts requests whose MESSAGE-INTEGRITY did not match the key.
func (s *Server) onAuth(src, _ net.Addr, _, _, _, _ string, verdict bool) {
	if !verdict {
		s.refuse(reasonAuth, src.String())
	}
}
