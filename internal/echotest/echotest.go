// Package echotest runs the TCP and UDP echo servers of the bridge and
// CLI tests on 127.0.0.1; each stops at the test's cleanup.
package echotest

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// TCP runs a TCP echo server that half-closes after echoing everything
// its client sent (once the client has half-closed) and closes when the
// client does. It returns "tcp://addr".
func TCP(t testing.TB) string {
	return ServeTCP(t, func(c net.Conn) {
		buf := make([]byte, 256<<10)
		_, _ = io.CopyBuffer(c, c, buf)
		_ = c.(*net.TCPConn).CloseWrite()
		// Wait for the other side to close.
		_, _ = c.Read(buf[:1])
	})
}

// ServeTCP runs serve for every connection to a TCP listener on
// 127.0.0.1, closing the connection when serve returns. At cleanup the
// listener and the open connections close and the goroutines are waited
// for. It returns "tcp://addr".
func ServeTCP(t testing.TB, serve func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(c)
				_ = c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
			}()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "tcp://" + l.Addr().String()
}

// UDP runs a UDP echo server that sends every datagram back to its
// sender. It returns "udp://addr".
func UDP(t testing.TB) string {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := c.ReadFromUDPAddrPort(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			_, _ = c.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() {
		_ = c.Close()
		<-done
	})
	return "udp://" + c.LocalAddr().String()
}
