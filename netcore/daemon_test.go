package netcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestDaemon listens on several ports, both protocols and both families,
// echoes on each, then closes everything at once without leaking.
func TestDaemon(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	fams := testFamilies(t)
	var got [][]byte
	d := NewDaemon(func(m Message) {
		echo(m)
	}, WithFraming(Lines(0)))
	ctx := testCtx(t)
	pipes, err := d.ListenAll(ctx, ListenSpec{TCP: []uint16{0, 0}, UDP: []uint16{0, 0}, Families: fams})
	if err != nil {
		t.Fatal(err)
	}
	if want := len(fams) * 4; len(pipes) != want || len(d.Pipes()) != want {
		t.Fatalf("%d pipes, want %d", len(pipes), want)
	}
	for _, p := range pipes {
		c, err := Dial(ctx, p.Protocol(), p.LocalAddr().String(), WithFraming(Lines(0)))
		if err != nil {
			t.Fatal(err)
		}
		sub := mustSubscribe(t, c, "")
		msg := fmt.Sprintf("hello %s", p)
		if err := c.Send(ctx, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		m, err := sub.Recv(ctx)
		if err != nil || string(m.Data) != msg {
			t.Fatalf("%v: got %q, %v", p, m.Data, err)
		}
		got = append(got, m.Data)
		if p.Protocol() == TCP {
			continue // keep TCP clients connected through Close
		}
		c.Close()
	}
	if len(got) != len(pipes) {
		t.Fatal("not every listener answered")
	}
	// A second daemon cannot take a port the first holds.
	d2 := NewDaemon(echo)
	if _, err := d2.ListenAll(ctx, ListenSpec{UDP: []uint16{0}, TCP: []uint16{pipes[0].LocalAddr().Port()}, Families: []Family{IPv4}}); err == nil {
		t.Fatal("second daemon took a busy port")
	}
	if len(d2.Pipes()) != 0 {
		t.Fatalf("failed ListenAll left pipes open: %v", d2.Pipes())
	}
	d2.Close()

	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	for _, p := range pipes {
		select {
		case <-p.Done():
		default:
			t.Fatalf("%v still open", p)
		}
	}
	if _, err := d.Listen(ctx, TCP, LoopbackRoute(IPv4), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Listen after Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", pipes[0].LocalAddr().String(), time.Second); err == nil {
		t.Fatal("port still accepting after Close")
	}
}

// TestDaemonBadInput floods a daemon with bad input on every port; it
// keeps answering.
func TestDaemonBadInput(t *testing.T) {
	d := NewDaemon(echo, WithFraming(LengthPrefixed(64)), WithMaxConns(8))
	defer d.Close()
	ctx := testCtx(t)
	pipes, err := d.ListenAll(ctx, ListenSpec{TCP: []uint16{0}, UDP: []uint16{0}, Families: []Family{IPv4}})
	if err != nil {
		t.Fatal(err)
	}
	tcp, udp := pipes[0], pipes[1]
	for range 20 {
		c, err := net.Dial("tcp", tcp.LocalAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(bytes.Repeat([]byte{0x7f}, 200))
		c.Close()
	}
	u, err := net.Dial("udp", udp.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for range 20 {
		u.Write(bytes.Repeat([]byte{0xff}, MaxDatagramIPv4))
	}
	waitFor(t, "bad TCP clients gone", func() bool { return tcp.Stats().Clients == 0 })
	for _, p := range pipes {
		c, err := Dial(ctx, p.Protocol(), p.LocalAddr().String(), WithFraming(LengthPrefixed(64)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sub := mustSubscribe(t, c, "^ok$")
		c.Send(ctx, []byte("ok"))
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = sub.Recv(rctx)
		cancel()
		if err != nil {
			t.Fatalf("%v stopped answering: %v", p, err)
		}
	}
}
