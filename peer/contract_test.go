package peer_test

import (
	"context"
	"errors"
	"net"
	"reflect"
	"testing"
	"time"

	"github.com/peerbus/peerbus/peer"
)

// TestCloseContract checks the close contract of a peer: Close is
// idempotent (a second call wraps net.ErrClosed), runs the close hooks,
// and bounds its wait for functions that ignore their context.
func TestCloseContract(t *testing.T) {
	n := single(t)
	p, err := peer.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	started := make(chan struct{})
	release := make(chan struct{})
	canceled := make(chan struct{})
	if _, err := peer.Register(p, "stuck", func(ctx context.Context, _ struct{}) (int, error) {
		close(started)
		<-ctx.Done()
		close(canceled)
		<-release // ignores the end of its context
		return 0, nil
	}); err != nil {
		t.Fatal(err)
	}
	var ran []string
	p.OnClose(func(ctx context.Context) error {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("close hook without a bound")
		}
		ran = append(ran, "first")
		return nil
	})
	stop := p.OnClose(func(context.Context) error { ran = append(ran, "unregistered"); return nil })
	p.OnClose(func(context.Context) error { ran = append(ran, "second"); return errors.New("hook failed") })
	if !stop() || stop() {
		t.Fatal("stop of a close hook")
	}
	caller := newPeer(t, n, peer.AsClient())
	go caller.Call(context.Background(), "stuck", nil, peer.OnPeer(p.ID()), peer.Timeout(time.Minute))
	<-started

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = p.CloseContext(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || err.Error() == "" {
		t.Fatalf("close with a stuck function: %v", err)
	}
	<-canceled
	if len(ran) != 2 || ran[0] != "first" || ran[1] != "second" {
		t.Fatalf("hooks ran: %v", ran)
	}
	if err := p.Close(); !errors.Is(err, net.ErrClosed) || !errors.Is(err, peer.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
	close(release)
	// A hook registered on a closed peer runs at once.
	late := false
	if p.OnClose(func(context.Context) error { late = true; return nil })() || !late {
		t.Fatal("hook on a closed peer")
	}
	if _, err := peer.Register(p, "x", func(context.Context, int) (int, error) { return 0, nil }); !errors.Is(err, peer.ErrClosed) {
		t.Fatalf("register after close: %v", err)
	}
	if _, err := p.Call(context.Background(), "ping", nil, peer.OnAny()); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("call after close: %v", err)
	}
}

// TestPresenceWatchClose checks that a presence watch closes once.
func TestPresenceWatchClose(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	seen := make(chan peer.PresenceEvent, 16)
	w := p.WatchPresence(func(e peer.PresenceEvent) { seen <- e })
	q := newPeer(t, n)
	waitFor(t, "join", func() bool {
		select {
		case e := <-seen:
			return e.Peer.ID == q.ID()
		default:
			return false
		}
	})
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second close: %v", err)
	}
}

// TestOptionsValidate checks that invalid options are errors wrapping
// ErrInvalidOption and that zero fields take the defaults.
func TestOptionsValidate(t *testing.T) {
	n := single(t)
	for name, opt := range map[string]peer.Option{
		"id":             peer.WithID("a.b"),
		"empty id":       peer.WithID(""),
		"group":          peer.WithGroup("a b"),
		"codec":          peer.WithCodec(nil),
		"call timeout":   peer.WithCallTimeout(0),
		"heartbeat":      peer.WithPresence(0, time.Second),
		"gone":           peer.WithPresence(time.Second, time.Second),
		"max concurrent": peer.WithMaxConcurrent(-1),
		"options": func(o *peer.Options) error {
			o.GoneAfter = -1
			return nil
		},
		"gone before heartbeat": func(o *peer.Options) error {
			o.Heartbeat, o.GoneAfter = 2*time.Second, time.Second
			return nil
		},
	} {
		if p, err := peer.New(n.Conn(), opt); !errors.Is(err, peer.ErrInvalidOption) {
			if p != nil {
				p.Close()
			}
			t.Errorf("%s: %v, want ErrInvalidOption", name, err)
		}
	}
	p, err := peer.New(n.Conn(), func(o *peer.Options) error { *o = peer.Options{Heartbeat: 2 * time.Second}; return nil })
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	o := p.Options()
	if o.Codec != peer.JSON || o.CallTimeout != peer.DefaultCallTimeout || o.GoneAfter != 6*time.Second ||
		o.MaxConcurrent != peer.DefaultMaxConcurrent || o.ID == "" || o.Name == "" {
		t.Fatalf("defaults of zero fields: %+v", o)
	}
}

// TestCallOptionTypes checks that the options of one kind of call are
// not options of the other: a misuse does not compile.
func TestCallOptionTypes(t *testing.T) {
	callOpt := reflect.TypeOf((*peer.CallOption)(nil)).Elem()
	allOpt := reflect.TypeOf((*peer.CallAllOption)(nil)).Elem()
	for _, tc := range []struct {
		name      string
		v         any
		call, all bool
	}{
		{"OnPeer", peer.OnPeer("x"), true, false},
		{"OnAny", peer.OnAny(), true, false},
		{"OnPeers", peer.OnPeers("x"), false, true},
		{"InGroup", peer.InGroup("g"), true, true},
		{"Timeout", peer.Timeout(time.Second), true, true},
	} {
		ty := reflect.TypeOf(tc.v)
		if ty.Implements(callOpt) != tc.call || ty.Implements(allOpt) != tc.all {
			t.Errorf("%s: call option %v, fan-out option %v; want %v, %v", tc.name, ty.Implements(callOpt), ty.Implements(allOpt), tc.call, tc.all)
		}
	}
}
