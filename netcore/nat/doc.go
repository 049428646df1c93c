// Package nat detects the NAT in front of a host with STUN, and provides
// a STUN server any node can run.
//
// # Detection
//
// Classify asks the configured STUN servers (Config.Servers; there is no
// default server, so nothing is contacted unless listed) and reports a
// Result:
//
//   - the mapped (server-reflexive) address, once a quorum of servers
//     agree on its IP (Config.Quorum, a majority by default);
//   - the RFC 5780 mapping behaviour (tests I-III of section 4.3), one
//     of endpoint-independent, address-dependent and
//     address-and-port-dependent, and the filtering behaviour (section
//     4.4, same three), both measured against the first (primary) server,
//     which must support RFC 5780;
//   - the RFC 3489 name derived from both (ClassicName): open internet,
//     full cone, restricted cone, port-restricted cone, symmetric,
//     symmetric UDP firewall or blocked;
//   - the port allocation behaviour across several fresh sockets
//     (PortBehavior: preserving, sequential with a delta, or random),
//     which hole punching uses to predict ports;
//   - every STUN transaction made (Result.Tests) and the total duration.
//
// Probes run in parallel wherever the tests allow (mapping tests II and
// III together once test I named the server's other address, the three
// filtering tests together from the start), each with its own
// retransmissions (Config.Retransmit, doubling) inside a short timeout.
// Until a server has answered once, a probe waits at most Config.Timeout
// (500ms by default); after that, the probes to it still waiting give up
// after Config.RTTFactor times that first round trip (10 by default),
// but not before Config.MinTimeout (100ms) and never after
// Config.Timeout, and retransmit at least every quarter of that. On a
// loss-free link classification costs a few round trips, plus one such
// timeout when the NAT filters, since a filtering test is only negative
// once its timeout expired: a few milliseconds on loopback, about 0.1s
// behind a filtering NAT on a fast link.
//
// ExternalAddress is the cheap part alone: one Binding request to every
// server, returning as soon as a quorum agrees.
//
// # Server
//
// ListenServer starts a Server that answers Binding requests with
// XOR-MAPPED-ADDRESS and MAPPED-ADDRESS. Given a second IP address
// (ServerConfig.AltIP) it listens on two IPs times two ports and
// implements RFC 5780: CHANGE-REQUEST (answer from the other IP and/or
// port), RESPONSE-PORT, PADDING, OTHER-ADDRESS and RESPONSE-ORIGIN. It
// ignores anything that is not a well-formed Binding request and never
// answers with more than it was asked. Close is idempotent and waits for
// the server's goroutines.
//
// Both sides use github.com/pion/stun/v3 for the STUN codec. The package
// only speaks STUN over UDP, RFC 5389 and later (messages with the magic
// cookie); classic RFC 3489 clients are ignored.
package nat
