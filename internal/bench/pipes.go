package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/peerbus/peerbus/netcore"
)

// echoSize is the size of an echoed message.
const echoSize = 64

func pipeCases() []Case {
	return []Case{
		{
			Name: "pipe-tcp", Kind: Rate, Unit: "round trips/s",
			What:     "netcore TCP pipe echo of 64 bytes: client pipe Send and subscription Recv (default mode), server pipe replying from a handler",
			Baseline: "Go net.Conn echo: Write and ReadFull against a goroutine echoing with Read and Write",
			Setup:    func(ctx context.Context, _ *Env) (Side, Side, func(), error) { return echoSetup(ctx, netcore.TCP) },
		},
		{
			Name: "pipe-udp", Kind: Rate, Unit: "round trips/s",
			What:     "netcore UDP pipe echo of 64 bytes: client pipe Send and subscription Recv (default mode), server pipe replying from a handler",
			Baseline: "Go UDP sockets: Write and Read against a goroutine echoing with ReadFrom and WriteTo",
			Setup:    func(ctx context.Context, _ *Env) (Side, Side, func(), error) { return echoSetup(ctx, netcore.UDP) },
		},
	}
}

func echoSetup(ctx context.Context, proto netcore.Protocol) (pb, raw Side, cleanup func(), err error) {
	var cl cleanups
	cleanup = cl.run
	msg := bytes.Repeat([]byte("p"), echoSize)

	srv, err := netcore.Listen(ctx, proto, netcore.LoopbackRoute(netcore.IPv4), 0)
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.closer(srv)
	srv.AddHandler(func(m netcore.Message) { _ = m.Reply(context.Background(), m.Data) })
	c, err := netcore.Dial(ctx, proto, srv.LocalAddr().String())
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.closer(c)
	sub, err := c.Subscribe("")
	if err != nil {
		return pb, raw, cleanup, err
	}
	pb.Op = func(ctx context.Context) (int, error) {
		if err := c.Send(ctx, msg); err != nil {
			return 0, err
		}
		for got := 0; got < len(msg); { // TCP may cut the echo
			m, err := sub.Recv(ctx)
			if err != nil {
				return 0, err
			}
			got += len(m.Data)
		}
		return 1, nil
	}

	var wg sync.WaitGroup
	cl.add(wg.Wait)
	buf := make([]byte, netcore.ReadBufferSize)
	if proto == netcore.TCP {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(ln)
		wg.Go(func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
			b := make([]byte, netcore.ReadBufferSize)
			for {
				n, err := c.Read(b)
				if err != nil {
					return
				}
				if _, err := c.Write(b[:n]); err != nil {
					return
				}
			}
		})
		rc, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return pb, raw, cleanup, err
		}
		cl.closer(rc)
		raw.Op = func(context.Context) (int, error) {
			if _, err := rc.Write(msg); err != nil {
				return 0, err
			}
			if _, err := io.ReadFull(rc, buf[:len(msg)]); err != nil {
				return 0, err
			}
			return 1, nil
		}
		return pb, raw, cleanup, nil
	}
	us, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.closer(us)
	wg.Go(func() {
		b := make([]byte, netcore.ReadBufferSize)
		for {
			n, from, err := us.ReadFromUDPAddrPort(b)
			if err != nil {
				return
			}
			_, _ = us.WriteToUDPAddrPort(b[:n], from)
		}
	})
	rc, err := net.DialUDP("udp4", nil, us.LocalAddr().(*net.UDPAddr))
	if err != nil {
		return pb, raw, cleanup, err
	}
	cl.closer(rc)
	raw.Op = func(context.Context) (int, error) {
		if _, err := rc.Write(msg); err != nil {
			return 0, err
		}
		n, err := rc.Read(buf)
		if err != nil {
			return 0, err
		}
		if n != len(msg) {
			return 0, fmt.Errorf("echo of %d bytes", n)
		}
		return 1, nil
	}
	return pb, raw, cleanup, nil
}
