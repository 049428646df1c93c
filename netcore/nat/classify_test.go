package nat

import (
	"context"
	"errors"
	"math"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestClassifyLoopbackOpen(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	res, err := Classify(context.Background(), Config{Servers: []string{s.Addr().String()}})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	t.Logf("classification on loopback took %v (%d tests)", res.Duration, len(res.Tests))
	if res.NAT || res.Mapping != EndpointIndependent || res.Filtering != EndpointIndependent ||
		res.Classic != OpenInternet {
		t.Errorf("got nat=%v mapping=%s filtering=%s classic=%s, want open internet",
			res.NAT, res.Mapping, res.Filtering, res.Classic)
	}
	if res.MappedAddress != res.LocalAddress || res.LocalAddress.Addr() != loIP {
		t.Errorf("mapped %v local %v, want both 127.0.0.1:port", res.MappedAddress, res.LocalAddress)
	}
	if res.PortAllocation != PortPreserving || len(res.PortSamples) != DefaultPortSamples {
		t.Errorf("port allocation %s from %v, want preserving from %d samples",
			res.PortAllocation, res.PortSamples, DefaultPortSamples)
	}
	if res.Agreeing != 1 || res.Answered != 1 || res.Quorum != 1 {
		t.Errorf("agreeing/answered/quorum %d/%d/%d, want 1/1/1", res.Agreeing, res.Answered, res.Quorum)
	}
	if res.Duration > 300*time.Millisecond {
		t.Errorf("classification took %v on loopback, want well under a second", res.Duration)
	}
}

func TestClassifyExplicitLocal(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	res, err := Classify(context.Background(), Config{
		Servers: []string{s.Addr().String()},
		Local:   netip.AddrPortFrom(loIP, 0),
	})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	// Bound to 127.0.0.1, the sockets still get the answers sent from
	// 127.0.0.2: they are addressed to 127.0.0.1.
	if res.Classic != OpenInternet {
		t.Errorf("classic %s, want open internet; tests: %+v", res.Classic, res.Tests)
	}
}

func TestClassifyIPv6(t *testing.T) {
	ctx := context.Background()
	s, err := ListenServer(ctx, ServerConfig{Listen: netip.MustParseAddrPort("[::1]:0")})
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer s.Close()
	res, err := Classify(ctx, Config{Servers: []string{s.Addr().String()}})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	if res.NAT || res.MappedAddress.Addr() != netip.IPv6Loopback() || res.Mapping != EndpointIndependent {
		t.Errorf("got nat=%v mapped=%v mapping=%s", res.NAT, res.MappedAddress, res.Mapping)
	}
}

func TestClassifyPlainServer(t *testing.T) {
	s := startServer(t, ServerConfig{})
	res, err := Classify(context.Background(), Config{Servers: []string{s.Addr().String()}})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	// Without RFC 5780 the filtering tests get error 420: unknown.
	if res.NAT || res.Mapping != EndpointIndependent || res.Filtering != BehaviorUnknown ||
		res.Classic != ClassicUnknown {
		t.Errorf("got nat=%v mapping=%s filtering=%s classic=%s", res.NAT, res.Mapping, res.Filtering, res.Classic)
	}
}

// silent returns the address of a UDP socket that never answers.
func silent(t *testing.T) string {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn.LocalAddr().String()
}

func TestClassifyTimeout(t *testing.T) {
	begin := time.Now()
	res, err := Classify(context.Background(), Config{
		Servers: []string{silent(t)},
		Timeout: 150 * time.Millisecond,
	})
	elapsed := time.Since(begin)
	if !errors.Is(err, ErrNoResponse) {
		t.Fatalf("err %v, want ErrNoResponse", err)
	}
	t.Logf("error after %v: %v", elapsed, err)
	if res == nil || res.Classic != Blocked {
		t.Fatalf("result %+v, want classic blocked", res)
	}
	if elapsed > time.Second {
		t.Errorf("took %v with a 150ms timeout", elapsed)
	}
	for _, tc := range res.Tests {
		if tc.Answered || tc.Attempts < 2 {
			t.Errorf("test %+v: want unanswered after retransmissions", tc)
		}
	}
}

func TestClassifyContextCanceled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	begin := time.Now()
	_, err := Classify(ctx, Config{Servers: []string{silent(t)}, Timeout: 5 * time.Second})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want deadline exceeded", err)
	}
	if time.Since(begin) > time.Second {
		t.Errorf("took %v after the context ended", time.Since(begin))
	}
}

func TestClassifyConfigErrors(t *testing.T) {
	ctx := context.Background()
	if _, err := Classify(ctx, Config{}); !errors.Is(err, ErrNoServers) {
		t.Errorf("no servers: %v", err)
	}
	if _, err := Classify(ctx, Config{Servers: []string{"127.0.0.1:notaport"}}); !errors.Is(err, ErrBadServer) {
		t.Errorf("bad port: %v", err)
	}
	if _, err := Classify(ctx, Config{Servers: []string{"127.0.0.1:1"}, Quorum: 2}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("quorum > servers: %v", err)
	}
	if _, err := ExternalAddress(ctx, Config{}); !errors.Is(err, ErrNoServers) {
		t.Errorf("ExternalAddress without servers: %v", err)
	}
}

func TestResolveServer(t *testing.T) {
	cases := map[string]string{
		"127.0.0.1:3479": "127.0.0.1:3479",
		"127.0.0.1":      "127.0.0.1:3478",
		"[::1]:5000":     "[::1]:5000",
		"[::1]":          "[::1]:3478",
		"::1":            "[::1]:3478",
		"localhost:7":    "127.0.0.1:7",
	}
	for in, want := range cases {
		got, err := resolveServer(context.Background(), in)
		if err != nil || got.String() != want {
			t.Errorf("resolveServer(%q) = %v, %v; want %s", in, got, err, want)
		}
	}
}

func TestExternalAddressQuorum(t *testing.T) {
	a := startServer(t, ServerConfig{})
	b := startServer(t, ServerConfig{})
	dead := silent(t)
	servers := []string{a.Addr().String(), dead, b.Addr().String()}

	// Majority (2 of 3): returns once a and b agree, without waiting for
	// the dead server's timeout.
	ext, err := ExternalAddress(context.Background(), Config{Servers: servers, Timeout: 2 * time.Second})
	if err != nil {
		t.Fatalf("ExternalAddress: %v", err)
	}
	if ext.Agreeing != 2 || ext.Quorum != 2 || ext.Address.Addr() != loIP {
		t.Errorf("got %+v", ext)
	}
	if ext.Duration > time.Second {
		t.Errorf("took %v: did not return at quorum", ext.Duration)
	}

	// All three required: fails after the timeout.
	ext, err = ExternalAddress(context.Background(), Config{Servers: servers, Quorum: 3, Timeout: 150 * time.Millisecond})
	if !errors.Is(err, ErrNoQuorum) || ext == nil || ext.Agreeing != 2 {
		t.Errorf("quorum 3: %+v, %v; want ErrNoQuorum with 2 agreeing", ext, err)
	}
}

func TestClassifyQuorumAcrossServers(t *testing.T) {
	a := startServer(t, ServerConfig{AltIP: loAltIP})
	b := startServer(t, ServerConfig{})
	res, err := Classify(context.Background(), Config{Servers: []string{a.Addr().String(), b.Addr().String()}})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	if res.Agreeing != 2 || res.Quorum != 2 || res.Classic != OpenInternet {
		t.Errorf("got agreeing=%d quorum=%d classic=%s", res.Agreeing, res.Quorum, res.Classic)
	}
}

// lossyConn drops the first drops writes of every socket.
type lossyConn struct {
	net.PacketConn
	drops  int32
	writes atomic.Int32
}

func (c *lossyConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.writes.Add(1) <= c.drops {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, addr)
}

func TestClassifyRetransmits(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	lc := &net.ListenConfig{}
	res, err := Classify(context.Background(), Config{
		Servers:    []string{s.Addr().String()},
		Retransmit: 20 * time.Millisecond,
		ListenPacket: func(ctx context.Context, network, address string) (net.PacketConn, error) {
			c, err := lc.ListenPacket(ctx, network, address)
			if err != nil {
				return nil, err
			}
			return &lossyConn{PacketConn: c, drops: 1}, nil
		},
	})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	if res.Classic != OpenInternet {
		t.Errorf("classic %s, want open internet despite loss", res.Classic)
	}
	retried := false
	for _, tc := range res.Tests {
		if tc.Attempts > 1 && tc.Answered {
			retried = true
		}
	}
	if !retried {
		t.Errorf("no test needed a retransmission: %+v", res.Tests)
	}
}

func TestClassicName(t *testing.T) {
	cases := []struct {
		nat  bool
		m, f Behavior
		want Classic
	}{
		{false, EndpointIndependent, EndpointIndependent, OpenInternet},
		{false, EndpointIndependent, AddressAndPortDependent, SymmetricUDPFirewall},
		{false, EndpointIndependent, AddressDependent, SymmetricUDPFirewall},
		{false, EndpointIndependent, BehaviorUnknown, ClassicUnknown},
		{true, EndpointIndependent, EndpointIndependent, FullCone},
		{true, EndpointIndependent, AddressDependent, RestrictedCone},
		{true, EndpointIndependent, AddressAndPortDependent, PortRestrictedCone},
		{true, AddressDependent, AddressAndPortDependent, Symmetric},
		{true, AddressAndPortDependent, EndpointIndependent, Symmetric},
		{true, EndpointIndependent, BehaviorUnknown, ClassicUnknown},
		{true, BehaviorUnknown, EndpointIndependent, ClassicUnknown},
	}
	for _, tc := range cases {
		if got := ClassicName(tc.nat, tc.m, tc.f); got != tc.want {
			t.Errorf("ClassicName(%v, %s, %s) = %s, want %s", tc.nat, tc.m, tc.f, got, tc.want)
		}
	}
}

func TestPortBehavior(t *testing.T) {
	s := func(pairs ...uint16) []PortSample {
		var out []PortSample
		for i := 0; i+1 < len(pairs); i += 2 {
			out = append(out, PortSample{Local: pairs[i], Mapped: pairs[i+1]})
		}
		return out
	}
	cases := []struct {
		name    string
		samples []PortSample
		want    PortAllocation
		delta   int
	}{
		{"none", nil, PortUnknown, 0},
		{"preserving", s(4000, 4000, 5123, 5123), PortPreserving, 0},
		{"one translated", s(4000, 4001), PortUnknown, 0},
		{"sequential +1", s(4000, 1000, 5000, 1001, 6000, 1002, 7000, 1003), PortSequential, 1},
		{"sequential +2 with a gap", s(1, 1000, 2, 1002, 3, 1004, 4, 1007), PortSequential, 2},
		{"sequential -1", s(1, 1000, 2, 999, 3, 998), PortSequential, -1},
		{"wraps", s(1, 65534, 2, 65535, 3, 0, 4, 1), PortSequential, 1},
		{"random", s(1, 31000, 2, 1200, 3, 50000, 4, 42), PortRandom, 0},
		{"mixed signs", s(1, 1000, 2, 1001, 3, 1000), PortRandom, 0},
		{"repeat", s(1, 1000, 2, 1000, 3, 1000), PortRandom, 0},
	}
	for _, tc := range cases {
		got, delta := PortBehavior(tc.samples)
		if got != tc.want || delta != tc.delta {
			t.Errorf("%s: got %s/%d, want %s/%d", tc.name, got, delta, tc.want, tc.delta)
		}
	}
}

func BenchmarkClassifyLoopback(b *testing.B) {
	s := startServer(b, ServerConfig{AltIP: loAltIP})
	cfg := Config{Servers: []string{s.Addr().String()}}
	for b.Loop() {
		if _, err := Classify(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig("127.0.0.1:3478", "127.0.0.2:3478").Validate(); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	if err := (Config{}).Validate(); !errors.Is(err, ErrNoServers) {
		t.Errorf("no servers: %v, want ErrNoServers", err)
	}
	for _, c := range []Config{
		{Servers: []string{"a"}, RTTFactor: 1, MinTimeout: DefaultTimeout},
		{Servers: []string{"a"}, Timeout: time.Second, MinTimeout: time.Second},
		{Servers: []string{"a"}, Timeout: 50 * time.Millisecond}, // floor follows
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%+v: %v", c, err)
		}
	}
	for _, c := range []Config{
		{Servers: []string{"a"}, Timeout: -1},
		{Servers: []string{"a"}, Quorum: 2},
		{Servers: []string{"a"}, MinTimeout: -1},
		{Servers: []string{"a"}, MinTimeout: DefaultTimeout + 1},
		{Servers: []string{"a"}, Timeout: time.Second, MinTimeout: 2 * time.Second},
		{Servers: []string{"a"}, RTTFactor: -1},
		{Servers: []string{"a"}, RTTFactor: 0.5},
		{Servers: []string{"a"}, RTTFactor: math.NaN()},
		{Servers: []string{"a"}, RTTFactor: math.Inf(1)},
	} {
		if err := c.Validate(); !errors.Is(err, ErrInvalidOption) || !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: %v, want ErrInvalidOption", c, err)
		}
	}
}

func TestNoAnswerTimeout(t *testing.T) {
	c, err := Config{Servers: []string{"127.0.0.1"}}.resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ rtt, want time.Duration }{
		{0, DefaultMinTimeout},
		{time.Millisecond, DefaultMinTimeout},
		{20 * time.Millisecond, 200 * time.Millisecond},
		{40 * time.Millisecond, 400 * time.Millisecond},
		{time.Second, DefaultTimeout},
		{time.Duration(math.MaxInt64), DefaultTimeout},
	} {
		if got := c.noAnswer(tc.rtt); got != tc.want {
			t.Errorf("noAnswer(%v) = %v, want %v", tc.rtt, got, tc.want)
		}
	}
	c, err = Config{Servers: []string{"127.0.0.1"}, Timeout: 30 * time.Millisecond}.resolve(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got := c.noAnswer(time.Millisecond); got != 30*time.Millisecond {
		t.Errorf("with a 30ms timeout: noAnswer(1ms) = %v, want the timeout", got)
	}
}

// filteringConn drops every datagram that does not come from the
// address it was first sent to, as a port-restricted NAT would.
type filteringConn struct {
	net.PacketConn
	first atomic.Pointer[string]
}

func (c *filteringConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	s := addr.String()
	c.first.CompareAndSwap(nil, &s)
	return c.PacketConn.WriteTo(b, addr)
}

func (c *filteringConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, from, err := c.PacketConn.ReadFrom(b)
		if err != nil {
			return n, from, err
		}
		if first := c.first.Load(); first != nil && *first == from.String() {
			return n, from, nil
		}
	}
}

// TestClassifyFilteredTimeout checks that the filtering tests the NAT
// filters give up after the timeout derived from the first round trip,
// not after Config.Timeout, and retransmit before.
func TestClassifyFilteredTimeout(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	lc := &net.ListenConfig{}
	res, err := Classify(context.Background(), Config{
		Servers:    []string{s.Addr().String()},
		Timeout:    10 * time.Second,
		RTTFactor:  1,
		MinTimeout: 100 * time.Millisecond,
		ListenPacket: func(ctx context.Context, network, address string) (net.PacketConn, error) {
			c, err := lc.ListenPacket(ctx, network, address)
			if err != nil {
				return nil, err
			}
			return &filteringConn{PacketConn: c}, nil
		},
	})
	if err != nil {
		t.Fatalf("Classify: %v", err)
	}
	if res.Filtering != AddressAndPortDependent || res.Classic != SymmetricUDPFirewall {
		t.Errorf("filtering %s classic %s, want address-and-port-dependent, symmetric UDP firewall",
			res.Filtering, res.Classic)
	}
	for _, tc := range res.Tests {
		if tc.Name != "filtering-2" && tc.Name != "filtering-3" {
			continue
		}
		// The first round trip on loopback is usually far below 100ms,
		// so the floor applies; 10s would mean no derived timeout.
		_, after, _ := strings.Cut(tc.Error, " in ")
		waited, perr := time.ParseDuration(after)
		if tc.Answered || perr != nil || waited < 100*time.Millisecond || waited >= 10*time.Second || tc.Attempts < 3 {
			t.Errorf("%s: answered %v after %d attempts, error %q; want no answer after 3 attempts in the derived timeout",
				tc.Name, tc.Answered, tc.Attempts, tc.Error)
		}
	}
}
