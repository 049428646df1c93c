package netcore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/peerbus/peerbus/netcore"
)

// A TCP echo server and a client, with length-prefixed framing.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	framing := netcore.WithFraming(netcore.LengthPrefixed(64 << 10))

	srv, err := netcore.Listen(ctx, netcore.TCP, netcore.LoopbackRoute(netcore.IPv4), 0, framing)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	srv.AddHandler(func(m netcore.Message) {
		m.Reply(ctx, append([]byte("echo: "), m.Data...))
	})

	c, err := netcore.Dial(ctx, netcore.TCP, srv.LocalAddr().String(), framing)
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe("^echo: ")
	if err != nil {
		log.Fatal(err)
	}
	if err := c.Send(ctx, []byte("hello")); err != nil {
		log.Fatal(err)
	}
	m, err := c.Recv(ctx, sub)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", m.Data)
	// Output: echo: hello
}

// Subscriptions filter by content and by sender; Recv times out with
// ErrTimeout.
func ExamplePipe_Subscribe() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := netcore.Listen(ctx, netcore.UDP, netcore.LoopbackRoute(netcore.IPv4), 0)
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	alice, err := netcore.DialAddr(ctx, netcore.UDP, srv.LocalAddr())
	if err != nil {
		log.Fatal(err)
	}
	defer alice.Close()

	// Pings from alice's host, any port.
	fromAlice := netip.AddrPortFrom(alice.LocalAddr().Addr(), 0)
	pings, err := srv.Subscribe(`^ping \d+$`, netcore.From(fromAlice))
	if err != nil {
		log.Fatal(err)
	}
	alice.Send(ctx, []byte("ping 1"))
	alice.Send(ctx, []byte("pong 2"))
	m, err := pings.Recv(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s\n", m.Data)

	short, cancelShort := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancelShort()
	_, err = pings.Recv(short)
	fmt.Println(err != nil && errors.Is(err, netcore.ErrTimeout))
	// Output:
	// ping 1
	// true
}

// Accept hands out the pipe of each new client; what it sent before
// waits in that pipe's backlog.
func ExamplePipe_Accept() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv, err := netcore.Listen(ctx, netcore.TCP, netcore.LoopbackRoute(netcore.IPv4), 0, netcore.WithFraming(netcore.Lines(0)))
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	c, err := netcore.Dial(ctx, netcore.TCP, srv.LocalAddr().String(), netcore.WithFraming(netcore.Lines(0)))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	c.Send(ctx, []byte("HELLO"))

	client, err := srv.Accept(ctx)
	if err != nil {
		log.Fatal(err)
	}
	sub, _ := client.Subscribe("")
	m, _ := sub.Recv(ctx)
	fmt.Printf("%s from the dialling pipe: %v\n", m.Data, m.From == c.LocalAddr())
	// Output: HELLO from the dialling pipe: true
}

// A daemon listening on TCP and UDP with one handler.
func ExampleDaemon() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := netcore.NewDaemon(func(m netcore.Message) { m.Reply(ctx, m.Data) }, netcore.WithFraming(netcore.Lines(0)))
	defer d.Close()
	pipes, err := d.ListenAll(ctx, netcore.ListenSpec{TCP: []uint16{0}, UDP: []uint16{0}, Families: []netcore.Family{netcore.IPv4}})
	if err != nil {
		log.Fatal(err)
	}
	for _, p := range pipes {
		c, err := netcore.DialAddr(ctx, p.Protocol(), p.LocalAddr(), netcore.WithFraming(netcore.Lines(0)))
		if err != nil {
			log.Fatal(err)
		}
		sub, _ := c.Subscribe("")
		c.Send(ctx, []byte("hi over "+p.Protocol().String()))
		m, _ := sub.Recv(ctx)
		fmt.Printf("%s\n", m.Data)
		c.Close()
	}
	// Output:
	// hi over tcp
	// hi over udp
}

// Length-prefixed framing on the wire.
func ExampleLengthPrefixed() {
	wire, err := netcore.LengthPrefixed(16).AppendFrame(nil, []byte("hi"))
	fmt.Printf("% x %v\n", wire, err)
	_, err = netcore.LengthPrefixed(16).AppendFrame(nil, make([]byte, 17))
	fmt.Println(err)
	// Output:
	// 00 00 00 02 68 69 <nil>
	// netcore: frame of 17 bytes exceeds limit of 16 bytes
}

// The default IPv4 route: where a pipe to the internet would bind.
func ExampleDefaultRoute() {
	r, err := netcore.DefaultRoute(netcore.IPv4)
	if err != nil {
		fmt.Println("no IPv4 default route:", err)
		return
	}
	fmt.Println(r.Interface, r.LocalIP, r.Gateway)
}
