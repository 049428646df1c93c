package peer_test

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerbus/peerbus/peer"
)

// TestWorkerLimit checks the worker pool at its limit: with every
// worker in a slow function, further calls wait in the inbox, and are
// served once a worker is done.
func TestWorkerLimit(t *testing.T) {
	n := single(t)
	p := newPeer(t, n, peer.WithMaxConcurrent(2))
	release := make(chan struct{})
	started := make(chan struct{}, 8)
	var running, most atomic.Int32
	slow, _ := peer.Register(p, "slow", func(ctx context.Context, x int) (int, error) {
		r := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); r > m && !most.CompareAndSwap(m, r); m = most.Load() {
		}
		started <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return x, nil
	})
	fast, _ := peer.Register(p, "fast", func(_ context.Context, x int) (int, error) { return x, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errs := make(chan error, 2)
	for i := range 2 {
		go func() {
			_, err := slow.Call(ctx, i, peer.OnPeer(p.ID()))
			errs <- err
		}()
		<-started
	}
	// Both workers are busy: a fast call waits.
	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err := fast.Call(short, 1, peer.OnPeer(p.ID()))
	scancel()
	if err == nil {
		t.Fatal("a third call was served by two workers both in slow functions")
	}
	done := make(chan error, 1)
	go func() {
		v, err := fast.Call(ctx, 7, peer.OnPeer(p.ID()))
		if err == nil && v != 7 {
			err = context.Canceled
		}
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	release <- struct{}{} // one slow function returns: its worker serves the waiting call
	if err := <-done; err != nil {
		t.Fatalf("queued call: %v", err)
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if most.Load() > 2 {
		t.Fatalf("%d functions ran at once with a limit of 2", most.Load())
	}
	// The pool still serves after being at its limit.
	if v, err := fast.Call(ctx, 9, peer.OnPeer(p.ID())); err != nil || v != 9 {
		t.Fatalf("after the limit: %v %v", v, err)
	}
}

// TestWorkerMixedLoad runs many concurrent fast calls while slow
// functions hold workers: the fast calls keep being served.
func TestWorkerMixedLoad(t *testing.T) {
	n := single(t)
	p := newPeer(t, n)
	block := make(chan struct{})
	slow, _ := peer.Register(p, "slow", func(ctx context.Context, _ int) (int, error) {
		select {
		case <-block:
		case <-ctx.Done():
		}
		return 0, nil
	})
	fast, _ := peer.Register(p, "fast", func(_ context.Context, x int) (int, error) { return x + 1, nil })
	caller := newPeer(t, n, peer.AsClient())
	fastC, _ := peer.Stub[int, int](caller, fast.Tag())
	slowC, _ := peer.Stub[int, int](caller, slow.Tag())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() { _, _ = slowC.Call(ctx, 0, peer.OnPeer(p.ID())) })
	}
	var failed atomic.Int32
	var fwg sync.WaitGroup
	for g := range 32 {
		fwg.Go(func() {
			for i := range 100 {
				v, err := fastC.Call(ctx, g*1000+i, peer.OnPeer(p.ID()), peer.Timeout(10*time.Second))
				if err != nil || v != g*1000+i+1 {
					failed.Add(1)
				}
			}
		})
	}
	fwg.Wait()
	close(block)
	wg.Wait()
	if failed.Load() > 0 {
		t.Fatalf("%d fast calls failed beside slow ones", failed.Load())
	}
}
