package bridge

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/netcore"
)

func TestPipeToSubjectAndBack(t *testing.T) {
	nodes := startCluster(t, 2)
	nc0, nc1 := connect(t, nodes[0]), connect(t, nodes[1])
	ctx := ctxT(t, 20*time.Second)

	// A UDP server pipe: what clients send goes onto the bus.
	srv, err := netcore.Listen(ctx, netcore.UDP, netcore.LoopbackRoute(netcore.IPv4), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	up, err := PipeToSubject(srv, nc0, "demo.up")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	// Bus messages on demo.down go back into the server pipe, to the
	// client named in the header.
	down, err := SubjectToPipe(nc1, "demo.down", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer down.Close()
	sub, err := nc1.SubscribeSync("demo.up")
	if err != nil {
		t.Fatal(err)
	}
	_ = nc1.Flush()

	cl, err := netcore.DialAddr(ctx, netcore.UDP, srv.LocalAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	csub, err := cl.Subscribe("")
	if err != nil {
		t.Fatal(err)
	}
	// The subscription reaches the other node asynchronously: send until
	// the bus delivers.
	var m *nats.Msg
	waitFor(t, "the pipe message on the bus", 10*time.Second, func() bool {
		if err := cl.Send(ctx, []byte("hello bus")); err != nil {
			t.Fatal(err)
		}
		m, err = sub.NextMsg(100 * time.Millisecond)
		return err == nil
	})
	if string(m.Data) != "hello bus" || m.Header.Get(HeaderPipeFrom) != cl.LocalAddr().String() {
		t.Fatalf("bus got %q from %q, want from %s", m.Data, m.Header.Get(HeaderPipeFrom), cl.LocalAddr())
	}
	// Answer through the bus to the client's address.
	reply := nats.NewMsg("demo.down")
	reply.Header.Set(HeaderPipeTo, m.Header.Get(HeaderPipeFrom))
	reply.Data = []byte("hello pipe")
	waitFor(t, "the reply to reach the pipe client", 5*time.Second, func() bool {
		_ = nc0.PublishMsg(reply)
		rctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		got, err := cl.Recv(rctx, csub)
		return err == nil && string(got.Data) == "hello pipe"
	})
	// A message for a server pipe without a destination is an error.
	_ = nc0.Publish("demo.down", []byte("nowhere"))
	waitFor(t, "the error to be counted", 5*time.Second, func() bool { return down.Stats().Errors > 0 })
	if !errors.Is(down.Err(), netcore.ErrNoPeer) {
		t.Fatalf("error %v", down.Err())
	}
	if up.Stats().Messages == 0 {
		t.Fatalf("up stats %+v", up.Stats())
	}
	if err := up.Close(); err != nil {
		t.Fatal(err)
	}
	if err := up.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

func TestSubjectToClientPipeAndPipeClose(t *testing.T) {
	nodes := startCluster(t, 1)
	nc := connect(t, nodes[0])
	ctx := ctxT(t, 20*time.Second)
	lines := netcore.WithFraming(netcore.Lines(1024))
	srv, err := netcore.Listen(ctx, netcore.TCP, netcore.LoopbackRoute(netcore.IPv4), 0, lines)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ssub, _ := srv.Subscribe("")
	cl, err := netcore.Dial(ctx, netcore.TCP, srv.LocalAddr().String(), lines)
	if err != nil {
		t.Fatal(err)
	}
	l, err := SubjectToPipe(nc, "demo.lines.*", cl, QueueGroup("workers"))
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	for i := range 3 {
		_ = nc.Publish(fmt.Sprintf("demo.lines.%d", i), []byte(fmt.Sprintf("line %d", i)))
	}
	for i := range 3 {
		m, err := srv.Recv(ctx, ssub)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("line %d", i); string(m.Data) != want {
			t.Fatalf("got %q, want %q", m.Data, want)
		}
	}
	// Closing the pipe stops the link.
	_ = cl.Close()
	select {
	case <-l.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("link still running after its pipe closed")
	}
	if l.Stats().Messages != 3 {
		t.Fatalf("stats %+v", l.Stats())
	}
}

func TestSubscribeRegex(t *testing.T) {
	nodes := startCluster(t, 1)
	nc := connect(t, nodes[0])
	if _, err := SubscribeRegex(nc, "", "(", ""); err == nil {
		t.Fatal("bad subject pattern accepted")
	}
	if _, err := SubscribeRegex(nc, "", "", "[z-a]"); err == nil {
		t.Fatal("bad payload pattern accepted")
	}
	s, err := SubscribeRegex(nc, "demo.>", `^demo\.(orders|users)\.`, `"ok":true`, QueueSize(2))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_ = nc.Flush()
	pub := func(subj, data string) { _ = nc.Publish(subj, []byte(data)) }
	pub("demo.orders.1", `{"ok":true,"n":1}`)
	pub("demo.orders.2", `{"ok":false}`)     // payload does not match
	pub("demo.other.3", `{"ok":true}`)       // subject does not match
	pub("other.orders.4", `{"ok":true}`)     // filtered by the server
	pub("demo.users.5", `{"ok":true,"n":5}`) // matches
	pub("demo.users.6", `{"ok":true,"n":6}`) // matches: the queue of 2 drops the oldest
	_ = nc.Flush()
	waitFor(t, "three matches", 5*time.Second, func() bool { return s.Matched() == 3 })
	if s.Dropped() != 1 || s.Len() != 2 {
		t.Fatalf("dropped %d, queued %d", s.Dropped(), s.Len())
	}
	ctx := ctxT(t, 5*time.Second)
	for _, want := range []string{"demo.users.5", "demo.users.6"} {
		m, err := s.Recv(ctx)
		if err != nil || m.Subject != want {
			t.Fatalf("recv %v, %v; want %s", m, err, want)
		}
	}
	short, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err = s.Recv(short)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, netcore.ErrTimeout) {
		t.Fatalf("recv timeout: %v", err)
	}
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := s.Recv(canceled); !errors.Is(err, context.Canceled) {
		t.Fatalf("recv canceled: %v", err)
	}

	newest, err := SubscribeRegex(nc, "demo.>", "", "", QueueSize(1), WithOverflow(netcore.DropNewest))
	if err != nil {
		t.Fatal(err)
	}
	_ = nc.Flush()
	pub("demo.a", "first")
	pub("demo.b", "second")
	_ = nc.Flush()
	waitFor(t, "a drop", 5*time.Second, func() bool { return newest.Dropped() == 1 })
	if m, err := newest.Recv(ctx); err != nil || string(m.Data) != "first" {
		t.Fatalf("drop-newest kept %v, %v", m, err)
	}
	done := make(chan error, 1)
	go func() { _, err := newest.Recv(context.Background()); done <- err }()
	time.Sleep(20 * time.Millisecond)
	if err := newest.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("recv after close: %v", err)
	}
	if err := newest.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}
