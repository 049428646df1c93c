package nat

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Classify detects the NAT between this host and the configured STUN
// servers: the mapped address (agreed by a quorum of servers), the RFC
// 5780 mapping and filtering behaviours against the primary server, the
// RFC 3489 classic name and the port allocation behaviour.
//
// All probes run in parallel where the RFC 5780 tests allow it: test I
// against every server, the filtering tests on their own socket, and the
// port samples on fresh sockets; only mapping tests II and III wait for
// test I's OTHER-ADDRESS, and then run together. On a loss-free link
// classification therefore takes a few round trips, plus one no-answer
// timeout when the NAT filters (a filtering test is negative only once
// its timeout expired). That timeout is derived from the first round
// trip to the primary server (Config.RTTFactor, Config.MinTimeout,
// bounded by Config.Timeout).
//
// If no server answers, Classify returns a Result whose Classic is
// Blocked together with an error wrapping ErrNoResponse. If too few
// servers agree on the mapped IP, it returns the full Result together
// with an error wrapping ErrNoQuorum. Other errors (bad configuration,
// sockets, context) come with a nil Result.
func Classify(ctx context.Context, cfg Config) (*Result, error) {
	start := time.Now()
	c, err := cfg.resolve(ctx)
	if err != nil {
		return nil, err
	}
	r := newRun(ctx, c)
	defer r.close()

	mainSock, filterSock, sampleSocks, err := r.openSockets(c)
	if err != nil {
		return nil, err
	}

	primary := c.servers[0]
	localIP := mainSock.local.Addr()
	if !localIP.IsValid() || localIP.IsUnspecified() {
		if ip, err := routeSource(c.network, primary.addr); err == nil {
			localIP = ip
		}
	}
	res := &Result{
		LocalAddress:   netip.AddrPortFrom(localIP, mainSock.local.Port()),
		Mapping:        BehaviorUnknown,
		Filtering:      BehaviorUnknown,
		Classic:        ClassicUnknown,
		PortAllocation: PortUnknown,
		Servers:        len(c.servers),
		Quorum:         c.quorum,
	}

	// The port samples go first, back to back, so the NAT allocates
	// their mappings in this order and nothing else interleaves.
	samples := make([]*probe, len(sampleSocks))
	for i, s := range sampleSocks {
		samples[i] = r.start("port-sample", primary, s, primary.addr, 0)
	}
	// Filtering tests (RFC 5780 section 4.4) on a socket that only ever
	// sends to the primary address, all three at once.
	f1 := r.start("filtering-1", primary, filterSock, primary.addr, 0)
	f2 := r.start("filtering-2", primary, filterSock, primary.addr, changeIPFlag|changePortFlag)
	f3 := r.start("filtering-3", primary, filterSock, primary.addr, changePortFlag)
	// Test I against every server from the main socket.
	bindings := make([]*probe, len(c.servers))
	for i, srv := range c.servers {
		bindings[i] = r.start("binding", srv, mainSock, srv.addr, 0)
	}

	// Mapping tests (RFC 5780 section 4.3).
	if t1, ok := bindings[0].wait(); ok && t1.errCode == 0 && t1.mapped.IsValid() {
		res.NAT = t1.mapped != res.LocalAddress
		res.Mapping = r.mapping(primary, mainSock, t1, res.NAT)
	}
	res.Filtering = filtering(primary.addr, f1, f2, f3)

	// Quorum over the test I answers.
	answers := make([]netip.AddrPort, len(bindings))
	for i, b := range bindings {
		if a, ok := b.wait(); ok && a.errCode == 0 {
			answers[i] = a.mapped
		}
	}
	res.MappedAddress, res.Answered, res.Agreeing = agree(answers)

	res.PortSamples = portSamples(samples, sampleSocks, res.MappedAddress)
	res.PortAllocation, res.PortDelta = PortBehavior(res.PortSamples)

	r.close() // stop leftover probes so every test is recorded
	res.Tests = r.recorded()
	if res.Answered == 0 {
		res.Classic = Blocked
	} else if res.Mapping != BehaviorUnknown || !res.NAT {
		res.Classic = ClassicName(res.NAT, res.Mapping, res.Filtering)
	}
	res.Duration = time.Since(start)
	res.DurationMillis = millis(res.Duration)

	return classifyResult(ctx, c, res)
}

// openSockets opens the probe sockets of a classification: the main
// one (test I and the mapping tests), the filtering one, and one a port
// sample.
func (r *run) openSockets(c *config) (mainSock, filterSock *socket, samples []*socket, err error) {
	if mainSock, err = r.open(c.Local); err != nil {
		return nil, nil, nil, err
	}
	if filterSock, err = r.open(netip.AddrPortFrom(c.Local.Addr(), 0)); err != nil {
		return nil, nil, nil, err
	}
	for range max(c.PortSamples, 0) {
		s, err := r.open(netip.AddrPortFrom(c.Local.Addr(), 0))
		if err != nil {
			return nil, nil, nil, err
		}
		samples = append(samples, s)
	}
	return mainSock, filterSock, samples, nil
}

// portSamples collects the answered port samples mapped to the same
// external IP as mapped (any, if mapped is invalid).
func portSamples(samples []*probe, socks []*socket, mapped netip.AddrPort) []PortSample {
	var out []PortSample
	for i, p := range samples {
		a, ok := p.wait()
		if !ok || a.errCode != 0 || !a.mapped.IsValid() {
			continue
		}
		if mapped.IsValid() && a.mapped.Addr() != mapped.Addr() {
			continue
		}
		out = append(out, PortSample{Local: socks[i].local.Port(), Mapped: a.mapped.Port()})
	}
	return out
}

// classifyResult returns res with the error its outcome calls for: the
// context's, ErrNoResponse (with the Blocked result) or ErrNoQuorum
// (with the full result).
func classifyResult(ctx context.Context, c *config, res *Result) (*Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nat: classify: %w", err)
	}
	if res.Answered == 0 {
		return res, fmt.Errorf("%w: %d server(s) silent for %v (%s first)",
			ErrNoResponse, len(c.servers), c.Timeout, c.servers[0].name)
	}
	if res.Agreeing < c.quorum {
		return res, fmt.Errorf("%w: %d of %d agree, quorum %d",
			ErrNoQuorum, res.Agreeing, len(c.servers), c.quorum)
	}
	return res, nil
}

// mapping runs mapping tests II and III after test I's answer t1. Both
// need only test I's OTHER-ADDRESS, so they run at once; test III's
// answer matters only if test II's mapping differs from test I's.
func (r *run) mapping(primary server, s *socket, t1 answer, natted bool) Behavior {
	if !natted {
		return EndpointIndependent // no NAT: nothing to map
	}
	other := t1.other
	if !other.IsValid() || other.Addr() == primary.addr.Addr() {
		return BehaviorUnknown // the server does not do RFC 5780
	}
	p2 := r.start("mapping-2", primary, s, netip.AddrPortFrom(other.Addr(), primary.addr.Port()), 0)
	p3 := r.start("mapping-3", primary, s, other, 0)
	t2, ok := p2.wait()
	if !ok || t2.errCode != 0 || !t2.mapped.IsValid() {
		p3.stop()
		return BehaviorUnknown
	}
	if t2.mapped == t1.mapped {
		p3.stop()
		return EndpointIndependent
	}
	t3, ok := p3.wait()
	if !ok || t3.errCode != 0 || !t3.mapped.IsValid() {
		return BehaviorUnknown
	}
	if t3.mapped == t2.mapped {
		return AddressDependent
	}
	return AddressAndPortDependent
}

// filtering interprets filtering tests I (plain), II (change IP and port)
// and III (change port), all sent from one socket to the primary address.
// An answer counts only if it really came from the changed address: a
// server that ignores CHANGE-REQUEST leaves the behaviour unknown.
func filtering(primary netip.AddrPort, f1, f2, f3 *probe) Behavior {
	if a, ok := f2.wait(); ok {
		f3.stop()
		if a.errCode == 0 && a.from.Addr() != primary.Addr() && a.from.Port() != primary.Port() {
			return EndpointIndependent
		}
		return BehaviorUnknown
	}
	if a, ok := f3.wait(); ok {
		if a.errCode == 0 && a.from.Addr() == primary.Addr() && a.from.Port() != primary.Port() {
			return AddressDependent
		}
		return BehaviorUnknown
	}
	// Neither changed response arrived: the NAT filters them, provided
	// the server is reachable and does RFC 5780.
	a, ok := f1.wait()
	if !ok || a.errCode != 0 || !a.other.IsValid() || a.other.Addr() == primary.Addr() {
		return BehaviorUnknown
	}
	return AddressAndPortDependent
}

// agree groups mapped addresses by IP and returns the largest group's
// first address (in server order; ties go to the earlier group), how many
// answered and how many agree.
func agree(answers []netip.AddrPort) (addr netip.AddrPort, answered, agreeing int) {
	counts := make(map[netip.Addr]int)
	for _, a := range answers {
		if a.IsValid() {
			answered++
			counts[a.Addr()]++
		}
	}
	for _, a := range answers {
		if a.IsValid() && counts[a.Addr()] > agreeing {
			addr, agreeing = a, counts[a.Addr()]
		}
	}
	return addr, answered, agreeing
}

// routeSource returns the local IP the kernel would use to reach dst. A
// connected UDP socket sends nothing.
func routeSource(network string, dst netip.AddrPort) (netip.Addr, error) {
	conn, err := net.DialUDP(network, nil, net.UDPAddrFromAddrPort(dst))
	if err != nil {
		return netip.Addr{}, err
	}
	defer conn.Close()
	return netAddrPort(conn.LocalAddr()).Addr(), nil
}

// ExternalAddress asks every configured server for the mapped address of
// one socket, in parallel, and returns as soon as a quorum agrees on the
// IP (see Config.Quorum). It runs no RFC 5780 test and needs no RFC 5780
// server. If too few agree it returns the External together with an error
// wrapping ErrNoQuorum (or ErrNoResponse if none answered).
func ExternalAddress(ctx context.Context, cfg Config) (*External, error) {
	start := time.Now()
	c, err := cfg.resolve(ctx)
	if err != nil {
		return nil, err
	}
	r := newRun(ctx, c)
	defer r.close()
	s, err := r.open(c.Local)
	if err != nil {
		return nil, err
	}
	probes := make([]*probe, len(c.servers))
	for i, srv := range c.servers {
		probes[i] = r.start("binding", srv, s, srv.addr, 0)
	}
	finished := make(chan int, len(probes))
	for i, p := range probes {
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			p.wait()
			finished <- i
		}()
	}
	ext := &External{Servers: len(c.servers), Quorum: c.quorum}
	answers := make([]netip.AddrPort, len(probes))
	for range probes {
		i := <-finished
		if a, ok := probes[i].wait(); ok && a.errCode == 0 {
			answers[i] = a.mapped
		}
		ext.Address, ext.Answered, ext.Agreeing = agree(answers)
		if ext.Agreeing >= c.quorum {
			break
		}
	}
	r.close()
	ext.Tests = r.recorded()
	ext.Duration = time.Since(start)
	ext.DurationMillis = millis(ext.Duration)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("nat: external address: %w", err)
	}
	if ext.Answered == 0 {
		return ext, fmt.Errorf("%w: %d server(s) silent for %v", ErrNoResponse, len(c.servers), c.Timeout)
	}
	if ext.Agreeing < c.quorum {
		return ext, fmt.Errorf("%w: %d of %d agree, quorum %d", ErrNoQuorum, ext.Agreeing, len(c.servers), c.quorum)
	}
	return ext, nil
}
