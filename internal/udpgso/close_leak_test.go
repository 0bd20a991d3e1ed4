package udpgso

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/leaktest"
)

// A Conn is read by a goroutine (pion's ICE mux) blocked in
// ReadFromAddrPort, and written through Batches: closing a Batch sends what
// it held, closing the Conn ends the reader.
func TestCloseLeaksBatch(t *testing.T) {
	leaktest.Check(t)
	for _, mode := range []string{ModeGSO, ModeSendmmsg, ModeSendto} {
		t.Run(mode, func(t *testing.T) {
			c, rx, dst := pair(t, "udp4", mode)
			readerDone := make(chan error, 1)
			go func() {
				buf := make([]byte, 1500)
				for {
					if _, _, err := c.ReadFromAddrPort(buf); err != nil {
						readerDone <- err
						return
					}
				}
			}()
			b := c.Open(dst)
			b.Begin()
			const n = 8
			for i := 0; i < n; i++ {
				if _, err := c.WriteToAddrPort([]byte{byte(i), 1, 2, 3}, dst); err != nil {
					t.Fatal(err)
				}
			}
			buf := make([]byte, 1500)
			_ = rx.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if _, err := rx.Read(buf); err == nil && mode != ModeSendto { // sendto sends at once
				t.Fatal("a datagram arrived while the Batch was holding them")
			}
			b.Close() // flushes
			b.Close()
			_ = rx.SetReadDeadline(time.Now().Add(5 * time.Second))
			got := 0
			if mode == ModeSendto {
				got = 1 // read above
			}
			for got < n {
				if _, err := rx.Read(buf); err != nil {
					t.Fatalf("received %d of %d datagrams held by the Batch: %v", got, n, err)
				}
				got++
			}
			start := time.Now()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-readerDone:
				if !errors.Is(err, net.ErrClosed) {
					t.Errorf("reader ended with %v, want net.ErrClosed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("reader still blocked 5 s after Conn.Close")
			}
			how := "held until Batch.Close"
			if mode == ModeSendto {
				how = "sent at once (sendto holds nothing)"
			}
			t.Logf("mode %s: %d datagrams %s, stats %+v; reader ended %v after Conn.Close",
				c.Mode(), got, how, c.Stats(), time.Since(start).Round(time.Microsecond))
		})
	}
}
