package bridge

import (
	"bufio"
	"crypto/tls"
	"io"
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

// readsRecords reports whether r is a raw path's TLS connection, whose
// Read returns at most one TLS record (16 KiB) at a time.
func readsRecords(r io.Reader) bool {
	switch r := r.(type) {
	case *batchedTLS:
		return true
	case *Conn:
		_, ok := r.c.(*batchedTLS)
		return ok
	}
	return false
}

// copyAhead copies src to dst as io.CopyBuffer does, but a goroutine
// reads src ahead into a ring of size bytes while dst's writes are under
// way, and each write takes all that piled up (up to the end of the
// ring). From a TLS connection that turns a write per 16 KiB record into
// few large writes; with light traffic each write still goes out as soon
// as its bytes arrived. The copy returns on src's EOF (err nil), src's
// other errors or dst's; wait, which must be called after, returns once
// the reader goroutine has (it may still be in src.Read until src is
// closed).
func copyAhead(dst io.Writer, src io.Reader, size int) (written int64, wait func(), err error) {
	var (
		mu   sync.Mutex
		cond = sync.NewCond(&mu)
		buf  = make([]byte, size)
		r, w int64 // bytes read into buf and written from it, in all
		rerr error
		stop bool
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			mu.Lock()
			for r-w == int64(size) && !stop {
				cond.Wait()
			}
			if stop {
				mu.Unlock()
				return
			}
			pos := int(r % int64(size))
			n := min(size-pos, size-int(r-w))
			mu.Unlock()
			k, err := src.Read(buf[pos : pos+n])
			mu.Lock()
			r += int64(k)
			rerr = err
			cond.Broadcast()
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	wait = func() { <-done }
	for {
		mu.Lock()
		for r == w && rerr == nil {
			cond.Wait()
		}
		if r == w {
			err := rerr
			mu.Unlock()
			if err == io.EOF {
				err = nil
			}
			return written, wait, err
		}
		pos := int(w % int64(size))
		n := min(size-pos, int(r-w))
		mu.Unlock()
		k, err := dst.Write(buf[pos : pos+n])
		written += int64(k)
		mu.Lock()
		w += int64(k)
		if err == nil && k < n {
			err = io.ErrShortWrite
		}
		if err != nil {
			stop = true
		}
		cond.Broadcast()
		mu.Unlock()
		if err != nil {
			return written, wait, err
		}
	}
}
