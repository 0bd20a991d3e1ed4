package symple

// Parsing and sanitizing of untrusted frames, kept free of connection state
// so that it can be fuzzed (fuzz_test.go).

import (
	"encoding/json"
	"errors"
	"strings"

	"github.com/pion/webrtc/v4"
)

// peerIdentity is what a peer is, as established at auth.
type peerIdentity struct {
	id, user, name, addr string
}

// parseTo reads a frame's "to": absent or null (hasTo false), one string
// (target), or an array of strings (targets, non-nil even when empty).
func parseTo(raw json.RawMessage) (target string, targets []string, hasTo bool, err error) {
	if raw == nil || string(raw) == "null" {
		return "", nil, false, nil
	}
	if err := json.Unmarshal(raw, &target); err == nil {
		return target, nil, true, nil
	}
	if err := json.Unmarshal(raw, &targets); err != nil {
		return "", nil, true, errors.New("to: expected a string or an array of strings")
	}
	if targets == nil {
		targets = []string{} // "to": [] names nobody; it is not "no to"
	}
	return "", targets, true, nil
}

// serverOnly reports whether a frame's name or subtype is reserved to the
// server: the shutdown event and every icey:* name.
func serverOnly(name string) bool {
	n := strings.ToLower(strings.TrimSpace(name))
	return n == "shutdown" || strings.HasPrefix(n, "icey:")
}

// reservedPresence are keys of a relayed presence's data that the server
// drops: they are not the peer's to state.
var reservedPresence = []string{"token", "rooms", "host"}

// sanitize makes a frame routed from a peer safe to relay: "from" becomes
// the sender's address; a presence frame's data carries the sender's own
// id, user, name and type; server-only names are refused (the reason is
// returned, and nothing must be delivered).
func sanitize(typ string, m msg, who peerIdentity) (refused string) {
	if serverOnly(m.str("name")) || serverOnly(m.str("subtype")) {
		return "Reserved name: shutdown and icey:* come only from the server"
	}
	m["from"] = json.RawMessage(mustJSON(who.addr))
	if typ != "presence" {
		return ""
	}
	var d map[string]json.RawMessage
	if err := json.Unmarshal(m["data"], &d); err != nil || d == nil {
		d = map[string]json.RawMessage{}
	}
	for _, k := range reservedPresence {
		delete(d, k)
	}
	d["id"] = mustJSON(who.id)
	d["user"] = mustJSON(who.user)
	d["name"] = mustJSON(who.name)
	d["type"] = mustJSON("Peer")
	var online bool
	if err := json.Unmarshal(d["online"], &online); err != nil {
		d["online"] = mustJSON(true)
	}
	m["data"] = mustJSON(d)
	return ""
}

// offerData is call:offer's data. Token, when present, is the token a
// publisher presents for the path (else the peer's login token counts).
type offerData struct {
	Type  string `json:"type"`
	SDP   string `json:"sdp"`
	Token string `json:"token,omitempty"`
}

// parseOffer reads call:offer's data; the SDP itself is checked by the
// session layer.
func parseOffer(data json.RawMessage) (offerData, error) {
	var d offerData
	if err := json.Unmarshal(data, &d); err != nil {
		return d, err
	}
	if d.SDP == "" {
		return d, errors.New("missing sdp")
	}
	if d.Type != "" && d.Type != "offer" {
		return d, errors.New("type must be offer")
	}
	return d, nil
}

// maxCandidateLen bounds one trickled candidate line.
const maxCandidateLen = 1024

// parseCandidate reads call:candidate's data. The "a=" prefix some clients
// keep is stripped; an empty candidate (end of candidates) is returned as is.
func parseCandidate(data json.RawMessage) (webrtc.ICECandidateInit, error) {
	var ci webrtc.ICECandidateInit
	if err := json.Unmarshal(data, &ci); err != nil {
		return ci, err
	}
	ci.Candidate = strings.TrimSpace(strings.TrimPrefix(ci.Candidate, "a="))
	if len(ci.Candidate) > maxCandidateLen {
		return ci, errors.New("candidate too long")
	}
	if ci.Candidate != "" && !strings.HasPrefix(ci.Candidate, "candidate:") {
		return ci, errors.New("candidate must start with candidate:")
	}
	if ci.SDPMid != nil && len(*ci.SDPMid) > 64 {
		return ci, errors.New("sdpMid too long")
	}
	return ci, nil
}
