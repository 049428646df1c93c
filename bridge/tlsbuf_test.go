package bridge

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
)

// smallReads returns at most n bytes per Read, as a TLS connection
// returns one record.
type smallReads struct {
	r io.Reader
	n int
}

func (s smallReads) Read(b []byte) (int, error) { return s.r.Read(b[:min(len(b), s.n)]) }

// countingWriter counts the writes it gets.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(b []byte) (int, error) { w.writes++; return w.Buffer.Write(b) }

func TestCopyAhead(t *testing.T) {
	src := make([]byte, 5<<20+123)
	for i := range src {
		src[i] = byte(rand.Uint32())
	}
	for _, size := range []int{1000, 64 << 10, 1 << 20} {
		var dst countingWriter
		n, wait, err := copyAhead(&dst, smallReads{bytes.NewReader(src), 16 << 10}, size)
		wait()
		if err != nil || n != int64(len(src)) || !bytes.Equal(dst.Bytes(), src) {
			t.Fatalf("ring %d: copied %d of %d bytes, %v", size, n, len(src), err)
		}
		t.Logf("ring %d: %d writes", size, dst.writes)
	}

	// A failing destination ends the copy with its error; the reader
	// returns once the source is closed.
	a, b := net.Pipe()
	go func() { _, _ = a.Write(make([]byte, 1000)) }()
	boom := errors.New("boom")
	_, wait, err := copyAhead(failWriter{boom}, b, 4096)
	if !errors.Is(err, boom) {
		t.Fatalf("copy to a failing writer: %v", err)
	}
	b.Close()
	a.Close()
	wait()
}

type failWriter struct{ err error }

func (f failWriter) Write([]byte) (int, error) { return 0, f.err }
