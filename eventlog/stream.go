package eventlog

// Access to the log stream: finding or creating it, and the retry
// policy of every operation on it while JetStream is not current.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/peer"
)

// Emit retry bounds: while JetStream is not current (after a start or a
// leader change) Emit retries with a backoff from emitRetryMin to
// emitRetryMax, within its context (CallTimeout by default). One
// attempt waits at most emitAttemptTimeout for the stream's ack; a
// retried attempt carries the same event id, so it is stored once.
const (
	emitRetryMin       = 20 * time.Millisecond
	emitRetryMax       = 500 * time.Millisecond
	emitAttemptTimeout = 2 * time.Second
	// asyncStallWait is how long EmitAsync waits for a free slot when
	// asyncMaxPending emits are unacknowledged, before it tries again.
	asyncStallWait  = time.Second
	asyncMaxPending = 4096
)

var (
	syncPubOpts  = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)}
	asyncPubOpts = []jetstream.PublishOpt{jetstream.WithRetryAttempts(0), jetstream.WithStallWait(asyncStallWait)}
)

// ensure makes sure the log stream exists (creating it when needed) and
// returns it.
func (l *Log) ensure(ctx context.Context) (jetstream.Stream, error) {
	if r := l.stream.Load(); r != nil {
		return r.s, nil
	}
	l.smu.Lock()
	defer l.smu.Unlock()
	if r := l.stream.Load(); r != nil {
		return r.s, nil
	}
	var s jetstream.Stream
	var err error
	if l.cfg.Update {
		s, err = l.update(ctx, l.cfg)
	} else {
		s, err = l.js.Stream(ctx, Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = l.js.CreateStream(ctx, l.cfg.streamConfig())
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// A concurrent creator won with another configuration.
				s, err = l.js.Stream(ctx, Stream)
			}
		}
	}
	if err != nil {
		return nil, err
	}
	l.stream.Store(&streamRef{s})
	if ci := s.CachedInfo(); ci != nil {
		l.replicas.Store(int32(ci.Config.Replicas))
	}
	return s, nil
}

// update applies c to the log stream, creating it when missing. With
// no Replicas in c, an existing stream keeps its copies (those a
// clustered node set, see bus.Options.LogReplicas).
func (l *Log) update(ctx context.Context, c Config) (jetstream.Stream, error) {
	cfg := c.streamConfig()
	if c.Replicas <= 0 {
		if cur, err := l.js.Stream(ctx, Stream); err == nil {
			cfg.Replicas = cur.CachedInfo().Config.Replicas
		}
	}
	s, err := l.js.CreateOrUpdateStream(ctx, cfg)
	if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		// Another peer created it between our update and create.
		s, err = l.js.UpdateStream(ctx, cfg)
	}
	return s, err
}

// forget drops the known stream so the next use checks it again (it may
// have been deleted).
func (l *Log) forget() { l.stream.Store(nil) }

// errKind classifies a JetStream error for the emit retry loop.
type errKind int

const (
	errFatal     errKind = iota // return it (mapped)
	errRetry                    // JetStream not current: retry
	errNoStream                 // nobody stored it: check the stream, retry
	errAmbiguous                // no answer in time: retry (same id)
)

// errCodeMsgIDInProcess is JetStream's "duplicate message id is in
// process" (409): a message with the same id is being stored.
const errCodeMsgIDInProcess jetstream.ErrorCode = 10158

// quorumCheckTimeout bounds the look at the log's cluster after a
// failed emit.
const quorumCheckTimeout = time.Second

// quorumSilence is how long the log's leader has not heard from a
// replica when the replica counts as unreachable.
const quorumSilence = 3 * time.Second

func classify(err error) (errKind, error) {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrJetStreamNotEnabled),
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount),
		errors.Is(err, nats.ErrNoResponders):
		// The JetStream API has no responder: no JetStream on this bus.
		return errFatal, fmt.Errorf("%w (%v)", ErrNoJetStream, err)
	case errors.Is(err, jetstream.ErrNoStreamResponse):
		return errNoStream, err
	case errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, jetstream.ErrJetStreamPublisherClosed):
		return errFatal, err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, jetstream.ErrAsyncPublishTimeout), errors.Is(err, nats.ErrDisconnected),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		return errAmbiguous, err
	case errors.As(err, &apiErr):
		switch apiErr.ErrorCode {
		case 10008, // JetStream system temporarily unavailable
			10118, // stream is offline
			10005: // no suitable peers (a cluster still forming)
			return errRetry, err
		case jetstream.JSErrCodeStreamMessageExceedsMaximum:
			return errFatal, fmt.Errorf("%w: %v", peer.ErrPayloadTooLarge, err)
		case jetstream.JSErrCodeStreamNotFound:
			return errNoStream, err
		case 10077: // storing failed
			d := strings.ToLower(apiErr.Description)
			if strings.Contains(d, "too large") {
				return errFatal, fmt.Errorf("%w: %s", peer.ErrPayloadTooLarge, apiErr.Description)
			}
			if strings.Contains(d, "maximum") || strings.Contains(d, "resource") || strings.Contains(d, "limit") {
				return errFatal, fmt.Errorf("%w: %s", ErrLogFull, apiErr.Description)
			}
			return errFatal, err
		case 10002, 10023, 10047: // account or server resources exceeded
			return errFatal, fmt.Errorf("%w: %s", ErrLogFull, apiErr.Description)
		case jetstream.JSErrCodeJetStreamNotEnabled, jetstream.JSErrCodeJetStreamNotEnabledForAccount:
			return errFatal, fmt.Errorf("%w (%v)", ErrNoJetStream, err)
		case errCodeMsgIDInProcess:
			// An earlier attempt with this id is still being stored
			// (waiting for a quorum): retry with the same id.
			return errAmbiguous, err
		}
		if apiErr.Code == 503 {
			return errRetry, err
		}
	}
	return errFatal, err
}

// retry runs op until it succeeds, fails for good, or ctx ends, with a
// backoff while JetStream is not current. op gets a context bounded by
// emitAttemptTimeout.
func (l *Log) retry(ctx context.Context, op func(ctx context.Context) error) error {
	wait := emitRetryMin
	for {
		actx, cancel := context.WithTimeout(ctx, emitAttemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		kind, mapped := classify(err)
		if ctx.Err() != nil {
			// The deadline passed during this attempt: no more attempts.
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, nats.ErrTimeout) {
				return fmt.Errorf("%w: no answer from the event log: %w", peer.ErrTimeout, ctx.Err())
			}
			if !errors.Is(mapped, ErrNoLog) && (errors.Is(err, jetstream.ErrNoStreamResponse) || kind == errRetry) {
				return fmt.Errorf("%w: JetStream did not become available: %v (%w)", ErrNoLog, err, ctx.Err())
			}
			kind = errFatal
		}
		switch kind {
		case errFatal:
			return mapped
		case errNoStream:
			l.forget()
		}
		l.logger.Debug("event log not ready, retrying", "err", err, "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			if kind == errAmbiguous {
				return fmt.Errorf("%w: no answer from the event log: %v (%w)", peer.ErrTimeout, err, ctx.Err())
			}
			return fmt.Errorf("%w: JetStream did not become available: %v (%w)", ErrNoLog, err, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, emitRetryMax)
	}
}

// publish stores m in the log and returns the stream's ack. Once the
// stream is known, the first attempt goes straight to it; the retry
// loop (bounded by ctx and CallTimeout) only runs when it fails.
func (l *Log) publish(ctx context.Context, m *nats.Msg) (*jetstream.PubAck, error) {
	return l.publishAfter(ctx, m, false)
}

// publishAfter is publish; ambiguous says that an earlier attempt may
// have stored m (no answer in time).
func (l *Log) publishAfter(ctx context.Context, m *nats.Msg, ambiguous bool) (pa *jetstream.PubAck, err error) {
	start := time.Now()
	// A publish the server refuses (a policy without this event name)
	// fails at once with peer.ErrPermission, not at the timeout.
	ctx, stop := l.p.PermissionContext(ctx, m.Subject)
	defer stop()
	defer func() {
		if perr := peer.PermissionCause(ctx); err != nil && perr != nil {
			pa, err = nil, fmt.Errorf("eventlog: emit: %w", perr)
		}
	}()
	if l.stream.Load() != nil {
		actx, cancel := attemptContext(ctx)
		pa, err := l.js.PublishMsg(actx, m)
		cancel()
		if err == nil {
			return pa, nil
		}
		kind, mapped := classify(err)
		ambiguous = ambiguous || kind == errAmbiguous
		if kind == errFatal && ctx.Err() == nil {
			return nil, mapped
		} else if kind == errNoStream {
			l.forget()
		}
	}
	ctx, cancel := context.WithDeadline(ctx, start.Add(l.timeout))
	defer cancel()
	err = l.retry(ctx, func(ctx context.Context) error {
		if _, err := l.ensure(ctx); err != nil {
			return err
		}
		var err error
		pa, err = l.js.PublishMsg(ctx, m, syncPubOpts...)
		if err != nil && !ambiguous {
			kind, _ := classify(err)
			ambiguous = kind == errAmbiguous
		}
		return err
	})
	if err != nil {
		return nil, l.publishFailed(m, err, ambiguous)
	}
	return pa, nil
}

// publishFailed returns the error of a publish of m that failed for
// good: an *OutcomeError when an attempt may have stored it, in a
// *QuorumError when the log's cluster lost its quorum.
func (l *Log) publishFailed(m *nats.Msg, err error, ambiguous bool) error {
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, ErrClosed) {
		return err
	}
	if ambiguous || errors.Is(err, peer.ErrTimeout) {
		var id string
		if v := m.Header[HeaderEventID]; len(v) > 0 {
			id = v[0]
		}
		err = &OutcomeError{ID: id, Err: err}
	}
	if q := l.quorumLoss(); q != nil {
		q.Err = err
		return q
	}
	return err
}

// quorumLoss looks at the log's cluster (within quorumCheckTimeout) and
// returns a *QuorumError (without Err) when fewer than a majority of
// its nodes are reachable, nil when they are or when it cannot tell.
func (l *Log) quorumLoss() *QuorumError {
	if l.nc.IsClosed() {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), quorumCheckTimeout)
	defer cancel()
	s, err := l.js.Stream(ctx, Stream)
	if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader == "" {
		err = errors.New("no leader") // a member answered for a group without one
	}
	if err != nil {
		// No leader answered. The log's size is known from an earlier
		// answer; the nodes reachable from here answer a ping.
		nodes := int(l.replicas.Load())
		if nodes < 2 {
			nodes = 0
		}
		var apiErr *jetstream.APIError
		unavailable := errors.As(err, &apiErr) && apiErr.ErrorCode == 10008 // JetStream system temporarily unavailable
		if nodes == 0 && !unavailable {
			return nil
		}
		reachable := l.reachableServers()
		if nodes > 0 && reachable > nodes/2 {
			return nil // a majority is there: an election, not a lost quorum
		}
		return &QuorumError{Reachable: reachable, Nodes: nodes, NoLeader: true}
	}
	c := s.CachedInfo().Cluster
	if c == nil || len(c.Replicas) == 0 {
		return nil
	}
	nodes, reachable := 1+len(c.Replicas), 0
	if c.Leader != "" {
		reachable++
	}
	for _, r := range c.Replicas {
		// Offline comes late (the server's own view of a gone peer);
		// a replica the leader has not heard from for several Raft
		// heartbeats (one a second) is not reachable either.
		if !r.Offline && r.Active < quorumSilence {
			reachable++
		}
	}
	if reachable > nodes/2 {
		return nil
	}
	return &QuorumError{Reachable: reachable, Nodes: nodes}
}

// attemptContext bounds one attempt by emitAttemptTimeout, reusing ctx
// when its deadline is nearer.
func attemptContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= emitAttemptTimeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, emitAttemptTimeout)
}

// storedTime returns the time header of the stored event seq (used for
// a duplicate emit, whose ack names the first copy).
func (l *Log) storedTime(ctx context.Context, seq uint64) (time.Time, bool) {
	s, err := l.ensure(ctx)
	if err != nil {
		return time.Time{}, false
	}
	raw, err := s.GetMsg(ctx, seq)
	if err != nil || raw.Header == nil {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, raw.Header.Get(HeaderTime))
	return t, err == nil
}

// call runs op on the log stream within ctx bounded by the peer's call
// timeout, with the emit retry policy.
func (l *Log) call(ctx context.Context, op func(ctx context.Context, s jetstream.Stream) error) error {
	if err := l.closedErr(); err != nil {
		return err
	}
	ctx, cancel := l.callContext(ctx)
	defer cancel()
	return l.retry(ctx, func(ctx context.Context) error {
		s, err := l.ensure(ctx)
		if err != nil {
			return err
		}
		err = op(ctx, s)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			return jetstream.ErrNoStreamResponse // recreate and retry
		}
		return err
	})
}

// deleteConsumer deletes an ephemeral consumer now rather than when its
// inactivity threshold passes (best effort, within ctx and 2 seconds).
func (l *Log) deleteConsumer(ctx context.Context, cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || l.nc.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	_ = l.js.DeleteConsumer(ctx, Stream, info.Name)
}

// reachableServers counts the servers that answer an account STATZ ping
// ($SYS.REQ.ACCOUNT.PING.STATZ) within quorumCheckTimeout: the nodes of
// the cluster reachable from this connection; 0 when none answers (the
// ping is not allowed, or the server has no system account).
func (l *Log) reachableServers() int {
	inbox := l.nc.NewRespInbox()
	sub, err := l.nc.SubscribeSync(inbox)
	if err != nil {
		return 0
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := l.nc.PublishRequest("$SYS.REQ.ACCOUNT.PING.STATZ", inbox, []byte(`{"unused":true}`)); err != nil {
		return 0
	}
	seen := map[string]bool{}
	deadline := time.Now().Add(quorumCheckTimeout)
	for {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return len(seen)
		}
		var r struct {
			Server struct {
				ID string `json:"id"`
			} `json:"server"`
		}
		if json.Unmarshal(m.Data, &r) == nil && r.Server.ID != "" {
			seen[r.Server.ID] = true
		}
	}
}
