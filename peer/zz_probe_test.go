package peer_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/peer"
)

func TestZZQuery(t *testing.T) {
	node := single(t)
	f := startFleet(t, 500, []*bus.Node{node})
	for _, quiet := range []time.Duration{0, 2 * time.Second} {
		var wg sync.WaitGroup
		var mu sync.Mutex
		hist := map[int]int{}
		sem := make(chan struct{}, 8)
		st := time.Now()
		for i := 0; i < 48; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				infos, _ := peer.QueryPeersMatching(ctx, f.conns[i], peer.PeerQuery{}, quiet)
				cancel()
				mu.Lock()
				hist[len(infos)/10*10]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		t.Logf("quiet %v: %v in %v", quiet, hist, time.Since(st))
	}
}
