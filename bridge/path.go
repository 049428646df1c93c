package bridge

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"
)

// copyBufSize is the buffer of each direction of a pump: large reads
// make few, full relay frames.
const copyBufSize = 256 << 10

// punchAttempt bounds one simultaneous-open attempt; the kernel
// retransmits a SYN after one second, so this covers one retransmission.
const punchAttempt = 2 * time.Second

// connectTCP connects to addr: from an ephemeral port, or, with punch,
// from localPort (shared with the path listener) again and again until
// ctx ends, so that both sides' SYNs cross and open one connection
// through both NATs (TCP simultaneous open).
func connectTCP(ctx context.Context, addr netip.AddrPort, localPort uint16, punch bool) (net.Conn, error) {
	if !punch {
		var d net.Dialer
		return d.DialContext(ctx, "tcp4", addr.String())
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{Port: int(localPort)}, Control: reuseControl}
	for {
		actx, cancel := context.WithTimeout(ctx, punchAttempt)
		c, err := d.DialContext(actx, "tcp4", addr.String())
		cancel()
		if err == nil {
			return c, nil
		}
		t := time.NewTimer(punchRetry)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }

// closeWriter is a connection that can be half-closed.
type closeWriter interface{ CloseWrite() error }

// pump copies both ways between a and b: a direction that ends with EOF
// half-closes its destination, so half-close travels end to end. It
// returns when both directions ended, one failed, or ctx ended, with
// both connections closed.
func pump(ctx context.Context, a, b net.Conn) {
	var wg sync.WaitGroup
	errc := make(chan error, 2)
	half := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, copyBufSize)
		_, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
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
