package eventlog

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/peer"
)

// TestLogRetryPolicy checks how the emit retry loop treats each kind of
// JetStream error.
func TestLogRetryPolicy(t *testing.T) {
	l := &Log{timeout: peer.DefaultCallTimeout, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	unavailable := &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}
	full := &jetstream.APIError{Code: 503, ErrorCode: 10077, Description: "maximum messages exceeded"}
	run := func(ctx context.Context, errs ...error) (int, time.Duration, error) {
		calls := 0
		start := time.Now()
		err := l.retry(ctx, func(ctx context.Context) error {
			if _, ok := ctx.Deadline(); !ok {
				t.Fatal("attempt without a deadline")
			}
			calls++
			if calls <= len(errs) {
				return errs[calls-1]
			}
			return nil
		})
		return calls, time.Since(start), err
	}
	ctx := context.Background()

	// Not current yet: retried with a growing backoff until it works.
	calls, took, err := run(ctx, unavailable, jetstream.ErrNoStreamResponse, context.DeadlineExceeded)
	if err != nil || calls != 4 || took < emitRetryMin+2*emitRetryMin+4*emitRetryMin {
		t.Fatalf("transient errors: calls %d took %v err %v", calls, took, err)
	}
	// Nobody stored it: the stream is looked up again.
	l.stream.Store(&streamRef{})
	if _, _, err := run(ctx, jetstream.ErrNoStreamResponse); err != nil || l.stream.Load() != nil {
		t.Fatalf("no stream: %v, stream still known: %v", err, l.stream.Load() != nil)
	}
	// No JetStream at all, a full log, a closed connection: at once.
	for _, tc := range []struct {
		err, want error
	}{
		{nats.ErrNoResponders, ErrNoLog},
		{jetstream.ErrJetStreamNotEnabled, ErrNoLog},
		{full, ErrLogFull},
		{&jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum}, peer.ErrPayloadTooLarge},
		{nats.ErrConnectionClosed, nats.ErrConnectionClosed},
	} {
		if calls, _, err := run(ctx, tc.err); calls != 1 || !errors.Is(err, tc.want) {
			t.Fatalf("%v: calls %d err %v, want %v", tc.err, calls, err, tc.want)
		}
	}
	// Still unavailable when ctx ends: ErrNoLog, with the context error.
	dctx, cancel := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel()
	many := make([]error, 1000)
	for i := range many {
		many[i] = unavailable
	}
	calls, took, err = run(dctx, many...)
	if !errors.Is(err, ErrNoLog) || !errors.Is(err, context.DeadlineExceeded) || calls < 3 || took > time.Second {
		t.Fatalf("unavailable until deadline: calls %d took %v err %v", calls, took, err)
	}
	// No answer until ctx ends: a timeout (the event may be stored).
	tctx, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	for i := range many {
		many[i] = nats.ErrTimeout
	}
	if _, _, err := run(tctx, many...); !errors.Is(err, peer.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeouts until deadline: %v", err)
	}
}
