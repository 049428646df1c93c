package netcore

import (
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"testing"
)

// The echo benchmarks measure one round trip (send, echo, receive) of a
// 64-byte message over loopback, through pipes and through plain Go
// sockets in the same run:
//
//	go test -run '^$' -bench 'Echo|Throughput' -benchtime 2s -count 5 ./netcore/
//
// Compare ns/op of the pipe and raw sub-benchmarks. "pipe" receives
// through the pipe's reader goroutine, "pipe-direct" with WithDirectRecv.

const benchMsgSize = 64

func BenchmarkEchoTCP(b *testing.B) {
	msg := bytes.Repeat([]byte("p"), benchMsgSize)
	b.Run("raw", func(b *testing.B) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer ln.Close()
		wg.Go(func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			buf := make([]byte, ReadBufferSize)
			for {
				n, err := c.Read(buf)
				if err != nil {
					return
				}
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			}
		})
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, len(msg))
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := io.ReadFull(c, buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct {
		name string
		opts []Option
	}{
		{"pipe", nil},
		{"pipe-direct", []Option{WithDirectRecv()}},
		{"pipe-length-prefixed", []Option{WithFraming(LengthPrefixed(0))}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := mustListen(b, TCP, IPv4, bc.opts...)
			srv.AddHandler(echo)
			c := mustDial(b, TCP, srv, bc.opts...)
			sub := mustSubscribe(b, c, "")
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := c.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
				for got := 0; got < len(msg); {
					m, err := sub.Recv(ctx)
					if err != nil {
						b.Fatal(err)
					}
					got += len(m.Data)
				}
			}
		})
	}
}

func BenchmarkEchoUDP(b *testing.B) {
	msg := bytes.Repeat([]byte("p"), benchMsgSize)
	b.Run("raw", func(b *testing.B) {
		srv, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		var wg sync.WaitGroup
		defer wg.Wait()
		defer srv.Close()
		wg.Go(func() {
			buf := make([]byte, ReadBufferSize)
			for {
				n, from, err := srv.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				srv.WriteToUDPAddrPort(buf[:n], from)
			}
		})
		c, err := net.DialUDP("udp4", nil, srv.LocalAddr().(*net.UDPAddr))
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		buf := make([]byte, ReadBufferSize)
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			if _, err := c.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, bc := range []struct {
		name string
		opts []Option
	}{
		{"pipe", nil},
		{"pipe-direct", []Option{WithDirectRecv()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := mustListen(b, UDP, IPv4)
			srv.AddHandler(echo)
			c := mustDial(b, UDP, srv, bc.opts...)
			sub := mustSubscribe(b, c, "")
			ctx := context.Background()
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if err := c.Send(ctx, msg); err != nil {
					b.Fatal(err)
				}
				if _, err := sub.Recv(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkThroughputTCP streams 16 KiB messages one way and waits until
// the receiver has them all.
func BenchmarkThroughputTCP(b *testing.B) {
	const size = 16 << 10
	msg := bytes.Repeat([]byte("t"), size)
	b.Run("raw", func(b *testing.B) {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer ln.Close()
		total := make(chan int64, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				total <- 0
				return
			}
			defer c.Close()
			n, _ := io.Copy(io.Discard, c)
			total <- n
		}()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(size)
		n := 0
		for b.Loop() {
			if _, err := c.Write(msg); err != nil {
				b.Fatal(err)
			}
			n++
		}
		c.Close()
		if got := <-total; got != int64(n)*size {
			b.Fatalf("received %d of %d bytes", got, n*size)
		}
	})
	b.Run("pipe", func(b *testing.B) {
		srv := mustListen(b, TCP, IPv4, WithFraming(LengthPrefixed(0)))
		var mu sync.Mutex
		var got int64
		closed := make(chan struct{})
		srv.AddHandler(func(m Message) {
			mu.Lock()
			got += int64(len(m.Data))
			mu.Unlock()
		})
		c := mustDial(b, TCP, srv, WithFraming(LengthPrefixed(0)))
		ctx := context.Background()
		acc, err := srv.Accept(ctx)
		if err != nil {
			b.Fatal(err)
		}
		acc.OnClose(func(error) { close(closed) })
		b.SetBytes(size)
		n := 0
		for b.Loop() {
			if err := c.Send(ctx, msg); err != nil {
				b.Fatal(err)
			}
			n++
		}
		c.Close()
		<-closed
		mu.Lock()
		defer mu.Unlock()
		if got != int64(n)*size {
			b.Fatalf("received %d of %d bytes", got, n*size)
		}
	})
}
