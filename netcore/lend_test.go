package netcore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestLendingEcho runs request/response traffic on client pipes in the
// default mode, where Recv calls read the socket themselves while they
// keep coming, with every framing: nothing is lost, duplicated or
// reordered, and the counters add up.
func TestLendingEcho(t *testing.T) {
	for _, tc := range []struct {
		proto Protocol
		name  string
		opts  []Option
	}{
		{TCP, "tcp-lines", []Option{WithFraming(Lines(0))}},
		{TCP, "tcp-length-prefixed", []Option{WithFraming(LengthPrefixed(0))}},
		{UDP, "udp", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := mustListen(t, tc.proto, IPv4, tc.opts...)
			srv.AddHandler(echo)
			c := mustDial(t, tc.proto, srv, tc.opts...)
			sub := mustSubscribe(t, c, "")
			ctx := testCtx(t)
			const rounds = 3000
			for i := range rounds {
				want := "m" + strconv.Itoa(i)
				if err := c.Send(ctx, []byte(want)); err != nil {
					t.Fatal(err)
				}
				m, err := sub.Recv(ctx)
				if err != nil || string(m.Data) != want {
					t.Fatalf("round %d: %q, %v", i, m.Data, err)
				}
				if i%500 == 0 {
					// A pause longer than the lending period: the
					// reader goroutine takes the token back.
					time.Sleep(3 * lendPeriod)
				}
			}
			if st := c.Stats(); st.MessagesIn != rounds || st.Unmatched != 0 || sub.Len() != 0 {
				t.Fatalf("stats %+v, %d queued", st, sub.Len())
			}
		})
	}
}

// TestLendingReaders checks two subscriptions read at once on a client
// pipe in the default mode: whichever reads hands the other its
// messages, and a message nobody takes goes to the backlog.
func TestLendingReaders(t *testing.T) {
	opts := []Option{WithFraming(Lines(0))}
	srv := mustListen(t, TCP, IPv4, opts...)
	srv.AddHandler(echo)
	c := mustDial(t, TCP, srv, opts...)
	const n = 500
	pings := mustSubscribe(t, c, "^ping", QueueSize(2*n))
	pongs := mustSubscribe(t, c, "^pong", QueueSize(2*n))
	ctx := testCtx(t)
	errs := make(chan error, 2)
	for _, tc := range []struct {
		sub    *Subscription
		prefix string
	}{{pings, "ping"}, {pongs, "pong"}} {
		go func() {
			for i := range n {
				m, err := tc.sub.Recv(ctx)
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("%s %d", tc.prefix, i); string(m.Data) != want {
					errs <- fmt.Errorf("got %q, want %q", m.Data, want)
					return
				}
			}
			errs <- nil
		}()
	}
	for i := range n {
		for _, prefix := range []string{"ping", "pong"} {
			if err := c.Send(ctx, fmt.Appendf(nil, "%s %d", prefix, i)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Unclaimed while Recv calls read: kept for a later subscription.
	c.Send(ctx, []byte("other"))
	c.Send(ctx, []byte("ping last"))
	if m, err := pings.Recv(ctx); err != nil || string(m.Data) != "ping last" {
		t.Fatalf("%q, %v", m.Data, err)
	}
	waitFor(t, "unmatched", func() bool { return c.Stats().Unmatched == 1 })
	other := mustSubscribe(t, c, "^other")
	if m, err := other.Recv(ctx); err != nil || string(m.Data) != "other" {
		t.Fatalf("backlog: %q, %v", m.Data, err)
	}
}

// TestLendingNoReader checks that a client pipe in the default mode
// notices its peer closing, and runs a handler added later on its own
// reader, when no Recv reads any more.
func TestLendingNoReader(t *testing.T) {
	for _, proto := range []Protocol{TCP, UDP} {
		t.Run(proto.String(), func(t *testing.T) {
			opts := []Option{WithFraming(Lines(0))}
			if proto == UDP {
				opts = nil
			}
			srv := mustListen(t, proto, IPv4, opts...)
			srv.AddHandler(echo)
			c := mustDial(t, proto, srv, opts...)
			sub := mustSubscribe(t, c, "")
			ctx := testCtx(t)
			for i := range 50 { // Recv calls take over the reading
				c.Send(ctx, []byte("x"+strconv.Itoa(i)))
				if _, err := sub.Recv(ctx); err != nil {
					t.Fatal(err)
				}
			}
			sub.Close()
			var handled atomic.Int32
			c.AddHandler(func(m Message) {
				if strings.HasPrefix(string(m.Data), "h") {
					handled.Add(1)
				}
			})
			for i := range 10 {
				c.Send(ctx, []byte("h"+strconv.Itoa(i)))
			}
			waitFor(t, "handler calls", func() bool { return handled.Load() == 10 })
			if proto == UDP {
				return
			}
			closed := make(chan error, 1)
			c.OnClose(func(reason error) { closed <- reason })
			srv.Close()
			select {
			case reason := <-closed:
				if !errors.Is(reason, io.EOF) {
					t.Fatalf("close reason %v", reason)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("peer close not noticed without a Recv")
			}
		})
	}
}

// TestLendingTimeouts mixes Recv calls that time out (also inside a
// frame) with ones that succeed.
func TestLendingTimeouts(t *testing.T) {
	opts := []Option{WithFraming(Lines(0))}
	srv := mustListen(t, TCP, IPv4, opts...)
	var delay atomic.Int64
	srv.AddHandler(func(m Message) {
		time.Sleep(time.Duration(delay.Load()))
		m.Reply(context.Background(), m.Data)
	})
	c := mustDial(t, TCP, srv, opts...)
	sub := mustSubscribe(t, c, "")
	ctx := testCtx(t)
	for i := range 40 {
		slow := i%4 == 3
		if slow {
			delay.Store(int64(30 * time.Millisecond))
		} else {
			delay.Store(0)
		}
		want := "t" + strconv.Itoa(i)
		c.Send(ctx, []byte(want))
		if slow {
			short, cancel := context.WithTimeout(ctx, 5*time.Millisecond)
			_, err := sub.Recv(short)
			cancel()
			if !errors.Is(err, ErrTimeout) {
				t.Fatalf("round %d: short Recv: %v", i, err)
			}
		}
		m, err := sub.Recv(ctx)
		if err != nil || string(m.Data) != want {
			t.Fatalf("round %d: %q, %v", i, m.Data, err)
		}
	}
}
