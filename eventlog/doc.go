// Package eventlog is the event log of a peerbus bus: events emitted by
// peers, stored in order in one JetStream stream, delivered to live
// subscribers, read again by replays, followed by durable subscriptions
// that resume where they left off, and folded into projections.
//
// A Log is a peer's access to the log: New(p) makes one on a
// *peer.Peer, whose id, group, connection, codec and logger it uses.
//
//	lg, err := eventlog.New(p)
//	ack, err := lg.Emit(ctx, "order.created", order)
//	sub, err := lg.Subscribe("order.*", handle)
//	for e, err := range lg.Replay(ctx, "order.>", eventlog.FromSeq(100)) { … }
//
// Emit stores an event and returns its sequence (EmitAsync does not wait
// for the log's ack, EmitTransient does not store the event at all).
// Subscribe receives events as they are emitted, or reads the log first
// (FromStart, FromSeq, FromTime) and then follows it. SubscribeDurable
// makes a durable subscription: acknowledged delivery, redelivery of
// failed events with a backoff, dead letters. Replay and Count read what
// is stored. NewProjection folds events into a state with snapshots.
// Info, DurableInfo, DeleteDurable and Configure administer the log.
//
// Options say where they apply by their type: a ReplayOption, a
// SubscribeOption and a DurableOption are distinct, so that an option
// of a durable subscription (MaxDeliver, AckWait…) cannot be given to a
// replay. Filters (FromPeers, FromGroups) and start positions (FromStart,
// FromSeq, FromTime) are all three. Invalid values give errors wrapping
// ErrInvalidOption.
//
// Closing: Close ends the Log's subscriptions and waits (a bounded time)
// for their handlers; closing the peer closes its logs too (New
// registers with peer.Peer.OnClose). A second Close, and every use of a
// closed Log, gives an error wrapping net.ErrClosed (ErrClosed; when the
// peer closed it, the error matches peer.ErrClosed too). A Subscription
// closes the same way.
//
// The names on the bus (subjects, headers, the stream PEERBUS_EVENTS and
// its configuration) are described in docs/PROTOCOL.md: a client in
// another language reads and writes the same log.
package eventlog
