// Package peer makes a process a participant of a peerbus bus: it serves
// tagged functions to the other peers, calls theirs, and knows which
// peers are live.
//
// A Peer runs on a NATS connection (usually a bus.Node's). Serving:
// Register and RegisterRaw serve a function under a tag, on the peer's
// own subject, on a load-balanced subject (any peer of the tag, or any
// peer of the tag in the peer's group) and on a fan-out subject.
// Calling: a Func (returned by Register, or Stub for a function served
// elsewhere) runs locally, on one chosen peer (OnPeer), on any one peer
// (OnAny, within a group with InGroup), or on every peer offering the
// tag (CallAll). Presence: every peer announces itself and heartbeats;
// Peers lists the live ones, WatchPresence reports joins, leaves and
// peers gone silent, and QueryPeers asks the bus from any connection.
//
// Events stored in the bus's event log (emit, subscribe, replay, durable
// subscriptions, projections) are package eventlog, built on a Peer.
//
// Everything a peer does is plain NATS, described in docs/PROTOCOL.md:
// a client in another language can serve and call tags the same way.
//
// Options follow one rule: New takes Option functions that check their
// value and fail with an error wrapping ErrInvalidOption; in an Options
// value, a zero field means its documented default. Close is the same
// for every closable value of the package (Peer, PresenceWatch): it is
// idempotent, a second call returns an error wrapping net.ErrClosed, and
// it waits a bounded time (see Peer.CloseContext).
package peer
