package netcore_test

import (
	"net/netip"
	"testing"

	"github.com/peerbus/peerbus/internal/netlab"
	"github.com/peerbus/peerbus/netcore"
)

// TestInterfaceWithoutCarrier checks, in a network namespace, that an
// interface that is up without a carrier (as docker0 without
// containers) is reported not running, and that
// RoutesFor offers none of its addresses.
func TestInterfaceWithoutCarrier(t *testing.T) {
	netlab.Require(t)
	lab := netlab.New(t)
	h := lab.AddPublicHost("carrier", 1)
	// One end of a veth pair, up, with its other end down: no carrier.
	h.MustRun("ip", "link", "add", "nocarrier0", "type", "veth", "peer", "name", "nocarrier1")
	h.MustRun("ip", "addr", "add", "10.199.0.1/24", "dev", "nocarrier0")
	h.MustRun("ip", "link", "set", "nocarrier0", "up")

	var ifs []netcore.Interface
	var routes []netcore.Route
	err := h.Do(func() error {
		var err error
		if ifs, err = netcore.Interfaces(); err != nil {
			return err
		}
		routes, err = netcore.RoutesFor(netcore.IPv4)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, it := range ifs {
		switch it.Name {
		case "nocarrier0":
			found = true
			if !it.Up || it.Running {
				t.Errorf("nocarrier0: up=%v running=%v, want up and not running", it.Up, it.Running)
			}
		case "eth0":
			if !it.Up || !it.Running {
				t.Errorf("eth0: up=%v running=%v, want both", it.Up, it.Running)
			}
		}
	}
	if !found {
		t.Fatalf("no nocarrier0 among %+v", ifs)
	}
	offered := map[netip.Addr]string{}
	for _, r := range routes {
		offered[r.LocalIP] = r.Interface
	}
	if _, ok := offered[netip.MustParseAddr("10.199.0.1")]; ok {
		t.Errorf("RoutesFor offers the address of an interface without carrier: %+v", routes)
	}
	if offered[h.Addr()] != "eth0" {
		t.Errorf("RoutesFor does not offer eth0's %s: %+v", h.Addr(), routes)
	}
}
