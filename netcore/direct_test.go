package netcore

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

func TestDirectRecv(t *testing.T) {
	for _, f := range testFamilies(t) {
		for _, proto := range []Protocol{TCP, UDP} {
			t.Run(fmt.Sprintf("%s/%s", proto, f), func(t *testing.T) {
				t.Parallel()
				opts := []Option{WithFraming(Lines(0))}
				srv := mustListen(t, proto, f, opts...)
				srv.AddHandler(echo)
				c := mustDial(t, proto, srv, append(opts, WithDirectRecv())...)
				ctx := testCtx(t)
				pings := mustSubscribe(t, c, "^ping")
				pongs := mustSubscribe(t, c, "^pong")
				var handled []string
				c.AddHandler(func(m Message) { handled = append(handled, string(m.Data)) })

				// Nothing is read until a Recv waits: a short one times out.
				short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
				_, err := pings.Recv(short)
				cancel()
				if !errors.Is(err, ErrTimeout) {
					t.Fatalf("Recv with nothing sent: %v", err)
				}

				// Two receivers at once: whichever reads hands the other
				// its message.
				results := make(chan string, 2)
				for _, sub := range []*Subscription{pings, pongs} {
					go func() {
						m, err := sub.Recv(ctx)
						if err != nil {
							results <- err.Error()
							return
						}
						results <- string(m.Data)
					}()
				}
				c.Send(ctx, []byte("pong 1"))
				c.Send(ctx, []byte("ping 1"))
				got := map[string]bool{<-results: true, <-results: true}
				if !got["ping 1"] || !got["pong 1"] {
					t.Fatalf("receivers got %v", got)
				}
				if len(handled) != 2 {
					t.Fatalf("handler saw %v", handled)
				}
				if proto == UDP {
					return
				}
				// The server closing is noticed by the next Recv.
				closed := make(chan error, 1)
				c.OnClose(func(reason error) { closed <- reason })
				srv.Close()
				if _, err := pings.Recv(ctx); !errors.Is(err, ErrClosed) {
					t.Fatalf("Recv after server closed: %v", err)
				}
				if reason := <-closed; !errors.Is(reason, io.EOF) {
					t.Fatalf("close reason %v", reason)
				}
			})
		}
	}
}

// TestDirectRecvResumesFrame times a Recv out in the middle of a frame;
// the next Recv must still get the whole frame.
func TestDirectRecvResumesFrame(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx := testCtx(t)
	c, err := Dial(ctx, TCP, ln.Addr().String(), WithFraming(LengthPrefixed(0)), WithDirectRecv())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	srv := <-accepted
	if srv == nil {
		t.Fatal("no connection")
	}
	defer srv.Close()
	sub := mustSubscribe(t, c, "")
	frame := binary.BigEndian.AppendUint32(nil, 10)
	frame = append(frame, "0123456789"...)
	for _, cut := range []int{2, 7} { // inside the header, inside the body
		srv.Write(frame[:cut])
		short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
		_, err := sub.Recv(short)
		cancel()
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		srv.Write(frame[cut:])
		m, err := sub.Recv(ctx)
		if err != nil || string(m.Data) != "0123456789" {
			t.Fatalf("cut at %d: got %q, %v", cut, m.Data, err)
		}
	}
	// Cancellation (no deadline) interrupts a waiting read too.
	cctx, cancel := context.WithCancel(ctx)
	go func() {
		// Give Recv time to start reading, so the cancel interrupts a
		// read; cancelling earlier passes the test as well.
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if _, err := sub.Recv(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Recv: %v", err)
	}
	srv.Write(frame)
	if m, err := sub.Recv(ctx); err != nil || len(m.Data) != 10 {
		t.Fatalf("after cancel: %q, %v", m.Data, err)
	}
}
