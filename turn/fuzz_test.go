package turn

import (
	"bytes"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// Fuzz targets for every hand-written parser of untrusted input in this
// package: the REST username, the TCP stream framing (and the buffering
// around it in tcpConn.Read), and the request inspection with its lifetime
// rewrite. Seeds live in testdata/fuzz/<Target>/ (and the f.Add calls);
// run one with e.g.
//
//	go test -run '^$' -fuzz '^FuzzParseRESTUsername$' -fuzztime 20s ./turn/

// FuzzParseRESTUsername: parseRESTUsername accepts exactly
// "<positive decimal int64>[:<configured suffix>]".
func FuzzParseRESTUsername(f *testing.F) {
	for _, s := range []struct{ user, suffix string }{
		{"1700003600:icey", "icey"}, {"1700003600", ""}, {"1700003600:icey", ""}, {"1700003600", "icey"},
		{"", ""}, {":", ""}, {":icey", "icey"}, {"-5:viewer", "viewer"}, {"+5", ""}, {" 5", ""},
		{"abc:viewer", "viewer"}, {"9223372036854775807", ""}, {"9223372036854775808", ""},
		{"99999999999999999999", ""}, {"0", ""}, {"00001700003600", ""}, {"1700003600:a:b", "a:b"},
		{"\u0663\u0663", ""}, {"1700003600:icey\x00", "icey"},
	} {
		f.Add(s.user, s.suffix)
	}
	f.Fuzz(func(t *testing.T, user, suffix string) {
		exp, ok := parseRESTUsername(user, suffix)
		ts, rest, has := strings.Cut(user, ":")
		if !ok {
			// Completeness: the canonical form of a positive expiry is accepted.
			if v, err := strconv.ParseInt(ts, 10, 64); err == nil && v > 0 && ts == strconv.FormatInt(v, 10) &&
				has == (suffix != "") && rest == suffix {
				t.Fatalf("parseRESTUsername(%q, %q) refused a canonical username", user, suffix)
			}
			return
		}
		if exp <= 0 {
			t.Fatalf("parseRESTUsername(%q, %q) = %d", user, suffix, exp)
		}
		if has != (suffix != "") || rest != suffix {
			t.Fatalf("parseRESTUsername(%q, %q) accepted a wrong suffix", user, suffix)
		}
		for _, r := range ts {
			if r < '0' || r > '9' {
				t.Fatalf("parseRESTUsername(%q) accepted a non-digit %q", user, r)
			}
		}
		if v, err := strconv.ParseInt(ts, 10, 64); err != nil || v != exp {
			t.Fatalf("parseRESTUsername(%q) = %d, strconv says %d (%v)", user, exp, v, err)
		}
	})
}

// FuzzFrameLen: frameLen finds the same frame boundary whatever follows it,
// reports "incomplete" for every proper prefix, and agrees with the STUN
// header for STUN frames.
func FuzzFrameLen(f *testing.F) {
	for _, seed := range fuzzFrameSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n, err := frameLen(b)
		if err != nil {
			if n != 0 {
				t.Fatalf("frameLen error with n = %d", n)
			}
			// An error is decided by the header alone.
			if _, err2 := frameLen(append(append([]byte(nil), b...), make([]byte, 64)...)); err2 == nil {
				t.Fatal("frameLen error depends on what follows the header")
			}
			return
		}
		if n == 0 {
			return
		}
		if n < channelHeaderLen || n > len(b) || n > maxTURNFrameLen {
			t.Fatalf("frameLen = %d for %d bytes", n, len(b))
		}
		for k := 0; k < n; k++ {
			if m, err := frameLen(b[:k]); m != 0 || err != nil {
				t.Fatalf("prefix of %d bytes of a %d-byte frame: %d, %v", k, n, m, err)
			}
		}
		if m, err := frameLen(append(append([]byte(nil), b[:n]...), 0x40, 0, 0, 0)); m != n || err != nil {
			t.Fatalf("frame boundary moved with trailing bytes: %d -> %d, %v", n, m, err)
		}
		if stun.IsMessage(b) && n != stunHeaderLen+int(binary.BigEndian.Uint16(b[2:4])) {
			t.Fatalf("STUN frame of %d bytes, header says %d", n, binary.BigEndian.Uint16(b[2:4]))
		}
		// pion's STUNConn must split the stream the same way, or it would
		// process a frame inspect never saw.
		if pn, perr := pionFrameLen(b); perr == nil && pn != n {
			t.Fatalf("frameLen = %d, pion's STUNConn would take %d", n, pn)
		}
	})
}

// pionFrameLen is pion/turn v4.1.4's consumeSingleTURNFrame (stun_conn.go),
// the framing of the STUNConn that reads what tcpConn hands out.
func pionFrameLen(b []byte) (int, error) {
	if len(b) < 9 {
		return 0, io.ErrShortBuffer
	}
	var size uint16
	switch {
	case stun.IsMessage(b):
		size = binary.BigEndian.Uint16(b[2:4]) + stunHeaderLen
	case binary.BigEndian.Uint16(b[0:2]) >= 0x4000 && binary.BigEndian.Uint16(b[0:2]) <= 0x7FFF:
		size = binary.BigEndian.Uint16(b[2:4])
		if pad := (size + 4) % 4; pad != 0 {
			size = (size + 4) - pad
		}
		size += channelHeaderLen
	case len(b) < stunHeaderLen:
		return 0, io.ErrShortBuffer
	default:
		return 0, errBadFrame
	}
	if len(b) < int(size) {
		return 0, io.ErrShortBuffer
	}
	return int(size), nil
}

// FuzzTCPConnRead: tcpConn.Read hands out exactly the inspected complete
// frames of the stream, whatever the chunking of the socket reads, and
// never the incomplete tail.
func FuzzTCPConnRead(f *testing.F) {
	for _, seed := range fuzzFrameSeeds(f) {
		f.Add(seed, uint8(1))
		f.Add(seed, uint8(7))
	}
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		s := fuzzServer(t, "")
		want := []byte{}
		var wantErr bool
		for rest := data; ; {
			n, err := frameLen(rest)
			if err != nil {
				wantErr = true
				break
			}
			if n == 0 {
				break
			}
			want = append(want, s.inspect(rest[:n], fuzzTCPAddr).frame...)
			rest = rest[n:]
		}
		s2 := fuzzServer(t, "")
		fc := &fakeConn{data: data, chunk: int(chunk)%64 + 1}
		c := &tcpConn{Conn: fc, l: &tcpListener{s: s2}, key: fuzzTCPAddr.String(), remote: fuzzTCPAddr}
		var got []byte
		buf := make([]byte, 1600)
		for {
			n, err := c.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				if (err == errBadFrame) != wantErr {
					t.Fatalf("Read error %v, want bad frame = %v", err, wantErr)
				}
				break
			}
			if n == 0 {
				t.Fatal("Read returned 0 bytes and no error")
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Read handed out %d bytes, want %d", len(got), len(want))
		}
	})
}

// FuzzInspect: inspect never panics; a 401 reply drops the request and
// answers its transaction; a rewritten request is a valid request of the
// same transaction, signed with the user's key, with LIFETIME within the
// maximum.
func FuzzInspect(f *testing.F) {
	for _, seed := range fuzzFrameSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, secret := range []string{"", testSecret} {
			s := fuzzServer(t, secret)
			in := append([]byte(nil), b...)
			r := s.inspect(in, fuzzUDPAddr)
			if !bytes.Equal(in, b) {
				t.Fatal("inspect modified its input")
			}
			if r.reply != nil {
				if r.frame != nil {
					t.Fatal("answered request still passed on")
				}
				req, res := mustDecode(t, b), mustDecode(t, r.reply)
				var code stun.ErrorCodeAttribute
				if res.TransactionID != req.TransactionID || res.Type.Class != stun.ClassErrorResponse ||
					code.GetFrom(res) != nil || code.Code != stun.CodeUnauthorized {
					t.Fatalf("reply %v to %v", res, req)
				}
				continue
			}
			if r.frame == nil && len(b) > 0 {
				t.Fatal("request dropped without an answer")
			}
			if bytes.Equal(r.frame, b) {
				continue
			}
			req, out := mustDecode(t, b), mustDecode(t, r.frame)
			if out.TransactionID != req.TransactionID || out.Type != req.Type || len(r.frame) > len(b) {
				t.Fatalf("rewrite changed the transaction: %v -> %v", req, out)
			}
			var user stun.Username
			var realm stun.Realm
			if user.GetFrom(out) != nil || realm.GetFrom(out) != nil {
				t.Fatal("rewrite lost USERNAME/REALM")
			}
			key, reason := s.lookupKey(user.String(), realm.String(), fuzzUDPAddr)
			if reason != "" || stun.MessageIntegrity(key).Check(out) != nil {
				t.Fatalf("rewrite not signed with the user's key (%s)", reason)
			}
			if v, err := out.Get(stun.AttrLifetime); err != nil || len(v) != 4 ||
				time.Duration(binary.BigEndian.Uint32(v))*time.Second > s.maxLifetime() {
				t.Fatalf("rewritten LIFETIME %x", v)
			}
		}
	})
}

var (
	fuzzUDPAddr = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
	fuzzTCPAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 40000}
)

// fuzzServer is a Server with only what inspect needs (no sockets).
func fuzzServer(t *testing.T, secret string) *Server {
	cfg := Config{Secret: secret, RelayIP: net.IPv4(127, 0, 0, 1), MaxLifetime: 5 * time.Minute,
		Now: func() time.Time { return time.Unix(1700000000, 0) }}
	cfg.setDefaults()
	return &Server{
		cfg: cfg, log: slog.New(slog.DiscardHandler), done: make(chan struct{}),
		allocs: map[string]allocInfo{}, byUser: map[string]int{},
		refusals: map[string]uint64{}, window: map[string]uint64{}, lastPeer: map[string]string{},
	}
}

func mustDecode(t *testing.T, b []byte) *stun.Message {
	t.Helper()
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return m
}

// fuzzFrameSeeds are requests a client sends: good and bad credentials
// (static "icey"/"icey" and REST under testSecret at the fuzz clock), with
// and without LIFETIME, ChannelData, and a few broken frames.
func fuzzFrameSeeds(tb testing.TB) [][]byte {
	restUser, restPass := restCreds(1700000000+600, "", testSecret)
	build := func(method stun.Method, user, pass string, attrs ...stun.Setter) []byte {
		setters := []stun.Setter{stun.NewTransactionIDSetter([stun.TransactionIDSize]byte{1, 2, 3}), stun.NewType(method, stun.ClassRequest)}
		setters = append(setters, attrs...)
		if user != "" {
			setters = append(setters, stun.NewUsername(user), stun.NewRealm(DefaultRealm), stun.NewNonce("nonce"),
				stun.NewLongTermIntegrity(user, DefaultRealm, pass))
		}
		setters = append(setters, stun.Fingerprint)
		m, err := stun.Build(setters...)
		if err != nil {
			tb.Fatal(err)
		}
		return m.Raw
	}
	long, short := lifetimeAttr(7200), lifetimeAttr(60)
	chdata := []byte{0x40, 0x00, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0, 0, 0}
	seeds := [][]byte{
		build(stun.MethodBinding, "", ""),
		build(stun.MethodAllocate, "", "", reqTransportUDP),
		build(stun.MethodAllocate, "icey", "icey", reqTransportUDP, long),
		build(stun.MethodAllocate, "icey", "icey", reqTransportUDP, short),
		build(stun.MethodAllocate, "icey", "wrong", reqTransportUDP),
		build(stun.MethodAllocate, restUser, restPass, reqTransportUDP, long),
		build(stun.MethodAllocate, restUser, "forged", reqTransportUDP),
		build(stun.MethodRefresh, "icey", "icey", long),
		build(stun.MethodRefresh, restUser, restPass, lifetimeAttr(0)),
		build(stun.MethodCreatePermission, "admin", "icey"),
		chdata,
		{0x80, 0, 0, 0},
		{0, 1, 0, 3, 0x21, 0x12, 0xa4, 0x42},
	}
	// A TCP stream: several frames back to back, the last one cut short.
	var stream []byte
	for _, s := range seeds[:11] {
		stream = append(stream, s...)
	}
	seeds = append(seeds, stream[:len(stream)-3])
	return seeds
}

// fakeConn is a net.Conn whose reads return data in chunks, then EOF.
type fakeConn struct {
	net.Conn // nil: only the methods below are used
	data     []byte
	chunk    int
	written  bytes.Buffer
}

func (c *fakeConn) Read(b []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := copy(b[:min(len(b), c.chunk)], c.data)
	c.data = c.data[n:]
	return n, nil
}

func (c *fakeConn) Write(b []byte) (int, error)     { return c.written.Write(b) }
func (c *fakeConn) SetReadDeadline(time.Time) error { return nil }

// TestFrameLenRegressions: inputs where frameLen once disagreed with pion's
// framing (found by FuzzFrameLen; its crasher stays in testdata/fuzz) or
// would: pion's 16-bit length sum wraps for frames over 0xFFFF bytes.
func TestFrameLenRegressions(t *testing.T) {
	// A ChannelData header (0x4130) followed by the magic cookie: pion
	// frames it as STUN once 20 bytes are buffered, as ChannelData before.
	ambiguous := append([]byte("A0\x000!\x12\xa4B"), bytes.Repeat([]byte("0"), 64)...)
	if n, err := frameLen(ambiguous); err != errBadFrame {
		t.Errorf("ChannelData header + cookie: %d, %v; want errBadFrame", n, err)
	}
	long := make([]byte, 20)
	binary.BigEndian.PutUint16(long[2:4], 0xFFFC)
	binary.BigEndian.PutUint32(long[4:8], stunMagicCookie)
	if _, err := frameLen(long); err != errBadFrame {
		t.Errorf("STUN frame of 20+0xFFFC bytes: %v, want errBadFrame", err)
	}
	cd := []byte{0x40, 0, 0xFF, 0xFD, 1, 2, 3, 4}
	if _, err := frameLen(cd); err != errBadFrame {
		t.Errorf("ChannelData of 4+0x10000 bytes: %v, want errBadFrame", err)
	}
	// The largest frames pion handles are still framed.
	binary.BigEndian.PutUint16(long[2:4], 0xFFFF-20-3)
	if n, err := frameLen(append(long, make([]byte, 0xFFFF)...)); err != nil || n != 0xFFFF-3 {
		t.Errorf("STUN frame of 0xFFFC bytes: %d, %v", n, err)
	}
}

// TestInspectSeeds pins inspect's decision for the seed requests, so the
// fuzz invariants on rewrites and 401s are exercised by the seeds.
func TestInspectSeeds(t *testing.T) {
	seeds := fuzzFrameSeeds(t)
	tests := []struct {
		seed   int
		secret string
		want   string // "pass", "rewrite" or "401"
	}{
		{0, "", "pass"},            // binding
		{1, "", "pass"},            // unauthenticated allocate: pion's challenge
		{2, "", "rewrite"},         // static, LIFETIME 7200
		{3, "", "pass"},            // static, LIFETIME 60
		{4, "", "401"},             // static, wrong password
		{5, testSecret, "rewrite"}, // REST, LIFETIME 7200
		{6, testSecret, "401"},     // REST, forged
		{7, "", "rewrite"},         // refresh, LIFETIME 7200
		{8, testSecret, "pass"},    // refresh 0
		{9, "", "401"},             // create permission, unknown user
		{10, "", "pass"},           // ChannelData
	}
	for _, tt := range tests {
		r := fuzzServer(t, tt.secret).inspect(seeds[tt.seed], fuzzUDPAddr)
		got := "pass"
		switch {
		case r.reply != nil:
			got = "401"
		case !bytes.Equal(r.frame, seeds[tt.seed]):
			got = "rewrite"
		}
		if got != tt.want {
			t.Errorf("seed %d: %s, want %s", tt.seed, got, tt.want)
		}
	}
}
