// Package bridge joins netcore to the bus: it makes local TCP and UDP
// services reachable by other peers under a name, finds the best path
// between two peers (through NATs when it can, over the bus itself when
// it must), and links netcore pipes and bus subjects.
//
// # Services
//
// Expose makes a local service ("tcp://127.0.0.1:8080" or
// "udp://127.0.0.1:53") reachable as a name on a peer. Dial (TCP) and
// DialPacket (UDP) reach it from any other peer by the exposer's peer id,
// or from any peer exposing the name (AnyPeer), and return a *Conn (a
// net.Conn with CloseWrite) or a *PacketConn (a net.Conn with datagram
// semantics). Only exposed names are reachable: a dialer names a
// service, never an address. The exposer dials its target anew for every
// session.
//
// # Paths
//
// The two sides exchange, over the bus, the addresses they can be reached
// at (interface addresses from netcore, and the external address a STUN
// server reports, from netcore/nat: servers are configured with WithSTUN,
// none is contacted otherwise), their NAT classification and a session
// key. The dialer then tries the strategies in order, each with its own
// timeout (WithTimeout), skipping those that cannot work:
//
//   - Direct: the dialer connects to the exposer's addresses.
//   - Reverse: the exposer connects to the dialer's addresses.
//   - PunchUDP (UDP services): UDP hole punching; both sides probe each
//     other's addresses, first with low-TTL opening probes that open their
//     own NAT without reaching the other one.
//   - PunchTCP: TCP hole punching by simultaneous open from the ports
//     the sides advertised, which needs port-preserving NATs (as
//     netcore/nat measures them) or none. UDP services use it too, with
//     their datagrams framed on the TCP connection.
//   - Relay: the bytes travel over the bus, which always works while both
//     peers are on it, across cluster routes and leafnodes alike.
//
// WithStrategies restricts the strategies; Conn.Path and Conn.Result tell
// which one connected and how every attempt went. A raw (non-relayed)
// connection is encrypted and authenticated before use: TLS 1.3 on TCP,
// DTLS 1.2 on UDP, each side presenting a per-session certificate whose
// fingerprint the other received in the offer or the answer, so a stray
// or replayed connection or datagram cannot pass for the peer. Relay
// frames are sealed with the keys of a Noise handshake. No key travels
// on the bus.
//
// # Relay
//
// A relayed stream is an ordered byte stream over two bus subjects, in
// chunks within the bus max payload. The receiver grants credit (its
// window, WithWindow): the sender never has more than that in flight and
// Write blocks, so nothing buffers without bound. CloseWrite sends a fin
// (the other side reads EOF and can still write); Close also tells the
// other side. A chunk that goes missing (core NATS delivers at most once)
// fails the stream with ErrRelayLost instead of corrupting it, a silent
// peer fails it with ErrPeerGone after DeadFactor keepalive intervals,
// and deadlines work as on any net.Conn. The frames are specified in
// docs/PROTOCOL.md.
//
// # Pipes and subjects
//
// PipeToSubject publishes a netcore pipe's messages on a subject;
// SubjectToPipe sends a subject's messages into a pipe. SubscribeRegex
// filters bus traffic by regular expressions over subject and payload
// into a bounded queue read with Recv, with the semantics of netcore's
// pipe subscriptions.
package bridge
