package bridge

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"syscall"
	"time"
)

// copyBufSize is the buffer of each direction of a pump: large reads
// make few, full relay frames.
const copyBufSize = 256 << 10

// readAheadSize is the ring of a pump that reads a TLS path ahead
// (copyAhead).
const readAheadSize = 256 << 10

// punchAttempt bounds one simultaneous-open attempt; the kernel
// retransmits a SYN after one second, so this covers one retransmission.
const punchAttempt = 2 * time.Second

// fastRetry is the pause before the next SYN to a mapped address after
// the other NAT answered one with a reset (it had no state for us yet).
const fastRetry = 500 * time.Microsecond

// mappedAttempt bounds one attempt towards a mapped address.
const mappedAttempt = 500 * time.Millisecond

// connectTCP connects to cand: from an ephemeral port, or, with punch,
// from localPort (the port this side advertised) again and again until
// ctx ends. Both sides punch this way at once (TCP simultaneous open).
//
// Each SYN creates this side's NAT state towards the other side. A SYN
// that reaches the other NAT before the other side's SYN went out meets
// no state there and is reset, which also ends this side's state; one
// that arrives while the other side's SYN is on its way passes, reaches
// the other side's connecting socket, and the two sockets open one
// connection. Each socket's SYN-ACK carries the sequence number of its
// own SYN, which is what its NAT (conntrack, which checks sequence
// numbers) expects. So, towards a mapped address, a reset attempt is
// followed by the next after fastRetry only: many attempts per second
// make the crossing likely within a fraction of a second. Attempts that
// get no answer are given up after mappedAttempt. A side behind a NAT
// closes its path listener while punching: the listener would answer a
// SYN that arrives between two attempts with a sequence number the NAT
// rejects. Without a NAT the listener stays and takes the other side's
// SYNs.
//
// attempt, if not nil, is waited for before each connection attempt
// (the exposer's rate limit).
func connectTCP(ctx context.Context, cand Candidate, localPort uint16, punch bool, attempt func(context.Context) error, log *slog.Logger) (net.Conn, error) {
	addr := cand.Addr.String()
	if attempt == nil {
		attempt = func(context.Context) error { return nil }
	}
	if !punch {
		if err := attempt(ctx); err != nil {
			return nil, err
		}
		var d net.Dialer
		return d.DialContext(ctx, "tcp4", addr)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{Port: int(localPort)}, Control: reuseControl}
	limit := punchAttempt
	if cand.Kind == KindMapped {
		limit = mappedAttempt
	}
	for {
		if err := attempt(ctx); err != nil {
			return nil, err
		}
		actx, cancel := context.WithTimeout(ctx, limit)
		t0 := time.Now()
		c, err := d.DialContext(actx, "tcp4", addr)
		cancel()
		if err == nil {
			return c, nil
		}
		pause := punchRetry
		if cand.Kind == KindMapped && errors.Is(err, syscall.ECONNREFUSED) {
			pause = fastRetry
		}
		log.Debug("punch attempt failed", "to", addr, "from", localPort, "err", err, "took", time.Since(t0))
		if !sleepCtx(ctx, pause) {
			return nil, ctx.Err()
		}
	}
}

// sleepCtx sleeps for d; it reports false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

// closeWriter is a connection that can be half-closed.
type closeWriter interface{ CloseWrite() error }

// Join copies both ways between two stream connections, as the exposer
// does between a session's path and its target: a direction that ends
// with EOF half-closes its destination (CloseWrite when it has one,
// Close otherwise), so half-close travels end to end. It returns when
// both directions ended, one failed, or ctx ended, with both connections
// closed.
func Join(ctx context.Context, a, b net.Conn) {
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		var err error
		if readsRecords(src) {
			var wait func()
			_, wait, err = copyAhead(writerOnly{dst}, src, readAheadSize)
			defer wait()
		} else {
			buf := make([]byte, copyBufSize)
			_, err = io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
		}
		if err == nil {
			if cw, ok := dst.(closeWriter); ok {
				err = cw.CloseWrite()
			} else {
				err = dst.Close()
			}
		}
		errc <- err
	}
	wg.Add(2)
	go half(a, b)
	go half(b, a)
	stop := context.AfterFunc(ctx, func() {
		_ = a.Close()
		_ = b.Close()
	})
	for range 2 {
		if err := <-errc; err != nil {
			_ = a.Close()
			_ = b.Close()
		}
	}
	stop()
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}
