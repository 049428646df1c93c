package netcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestPipeEcho runs a client/server round trip over TCP and UDP, IPv4 and
// IPv6.
func TestPipeEcho(t *testing.T) {
	for _, f := range testFamilies(t) {
		for _, proto := range []Protocol{TCP, UDP} {
			t.Run(fmt.Sprintf("%s/%s", proto, f), func(t *testing.T) {
				t.Parallel()
				opts := []Option{WithFraming(LengthPrefixed(0))}
				srv := mustListen(t, proto, f, opts...)
				srv.AddHandler(echo)
				if !srv.IsServer() || srv.Family() != f || !srv.LocalAddr().Addr().IsLoopback() {
					t.Fatalf("server %v: family %s, addr %s", srv, srv.Family(), srv.LocalAddr())
				}
				c := mustDial(t, proto, srv, opts...)
				if c.RemoteAddr() != srv.LocalAddr() || FamilyOf(c.LocalAddr().Addr()) != f {
					t.Fatalf("client %v does not point at %s", c, srv.LocalAddr())
				}
				sub := mustSubscribe(t, c, "")
				ctx := testCtx(t)
				for i := range 3 {
					msg := fmt.Sprintf("hello %d over %s", i, proto)
					if err := c.Send(ctx, []byte(msg)); err != nil {
						t.Fatal(err)
					}
					m, err := c.Recv(ctx, sub)
					if err != nil {
						t.Fatal(err)
					}
					if string(m.Data) != msg || m.From != srv.LocalAddr() || m.Pipe != c {
						t.Fatalf("got %q from %s on %v, want %q from %s", m.Data, m.From, m.Pipe, msg, srv.LocalAddr())
					}
				}
				// The server counts its third echo after writing it: the
				// client may have it first.
				waitFor(t, "server stats", func() bool { return srv.Stats().MessagesOut == 3 })
				cs, ss := c.Stats(), srv.Stats()
				if cs.MessagesOut != 3 || cs.MessagesIn != 3 || ss.MessagesIn != 3 || ss.MessagesOut != 3 || ss.Clients != 1 {
					t.Fatalf("stats: client %+v, server %+v", cs, ss)
				}
			})
		}
	}
}

// TestRawTCPStream checks that Raw framing delivers the stream intact,
// whatever the chunking.
func TestRawTCPStream(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, TCP, IPv4)
	srv.AddHandler(echo)
	c := mustDial(t, TCP, srv)
	sub := mustSubscribe(t, c, "")
	want := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB, several reads
	if err := c.Send(testCtx(t), want); err != nil {
		t.Fatal(err)
	}
	if got := recvBytes(t, sub, len(want)); !bytes.Equal(got, want) {
		t.Fatalf("stream corrupted: got %d bytes", len(got))
	}
}

func TestLinesOverTCP(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, TCP, IPv4, WithFraming(Lines(64)))
	sub := mustSubscribe(t, srv, "")
	conn, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("first\r\nsecond\nthi")); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("rd\n")); err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	expect := func(want string) {
		t.Helper()
		m, err := sub.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if string(m.Data) != want {
			t.Fatalf("got %q, want %q", m.Data, want)
		}
	}
	expect("first")
	expect("second")
	expect("third")
	// The server's client pipe sends lines back.
	cl := srv.Clients()
	if len(cl) != 1 {
		t.Fatalf("clients: %v", cl)
	}
	if err := cl[0].Send(ctx, []byte("bad\nline")); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("newline in line: err = %v", err)
	}
	if err := cl[0].Send(ctx, []byte("reply")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 6)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "reply\n" {
		t.Fatalf("read %q, %v", buf, err)
	}
	// A last line without newline still arrives when the stream ends.
	conn.Write([]byte("last"))
	conn.(*net.TCPConn).CloseWrite()
	expect("last")
}

func TestSubscriptions(t *testing.T) {
	for _, f := range testFamilies(t) {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			srv := mustListen(t, UDP, f)
			pings := mustSubscribe(t, srv, "^ping")
			c1 := mustDial(t, UDP, srv)
			c2 := mustDial(t, UDP, srv)
			fromC1 := mustSubscribe(t, srv, "^ping", From(c1.LocalAddr()))
			anyPortC1 := mustSubscribe(t, srv, "", From(netip.AddrPortFrom(c1.LocalAddr().Addr(), 0)))
			if pings.String() != `"^ping"` || !strings.Contains(fromC1.String(), c1.LocalAddr().String()) {
				t.Fatalf("String: %s / %s", pings, fromC1)
			}
			ctx := testCtx(t)
			send := func(c *Pipe, s string) {
				t.Helper()
				if err := c.Send(ctx, []byte(s)); err != nil {
					t.Fatal(err)
				}
			}
			send(c1, "ping 1")
			send(c2, "ping 2")
			send(c1, "pong 1")
			send(c2, "other")
			waitFor(t, "4 datagrams", func() bool { return srv.Stats().MessagesIn == 4 })

			expect := func(s *Subscription, want ...string) {
				t.Helper()
				var got []string
				for s.Len() > 0 {
					m, err := s.Recv(ctx)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, string(m.Data))
				}
				if strings.Join(got, ",") != strings.Join(want, ",") {
					t.Fatalf("%s got %q, want %q", s, got, want)
				}
			}
			expect(pings, "ping 1", "ping 2")
			expect(fromC1, "ping 1")
			// Both clients share the loopback address: port 0 takes both.
			expect(anyPortC1, "ping 1", "ping 2", "pong 1", "other")
			if st := srv.Stats(); st.Unmatched != 0 {
				t.Fatalf("unmatched = %d, want 0", st.Unmatched)
			}
			anyPortC1.Close()
			if _, err := anyPortC1.Recv(ctx); !errors.Is(err, ErrClosed) {
				t.Fatalf("recv on closed subscription: %v", err)
			}
			send(c2, "nobody wants this")
			waitFor(t, "unmatched count", func() bool { return srv.Stats().Unmatched == 1 })
			// A late subscription claims it from the backlog.
			late := mustSubscribe(t, srv, "nobody")
			expect(late, "nobody wants this")
		})
	}
}

func TestSubscribeBadPattern(t *testing.T) {
	srv := mustListen(t, UDP, IPv4)
	if _, err := srv.Subscribe("("); err == nil {
		t.Fatal("bad regexp accepted")
	}
	other := mustListen(t, UDP, IPv4)
	sub := mustSubscribe(t, other, "")
	if _, err := srv.Recv(testCtx(t), sub); err == nil {
		t.Fatal("Recv accepted a subscription of another pipe")
	}
}

func TestRecvTimeout(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, UDP, IPv4)
	sub := mustSubscribe(t, srv, "")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := srv.Recv(ctx, sub)
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("err %v is not a net.Error timeout", err)
	}
	if time.Since(start) < 30*time.Millisecond {
		t.Fatal("returned before the deadline")
	}
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	if _, err := sub.Recv(ctx); !errors.Is(err, context.Canceled) || errors.Is(err, ErrTimeout) {
		t.Fatalf("cancelled: err = %v", err)
	}
	// Close wakes a waiting Recv with ErrClosed.
	errc := make(chan error, 1)
	go func() {
		_, err := sub.Recv(context.Background())
		errc <- err
	}()
	srv.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("recv on closed pipe: %v", err)
	}
}

// TestAccept takes the first message a client sent before Accept returned.
func TestAccept(t *testing.T) {
	for _, f := range testFamilies(t) {
		for _, proto := range []Protocol{TCP, UDP} {
			t.Run(fmt.Sprintf("%s/%s", proto, f), func(t *testing.T) {
				t.Parallel()
				opts := []Option{WithFraming(LengthPrefixed(0))}
				srv := mustListen(t, proto, f, opts...)
				ctx := testCtx(t)
				clients := make([]*Pipe, 2)
				for i := range clients {
					clients[i] = mustDial(t, proto, srv, opts...)
					if err := clients[i].Send(ctx, fmt.Appendf(nil, "first from %d", i)); err != nil {
						t.Fatal(err)
					}
					acc, err := srv.Accept(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if acc.RemoteAddr() != clients[i].LocalAddr() || acc.Server() != srv || acc.IsServer() {
						t.Fatalf("accepted %v, want remote %s", acc, clients[i].LocalAddr())
					}
					sub := mustSubscribe(t, acc, "")
					m, err := sub.Recv(ctx)
					if err != nil {
						t.Fatal(err)
					}
					if want := fmt.Sprintf("first from %d", i); string(m.Data) != want {
						t.Fatalf("got %q, want %q", m.Data, want)
					}
					csub := mustSubscribe(t, clients[i], "")
					if err := acc.Send(ctx, []byte("welcome")); err != nil {
						t.Fatal(err)
					}
					if m, err := csub.Recv(ctx); err != nil || string(m.Data) != "welcome" {
						t.Fatalf("client got %q, %v", m.Data, err)
					}
					if _, err := acc.Accept(ctx); !errors.Is(err, ErrNotServer) {
						t.Fatalf("Accept on a client pipe: %v", err)
					}
				}
				if n := srv.Stats().Clients; n != 2 {
					t.Fatalf("clients = %d", n)
				}
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				defer cancel()
				if _, err := srv.Accept(short); !errors.Is(err, ErrTimeout) {
					t.Fatalf("Accept without client: %v", err)
				}
			})
		}
	}
}

func TestHandlersAddRemove(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			t.Parallel()
			srv := mustListen(t, proto, IPv4, WithFraming(LengthPrefixed(0)))
			var first, second atomic.Int32
			seen := make(chan string, 10)
			removeFirst := srv.AddHandler(func(Message) { first.Add(1) })
			removeSecond := srv.AddHandler(func(m Message) {
				second.Add(1)
				seen <- string(m.Data)
			})
			c := mustDial(t, proto, srv, WithFraming(LengthPrefixed(0)))
			ctx := testCtx(t)
			wait := func(want string) {
				t.Helper()
				select {
				case got := <-seen:
					if got != want {
						t.Fatalf("handler got %q, want %q", got, want)
					}
				case <-ctx.Done():
					t.Fatalf("handler never got %q", want)
				}
			}
			c.Send(ctx, []byte("one"))
			wait("one")
			if first.Load() != 1 || second.Load() != 1 {
				t.Fatalf("calls %d, %d", first.Load(), second.Load())
			}
			removeFirst()
			removeFirst() // idempotent
			c.Send(ctx, []byte("two"))
			wait("two") // handlers run in order: first would have run already
			if first.Load() != 1 || second.Load() != 2 {
				t.Fatalf("after removal: calls %d, %d", first.Load(), second.Load())
			}
			removeSecond()
			c.Send(ctx, []byte("three"))
			waitFor(t, "unmatched message", func() bool { return srv.Stats().Unmatched == 1 })
			if second.Load() != 2 {
				t.Fatal("removed handler still called")
			}
		})
	}
}

func TestOnClose(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			t.Parallel()
			srv := mustListen(t, proto, IPv4)
			c := mustDial(t, proto, srv)
			ctx := testCtx(t)
			c.Send(ctx, []byte("hi"))
			acc, err := srv.Accept(ctx)
			if err != nil {
				t.Fatal(err)
			}
			serverSide := make(chan error, 1)
			acc.OnClose(func(reason error) { serverSide <- reason })
			clientSide := make(chan error, 2)
			c.OnClose(func(reason error) { clientSide <- reason })
			removed := c.OnClose(func(error) { t.Error("removed close callback called") })
			removed()
			if err := c.Close(); err != nil {
				t.Fatal(err)
			}
			if err := <-clientSide; err != nil {
				t.Fatalf("reason after Close = %v, want nil", err)
			}
			if err := c.Close(); !errors.Is(err, net.ErrClosed) || !errors.Is(err, ErrClosed) {
				t.Fatalf("second Close: %v", err)
			}
			if err := c.Send(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
				t.Fatalf("Send after Close: %v", err)
			}
			select {
			case <-c.Done():
			default:
				t.Fatal("Done not closed")
			}
			// A callback added after closing runs at once.
			c.OnClose(func(reason error) { clientSide <- errors.New("late") })
			if err := <-clientSide; err == nil || err.Error() != "late" {
				t.Fatalf("late callback: %v", err)
			}
			if proto == UDP {
				// UDP has no connection: the server's client pipe lives
				// until closed.
				acc.Close()
			}
			select {
			case reason := <-serverSide:
				if proto == TCP && !errors.Is(reason, io.EOF) {
					t.Fatalf("server side reason = %v, want io.EOF", reason)
				}
			case <-ctx.Done():
				t.Fatal("server side close callback not called")
			}
			waitFor(t, "client removed", func() bool { return srv.Stats().Clients == 0 })
		})
	}
}

// TestCloseFromHandler closes pipes from inside their own handlers.
func TestCloseFromHandler(t *testing.T) {
	srv := mustListen(t, TCP, IPv4, WithFraming(Lines(0)))
	srv.AddHandler(func(m Message) {
		switch string(m.Data) {
		case "bye":
			m.Pipe.Close()
		case "shutdown":
			m.Pipe.Server().Close()
		}
	})
	ctx := testCtx(t)
	c1 := mustDial(t, TCP, srv, WithFraming(Lines(0)))
	c1.Send(ctx, []byte("bye"))
	<-c1.Done()
	if !errors.Is(c1.Err(), io.EOF) {
		t.Fatalf("c1 closed with %v", c1.Err())
	}
	c2 := mustDial(t, TCP, srv, WithFraming(Lines(0)))
	c2.Send(ctx, []byte("shutdown"))
	<-srv.Done()
	<-c2.Done()
	if err := srv.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Close after closing from handler: %v", err)
	}

	// A client closing itself from its own handler.
	srv2 := mustListen(t, UDP, IPv4)
	srv2.AddHandler(echo)
	c3 := mustDial(t, UDP, srv2)
	c3.AddHandler(func(m Message) { m.Pipe.Close() })
	c3.Send(ctx, []byte("ping"))
	<-c3.Done()
}

func TestSendToClients(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, TCP, IPv4, WithFraming(LengthPrefixed(0)))
	ctx := testCtx(t)
	var subs []*Subscription
	var clients []*Pipe
	for range 2 {
		c := mustDial(t, TCP, srv, WithFraming(LengthPrefixed(0)))
		clients = append(clients, c)
		subs = append(subs, mustSubscribe(t, c, ""))
	}
	waitFor(t, "2 clients", func() bool { return srv.Stats().Clients == 2 })
	for i, c := range clients {
		if err := srv.SendTo(ctx, fmt.Appendf(nil, "to %d", i), c.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	for i, s := range subs {
		m, err := s.Recv(ctx)
		if err != nil || string(m.Data) != fmt.Sprintf("to %d", i) {
			t.Fatalf("client %d got %q, %v", i, m.Data, err)
		}
	}
	if err := srv.SendTo(ctx, []byte("x"), netip.MustParseAddrPort("127.0.0.1:1")); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("SendTo unknown: %v", err)
	}
	if err := srv.Send(ctx, []byte("x")); !errors.Is(err, ErrNoPeer) {
		t.Fatalf("Send on server: %v", err)
	}
	if err := clients[0].SendTo(ctx, []byte("x"), clients[1].LocalAddr()); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("client SendTo other: %v", err)
	}
	if err := clients[0].SendTo(ctx, []byte("to server"), srv.LocalAddr()); err != nil {
		t.Fatal(err)
	}
}

func TestUDPServerSendTo(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, UDP, IPv4)
	// A plain socket, which the server has never heard from.
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	to := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	ctx := testCtx(t)
	if err := srv.SendTo(ctx, []byte("unsolicited"), to); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "unsolicited" {
		t.Fatalf("got %q, %v", buf[:n], err)
	}
	if err := srv.SendTo(ctx, []byte("x"), netip.MustParseAddrPort("[::1]:9")); !errors.Is(err, ErrFamilyMismatch) {
		t.Fatalf("IPv6 destination on IPv4 server: %v", err)
	}
}

func TestDialOptions(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, UDP, IPv4)
	ctx := testCtx(t)
	c, err := Dial(ctx, UDP, fmt.Sprintf("localhost:%d", srv.LocalAddr().Port()),
		WithRoute(LoopbackRoute(IPv4)), WithResolver(offlineResolver(false)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.LocalAddr().Addr() != netip.MustParseAddr("127.0.0.1") || c.RemoteAddr() != srv.LocalAddr() {
		t.Fatalf("dialled %v", c)
	}
	// Bind an exact source address and port.
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := pc.LocalAddr().(*net.UDPAddr).Port
	pc.Close()
	src := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(port))
	c2, err := DialAddr(ctx, UDP, srv.LocalAddr(), WithLocalAddr(src))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if c2.LocalAddr() != src {
		t.Fatalf("local %s, want %s", c2.LocalAddr(), src)
	}
	if haveIPv6() {
		_, err = Dial(ctx, TCP, "[::1]:1", WithRoute(LoopbackRoute(IPv4)))
		if !errors.Is(err, ErrFamilyMismatch) {
			t.Fatalf("IPv6 target with IPv4 route: %v", err)
		}
	}
	for _, bad := range []string{"no-port", "127.0.0.1:http", "127.0.0.1:99999"} {
		if _, err := Dial(ctx, TCP, bad); err == nil {
			t.Errorf("Dial(%q) succeeded", bad)
		}
	}
	if _, err := Dial(ctx, UDP, srv.LocalAddr().String(), WithTLS(testTLS(t).client)); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("TLS over UDP: %v", err)
	}
	if _, err := Listen(ctx, TCP, Route{Family: IPv6, LocalIP: netip.MustParseAddr("127.0.0.1")}, 0); !errors.Is(err, ErrFamilyMismatch) {
		t.Fatalf("route with mismatched address: %v", err)
	}
}

func TestQueueOverflow(t *testing.T) {
	for _, policy := range []Overflow{DropOldest, DropNewest} {
		t.Run(policy.String(), func(t *testing.T) {
			t.Parallel()
			srv := mustListen(t, UDP, IPv4)
			sub := mustSubscribe(t, srv, "", QueueSize(2), WithOverflow(policy))
			c := mustDial(t, UDP, srv)
			ctx := testCtx(t)
			for _, s := range []string{"1", "2", "3"} {
				c.Send(ctx, []byte(s))
			}
			waitFor(t, "3 datagrams", func() bool { return srv.Stats().MessagesIn == 3 })
			want := "2,3"
			if policy == DropNewest {
				want = "1,2"
			}
			var got []string
			for sub.Len() > 0 {
				m, _ := sub.Recv(ctx)
				got = append(got, string(m.Data))
			}
			if strings.Join(got, ",") != want || sub.Dropped() != 1 || srv.Stats().QueueDropped != 1 {
				t.Fatalf("got %v, dropped %d, stats %+v; want %s", got, sub.Dropped(), srv.Stats(), want)
			}
		})
	}
}

func TestBacklogLimit(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, UDP, IPv4, WithBacklog(2), WithAcceptQueue(0))
	c := mustDial(t, UDP, srv)
	ctx := testCtx(t)
	for _, s := range []string{"a", "b", "c"} {
		c.Send(ctx, []byte(s))
	}
	waitFor(t, "3 unmatched", func() bool { return srv.Stats().Unmatched == 3 })
	if st := srv.Stats(); st.BacklogDropped != 1 {
		t.Fatalf("stats %+v", st)
	}
	sub := mustSubscribe(t, srv, "")
	if m, _ := sub.Recv(ctx); string(m.Data) != "b" {
		t.Fatalf("oldest kept = %q, want b", m.Data)
	}
}

// TestConcurrentSends sends from many goroutines on one TCP pipe: frames
// must never interleave.
func TestConcurrentSends(t *testing.T) {
	t.Parallel()
	srv := mustListen(t, TCP, IPv4, WithFraming(LengthPrefixed(0)))
	sub := mustSubscribe(t, srv, "", QueueSize(1000))
	c := mustDial(t, TCP, srv, WithFraming(LengthPrefixed(0)))
	ctx := testCtx(t)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				msg := bytes.Repeat([]byte{byte('a' + g)}, 100+i)
				if err := c.Send(ctx, msg); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	for range 400 {
		m, err := sub.Recv(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.Trim(m.Data, string(m.Data[:1]))) != 0 {
			t.Fatalf("interleaved frame %q", m.Data)
		}
	}
}
