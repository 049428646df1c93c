package bridge

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestInvalidOptions checks that every option refuses a bad value with
// an error wrapping ErrInvalidOption, before anything is dialled or
// exposed.
func TestInvalidOptions(t *testing.T) {
	ctx := context.Background()
	dialBad := map[string]DialOption{
		"unknown strategy":   WithStrategies("carrier-pigeon"),
		"zero timeout":       WithTimeout(Relay, 0),
		"timeout of unknown": WithTimeout("x", time.Second),
		"open timeout":       WithOpenTimeout(-time.Second),
		"session setup":      WithSessionSetupTimeout(0),
		"udp idle":           WithUDPIdleTimeout(0),
		"window":             WithWindow(0),
		"chunk":              WithChunkSize(-1),
		"keepalive":          WithKeepAlive(0),
		"datagram queue":     WithDatagramQueue(0),
		"empty stun server":  WithSTUN(""),
	}
	for name, o := range dialBad {
		if _, err := Dial(ctx, nil, AnyPeer, "svc", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Dial with %s: %v, want ErrInvalidOption", name, err)
		}
		if _, err := DialPacket(ctx, nil, AnyPeer, "svc", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("DialPacket with %s: %v, want ErrInvalidOption", name, err)
		}
	}
	pc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if err := ForwardUDP(ctx, nil, pc, AnyPeer, "svc", WithUDPIdleTimeout(-1)); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("ForwardUDP with a bad idle timeout: %v, want ErrInvalidOption", err)
	}
	if _, err := pc.WriteToUDP([]byte("x"), pc.LocalAddr().(*net.UDPAddr)); err == nil {
		t.Error("ForwardUDP refused its options but left its socket open")
	}
	exposeBad := map[string]ExposeOption{
		"udp idle":  WithUDPIdleTimeout(-time.Second),
		"window":    WithWindow(-1),
		"keepalive": WithKeepAlive(-1),
	}
	for name, o := range exposeBad {
		if _, err := Expose(ctx, nil, "svc", "tcp://127.0.0.1:1", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("Expose with %s: %v, want ErrInvalidOption", name, err)
		}
	}
}

func TestDefaultOptions(t *testing.T) {
	c, err := dialConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	d := DefaultDialOptions()
	if len(c.strategies) != len(DefaultStrategies) || c.timeouts[Relay] != DefaultRelayTimeout ||
		c.openTimeout != d.OpenTimeout || c.relay.window != DefaultWindow || c.udpIdle != DefaultUDPIdleTimeout {
		t.Errorf("dial defaults %+v do not match DefaultDialOptions %+v", c, d)
	}
	c, err = dialConfig([]DialOption{WithTimeout(Relay, time.Minute), WithWindow(1 << 20)})
	if err != nil {
		t.Fatal(err)
	}
	if c.timeouts[Relay] != time.Minute || c.timeouts[Direct] != DefaultDirectTimeout || c.relay.window != 1<<20 {
		t.Errorf("options not applied: %+v", c)
	}
	if DefaultDialOptions().Timeouts[Relay] != DefaultRelayTimeout {
		t.Error("an option changed the defaults")
	}
	e, err := exposeConfig([]ExposeOption{WithUDPIdleTimeout(time.Second), WithoutLoopback()})
	if err != nil {
		t.Fatal(err)
	}
	if e.udpIdle != time.Second || !e.noLoopback || e.relay.keepalive != DefaultKeepAlive {
		t.Errorf("expose options not applied: %+v", e)
	}
}

func TestInvalidSubscribeOptions(t *testing.T) {
	for name, o := range map[string]SubscribeOption{
		"zero queue":     QueueSize(0),
		"unknown policy": WithOverflow(7),
	} {
		if _, err := SubscribeRegex(nil, "", "", "", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("SubscribeRegex with %s: %v, want ErrInvalidOption", name, err)
		}
	}
}
