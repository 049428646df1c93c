package bridge

import (
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
)

// pattern is a deterministic pseudo-random reader.
type pattern struct {
	r *rand.ChaCha8
	n int64
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	_, _ = p.r.Read(b)
	p.n -= int64(len(b))
	return len(b), nil
}

func TestRelay100MBAcrossCluster(t *testing.T) {
	nodes := startCluster(t, 2)
	target := echotest.TCP(t)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[1]))
	waitPeer(t, pd, pe.ID())
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", target)
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	c, err := Dial(ctxT(t, 20*time.Second), pd, pe.ID(), "echo", WithStrategies(Relay))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const size = 100 << 20
	start := time.Now()
	sent := make(chan [32]byte, 1)
	go func() {
		h := sha256.New()
		src := io.TeeReader(&pattern{r: rand.NewChaCha8([32]byte{1}), n: size}, h)
		buf := make([]byte, 256<<10)
		if _, err := io.CopyBuffer(writerOnly{c}, readerOnly{src}, buf); err != nil {
			t.Error(err)
		}
		_ = c.CloseWrite()
		sent <- [32]byte(h.Sum(nil))
	}()
	h := sha256.New()
	n, err := io.CopyBuffer(h, readerOnly{c}, make([]byte, 256<<10))
	if err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if n != size {
		t.Fatalf("echoed %d bytes, want %d", n, size)
	}
	if got, want := [32]byte(h.Sum(nil)), <-sent; got != want {
		t.Fatal("sha256 mismatch")
	}
	t.Logf("100 MiB echoed over the relay in %v (%.1f MiB/s each way)", el, float64(size)/(1<<20)/el.Seconds())
}
