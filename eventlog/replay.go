package eventlog

// Reading what the log stores: replays and counts, and the log position
// of delivered events.

import (
	"context"
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

// replayConfig applies opts for a replay or a count: the filter
// subjects and where to start (the start of the log by default).
func replayConfig(pattern string, opts []ReplayOption) ([]string, readConfig, error) {
	var cfg readConfig
	for _, o := range opts {
		if err := o.applyReplay(&cfg); err != nil {
			return nil, cfg, err
		}
	}
	subjects, err := FilterSubjects(pattern, cfg.groups, cfg.peers)
	if err != nil {
		return nil, cfg, err
	}
	if cfg.start.kind == startLive {
		cfg.start = FromStart()
	}
	return subjects, cfg, nil
}

// Replay returns the events of the log whose name matches pattern,
// oldest first: those stored when it starts, from the start of the log
// or from FromSeq / FromTime, and filtered by FromPeers / FromGroups on
// the server. It reads them with an ordered consumer, deleted when the
// iteration ends. An error ends the iteration (yielded with a zero
// Event); ctx bounds it.
//
//	for e, err := range lg.Replay(ctx, "order.>", eventlog.FromSeq(100)) {
//		if err != nil { return err }
//		…
//	}
func (l *Log) Replay(ctx context.Context, pattern string, opts ...ReplayOption) iter.Seq2[Event, error] {
	return func(yield func(Event, error) bool) {
		subjects, cfg, err := replayConfig(pattern, opts)
		if err != nil {
			yield(Event{}, err)
			return
		}
		subjects, keep := l.readFilter(pattern, subjects, cfg)
		var cons jetstream.Consumer
		err = l.call(ctx, func(ctx context.Context, _ jetstream.Stream) error {
			var err error
			cons, err = l.js.OrderedConsumer(ctx, Stream, cfg.start.orderedConfig(subjects))
			return err
		})
		if err != nil {
			yield(Event{}, fmt.Errorf("eventlog: replay %q: %w", pattern, err))
			return
		}
		defer l.deleteConsumer(context.WithoutCancel(ctx), cons) // also when ctx ended
		if err := l.replay(ctx, cons, keep, yield); err != nil {
			yield(Event{}, fmt.Errorf("eventlog: replay %q: %w", pattern, err))
		}
	}
}

// replay hands out the events cons had pending when it was created, and
// returns the error that ended it early (nil when yield stopped it, or
// every event was handed out or deleted meanwhile); keep, when not nil,
// selects the events to hand out by subject (see readFilter).
func (l *Log) replay(ctx context.Context, cons jetstream.Consumer, keep func(string) bool, yield func(Event, error) bool) error {
	total := cons.CachedInfo().NumPending
	if total == 0 {
		return nil
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(int(min(total, 1000))),
		jetstream.PullExpiry(replayPullExpiry), jetstream.PullHeartbeat(replayHeartbeat))
	if err != nil {
		return err
	}
	defer it.Stop()
	var last atomic.Pointer[ackMeta] // position of the last event handed out
	var exhausted atomic.Bool
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l.watchReplay(ctx, cons, it, &last, &exhausted, stop)
	}()
	defer wg.Wait()
	defer close(stop)
	for n := uint64(0); n < total; n++ {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			if exhausted.Load() {
				return nil // the events left were deleted (retention) meanwhile
			}
			return err
		}
		e, md, err := msgEventMeta(msg.Subject(), msg.Reply(), msg.Headers(), msg.Data())
		if err != nil {
			return err
		}
		e.codec, e.Deliveries = l.codec, 0
		last.Store(&md)
		if (keep == nil || keep(msg.Subject())) && !yield(e, nil) {
			return nil
		}
		if md.pending == 0 {
			return nil // events that aged out meanwhile: nothing left
		}
	}
	return nil
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
func (l *Log) watchReplay(ctx context.Context, cons jetstream.Consumer, it jetstream.MessagesContext,
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

// Count returns how many stored events match pattern and the filters
// and start options (FromPeers, FromGroups, FromSeq, FromTime), counted
// by the server.
func (l *Log) Count(ctx context.Context, pattern string, opts ...ReplayOption) (uint64, error) {
	subjects, cfg, err := replayConfig(pattern, opts)
	if err != nil {
		return 0, err
	}
	var n uint64
	if each := l.countSubjects(subjects); each != nil {
		for _, subj := range each {
			c, err := l.count(ctx, []string{subj}, cfg.start)
			if err != nil {
				return 0, fmt.Errorf("eventlog: count %q: %w", pattern, err)
			}
			n += c
		}
		return n, nil
	}
	if n, err = l.count(ctx, subjects, cfg.start); err != nil {
		return 0, fmt.Errorf("eventlog: count %q: %w", pattern, err)
	}
	return n, nil
}

// count counts the events of the filter subjects from start with a
// consumer made for it.
func (l *Log) count(ctx context.Context, subjects []string, start Start) (uint64, error) {
	dp, seq, t := start.consumerStart()
	cc := jetstream.ConsumerConfig{
		DeliverPolicy: dp, OptStartSeq: seq, OptStartTime: t,
		AckPolicy: jetstream.AckNonePolicy, MemoryStorage: true, Replicas: 1,
		InactiveThreshold: 10 * time.Second,
	}
	setFilters(&cc, subjects)
	var n uint64
	err := l.call(ctx, func(ctx context.Context, st jetstream.Stream) error {
		c, err := st.CreateConsumer(ctx, cc)
		if err != nil {
			return err
		}
		n = c.CachedInfo().NumPending
		_ = st.DeleteConsumer(ctx, c.CachedInfo().Name)
		return nil
	})
	return n, err
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
		return ackMeta{}, fmt.Errorf("eventlog: %q is not a JetStream ack subject", reply)
	}
	toks := strings.Split(rest, ".")
	switch {
	case len(toks) == 7:
	case len(toks) >= 9:
		toks = toks[2:9]
	default:
		return ackMeta{}, fmt.Errorf("eventlog: %q is not a JetStream ack subject", reply)
	}
	var nums [5]uint64
	for i, t := range toks[2:] {
		n, err := strconv.ParseUint(t, 10, 64)
		if err != nil {
			return ackMeta{}, fmt.Errorf("eventlog: %q is not a JetStream ack subject: %v", reply, err)
		}
		nums[i] = n
	}
	m := ackMeta{stream: toks[0], consumer: toks[1], delivered: nums[0], streamSeq: nums[1],
		consumerSeq: nums[2], pending: nums[4]}
	if m.stream == "" || m.consumer == "" || m.streamSeq == 0 || m.delivered == 0 || nums[3] > 1<<63-1 {
		return ackMeta{}, fmt.Errorf("eventlog: %q is not a JetStream ack subject", reply)
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
