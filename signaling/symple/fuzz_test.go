package symple

import (
	"encoding/json"
	"strings"
	"testing"
)

// FuzzFrame feeds untrusted frames through what the server does with a
// routed frame before relaying it: parse, read "to", sanitize, re-encode.
// Invariants: nothing panics; a frame that is relayed is valid JSON whose
// "from" is the sender's address, whose presence data carries the sender's
// identity, and whose name/subtype is never server-only.
func FuzzFrame(f *testing.F) {
	for _, s := range []string{
		`{"type":"message","to":"public","data":"hi"}`,
		`{"type":"message","to":["r1","r2"],"from":"icey|server","subtype":"call:hangup"}`,
		`{"type":"presence","probe":true,"data":{"id":"server","user":"icey","type":"server","online":false}}`,
		`{"type":"presence","data":"x"}`,
		`{"type":"event","name":"shutdown","to":"bob|1"}`,
		`{"type":"event","name":" ICEY:vision "}`,
		`{"type":"command","node":"x","to":null}`,
		`{"type":"message","to":7}`,
		`{"type":"message","to":[1,"a"]}`,
		`{"type":"auth","user":"u","rooms":["a"],"data":{"token":"t"}}`,
		`{"type":"presence","data":{"online":"yes","token":"t","rooms":["x"]}}`,
		`[]`, `null`, `{"type":"message","type":"presence"}`,
	} {
		f.Add([]byte(s))
	}
	who := peerIdentity{id: "abc123", user: "alice", name: "Alice", addr: "alice|abc123"}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m msg
		if err := json.Unmarshal(data, &m); err != nil || m == nil {
			return
		}
		typ := m.str("type")
		_, targets, hasTo, err := parseTo(m["to"])
		if err == nil && hasTo && targets == nil && string(m["to"]) != "null" {
			var s string
			if json.Unmarshal(m["to"], &s) != nil {
				t.Fatalf("to %s parsed as a string", m["to"])
			}
		}
		name, sub := m.str("name"), m.str("subtype")
		if why := sanitize(typ, m, who); why != "" {
			if !serverOnly(name) && !serverOnly(sub) {
				t.Fatalf("refused %q without a server-only name", data)
			}
			return
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("re-encoding %q: %v", data, err)
		}
		var back map[string]any
		if err := json.Unmarshal(out, &back); err != nil {
			t.Fatalf("relayed frame is not JSON: %q", out)
		}
		if back["from"] != who.addr {
			t.Fatalf("from %v", back["from"])
		}
		for _, k := range []string{"name", "subtype"} {
			if s, ok := back[k].(string); ok && serverOnly(s) {
				t.Fatalf("server-only %s %q relayed", k, s)
			}
		}
		if typ == "presence" {
			d, _ := back["data"].(map[string]any)
			if d["id"] != who.id || d["user"] != who.user || d["name"] != who.name || d["type"] != "Peer" {
				t.Fatalf("presence identity %v", d)
			}
			if _, ok := d["online"].(bool); !ok {
				t.Fatalf("presence online %v", d["online"])
			}
			for _, k := range reservedPresence {
				if _, ok := d[k]; ok {
					t.Fatalf("presence kept %q: %v", k, d)
				}
			}
		}
	})
}

// FuzzCallPayload feeds untrusted call:offer and call:candidate data and
// offer SDP through the hand-written parsing of the call protocol.
func FuzzCallPayload(f *testing.F) {
	sdp := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendonly\r\n"
	for _, s := range []string{
		`{"type":"offer","sdp":` + string(mustJSON(sdp)) + `}`,
		`{"type":"answer","sdp":"v=0"}`,
		`{"candidate":"candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host","sdpMid":"0","sdpMLineIndex":0}`,
		`{"candidate":"a=candidate:1 1 udp 1 127.0.0.1 1 typ host","sdpMid":"0"}`,
		`{"candidate":""}`,
		`{"candidate":"a="}`,
		`{"candidate":"bogus","sdpMLineIndex":-1}`,
		`{"candidate":7}`,
		`"m=video 0\nm=audio 9 x\na=inactive"`,
		`null`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if d, err := parseOffer(data); err == nil {
			if d.SDP == "" {
				t.Fatal("accepted an offer without SDP")
			}
			_ = isPublishOffer(d.SDP)
		}
		if ci, err := parseCandidate(data); err == nil {
			if strings.HasPrefix(ci.Candidate, "a=") {
				t.Fatalf("candidate kept its a= prefix: %q", ci.Candidate)
			}
			if ci.Candidate != "" && !strings.HasPrefix(ci.Candidate, "candidate:") {
				t.Fatalf("accepted candidate %q", ci.Candidate)
			}
			if len(ci.Candidate) > maxCandidateLen {
				t.Fatalf("accepted a %d-byte candidate", len(ci.Candidate))
			}
		}
		_ = isPublishOffer(string(data))
	})
}
