package turn

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
	"github.com/icey/icey-server/internal/testenv"
)

// Server.Close with live allocations over UDP and TCP and an idle TCP
// control connection: every goroutine of the server (pion's per-connection
// loops, the relay sockets' readers, the tcpListener and its tcpConns, the
// refusal logger) ends, the TCP connections are closed from the server
// side, and the listener refuses new ones.
func TestCloseLeaksServer(t *testing.T) {
	testenv.LoopbackOnly(t)
	leaktest.Check(t)
	ts := startServer(t, Config{Secret: testSecret, AllowLocalRelay: true})
	peer := listenUDP(t)
	for _, tr := range transports {
		user, pass := ts.Credentials()
		c := newClient(t, tr, ts.addr(tr), user, pass)
		relay, err := allocate(t, c)
		if err != nil {
			t.Fatalf("%s: allocate: %v", tr, err)
		}
		if _, err := relay.WriteTo([]byte("ping "+tr), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, src, err := peer.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "ping "+tr {
			t.Fatalf("%s: peer got %q, %v", tr, buf[:n], err)
		}
		if _, err := peer.WriteTo([]byte("pong "+tr), src); err != nil {
			t.Fatal(err)
		}
		_ = relay.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, _, err = relay.ReadFrom(buf)
		if err != nil || string(buf[:n]) != "pong "+tr {
			t.Fatalf("%s: client got %q, %v through the relay", tr, buf[:n], err)
		}
	}
	idle, err := net.Dial("tcp", ts.tcpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if got := ts.Stats().Allocations; got != len(transports) {
		t.Fatalf("%d allocations, want %d", got, len(transports))
	}

	start := time.Now()
	if err := ts.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	took := time.Since(start)
	// A Close that waits for its clients to leave would wait here for the
	// TCP idle timeout (10 s); shutting down must not depend on clients.
	if took > 5*time.Second {
		t.Errorf("Close took %v: it waited for the clients instead of closing their connections", took)
	}
	_ = idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("idle TCP connection after Close: read %v, want EOF (closed by the server)", err)
	}
	if c, err := net.DialTimeout("tcp", ts.tcpAddr, 2*time.Second); err == nil {
		c.Close()
		t.Error("TCP listener still accepts after Close")
	}
	t.Logf("Close with %d allocations (UDP, TCP) and an idle TCP connection returned in %v; allocations after: %d",
		len(transports), took.Round(time.Microsecond), ts.Stats().Allocations)
}
