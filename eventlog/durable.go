package peer

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
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

type startKind int

const (
	startLive startKind = iota // live only (no log)
	startAll                   // the whole log
	startSeq                   // from a sequence
	startTime                  // from a time
)

// logConfig holds the log options of a subscription.
type logConfig struct {
	start         startKind
	seq           uint64
	time          time.Time
	durable       string
	mustExist     bool
	maxDeliver    int
	ackWait       time.Duration
	backoff       []time.Duration
	maxAckPending int
	durableOnly   []string // durable options used (error without Durable)
}

func (c *logConfig) fromLog() bool { return c.start != startLive || c.durable != "" }

func (c *logConfig) checkLive() error {
	if len(c.durableOnly) > 0 {
		return fmt.Errorf("%w: %s needs Durable", ErrInvalidOption, strings.Join(c.durableOnly, ", "))
	}
	return nil
}

// FromStart makes a subscription read the whole event log first, then
// follow it. For Durable it is where a new durable starts.
func FromStart() SubOption { return func(c *subConfig) { c.start = startAll } }

// FromSeq makes a subscription read the event log from sequence seq
// (included), then follow it. For Durable it is where a new durable
// starts.
func FromSeq(seq uint64) SubOption {
	return func(c *subConfig) {
		c.start, c.seq = startSeq, seq
		if seq == 0 {
			c.start = startAll
		}
	}
}

// FromTime makes a subscription read the event log from the first event
// stored at or after t, then follow it. For Durable it is where a new
// durable starts.
func FromTime(t time.Time) SubOption {
	return func(c *subConfig) { c.start, c.time = startTime, t }
}

// Durable makes a durable subscription named name (one subject token,
// at most 128 bytes). Its position in the log is kept by the bus: after
// the subscriber or its node restarts, a subscription with the same
// name resumes with the first event it had not acknowledged. An event
// is acknowledged when the handler returns nil; a handler error (or
// panic) means the event is delivered again after a backoff (see
// RetryBackoff), up to MaxDeliver times; then the subscription emits a
// dead-letter event (see DeadLetter) and moves on. A new durable starts
// with the events emitted from now on, unless FromStart, FromSeq or
// FromTime says otherwise; on resume those options are ignored.
//
// Events are delivered in log order, one at a time (MaxAckPending 1),
// so the order of each peer's events is kept, retries included.
// Several subscribers using the same durable share its events.
func Durable(name string) SubOption { return func(c *subConfig) { c.durable = name } }

// MustExist makes a Durable subscription fail with ErrUnknownDurable
// when the durable does not exist, instead of creating it.
func MustExist() SubOption {
	return func(c *subConfig) { c.mustExist = true; c.durableOnly = append(c.durableOnly, "MustExist") }
}

// MaxDeliver sets how many times a Durable subscription delivers an
// event whose handler fails before it gives up on it (default
// DefaultMaxDeliver); -1 retries for ever (no dead letters).
func MaxDeliver(n int) SubOption {
	return func(c *subConfig) { c.maxDeliver = n; c.durableOnly = append(c.durableOnly, "MaxDeliver") }
}

// AckWait sets how long a Durable subscription's handler may run before
// the event is delivered again (default DefaultAckWait).
func AckWait(d time.Duration) SubOption {
	return func(c *subConfig) { c.ackWait = d; c.durableOnly = append(c.durableOnly, "AckWait") }
}

// RetryBackoff sets the delays before a failed event is delivered again
// to a Durable subscription: the i-th retry waits d[i], the last value
// repeats. Default: 1s, 5s, 15s, 30s.
func RetryBackoff(d ...time.Duration) SubOption {
	return func(c *subConfig) { c.backoff = d; c.durableOnly = append(c.durableOnly, "RetryBackoff") }
}

// MaxAckPending sets how many events of a Durable subscription may be
// handled at once (default DefaultMaxAckPending, 1). More than 1 gives
// up the ordering: a failed event is retried after later ones.
func MaxAckPending(n int) SubOption {
	return func(c *subConfig) { c.maxAckPending = n; c.durableOnly = append(c.durableOnly, "MaxAckPending") }
}

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

// logSub is the log side of a Subscription.
type logSub struct {
	p   *Peer
	s   *Subscription
	h   EventHandler
	cfg logConfig

	ctx    context.Context // handlers' context, canceled by stop
	cancel context.CancelFunc

	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	cons    jetstream.Consumer
	stopped bool

	inHandler atomic.Bool
	seq       atomic.Uint64
}

// Seq returns the log sequence of the last event the subscription
// handled (acknowledged or gave up on, for a durable), 0 for a live
// subscription or before the first event.
func (s *Subscription) Seq() uint64 {
	if s.log == nil {
		return 0
	}
	return s.log.seq.Load()
}

// Durable returns the durable name ("" when not durable).
func (s *Subscription) Durable() string {
	if s.log == nil {
		return ""
	}
	return s.log.cfg.durable
}

func (s *Subscription) wait() {
	if s.log != nil {
		s.log.wait()
	}
}

func (ls *logSub) stop() {
	ls.cancel()
	ls.mu.Lock()
	ls.stopped = true
	cc := ls.cc
	ls.mu.Unlock()
	if cc != nil {
		cc.Stop()
	}
}

// wait waits until no handler runs (unless called from the handler),
// then deletes a replay's consumer.
func (ls *logSub) wait() {
	ls.mu.Lock()
	cc, cons := ls.cc, ls.cons
	ls.mu.Unlock()
	if cc == nil {
		return
	}
	if !ls.inHandler.Load() {
		<-cc.Closed()
	}
	if ls.cfg.durable == "" && cons != nil {
		ls.p.deleteConsumer(cons)
	}
}

// deleteConsumer deletes an ephemeral consumer now rather than when its
// inactivity threshold passes (best effort).
func (p *Peer) deleteConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || p.nc.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = p.evlog.js.DeleteConsumer(ctx, LogStream, info.Name)
}

// consumerStart fills the start position of a consumer configuration.
func (c *logConfig) consumerStart() (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch c.start {
	case startAll:
		return jetstream.DeliverAllPolicy, 0, nil
	case startSeq:
		return jetstream.DeliverByStartSequencePolicy, c.seq, nil
	case startTime:
		t := c.time
		return jetstream.DeliverByStartTimePolicy, 0, &t
	}
	return jetstream.DeliverNewPolicy, 0, nil
}

// orderedConfig is the configuration of a replay's ordered consumer.
func (c *logConfig) orderedConfig(subjects []string) jetstream.OrderedConsumerConfig {
	dp, seq, t := c.consumerStart()
	return jetstream.OrderedConsumerConfig{
		FilterSubjects:    subjects,
		DeliverPolicy:     dp,
		OptStartSeq:       seq,
		OptStartTime:      t,
		InactiveThreshold: time.Minute,
	}
}

// subscribeLog starts a subscription reading the log.
func (p *Peer) subscribeLog(pattern string, subjects []string, h EventHandler, cfg subConfig) (*Subscription, error) {
	lc := cfg.logConfig
	if lc.durable != "" {
		if err := validDurable(lc.durable); err != nil {
			return nil, err
		}
		if lc.maxDeliver == 0 {
			lc.maxDeliver = DefaultMaxDeliver
		}
		if lc.maxDeliver < -1 {
			return nil, fmt.Errorf("%w: MaxDeliver(%d)", ErrInvalidOption, lc.maxDeliver)
		}
		if lc.ackWait <= 0 {
			lc.ackWait = DefaultAckWait
		}
		if lc.maxAckPending <= 0 {
			lc.maxAckPending = DefaultMaxAckPending
		}
		if len(lc.backoff) == 0 {
			lc.backoff = defaultRetryBackoff
		}
	} else if err := lc.checkLive(); err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, ErrClosed
	}
	s := &Subscription{p: p}
	ls := &logSub{p: p, s: s, h: h, cfg: lc}
	ls.ctx, ls.cancel = context.WithCancel(p.ctx)
	s.log = ls
	p.events[s] = struct{}{}
	p.mu.Unlock()

	err := p.logCall(p.ctx, func(ctx context.Context, st jetstream.Stream) error {
		var cons jetstream.Consumer
		var err error
		if lc.durable != "" {
			cons, err = p.durableConsumer(ctx, st, pattern, subjects, lc)
		} else {
			cons, err = p.evlog.js.OrderedConsumer(ctx, LogStream, lc.orderedConfig(subjects))
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
		_ = s.Unsubscribe()
		if errors.Is(err, ErrUnknownDurable) {
			return nil, err
		}
		return nil, fmt.Errorf("peer: subscribe %q: %w", pattern, err)
	}
	ls.mu.Lock()
	if ls.stopped {
		ls.mu.Unlock()
		return nil, ErrClosed
	}
	cc, err := ls.cons.Consume(ls.onMsg, jetstream.ConsumeErrHandler(ls.onConsumeErr),
		jetstream.PullExpiry(subPullExpiry), jetstream.PullHeartbeat(subHeartbeat))
	if err == nil {
		ls.cc = cc
	}
	ls.mu.Unlock()
	if err != nil {
		_ = s.Unsubscribe()
		return nil, fmt.Errorf("peer: subscribe %q: %w", pattern, err)
	}
	return s, nil
}

// durableConsumer creates the durable consumer, or resumes it: its
// position and start stay, its filters and delivery settings become the
// subscriber's.
func (p *Peer) durableConsumer(ctx context.Context, st jetstream.Stream, pattern string, subjects []string, lc logConfig) (jetstream.Consumer, error) {
	dp, seq, t := lc.consumerStart()
	want := jetstream.ConsumerConfig{
		Durable:       lc.durable,
		Description:   "peerbus durable subscription",
		DeliverPolicy: dp,
		OptStartSeq:   seq,
		OptStartTime:  t,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       lc.ackWait,
		MaxDeliver:    lc.maxDeliver,
		MaxAckPending: lc.maxAckPending,
		ReplayPolicy:  jetstream.ReplayInstantPolicy,
		Metadata:      map[string]string{metaPattern: pattern},
	}
	setFilters(&want, subjects)
	c, err := st.Consumer(ctx, lc.durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		if lc.mustExist {
			return nil, fmt.Errorf("%w: %q", ErrUnknownDurable, lc.durable)
		}
		c, err = st.CreateConsumer(ctx, want)
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return c, err
		}
		// A concurrent subscriber created it: resume it.
		c, err = st.Consumer(ctx, lc.durable)
	}
	if err != nil {
		return nil, err
	}
	have := c.CachedInfo().Config
	upd := have
	setFilters(&upd, subjects)
	upd.AckWait, upd.MaxDeliver, upd.MaxAckPending = lc.ackWait, lc.maxDeliver, lc.maxAckPending
	if have.Metadata[metaPattern] == pattern && upd.FilterSubject == have.FilterSubject &&
		slicesEqual(upd.FilterSubjects, have.FilterSubjects) && upd.AckWait == have.AckWait &&
		upd.MaxDeliver == have.MaxDeliver && upd.MaxAckPending == have.MaxAckPending {
		return c, nil
	}
	md := make(map[string]string, len(have.Metadata)+1)
	for k, v := range have.Metadata {
		md[k] = v
	}
	md[metaPattern] = pattern
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

func slicesEqual(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (ls *logSub) onConsumeErr(_ jetstream.ConsumeContext, err error) {
	if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
		if !ls.s.closed.Load() && !ls.p.isClosed() {
			ls.p.reportError(fmt.Errorf("peer: subscription %s: %w", ls.cfg.durable, err))
		}
		return
	}
	ls.p.log.Debug("event log subscription", "durable", ls.cfg.durable, "err", err)
}

// onMsg handles one message of the log consumer.
func (ls *logSub) onMsg(msg jetstream.Msg) {
	p := ls.p
	durable := ls.cfg.durable != ""
	if ls.s.closed.Load() {
		if durable {
			_ = msg.Nak() // unhandled: deliver it again now
		}
		return
	}
	ls.inHandler.Store(true)
	defer ls.inHandler.Store(false)
	e, err := msgEvent(msg.Subject(), msg.Reply(), msg.Headers(), msg.Data())
	if err != nil {
		ls.s.errs.Add(1)
		p.reportError(fmt.Errorf("peer: event log message %q: %w", msg.Subject(), err))
		if durable {
			_ = msg.TermWithReason("peerbus: not an event")
		}
		return
	}
	e.codec = p.opts.Codec
	if !durable {
		e.Deliveries = 0
	}
	herr := p.runEventHandler(ls.ctx, ls.h, e)
	if herr != nil && ls.ctx.Err() != nil {
		// Interrupted by Unsubscribe or Close: not a failure.
		if durable {
			_ = msg.Nak()
		}
		return
	}
	if herr != nil {
		ls.s.errs.Add(1)
		p.handlerErrors.Add(1)
		p.reportError(fmt.Errorf("peer: event handler for %q (event %s seq %d from %s): %w", e.Name, e.ID, e.Seq, e.Peer, herr))
	}
	if !durable {
		ls.seq.Store(e.Seq)
		return
	}
	ls.settle(msg, e, herr)
}

// settle acknowledges, retries or gives up on a durable's event.
func (ls *logSub) settle(msg jetstream.Msg, e Event, herr error) {
	p := ls.p
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.CallTimeout)
	defer cancel()
	if herr == nil {
		if err := msg.DoubleAck(ctx); err != nil && !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
			p.reportError(fmt.Errorf("peer: durable %s: ack of event seq %d failed, it will be delivered again: %w", ls.cfg.durable, e.Seq, err))
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
			p.reportError(fmt.Errorf("peer: durable %s: terminate event seq %d: %w", ls.cfg.durable, e.Seq, err))
		}
		ls.seq.Store(e.Seq)
		return
	}
	b := ls.cfg.backoff
	d := b[min(max(e.Deliveries-1, 0), len(b)-1)]
	if err := msg.NakWithDelay(d); err != nil {
		p.reportError(fmt.Errorf("peer: durable %s: nak event seq %d: %w", ls.cfg.durable, e.Seq, err))
	}
}

// deadLetter emits the dead-letter event of e.
func (ls *logSub) deadLetter(ctx context.Context, e Event, herr error) {
	p := ls.p
	dl := DeadLetter{
		Durable: ls.cfg.durable, Subscriber: p.id,
		EventID: e.ID, Seq: e.Seq, Name: e.Name, Peer: e.Peer, Group: e.Group, Time: e.Time,
		Deliveries: e.Deliveries, Error: herr.Error(),
	}
	var opts []EmitOption
	if id := "dead:" + ls.cfg.durable + ":" + e.ID; e.ID != "" && len(id) <= 256 && !strings.ContainsAny(id, " \t\r\n\x00") {
		opts = append(opts, WithEventID(id)) // a retried dead letter is stored once
	}
	if _, err := p.Emit(ctx, DeadLetterPrefix+e.Name, dl, opts...); err != nil {
		p.reportError(fmt.Errorf("peer: durable %s: dead letter for event seq %d: %w", ls.cfg.durable, e.Seq, err))
	}
}

// ackMeta is what a JetStream ack reply subject tells about a delivered
// message.
type ackMeta struct {
	stream, consumer string
	delivered        uint64 // deliveries of this message, this one included
	streamSeq        uint64
	consumerSeq      uint64
	stored           time.Time // when the stream stored it
	pending          uint64    // matching messages not delivered yet
}

// parseAckReply parses the reply subject of a message delivered by a
// JetStream consumer:
//
//	$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>
//	$JS.ACK.<domain>.<acchash>.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ns>.<pending>[.<token>…]
//
// It never panics.
func parseAckReply(reply string) (ackMeta, error) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return ackMeta{}, fmt.Errorf("peer: %q is not a JetStream ack subject", reply)
	}
	toks := strings.Split(rest, ".")
	switch {
	case len(toks) == 7:
	case len(toks) >= 9:
		toks = toks[2:9]
	default:
		return ackMeta{}, fmt.Errorf("peer: %q is not a JetStream ack subject", reply)
	}
	var nums [5]uint64
	for i, t := range toks[2:] {
		n, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return ackMeta{}, fmt.Errorf("peer: %q is not a JetStream ack subject: %v", reply, err)
		}
		nums[i] = n
	}
	m := ackMeta{stream: toks[0], consumer: toks[1], delivered: nums[0], streamSeq: nums[1],
		consumerSeq: nums[2], pending: nums[4]}
	if m.stream == "" || m.consumer == "" || m.streamSeq == 0 || m.delivered == 0 || nums[3] > 1<<63-1 {
		return ackMeta{}, fmt.Errorf("peer: %q is not a JetStream ack subject", reply)
	}
	m.stored = time.Unix(0, int64(nums[3])).UTC()
	return m, nil
}

// msgEvent decodes an event delivered by a log consumer: the event from
// subject and headers, its log position from the ack reply subject.
func msgEvent(subject, reply string, h nats.Header, data []byte) (Event, error) {
	e, _, err := msgEventMeta(subject, reply, h, data)
	return e, err
}

func msgEventMeta(subject, reply string, h nats.Header, data []byte) (Event, ackMeta, error) {
	e, err := parseEvent(subject, h, data, false)
	if err != nil {
		return Event{}, ackMeta{}, err
	}
	md, err := parseAckReply(reply)
	if err != nil {
		return Event{}, ackMeta{}, err
	}
	e.Seq = md.streamSeq
	e.Deliveries = int(min(md.delivered, 1<<31-1))
	if e.ID == "" && h != nil {
		e.ID = h.Get(HeaderMsgID)
	}
	if e.Time.IsZero() {
		e.Time = md.stored
	}
	return e, md, nil
}

// replayConfig applies opts for a replay or a count.
func replayConfig(pattern string, opts []SubOption) ([]string, logConfig, error) {
	var cfg subConfig
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.durable != "" {
		return nil, logConfig{}, fmt.Errorf("%w: Durable does not apply to a replay", ErrInvalidOption)
	}
	if err := cfg.checkLive(); err != nil {
		return nil, logConfig{}, err
	}
	subjects, err := FilterSubjects(pattern, cfg.groups, cfg.peers)
	if err != nil {
		return nil, logConfig{}, err
	}
	if cfg.start == startLive {
		cfg.start = startAll
	}
	return subjects, cfg.logConfig, nil
}

// Replay returns the events of the log whose name matches pattern,
// oldest first: those stored when it starts, from the start of the log
// or from FromSeq / FromTime, and filtered by FromPeers / FromGroups on
// the server. It reads them with an ordered consumer, deleted when the
// iteration ends. An error ends the iteration (yielded with a zero
// Event); ctx bounds it.
//
//	for e, err := range p.Replay(ctx, "order.>", peer.FromSeq(100)) {
//		if err != nil { return err }
//		…
//	}
func (p *Peer) Replay(ctx context.Context, pattern string, opts ...SubOption) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		subjects, lc, err := replayConfig(pattern, opts)
		if err != nil {
			yield(Event{}, err)
			return
		}
		var cons jetstream.Consumer
		err = p.logCall(ctx, func(ctx context.Context, _ jetstream.Stream) error {
			var err error
			cons, err = p.evlog.js.OrderedConsumer(ctx, LogStream, lc.orderedConfig(subjects))
			return err
		})
		if err != nil {
			yield(Event{}, fmt.Errorf("peer: replay %q: %w", pattern, err))
			return
		}
		defer p.deleteConsumer(cons)
		total := cons.CachedInfo().NumPending
		if total == 0 {
			return
		}
		it, err := cons.Messages(jetstream.PullMaxMessages(int(min(total, 1000))),
			jetstream.PullExpiry(replayPullExpiry), jetstream.PullHeartbeat(replayHeartbeat))
		if err != nil {
			yield(Event{}, fmt.Errorf("peer: replay %q: %w", pattern, err))
			return
		}
		defer it.Stop()
		var last atomic.Pointer[ackMeta] // position of the last event handed out
		var exhausted atomic.Bool
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.watchReplay(ctx, cons, it, &last, &exhausted, stop)
		}()
		defer wg.Wait()
		defer close(stop)
		for n := uint64(0); n < total; n++ {
			msg, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				if exhausted.Load() {
					return // the events left were deleted (retention) meanwhile
				}
				yield(Event{}, fmt.Errorf("peer: replay %q: %w", pattern, err))
				return
			}
			e, md, err := msgEventMeta(msg.Subject(), msg.Reply(), msg.Headers(), msg.Data())
			if err != nil {
				err = fmt.Errorf("peer: replay %q: %w", pattern, err)
			} else {
				e.codec, e.Deliveries = p.opts.Codec, 0
				last.Store(&md)
			}
			if !yield(e, err) || err != nil {
				return
			}
			if md.pending == 0 {
				return // events that aged out meanwhile: nothing left
			}
		}
	}
}

// Pull request settings of log consumers. A pull request can be lost
// (sent to a consumer that was just created on another node of a
// cluster): the client notices when no heartbeat comes for two
// heartbeat intervals, and pulls again (an ordered consumer is then
// recreated where it left off). Short intervals keep that pause short.
const (
	subPullExpiry    = 10 * time.Second
	subHeartbeat     = 2 * time.Second
	replayPullExpiry = 5 * time.Second
	replayHeartbeat  = time.Second
)

// replayStallCheck is how often a replay that got nothing new checks
// whether the events it still expects were deleted (by retention) in
// the meantime.
const replayStallCheck = time.Second

// watchReplay stops a replay's iterator when ctx ends, or when it got
// nothing for replayStallCheck and the server has nothing left for it.
func (p *Peer) watchReplay(ctx context.Context, cons jetstream.Consumer, it jetstream.MessagesContext,
	last *atomic.Pointer[ackMeta], exhausted *atomic.Bool, stop <-chan struct{}) {
	t := time.NewTicker(replayStallCheck)
	defer t.Stop()
	prev := last.Load()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			it.Stop()
			return
		case <-t.C:
		}
		cur := last.Load()
		if cur != prev {
			prev = cur
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, emitAttemptTimeout)
		ci, err := cons.Info(ictx)
		cancel()
		if err != nil {
			continue
		}
		// Nothing left on the server, and nothing delivered that this
		// replay did not hand out (a purge moves the stream position of
		// the consumer, not its delivery count).
		var handed uint64
		if cur != nil && cur.consumer == ci.Name {
			handed = cur.consumerSeq
		} else if cur != nil {
			continue // the ordered consumer was recreated: look again later
		}
		if ci.NumPending == 0 && ci.Delivered.Consumer == handed {
			exhausted.Store(true)
			it.Stop()
			return
		}
	}
}

// CountEvents returns how many stored events match pattern and the
// filters and start options (FromPeers, FromGroups, FromSeq, FromTime),
// counted by the server.
func (p *Peer) CountEvents(ctx context.Context, pattern string, opts ...SubOption) (uint64, error) {
	subjects, lc, err := replayConfig(pattern, opts)
	if err != nil {
		return 0, err
	}
	dp, seq, t := lc.consumerStart()
	cc := jetstream.ConsumerConfig{
		DeliverPolicy: dp, OptStartSeq: seq, OptStartTime: t,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1,
		InactiveThreshold: 10 * time.Second,
	}
	setFilters(&cc, subjects)
	var n uint64
	err = p.logCall(ctx, func(ctx context.Context, st jetstream.Stream) error {
		c, err := st.CreateConsumer(ctx, cc)
		if err != nil {
			return err
		}
		n = c.CachedInfo().NumPending
		_ = st.DeleteConsumer(ctx, c.CachedInfo().Name)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("peer: count %q: %w", pattern, err)
	}
	return n, nil
}
