package turn

import (
	"encoding/binary"
	"errors"
	"net"
	"time"

	"github.com/pion/stun/v3"
)

// Inbound requests pass through inspect before pion/turn sees them, on both
// listeners (UDP datagrams; TCP frames split by tcpConn). It fixes two things
// pion/turn v4 gets wrong and that cannot be configured:
//
//   - Bad credentials. pion answers an unknown user or a wrong
//     MESSAGE-INTEGRITY with 400 Bad Request; RFC 8489 §9.2.4 requires 401
//     Unauthenticated with REALM and NONCE. inspect verifies the credentials
//     of every authenticated request itself and answers a failure with that
//     401, so pion only ever sees requests whose credentials are good.
//   - Lifetimes. pion grants a requested LIFETIME only below one hour and
//     falls back to the 10-minute default at or above it, so a client asking
//     for the maximum gets a sixth of it (and a vanished client's allocation
//     is held for 10 minutes whatever it asked). inspect clamps LIFETIME to
//     the configured maximum and re-signs the request with the user's key.
//
// Everything else (binding requests, indications, ChannelData, malformed or
// unauthenticated requests) passes unchanged: pion's answers to those are
// correct (401 challenge, 400 for a missing USERNAME/REALM/NONCE, 438).

// Sizes of TURN framing (RFC 8489 §5, RFC 8656 §12).
const (
	stunHeaderLen     = 20
	channelHeaderLen  = 4
	maxTURNFrameLen   = 0xFFFF // pion's STUNConn frames in 16 bits
	messageIntegrityN = 20     // HMAC-SHA1
	stunMagicCookie   = 0x2112A442
)

// errBadFrame: the TCP stream does not start with a STUN message or
// ChannelData; it cannot be resynchronised.
var errBadFrame = errors.New("turn: TCP stream is not STUN or ChannelData")

// frameLen returns the length of the TURN frame at the start of a TCP stream
// b: 0 and no error while more bytes are needed, errBadFrame for bytes that
// are neither STUN nor ChannelData. ChannelData is padded to 4 bytes over
// TCP (RFC 8656 §12.5).
//
// The frames are handed to pion's STUNConn, which splits them again with its
// own rule, so both must agree or a frame inspect never saw could reach
// pion. pion takes anything with the magic cookie at bytes 4-8 for STUN
// (once 20 bytes are buffered), whatever the first byte, and a first byte of
// 0x40-0x7F for ChannelData otherwise. A ChannelData header followed by the
// cookie is therefore ambiguous (pion itself splits it differently depending
// on how much is buffered): it is refused, as found by FuzzFrameLen. So are
// frames longer than 0xFFFF bytes, whose length pion's 16-bit sum wraps.
func frameLen(b []byte) (int, error) {
	if len(b) < 8 {
		return 0, nil // not enough to tell STUN from ChannelData
	}
	length := int(binary.BigEndian.Uint16(b[2:4]))
	cookie := binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie
	channel := b[0]>>6 == 1 // channel numbers 0x4000-0x7FFF
	var n int
	switch {
	case cookie && channel:
		return 0, errBadFrame
	case cookie:
		n = stunHeaderLen + length
	case channel:
		n = channelHeaderLen + (length+3)&^3
	default:
		return 0, errBadFrame
	}
	if n > maxTURNFrameLen {
		// pion computes the length in 16 bits and would wrap around.
		return 0, errBadFrame
	}
	if len(b) < n {
		return 0, nil
	}
	return n, nil
}

// inspectResult says what to do with one inbound frame.
type inspectResult struct {
	frame []byte // what pion gets: the input, a rewritten copy, or nil (dropped)
	reply []byte // a response to send to the client first, or nil
}

// inspect decides about one inbound frame from src (see the top of file).
// It never modifies in.
func (s *Server) inspect(in []byte, src net.Addr) inspectResult {
	pass := inspectResult{frame: in}
	if len(in) < stunHeaderLen || !stun.IsMessage(in) {
		return pass // ChannelData and garbage: pion's business
	}
	m := &stun.Message{Raw: append([]byte(nil), in...)}
	if m.Decode() != nil || m.Type.Class != stun.ClassRequest {
		return pass
	}
	switch m.Type.Method {
	case stun.MethodAllocate, stun.MethodRefresh, stun.MethodCreatePermission, stun.MethodChannelBind:
	default:
		return pass
	}
	mi, err := m.Get(stun.AttrMessageIntegrity)
	if err != nil {
		return pass // pion's 401 challenge
	}
	var (
		user  stun.Username
		realm stun.Realm
		nonce stun.Nonce
	)
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil || nonce.GetFrom(m) != nil {
		return pass // pion's 400 (RFC 8489: a missing attribute is a bad request)
	}
	key, reason := s.lookupKey(user.String(), realm.String(), src)
	if reason == "" && (len(mi) != messageIntegrityN || stun.MessageIntegrity(key).Check(m) != nil) {
		reason = reasonAuth
	}
	if reason != "" {
		s.refuse(reason, src.String())
		return inspectResult{reply: s.unauthorized(m, nonce)}
	}
	if m.Type.Method == stun.MethodAllocate || m.Type.Method == stun.MethodRefresh {
		if out := clampLifetime(m, key, s.maxLifetime()); out != nil {
			return inspectResult{frame: out}
		}
	}
	return pass
}

// unauthorized is the 401 for a request with bad credentials: REALM and the
// request's NONCE (already accepted by the client's previous exchange; a
// stale one earns a 438 on the next try), no MESSAGE-INTEGRITY since the key
// is unknown.
func (s *Server) unauthorized(req *stun.Message, nonce stun.Nonce) []byte {
	res, err := stun.Build(
		&stun.Message{TransactionID: req.TransactionID},
		stun.NewType(req.Type.Method, stun.ClassErrorResponse),
		stun.CodeUnauthorized,
		stun.NewRealm(s.cfg.Realm),
		nonce,
		stun.Fingerprint,
	)
	if err != nil {
		return nil
	}
	return res.Raw
}

func (s *Server) maxLifetime() time.Duration {
	if s.cfg.MaxLifetime <= 0 || s.cfg.MaxLifetime > DefaultMaxLifetime {
		return DefaultMaxLifetime
	}
	return s.cfg.MaxLifetime
}

// clampLifetime returns m re-encoded with every LIFETIME above max lowered
// to max and signed again with key, or nil when nothing needs to change.
// Attributes after MESSAGE-INTEGRITY other than FINGERPRINT are dropped (a
// receiver ignores them anyway, RFC 8489 §14.5).
func clampLifetime(m *stun.Message, key []byte, max time.Duration) []byte {
	limit := uint32(max / time.Second)
	over := false
	for _, a := range m.Attributes {
		if a.Type == stun.AttrMessageIntegrity {
			break
		}
		if a.Type == stun.AttrLifetime && len(a.Value) == 4 && binary.BigEndian.Uint32(a.Value) > limit {
			over = true
		}
	}
	if !over {
		return nil
	}
	out := &stun.Message{Type: m.Type, TransactionID: m.TransactionID}
	out.WriteHeader()
	for _, a := range m.Attributes {
		if a.Type == stun.AttrMessageIntegrity {
			break
		}
		v := a.Value
		if a.Type == stun.AttrLifetime && len(v) == 4 && binary.BigEndian.Uint32(v) > limit {
			v = binary.BigEndian.AppendUint32(nil, limit)
		}
		out.Add(a.Type, v)
	}
	if stun.MessageIntegrity(key).AddTo(out) != nil {
		return nil
	}
	if m.Contains(stun.AttrFingerprint) && stun.Fingerprint.AddTo(out) != nil {
		return nil
	}
	return out.Raw
}
