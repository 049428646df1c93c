package netcore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// rawConn dials srv with a plain TCP socket, closed with the test.
func rawConn(t *testing.T, srv *Pipe) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// expectDropped reads from c until the server closes it.
func expectDropped(t *testing.T, c net.Conn) {
	t.Helper()
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Fatalf("server did not close the connection: %v", err)
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// checkServes makes sure srv (an echo server with length-prefixed framing)
// still answers a well-behaved client.
func checkServes(t *testing.T, srv *Pipe) {
	t.Helper()
	c := mustDial(t, TCP, srv, WithFraming(LengthPrefixed(0)))
	sub := mustSubscribe(t, c, "")
	ctx := testCtx(t)
	if err := c.Send(ctx, []byte("still serving")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.Recv(ctx); err != nil || string(m.Data) != "still serving" {
		t.Fatalf("server stopped serving: %q, %v", m.Data, err)
	}
}

func TestBadTCPInput(t *testing.T) {
	srv := mustListen(t, TCP, IPv4, WithFraming(LengthPrefixed(1024)))
	srv.AddHandler(echo)
	ctx := testCtx(t)

	t.Run("oversized frame header", func(t *testing.T) {
		c := rawConn(t, srv)
		c.Write([]byte{0xff, 0xff, 0xff, 0xff, 'x'})
		expectDropped(t, c)
	})
	t.Run("oversized frame from a pipe", func(t *testing.T) {
		c := mustDial(t, TCP, srv, WithFraming(LengthPrefixed(1<<20)))
		reasons := make(chan error, 1)
		c.OnClose(func(err error) { reasons <- err })
		if err := c.Send(ctx, make([]byte, 2000)); err != nil {
			t.Fatal(err)
		}
		if err := <-reasons; !errors.Is(err, io.EOF) && !isReset(err) {
			t.Fatalf("client closed with %v, want EOF from the server", err)
		}
	})
	t.Run("truncated frame", func(t *testing.T) {
		c := rawConn(t, srv)
		c.Write(binary.BigEndian.AppendUint32(nil, 100))
		c.Write([]byte("only part"))
		c.(*net.TCPConn).CloseWrite()
		expectDropped(t, c)
	})
	t.Run("garbage", func(t *testing.T) {
		c := rawConn(t, srv)
		c.Write(bytes.Repeat([]byte("GET / HTTP/1.1\r\n"), 100))
		expectDropped(t, c)
	})
	t.Run("half-open", func(t *testing.T) {
		c := rawConn(t, srv)
		c.Write([]byte{0, 0}) // half a header, then silence
		checkServes(t, srv)
		// Going away mid-header is a truncated frame too.
	})
	waitFor(t, "5 bad clients counted", func() bool { return srv.Stats().BadInput == 5 })
	checkServes(t, srv)
}

// TestSendTooLargeFrame refuses to send what the framing cannot carry and
// keeps the pipe usable.
func TestSendTooLargeFrame(t *testing.T) {
	srv := mustListen(t, TCP, IPv4, WithFraming(LengthPrefixed(16)))
	srv.AddHandler(echo)
	c := mustDial(t, TCP, srv, WithFraming(LengthPrefixed(16)))
	sub := mustSubscribe(t, c, "")
	ctx := testCtx(t)
	err := c.Send(ctx, make([]byte, 17))
	var tooLarge *MessageTooLargeError
	if !errors.As(err, &tooLarge) || !errors.Is(err, ErrMessageTooLarge) || tooLarge.Size != 17 || tooLarge.Limit != 16 {
		t.Fatalf("err = %v, want *MessageTooLargeError{17, 16}", err)
	}
	if err := c.Send(ctx, []byte("sixteen bytes!!!")); err != nil {
		t.Fatal(err)
	}
	if m, err := sub.Recv(ctx); err != nil || len(m.Data) != 16 {
		t.Fatalf("got %q, %v", m.Data, err)
	}
}

func TestUDPDatagramLimits(t *testing.T) {
	for _, f := range testFamilies(t) {
		t.Run(f.String(), func(t *testing.T) {
			srv := mustListen(t, UDP, f)
			srv.AddHandler(echo)
			c := mustDial(t, UDP, srv)
			sub := mustSubscribe(t, c, "")
			ctx := testCtx(t)
			limit := MaxDatagramIPv4
			if f == IPv6 {
				limit = MaxDatagramIPv6
			}
			err := c.Send(ctx, make([]byte, limit+1))
			var tooLarge *MessageTooLargeError
			if !errors.As(err, &tooLarge) || tooLarge.What != "datagram" || tooLarge.Limit != limit {
				t.Fatalf("oversized datagram: err = %v", err)
			}
			// The largest IPv4 datagram arrives whole, both ways.
			big := bytes.Repeat([]byte("x"), MaxDatagramIPv4)
			big[len(big)-1] = 'y'
			if err := c.Send(ctx, big); err != nil {
				t.Fatal(err)
			}
			m, err := sub.Recv(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(m.Data, big) {
				t.Fatalf("echo of %d bytes came back as %d bytes", len(big), len(m.Data))
			}
			// Garbage and empty datagrams are just messages.
			raw, err := net.Dial("udp", srv.LocalAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			raw.Write(nil)
			raw.Write([]byte{0, 0xff, 0xfe})
			waitFor(t, "garbage received", func() bool { return srv.Stats().MessagesIn == 3 })
		})
	}
}

// TestMaxConns refuses clients beyond the limit and serves them again once
// a slot is free.
func TestMaxConns(t *testing.T) {
	srv := mustListen(t, TCP, IPv4, WithMaxConns(2), WithFraming(LengthPrefixed(0)))
	srv.AddHandler(echo)
	a := rawConn(t, srv)
	rawConn(t, srv)
	waitFor(t, "2 clients", func() bool { return srv.Stats().Clients == 2 })
	over := rawConn(t, srv)
	expectDropped(t, over)
	if st := srv.Stats(); st.Rejected != 1 || st.Clients != 2 {
		t.Fatalf("stats %+v", st)
	}
	a.Close()
	waitFor(t, "a slot freed", func() bool { return srv.Stats().Clients == 1 })
	checkServes(t, srv)

	// UDP: remotes beyond the limit are served by the server, without a
	// client pipe.
	usrv := mustListen(t, UDP, IPv4, WithMaxConns(1))
	sub := mustSubscribe(t, usrv, "")
	ctx := testCtx(t)
	for i := range 3 {
		c := mustDial(t, UDP, usrv)
		c.Send(ctx, []byte{byte(i)})
	}
	for range 3 {
		if _, err := sub.Recv(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if st := usrv.Stats(); st.Clients != 1 || st.Rejected != 2 {
		t.Fatalf("udp stats %+v", st)
	}
}

func TestIdleTimeout(t *testing.T) {
	srv := mustListen(t, TCP, IPv4, WithIdleTimeout(50*time.Millisecond))
	c := rawConn(t, srv)
	expectDropped(t, c)
	waitFor(t, "idle client counted", func() bool { return srv.Stats().BadInput == 1 })
	cl, err := Dial(testCtx(t), TCP, srv.LocalAddr().String(), WithIdleTimeout(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	select {
	case <-cl.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("idle client pipe not closed")
	}
	if !errors.Is(cl.Err(), ErrTimeout) && !errors.Is(cl.Err(), io.EOF) {
		t.Fatalf("idle client closed with %v", cl.Err())
	}
}

// TestSendDeadline bounds a blocked TCP write with ctx.
func TestSendDeadline(t *testing.T) {
	srv := mustListen(t, TCP, IPv4)
	// Nobody reads on the server side: stop its reader by a handler that
	// blocks until the test ends.
	release := make(chan struct{})
	srv.AddHandler(func(Message) { <-release })
	c := mustDial(t, TCP, srv)
	defer close(release)
	chunk := make([]byte, 1<<20)
	var err error
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		err = c.Send(ctx, chunk)
		cancel()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("blocked send: err = %v, want ErrTimeout", err)
	}
}

// lockedBuf is a bytes.Buffer safe for concurrent writes.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestBadInputLogged logs dropped clients, rate-limited so that a flood of
// bad clients cannot flood the log.
func TestBadInputLogged(t *testing.T) {
	var logs lockedBuf
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := mustListen(t, TCP, IPv4, WithFraming(LengthPrefixed(8)), WithLogger(log))
	const clients = 10
	for range clients {
		c := rawConn(t, srv)
		c.Write([]byte{0, 0, 1, 0})
		expectDropped(t, c)
	}
	waitFor(t, "bad clients counted", func() bool { return srv.Stats().BadInput == clients })
	warn := strings.Count(logs.String(), `level=WARN msg="netcore: connection dropped for bad input"`)
	debug := strings.Count(logs.String(), `level=DEBUG msg="netcore: connection dropped for bad input"`)
	if warn < 1 || warn == clients || warn+debug != clients {
		t.Fatalf("%d warnings and %d debug lines for %d bad clients:\n%s", warn, debug, clients, logs.String())
	}
	if !strings.Contains(logs.String(), "frame of 256 bytes exceeds limit of 8 bytes") {
		t.Fatalf("log does not say why:\n%s", logs.String())
	}
}
