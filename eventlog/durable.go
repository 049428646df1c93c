package eventlog

// Subscriptions that read the log: from a start position, or durable
// (acknowledged, resumed, retried, dead-lettered).

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Defaults of durable subscriptions.
const (
	// DefaultMaxDeliver is how many times a durable subscription tries an
	// event before it gives up on it (dead letter).
	DefaultMaxDeliver = 5
	// DefaultAckWait is how long a durable subscription's handler may
	// run before the event is delivered again (to this or another
	// subscriber of the same durable).
	DefaultAckWait = 30 * time.Second
	// DefaultMaxAckPending is how many events of a durable subscription
	// may be in flight at once. With 1 the events are handled strictly in
	// log order, retries included.
	DefaultMaxAckPending = 1
)

// defaultRetryBackoff is the delay before an event whose handler failed
// is delivered again, by delivery number (the last value repeats).
var defaultRetryBackoff = []time.Duration{time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}

// DeadLetter is the payload of the event a durable subscription emits
// when it gives up on an event: its name is DeadLetterPrefix plus the
// original name ("_dead.order.created"), emitted by the subscribing
// peer. The original event stays in the log at Seq. No dead letter is
// emitted for a dead-letter event.
type DeadLetter struct {
	// Durable is the durable subscription that gave up.
	Durable string `json:"durable"`
	// Subscriber is the id of the peer whose handler failed.
	Subscriber string `json:"subscriber"`
	// EventID, Seq, Name, Peer, Group and Time identify the event.
	EventID string    `json:"event_id"`
	Seq     uint64    `json:"seq"`
	Name    string    `json:"name"`
	Peer    string    `json:"peer"`
	Group   string    `json:"group,omitempty"`
	Time    time.Time `json:"time"`
	// Deliveries is how many times the event was delivered.
	Deliveries int `json:"deliveries"`
	// Error is the last handler error.
	Error string `json:"error"`
}

// SubscribeDurable makes the durable subscription name (one subject
// token, at most 128 bytes) to the events whose name matches pattern.
// Its position in the log is kept by the bus: after the subscriber or
// its node restarts, a subscription with the same name resumes with the
// first event it had not acknowledged. An event is acknowledged when
// the handler returns nil; a handler error (or panic) means the event is
// delivered again after a backoff (see RetryBackoff); when it fails on
// delivery MaxDeliver or later, the subscription emits a dead-letter
// event (see DeadLetter) and moves on. A handler interrupted by Close
// (its context canceled) hands its event back, to be delivered again at
// once; an event whose subscriber crashed is delivered again after
// AckWait. Such deliveries count in Event.Deliveries but never give up
// on an event: only a handler failure does. A new durable starts with the events
// emitted from now on, unless a Start (FromStart, FromSeq, FromTime)
// says otherwise; on resume the Start is ignored, while the filters and
// delivery settings become the subscriber's.
//
// Events are delivered in log order, one at a time (MaxAckPending 1),
// so the order of each peer's events is kept, retries included. An
// event the bus delivers again after the subscription acknowledged it
// (its AckWait ran out before the ack reached the bus) is acknowledged
// again without calling the handler; with a larger MaxAckPending the
// handler gets such a redelivery too. An event whose acknowledgement
// failed (reported to the peer's OnError) is handled again.
// Several subscribers using the same durable share its events.
func (l *Log) SubscribeDurable(name, pattern string, h Handler, opts ...DurableOption) (*Subscription, error) {
	if h == nil {
		return nil, errors.New("eventlog: nil event handler")
	}
	if err := validDurable(name); err != nil {
		return nil, err
	}
	cfg := readConfig{maxDeliver: DefaultMaxDeliver, ackWait: DefaultAckWait,
		maxAckPending: DefaultMaxAckPending, backoff: defaultRetryBackoff}
	for _, o := range opts {
		if err := o.applyDurable(&cfg); err != nil {
			return nil, err
		}
	}
	subjects, err := FilterSubjects(pattern, cfg.groups, cfg.peers)
	if err != nil {
		return nil, err
	}
	return l.subscribeLog(pattern, subjects, h, cfg, name)
}

// logSub is the log side of a Subscription.
type logSub struct {
	l       *Log
	s       *Subscription
	h       Handler
	cfg     readConfig
	durable string                    // "" for a subscription that is not durable
	keep    func(subject string) bool // the events to hand out, nil: all (see readFilter)

	ctx    context.Context // handlers' context, canceled by stop
	cancel context.CancelFunc

	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	cons    jetstream.Consumer
	stopped bool
	// active counts the work on delivered messages (a handler, handing
	// an event back); idle is closed when it drops to 0.
	active int
	idle   chan struct{}

	seq atomic.Uint64
}

// stop stops the consumer and cancels the handlers' context; busy
// reports that a handler runs (the subscription is untracked when it is
// done).
func (ls *logSub) stop() (busy bool) {
	ls.cancel()
	ls.mu.Lock()
	ls.stopped = true
	cc := ls.cc
	busy = ls.active > 0
	ls.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
	return busy
}

// begin registers work on a delivered message: a handler (refused once
// the subscription stopped), or handing an event back.
func (ls *logSub) begin(handler bool) bool {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if handler && ls.stopped {
		return false
	}
	if ls.active == 0 {
		ls.idle = make(chan struct{})
	}
	ls.active++
	return true
}

// end ends work registered by begin; the Log forgets a subscription
// stopped meanwhile once the last work ends.
func (ls *logSub) end() {
	ls.mu.Lock()
	ls.active--
	var idle chan struct{}
	if ls.active == 0 {
		idle, ls.idle = ls.idle, nil
	}
	stopped := ls.stopped
	ls.mu.Unlock()
	if idle != nil {
		close(idle)
		if stopped {
			ls.l.untrack(ls.s)
		}
	}
}

// waitHandler waits, within ctx, until no handler of the subscription
// runs and the events it had are settled (handed back, for a durable).
func (ls *logSub) waitHandler(ctx context.Context) error {
	ls.mu.Lock()
	idle := ls.idle
	ls.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("eventlog: close: an event handler did not return: %w", ctx.Err())
	}
}

// wait waits, within ctx, until the consumer has stopped (when no
// handler runs: a running one may be the caller), then deletes the
// ordered consumer of a subscription that is not durable.
func (ls *logSub) wait(ctx context.Context) error {
	ls.mu.Lock()
	cc, cons, running := ls.cc, ls.cons, ls.active > 0
	ls.mu.Unlock()
	if cc == nil {
		return nil
	}
	if !running {
		select {
		case <-cc.Closed():
		case <-ctx.Done():
			return fmt.Errorf("eventlog: close: the consumer did not stop: %w", ctx.Err())
		}
	}
	if ls.durable == "" && cons != nil {
		ls.l.deleteConsumer(ctx, cons)
	}
	return nil
}

// consumerStart returns the start position of a consumer configuration.
func (s Start) consumerStart() (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch s.kind {
	case startAll:
		return jetstream.DeliverAllPolicy, 0, nil
	case startSeq:
		return jetstream.DeliverByStartSequencePolicy, s.seq, nil
	case startTime:
		t := s.time
		return jetstream.DeliverByStartTimePolicy, 0, &t
	}
	return jetstream.DeliverNewPolicy, 0, nil
}

// orderedConfig is the configuration of the ordered consumer of a
// replay or of a subscription that is not durable.
func (s Start) orderedConfig(subjects []string) jetstream.OrderedConsumerConfig {
	dp, seq, t := s.consumerStart()
	return jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     dp,
		OptStartSeq:       seq,
		OptStartTime:      t,
		InactiveThreshold: time.Minute,
	}
}

// subscribeLog starts a subscription reading the log, durable when
// durable is not empty.
func (l *Log) subscribeLog(pattern string, subjects []string, h Handler, cfg readConfig, durable string) (*Subscription, error) {
	s := &Subscription{l: l}
	ls := &logSub{l: l, s: s, h: h, cfg: cfg, durable: durable}
	if durable == "" {
		subjects, ls.keep = l.readFilter(pattern, subjects, cfg)
	}
	ls.ctx, ls.cancel = context.WithCancel(l.ctx)
	s.log = ls
	if err := l.track(s); err != nil {
		ls.cancel()
		return nil, err
	}
	err := l.call(l.ctx, func(ctx context.Context, st jetstream.Stream) error {
		var cons jetstream.Consumer
		var err error
		if durable != "" {
			cons, err = l.durableConsumer(ctx, st, pattern, subjects, ls)
		} else {
			cons, err = l.js.OrderedConsumer(ctx, Stream, cfg.start.orderedConfig(subjects))
		}
		if err != nil {
			return err
		}
		ls.mu.Lock()
		ls.cons = cons
		ls.mu.Unlock()
		return nil
	})
	if err != nil {
		_ = s.Close()
		if errors.Is(err, ErrUnknownDurable) || errors.Is(err, ErrClosed) {
			return nil, err
		}
		return nil, fmt.Errorf("eventlog: subscribe %q: %w", pattern, err)
	}
	ls.mu.Lock()
	if ls.stopped {
		ls.mu.Unlock()
		return nil, l.closedErrOr(ErrClosed)
	}
	cc, err := ls.cons.Consume(ls.onMsg, jetstream.ConsumeErrHandler(ls.onConsumeErr),
		jetstream.PullExpiry(subPullExpiry), jetstream.PullHeartbeat(subHeartbeat))
	if err == nil {
		ls.cc = cc
	}
	ls.mu.Unlock()
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("eventlog: subscribe %q: %w", pattern, err)
	}
	return s, nil
}

// closedErrOr returns the error of a use of the closed Log, or err while
// the Log is open.
func (l *Log) closedErrOr(err error) error {
	if cerr := l.closedErr(); cerr != nil {
		return cerr
	}
	return err
}

// durableConsumer creates the durable consumer, or resumes it: its
// position and start stay, its filters and delivery settings become the
// subscriber's.
func (l *Log) durableConsumer(ctx context.Context, st jetstream.Stream, pattern string, subjects []string, ls *logSub) (jetstream.Consumer, error) {
	cfg := ls.cfg
	dp, seq, t := cfg.start.consumerStart()
	want := jetstream.ConsumerConfig{
		Durable:       ls.durable,
		Description:   "peerbus durable subscription",
		DeliverPolicy: dp,
		OptStartSeq:   seq,
		OptStartTime:  t,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.ackWait,
		MaxDeliver:    -1, // the subscriber gives up, on a failure (see settle)
		MaxAckPending: cfg.maxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		Metadata:      map[string]string{metaPattern: pattern, metaMaxDeliver: strconv.Itoa(cfg.maxDeliver)},
	}
	setFilters(&want, subjects)
	c, err := st.Consumer(ctx, ls.durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if cfg.mustExist {
			return nil, fmt.Errorf("%w: %q", ErrUnknownDurable, ls.durable)
		}
		c, err = st.CreateConsumer(ctx, want)
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return c, err
		}
		// A concurrent subscriber created it: resume it.
		c, err = st.Consumer(ctx, ls.durable)
	}
	if err != nil {
		return nil, err
	}
	have := c.CachedInfo().Config
	upd := have
	setFilters(&upd, subjects)
	upd.AckWait, upd.MaxDeliver, upd.MaxAckPending = cfg.ackWait, -1, cfg.maxAckPending
	maxDeliver := strconv.Itoa(cfg.maxDeliver)
	if have.Metadata[metaPattern] == pattern && have.Metadata[metaMaxDeliver] == maxDeliver &&
		upd.FilterSubject == have.FilterSubject &&
		slices.Equal(upd.FilterSubjects, have.FilterSubjects) && upd.AckWait == have.AckWait &&
		upd.MaxDeliver == have.MaxDeliver && upd.MaxAckPending == have.MaxAckPending {
		return c, nil
	}
	md := maps.Clone(have.Metadata)
	if md == nil {
		md = make(map[string]string, 1)
	}
	md[metaPattern], md[metaMaxDeliver] = pattern, maxDeliver
	upd.Metadata = md
	return st.UpdateConsumer(ctx, upd)
}

func setFilters(c *jetstream.ConsumerConfig, subjects []string) {
	c.FilterSubject, c.FilterSubjects = "", nil
	if len(subjects) == 1 {
		c.FilterSubject = subjects[0]
	} else {
		c.FilterSubjects = subjects
	}
}

// onConsumeErr reports the end of the consumer: a durable subscription
// whose durable was deleted reports an error wrapping ErrUnknownDurable.
func (ls *logSub) onConsumeErr(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		if !ls.s.closed.Load() && ls.l.closedErr() == nil {
			if ls.durable != "" {
				err = fmt.Errorf("%w (%w)", ErrUnknownDurable, err)
			}
			ls.l.p.ReportError(fmt.Errorf("eventlog: subscription %s: %w", ls.durable, err))
		}
		return
	}
	ls.l.logger.Debug("event log subscription", "durable", ls.durable, "err", err)
}

// onMsg handles one message of the log consumer.
func (ls *logSub) onMsg(msg jetstream.Msg) {
	l := ls.l
	durable := ls.durable != ""
	if ls.keep != nil && !ls.keep(msg.Subject()) {
		return // an ordered consumer's: no ack
	}
	if ls.s.closed.Load() || !ls.begin(true) {
		if durable {
			ls.begin(false)
			go ls.handBack(msg)
		}
		return
	}
	handedBack := false
	defer func() {
		if !handedBack {
			ls.end()
		}
	}()
	e, err := msgEvent(msg.Subject(), msg.Reply(), msg.Headers(), msg.Data())
	if err != nil {
		ls.s.errs.Add(1)
		l.p.ReportError(fmt.Errorf("eventlog: event log message %q: %w", msg.Subject(), err))
		if durable {
			_ = msg.TermWithReason("peerbus: not an event")
		}
		return
	}
	e.codec = l.codec
	if !durable {
		e.Deliveries = 0
	}
	if durable && ls.cfg.maxAckPending == 1 && e.Deliveries > 1 && e.Seq <= ls.seq.Load() {
		// Delivered again after this subscription settled it: its ack
		// wait ran out before the ack arrived. One event in flight at a
		// time means every event up to Seq() is settled.
		ls.ackAgain(msg, e)
		return
	}
	herr := l.runHandler(ls.ctx, ls.h, e)
	if herr != nil && ls.ctx.Err() != nil {
		// Interrupted by Close: not a failure.
		if durable {
			handedBack = true
			go ls.handBack(msg)
		}
		return
	}
	if herr != nil {
		l.handlerFailed(ls.s, fmt.Errorf("eventlog: event handler for %q (event %s seq %d from %s): %w", e.Name, e.ID, e.Seq, e.Peer, herr))
	}
	if !durable {
		ls.seq.Store(e.Seq)
		return
	}
	ls.settle(msg, e, herr)
}

// handBack gives a durable's event back unhandled, to be delivered
// again at once, and ends the work registered for it. It waits (within
// the call timeout) until the consumer of the stopped subscription has
// unsubscribed, which happens once the message callback returned, so
// that the server does not deliver the event again to its pull requests.
func (ls *logSub) handBack(msg jetstream.Msg) {
	defer ls.end()
	ls.mu.Lock()
	cc := ls.cc
	ls.mu.Unlock()
	if cc != nil {
		t := time.NewTimer(ls.l.timeout)
		select {
		case <-cc.Closed():
		case <-t.C:
		}
		t.Stop()
	}
	_ = msg.Nak()
}

// ackAgain acknowledges a redelivery of an event the subscription
// settled already, without handing it to the handler.
func (ls *logSub) ackAgain(msg jetstream.Msg, e Event) {
	ctx, cancel := context.WithTimeout(context.Background(), ls.l.timeout)
	defer cancel()
	if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		ls.l.logger.Debug("event log: ack of a redelivered event", "durable", ls.durable, "seq", e.Seq, "err", err)
	}
}

// settle acknowledges, retries or gives up on a durable's event.
func (ls *logSub) settle(msg jetstream.Msg, e Event, herr error) {
	l := ls.l
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	if herr == nil {
		if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			l.p.ReportError(fmt.Errorf("eventlog: durable %s: ack of event seq %d failed, it will be delivered again: %w", ls.durable, e.Seq, err))
			return
		}
		ls.seq.Store(e.Seq)
		return
	}
	if ls.cfg.maxDeliver > 0 && e.Deliveries >= ls.cfg.maxDeliver {
		if !strings.HasPrefix(e.Name, DeadLetterPrefix) {
			ls.deadLetter(ctx, e, herr)
		}
		if err := msg.TermWithReason(fmt.Sprintf("peerbus: handler failed %d times", e.Deliveries)); err != nil {
			l.p.ReportError(fmt.Errorf("eventlog: durable %s: terminate event seq %d: %w", ls.durable, e.Seq, err))
		}
		ls.seq.Store(e.Seq)
		return
	}
	b := ls.cfg.backoff
	d := b[min(max(e.Deliveries-1, 0), len(b)-1)]
	if err := msg.NakWithDelay(d); err != nil {
		l.p.ReportError(fmt.Errorf("eventlog: durable %s: nak event seq %d: %w", ls.durable, e.Seq, err))
	}
}

// deadLetter emits the dead-letter event of e.
func (ls *logSub) deadLetter(ctx context.Context, e Event, herr error) {
	l := ls.l
	dl := DeadLetter{
		Durable: ls.durable, Subscriber: l.id,
		EventID: e.ID, Seq: e.Seq, Name: e.Name, Peer: e.Peer, Group: e.Group, Time: e.Time,
		Deliveries: e.Deliveries, Error: herr.Error(),
	}
	var opts []EmitOption
	if id := "dead:" + ls.durable + ":" + e.ID; e.ID != "" && validEventID(id) {
		opts = append(opts, WithEventID(id)) // a retried dead letter is stored once
	}
	if _, err := l.Emit(ctx, DeadLetterPrefix+e.Name, dl, opts...); err != nil {
		l.p.ReportError(fmt.Errorf("eventlog: durable %s: dead letter for event seq %d: %w", ls.durable, e.Seq, err))
	}
}
