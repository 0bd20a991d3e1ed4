package app

import (
	"errors"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/icey/icey-server/config"
	"github.com/icey/icey-server/internal/leaktest"
)

// freePorts returns n distinct loopback ports free for both TCP and UDP
// when it returns.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	var held []interface{ Close() error }
	defer func() {
		for _, c := range held {
			_ = c.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue // taken for UDP: try another
		}
		held = append(held, u)
		ports = append(ports, port)
	}
	return ports
}

// The server's sockets are served by goroutines blocked in Accept and
// ReadFrom: listeners.Close must end every one and free every port (a
// restart in the same process binds them again).
func TestCloseLeaksListeners(t *testing.T) {
	leaktest.Check(t)
	p := freePorts(t, 6)
	cfg := config.Default()
	cfg.HTTP.Host = "127.0.0.1"
	cfg.HTTP.Port, cfg.WebRTC.Port, cfg.TURN.Port, cfg.RTSP.Port = p[0], p[1], p[2], p[3]
	cfg.TURN.Enabled, cfg.RTSP.Enabled = true, true
	cfg.Metrics.Listen = "127.0.0.1:" + strconv.Itoa(p[4])
	cfg.PprofListen = "127.0.0.1:" + strconv.Itoa(p[5])
	for round := 1; round <= 2; round++ {
		ln, err := bindAll(cfg)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		streams := []net.Listener{ln.http, ln.turnTCP, ln.metrics, ln.pprof}
		packets := []net.PacketConn{ln.media, ln.turnUDP}
		ended := make(chan error, len(streams)+len(packets))
		for _, l := range streams {
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						ended <- err
						return
					}
					_ = c.Close()
				}
			}()
			c, err := net.Dial("tcp", l.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			_ = c.Close()
		}
		for _, pc := range packets {
			go func() {
				buf := make([]byte, 1500)
				for {
					if _, _, err := pc.ReadFrom(buf); err != nil {
						ended <- err
						return
					}
				}
			}()
		}
		start := time.Now()
		ln.Close()
		for i := 0; i < len(streams)+len(packets); i++ {
			select {
			case err := <-ended:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("round %d: a socket's goroutine ended with %v, want net.ErrClosed", round, err)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("round %d: %d of %d socket goroutines still blocked 5 s after Close", round, len(streams)+len(packets)-i, len(streams)+len(packets))
			}
		}
		t.Logf("round %d: %d listeners and %d packet sockets bound; their goroutines ended %v after Close",
			round, len(streams), len(packets), time.Since(start).Round(time.Microsecond))
	}
}
