package rtsptest

import (
	"bufio"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortsplib/v4/pkg/base"
)

// BadMode selects how a BadServer misbehaves.
type BadMode string

// Misbehaviours of a BadServer. Unless a mode says otherwise, the server
// answers OPTIONS, DESCRIBE (an H.264 SDP), SETUP (TCP interleaved) and
// PLAY correctly and the fault is in the step the mode names.
const (
	// BadWrongCSeq answers every request with a CSeq that is not the
	// request's (RFC 2326 §12.17 requires it to be echoed).
	BadWrongCSeq BadMode = "wrong-cseq"
	// BadNoCSeq answers without any CSeq header but is otherwise a
	// working camera: after PLAY it sends an H.264 keyframe (SPS and PPS
	// in the SDP, a real IDR slice in one RTP packet) every 100 ms.
	// A tolerant client plays it.
	BadNoCSeq BadMode = "no-cseq"
	// BadHugeHeaderLine answers OPTIONS with a 1 MiB header line.
	BadHugeHeaderLine BadMode = "huge-header-line"
	// BadManyHeaders answers OPTIONS with 10,000 header lines.
	BadManyHeaders BadMode = "many-headers"
	// BadSDPGarbage answers DESCRIBE with random bytes as application/sdp.
	BadSDPGarbage BadMode = "sdp-garbage"
	// BadSDPNoMedia answers DESCRIBE with a valid SDP without any m= line.
	BadSDPNoMedia BadMode = "sdp-no-media"
	// BadSDPBrokenSprop answers DESCRIBE with an H.264 media whose
	// sprop-parameter-sets is not base64.
	BadSDPBrokenSprop BadMode = "sdp-broken-sprop"
	// BadInterleavedGarbage answers PLAY with 200 and then sends garbage on
	// the TCP connection, forever: $-frames on a channel that was not set
	// up, $-frames on the RTP channel whose payload is not RTP, frames
	// with a length longer than what follows, and random bytes.
	BadInterleavedGarbage BadMode = "interleaved-garbage"
	// BadSilent accepts connections, reads requests and never answers.
	BadSilent BadMode = "silent"
	// BadCloseMidReply writes the first bytes of the OPTIONS response,
	// then closes the connection.
	BadCloseMidReply BadMode = "close-mid-reply"
)

// BadModes lists every BadMode.
var BadModes = []BadMode{
	BadWrongCSeq, BadNoCSeq, BadHugeHeaderLine, BadManyHeaders, BadSDPGarbage,
	BadSDPNoMedia, BadSDPBrokenSprop, BadInterleavedGarbage, BadSilent, BadCloseMidReply,
}

// A 160x120 H.264 Constrained Baseline SPS, its PPS and the IDR slice of
// a flat grey picture (made by x264): a decodable keyframe.
var (
	badSPS = mustB64("Z0LAC9woR+XARAAAAwAEAAADAMg8UK4=")
	badPPS = mustB64("aM4PLIA=")
	badIDR = mustB64("ZYiEBLyYoAAgLycnJycnJycnJ11111111111111111111111111111111111111111111111111111111111111111111114")
)

// BadServer is a fake RTSP server on 127.0.0.1 written on raw TCP (no
// gortsplib server, which would refuse to misbehave) for fault tests. It
// records the time of every accepted connection: a client that retries in
// a hot loop shows as many connections in a short time.
//
//	bad := rtsptest.StartBad(t, rtsptest.BadSilent)
//	src, _ := rtsp.New(rtsp.Config{URL: bad.URL("cam"), Transport: "tcp"}, log)
type BadServer struct {
	mode BadMode
	ln   net.Listener
	wg   sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	conns    map[net.Conn]struct{}
	attempts []time.Time
}

// StartBad starts a BadServer on a free loopback port; t.Cleanup closes it.
func StartBad(tb testing.TB, mode BadMode) *BadServer {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("rtsptest: %v", err)
	}
	b := &BadServer{mode: mode, ln: ln, conns: map[net.Conn]struct{}{}}
	b.wg.Add(1)
	go b.accept()
	tb.Cleanup(b.Close)
	return b
}

// URL returns rtsp://127.0.0.1:port/path.
func (b *BadServer) URL(path string) string {
	return "rtsp://" + b.ln.Addr().String() + "/" + strings.TrimPrefix(path, "/")
}

// Port is the TCP port the server listens on (a real Server can take it
// over after Close: Options.Port).
func (b *BadServer) Port() int { return b.ln.Addr().(*net.TCPAddr).Port }

// Attempts returns the times at which clients connected, oldest first.
func (b *BadServer) Attempts() []time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]time.Time(nil), b.attempts...)
}

// Close stops listening, closes every connection and waits for the
// server's goroutines. It is idempotent.
func (b *BadServer) Close() {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return
	}
	b.closed = true
	for c := range b.conns {
		c.Close()
	}
	b.mu.Unlock()
	b.ln.Close()
	b.wg.Wait()
}

func (b *BadServer) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.mu.Lock()
		if b.closed {
			b.mu.Unlock()
			c.Close()
			return
		}
		b.attempts = append(b.attempts, time.Now())
		b.conns[c] = struct{}{}
		b.wg.Add(1)
		b.mu.Unlock()
		go func() {
			defer b.wg.Done()
			defer func() {
				b.mu.Lock()
				delete(b.conns, c)
				b.mu.Unlock()
				c.Close()
			}()
			b.serve(c)
		}()
	}
}

// badConn is one client connection of a BadServer.
type badConn struct {
	b    *BadServer
	c    net.Conn
	host string // host:port for Content-Base
	stop chan struct{}
	wmu  sync.Mutex // serializes writes of the request loop and the sender
}

func (b *BadServer) serve(c net.Conn) {
	bc := &badConn{b: b, c: c, host: b.ln.Addr().String(), stop: make(chan struct{})}
	var senders sync.WaitGroup
	defer func() {
		close(bc.stop)
		c.Close()
		senders.Wait()
	}()
	br := bufio.NewReader(c)
	for {
		// The client sends RTCP receiver reports as interleaved frames
		// once playing: skip them.
		if p, err := br.Peek(1); err != nil {
			return
		} else if p[0] == '$' {
			var h [4]byte
			if _, err := io.ReadFull(br, h[:]); err != nil {
				return
			}
			if _, err := br.Discard(int(binary.BigEndian.Uint16(h[2:]))); err != nil {
				return
			}
			continue
		}
		var req base.Request
		if err := req.Unmarshal(br); err != nil {
			return // EOF, closed, or the client sent something else
		}
		cseq := ""
		if v := req.Header["CSeq"]; len(v) == 1 {
			cseq = v[0]
		}
		switch b.mode {
		case BadSilent:
			continue
		case BadCloseMidReply:
			bc.write("RTSP/1.0 200 OK\r\nCSeq: " + cseq + "\r\nPubl")
			return
		case BadHugeHeaderLine:
			if req.Method == base.Options {
				bc.write("RTSP/1.0 200 OK\r\nCSeq: " + cseq + "\r\nX-Huge: " + strings.Repeat("a", 1<<20) + "\r\n\r\n")
				return
			}
		case BadManyHeaders:
			if req.Method == base.Options {
				var sb strings.Builder
				sb.WriteString("RTSP/1.0 200 OK\r\nCSeq: " + cseq + "\r\n")
				for i := range 10000 {
					fmt.Fprintf(&sb, "X-H%d: %d\r\n", i, i)
				}
				sb.WriteString("\r\n")
				bc.write(sb.String())
				return
			}
		case BadWrongCSeq:
			n, _ := strconv.Atoi(cseq)
			cseq = strconv.Itoa(n + 1000)
		case BadNoCSeq:
			cseq = ""
		}
		if !bc.answer(&req, cseq, &senders) {
			return
		}
	}
}

// answer writes a correct response to req (apart from the mode's fault in
// the SDP) with the given CSeq (none when empty), and after PLAY starts
// the mode's sender. It reports whether the connection is still usable.
func (bc *badConn) answer(req *base.Request, cseq string, senders *sync.WaitGroup) bool {
	hdr := "RTSP/1.0 200 OK\r\n"
	if cseq != "" {
		hdr += "CSeq: " + cseq + "\r\n"
	}
	switch req.Method {
	case base.Options:
		return bc.write(hdr + "Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER\r\n\r\n")
	case base.Describe:
		sdp := bc.sdp()
		return bc.write(hdr + "Content-Base: rtsp://" + bc.host + "/cam/\r\nContent-Type: application/sdp\r\n" +
			"Content-Length: " + strconv.Itoa(len(sdp)) + "\r\n\r\n" + sdp)
	case base.Setup:
		tr := "RTP/AVP/TCP;unicast;interleaved=0-1"
		if v := req.Header["Transport"]; len(v) == 1 && strings.Contains(v[0], "interleaved=") {
			tr = v[0]
		}
		return bc.write(hdr + "Transport: " + tr + "\r\nSession: 4F2A19C3;timeout=60\r\n\r\n")
	case base.Play:
		if !bc.write(hdr + "Session: 4F2A19C3\r\n\r\n") {
			return false
		}
		switch bc.b.mode {
		case BadNoCSeq:
			senders.Add(1)
			go func() { defer senders.Done(); bc.sendKeyframes() }()
		case BadInterleavedGarbage:
			senders.Add(1)
			go func() { defer senders.Done(); bc.sendGarbage() }()
		}
		return true
	case base.Teardown:
		bc.write(hdr + "\r\n")
		return false
	}
	// GET_PARAMETER (keepalive) and anything else.
	return bc.write(hdr + "Session: 4F2A19C3\r\n\r\n")
}

func (bc *badConn) sdp() string {
	const head = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=bad\r\nc=IN IP4 0.0.0.0\r\nt=0 0\r\n"
	const h264 = "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:trackID=0\r\n"
	switch bc.b.mode {
	case BadSDPGarbage:
		r := rand.New(rand.NewPCG(1, 2))
		g := make([]byte, 600)
		for i := range g {
			g[i] = byte(r.UintN(256))
		}
		return string(g)
	case BadSDPNoMedia:
		return head
	case BadSDPBrokenSprop:
		return head + h264 + "a=fmtp:96 packetization-mode=1;sprop-parameter-sets=%%not*base64%%,@@\r\n"
	}
	return head + h264 + "a=fmtp:96 packetization-mode=1;profile-level-id=42C00B;sprop-parameter-sets=" +
		base64.StdEncoding.EncodeToString(badSPS) + "," + base64.StdEncoding.EncodeToString(badPPS) + "\r\n"
}

func (bc *badConn) write(s string) bool {
	return bc.writeBytes([]byte(s))
}

func (bc *badConn) writeBytes(p []byte) bool {
	bc.wmu.Lock()
	defer bc.wmu.Unlock()
	_ = bc.c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := bc.c.Write(p)
	return err == nil
}

// interleaved frames a payload on channel ch (RFC 2326 §10.12).
func interleaved(ch byte, payload []byte) []byte {
	f := make([]byte, 4, 4+len(payload))
	f[0], f[1] = '$', ch
	binary.BigEndian.PutUint16(f[2:], uint16(len(payload)))
	return append(f, payload...)
}

// sendKeyframes sends an IDR (one single-NAL-unit RTP packet, RFC 6184
// §5.6) on channel 0 every 100 ms.
func (bc *badConn) sendKeyframes() {
	idr := badIDR
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for seq, ts := uint16(1), uint32(0); ; seq, ts = seq+1, ts+9000 {
		pkt := make([]byte, 12, 12+len(idr))
		pkt[0], pkt[1] = 0x80, 0x80|96 // V=2, marker, PT 96
		binary.BigEndian.PutUint16(pkt[2:], seq)
		binary.BigEndian.PutUint32(pkt[4:], ts)
		binary.BigEndian.PutUint32(pkt[8:], 0x1234ABCD)
		pkt = append(pkt, idr...)
		if !bc.writeBytes(interleaved(0, pkt)) {
			return
		}
		select {
		case <-bc.stop:
			return
		case <-t.C:
		}
	}
}

// sendGarbage sends a burst of garbage every 20 ms: always the same
// sequence of bytes (a seeded generator) so that a failure reproduces.
func (bc *badConn) sendGarbage() {
	r := rand.New(rand.NewPCG(3, 4))
	random := func(n int) []byte {
		p := make([]byte, n)
		for i := range p {
			p[i] = byte(r.UintN(256))
		}
		return p
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		var burst []byte
		burst = append(burst, interleaved(77, random(1000))...)                        // channel never set up
		burst = append(burst, interleaved(0, random(5))...)                            // too short for an RTP header
		burst = append(burst, interleaved(0, append([]byte{0x00}, random(300)...))...) // RTP version 0
		burst = append(burst, random(2000)...)                                         // no framing at all
		long := interleaved(0, random(100))
		binary.BigEndian.PutUint16(long[2:], 60000) // announces more than follows
		burst = append(burst, long...)
		if !bc.writeBytes(burst) {
			return
		}
		select {
		case <-bc.stop:
			return
		case <-t.C:
		}
	}
}

func mustB64(s string) []byte {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}
