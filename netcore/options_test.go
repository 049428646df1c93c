package netcore

import (
	"errors"
	"net/netip"
	"testing"
)

// TestInvalidOptions checks that Dial, DialAddr and Listen refuse a bad
// option value with an error wrapping ErrInvalidOption, opening nothing.
func TestInvalidOptions(t *testing.T) {
	bad := map[string]Option{
		"nil TLS":            WithTLS(nil),
		"nil framing":        WithFraming(nil),
		"negative backlog":   WithBacklog(-1),
		"negative queue":     WithAcceptQueue(-1),
		"negative idle":      WithIdleTimeout(-1),
		"zero handshake":     WithHandshakeTimeout(0),
		"unknown family":     WithFamily(5),
		"invalid local addr": WithLocalAddr(netip.AddrPort{}),
		"mismatched route":   WithRoute(Route{Family: IPv6, LocalIP: netip.MustParseAddr("127.0.0.1")}),
	}
	for name, o := range bad {
		if _, err := Dial(testCtx(t), TCP, "127.0.0.1:1", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Dial with %s: %v, want ErrInvalidOption", name, err)
		}
		if _, err := DialAddr(testCtx(t), UDP, netip.MustParseAddrPort("127.0.0.1:1"), o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("DialAddr with %s: %v, want ErrInvalidOption", name, err)
		}
		if _, err := Listen(testCtx(t), TCP, LoopbackRoute(IPv4), 0, o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Listen with %s: %v, want ErrInvalidOption", name, err)
		}
	}
	if d := DefaultOptions(); d.Backlog != DefaultBacklog || d.MaxConns != DefaultMaxConns || d.Framing == nil {
		t.Errorf("DefaultOptions = %+v", d)
	}
}

func TestInvalidSubscribeOptions(t *testing.T) {
	srv := mustListen(t, UDP, IPv4)
	for name, o := range map[string]SubscribeOption{
		"zero queue":     QueueSize(0),
		"unknown policy": WithOverflow(7),
	} {
		if _, err := srv.Subscribe("", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Subscribe with %s: %v, want ErrInvalidOption", name, err)
		}
	}
}
