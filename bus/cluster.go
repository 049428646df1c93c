package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
)

// StartLocalCluster starts size nodes on loopback, with system-chosen
// client and cluster ports and full-mesh routes, and returns once every
// node is ready. Clustered JetStream needs a quorum, so the nodes are
// started together. Each node gets the options in opts, then a name
// "<prefix><i>" and its own data directory under dataDir. On error every
// node already started is closed.
func StartLocalCluster(ctx context.Context, size int, dataDir, prefix string, opts ...Option) ([]*Node, error) {
	if size < 1 {
		return nil, fmt.Errorf("%w: cluster size %d", ErrInvalidOption, size)
	}
	ports := make([]int, size)
	routes := make([]string, size)
	for i := range ports {
		p, err := freePort("127.0.0.1")
		if err != nil {
			return nil, err
		}
		ports[i] = p
		routes[i] = "nats-route://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(p))
	}
	nodes := make([]*Node, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range nodes {
		name := prefix + strconv.Itoa(i)
		o := append(append([]Option{WithListen("127.0.0.1:-1")}, opts...),
			WithName(name),
			WithCluster(net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[i]))),
			WithRoutes(routes...),
			WithDataDir(dataDir+"/"+name))
		n, err := New(o...)
		if err != nil {
			errs[i] = err
			continue
		}
		nodes[i] = n
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = n.Start(ctx)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, n := range nodes {
			if n != nil {
				_ = n.Close()
			}
		}
		return nil, err
	}
	return nodes, nil
}
