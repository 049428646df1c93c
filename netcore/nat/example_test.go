package nat_test

import (
	"context"
	"fmt"
	"log"
	"net/netip"
	"time"

	"github.com/peerbus/peerbus/netcore/nat"
)

// Run an RFC 5780 STUN server on two loopback addresses and classify the
// (absent) NAT between this host and it.
func Example() {
	ctx := context.Background()
	srv, err := nat.ListenServer(ctx, nat.ServerConfig{
		Listen: netip.MustParseAddrPort("127.0.0.1:0"),
		AltIP:  netip.MustParseAddr("127.0.0.2"),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	res, err := nat.Classify(ctx, nat.Config{
		Servers: []string{srv.Addr().String()},
		Timeout: 300 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("classic:", res.Classic)
	fmt.Println("mapping:", res.Mapping)
	fmt.Println("filtering:", res.Filtering)
	fmt.Println("port allocation:", res.PortAllocation)
	fmt.Println("mapped is local:", res.MappedAddress == res.LocalAddress)
	// Output:
	// classic: open-internet
	// mapping: endpoint-independent
	// filtering: endpoint-independent
	// port allocation: preserving
	// mapped is local: true
}

// Ask several servers for the external address and accept it once two
// agree.
func ExampleExternalAddress() {
	ctx := context.Background()
	var servers []string
	for range 3 {
		srv, err := nat.ListenServer(ctx, nat.ServerConfig{Listen: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			log.Fatal(err)
		}
		defer srv.Close()
		servers = append(servers, srv.Addr().String())
	}
	ext, err := nat.ExternalAddress(ctx, nat.Config{Servers: servers, Quorum: 2})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(ext.Address.Addr(), ext.Agreeing >= 2)
	// Output: 127.0.0.1 true
}

// Derive the RFC 3489 name from RFC 5780 behaviours.
func ExampleClassicName() {
	fmt.Println(nat.ClassicName(true, nat.EndpointIndependent, nat.AddressAndPortDependent))
	fmt.Println(nat.ClassicName(true, nat.AddressAndPortDependent, nat.AddressAndPortDependent))
	// Output:
	// port-restricted-cone
	// symmetric
}

// Predict ports from mappings made one after another.
func ExamplePortBehavior() {
	alloc, delta := nat.PortBehavior([]nat.PortSample{
		{Local: 40000, Mapped: 1024}, {Local: 40001, Mapped: 1026}, {Local: 40002, Mapped: 1028},
	})
	fmt.Println(alloc, delta)
	// Output: sequential 2
}
