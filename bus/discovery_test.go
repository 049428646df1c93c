package bus_test

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/peerbus/peerbus/bus"
)

func TestBeaconRoundTrip(t *testing.T) {
	for _, b := range []bus.Beacon{
		{Cluster: "peerbus", Name: "host-10-0-0-2-4222", Route: netip.MustParseAddrPort("10.0.0.2:6222")},
		{Cluster: "c", Name: "n", Route: netip.MustParseAddrPort("[2001:db8::1]:1")},
	} {
		data, err := b.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var got bus.Beacon
		if err := got.UnmarshalBinary(data); err != nil || got != b {
			t.Fatalf("round trip of %+v: %+v, %v", b, got, err)
		}
		if len(data) > 153 {
			t.Errorf("beacon of %d bytes", len(data))
		}
	}
	for _, b := range []bus.Beacon{
		{Cluster: "", Name: "n", Route: netip.MustParseAddrPort("10.0.0.2:6222")},
		{Cluster: "a.b", Name: "n", Route: netip.MustParseAddrPort("10.0.0.2:6222")},
		{Cluster: "c", Name: string(bytes.Repeat([]byte("x"), 65)), Route: netip.MustParseAddrPort("10.0.0.2:6222")},
		{Cluster: "c", Name: "n", Route: netip.MustParseAddrPort("127.0.0.1:6222")},
		{Cluster: "c", Name: "n", Route: netip.MustParseAddrPort("0.0.0.0:6222")},
		{Cluster: "c", Name: "n", Route: netip.MustParseAddrPort("239.1.1.1:6222")},
		{Cluster: "c", Name: "n", Route: netip.MustParseAddrPort("10.0.0.2:0")},
	} {
		if _, err := b.MarshalBinary(); !errors.Is(err, bus.ErrBeacon) {
			t.Errorf("%+v: %v, want ErrBeacon", b, err)
		}
	}
}

// FuzzBeacon checks that the beacon decoder never panics, fails only
// with its sentinel errors, and accepts only beacons that encode back to
// themselves. The seed corpus is in testdata/fuzz/FuzzBeacon.
func FuzzBeacon(f *testing.F) {
	good, err := bus.Beacon{Cluster: "peerbus", Name: "a", Route: netip.MustParseAddrPort("192.0.2.1:6222")}.MarshalBinary()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Fuzz(func(t *testing.T, data []byte) {
		var b bus.Beacon
		if err := b.UnmarshalBinary(data); err != nil {
			if !errors.Is(err, bus.ErrBeacon) && !errors.Is(err, bus.ErrBeaconVersion) {
				t.Fatalf("error without sentinel: %v", err)
			}
			if b != (bus.Beacon{}) {
				t.Fatalf("failed decode changed the beacon: %+v", b)
			}
			return
		}
		out, err := b.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded beacon %+v does not encode: %v", b, err)
		}
		var again bus.Beacon
		if err := again.UnmarshalBinary(out); err != nil || again != b {
			t.Fatalf("re-encoded beacon decodes to %+v, %v; want %+v", again, err, b)
		}
		// Only the reserved flags byte may differ from the input.
		if len(out) != len(data) || !bytes.Equal(out[:3], data[:3]) || !bytes.Equal(out[4:], data[4:]) {
			t.Fatalf("beacon %x re-encodes as %x", data, out)
		}
	})
}
