package bridge

import (
	"bufio"
	"crypto/tls"
	"net"
	"sync"
)

// TLS splits what it writes into records of at most 16 KiB, each of
// which would be one write on the socket. A raw path's TLS connection
// writes its records through writeBatcher instead: while one Write of
// the path is under way, records are gathered and go to the socket in
// one write when it ends (or when 256 KiB are gathered). Writes outside
// a path Write (the handshake, alerts) go straight through. Reads of the
// socket fill a 256 KiB buffer.
const batchSize = 256 << 10

// writeBatcher is the socket under a raw path's TLS connection. Its reads
// are buffered likewise: TLS reads a record at a time.
type writeBatcher struct {
	net.Conn
	r        *bufio.Reader
	mu       sync.Mutex
	batching bool
	buf      []byte
}

func newWriteBatcher(c net.Conn) *writeBatcher {
	return &writeBatcher{Conn: c, r: bufio.NewReaderSize(c, batchSize)}
}

func (w *writeBatcher) Read(b []byte) (int, error) { return w.r.Read(b) }

func (w *writeBatcher) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.batching {
		return w.Conn.Write(b)
	}
	w.buf = append(w.buf, b...)
	if len(w.buf) >= batchSize {
		if err := w.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func (w *writeBatcher) flushLocked() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.Conn.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *writeBatcher) begin() {
	w.mu.Lock()
	w.batching = true
	w.mu.Unlock()
}

func (w *writeBatcher) end() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.batching = false
	return w.flushLocked()
}

// batchedTLS is a raw path's TLS connection whose Writes reach the
// socket in few large writes.
type batchedTLS struct {
	*tls.Conn
	w   *writeBatcher
	wmu sync.Mutex
}

func (c *batchedTLS) Write(b []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.w.begin()
	n, err := c.Conn.Write(b)
	if ferr := c.w.end(); err == nil && ferr != nil {
		return n, ferr
	}
	return n, err
}
