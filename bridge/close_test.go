package bridge

import (
	"errors"
	"net"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
)

// TestConnCloseTwice checks the close contract of the dial side's
// connections on a raw and a relayed path: a second Close reports
// ErrClosed.
func TestConnCloseTwice(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]))
	for _, svc := range []struct{ name, target string }{{"echo", echotest.TCP(t)}, {"uecho", echotest.UDP(t)}} {
		s, err := Expose(ctxT(t, 5*time.Second), pe, svc.name, svc.target)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
	}
	for _, st := range []Strategy{Direct, Relay} {
		c, err := Dial(ctxT(t, 20*time.Second), pd, pe.ID(), "echo", WithStrategies(st))
		if err != nil {
			t.Fatal(err)
		}
		pc, err := DialPacket(ctxT(t, 20*time.Second), pd, pe.ID(), "uecho", WithStrategies(st))
		if err != nil {
			t.Fatal(err)
		}
		for what, closeFn := range map[string]func() error{"Conn": c.Close, "PacketConn": pc.Close} {
			if err := closeFn(); err != nil {
				t.Errorf("%s over %s: first Close: %v", what, st, err)
			}
			if err := closeFn(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
				t.Errorf("%s over %s: second Close: %v, want ErrClosed", what, st, err)
			}
		}
	}
}
