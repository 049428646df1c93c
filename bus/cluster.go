package bus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/peerbus/peerbus/internal/names"
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
	// The ports are free when chosen, but another process can take one
	// before its node binds it: then the cluster starts again on others.
	for attempt := 1; ; attempt++ {
		nodes, err := startLocalCluster(ctx, size, dataDir, prefix, opts)
		if err == nil || attempt == 3 || ctx.Err() != nil || !strings.Contains(err.Error(), "address already in use") {
			return nodes, err
		}
	}
}

// startLocalCluster is one attempt of StartLocalCluster.
func startLocalCluster(ctx context.Context, size int, dataDir, prefix string, opts []Option) ([]*Node, error) {
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

// Streams whose replicas a clustered node manages (Options.LogReplicas):
// the event log (names.LogStream, "PEERBUS_EVENTS") and every other
// stream or key-value bucket of peerbus ("PEERBUS_*", "KV_PEERBUS_*",
// such as the projection snapshots).
var managedStreamPrefixes = []string{names.StreamPrefix, names.BucketStreamPrefix}

// replicasInterval is how often the meta leader checks the replicas of
// the managed streams (a stream creation advisory triggers a check at
// once).
const replicasInterval = 2 * time.Second

// LogReplicas returns the replica count the node currently wants for the
// event log: Options.LogReplicas resolved against the size of the
// JetStream cluster (see Options.LogReplicas), 1 for a node that is not
// clustered, 0 when the node does not manage replicas.
func (n *Node) LogReplicas() int {
	n.mu.Lock()
	srv, want, started := n.srv, n.opts.LogReplicas, n.started
	n.mu.Unlock()
	if !started || srv == nil || want < 0 {
		return 0
	}
	if !srv.JetStreamIsClustered() {
		return 1
	}
	return targetReplicas(want, clusterPeers(srv))
}

// clusterPeers returns how many servers the JetStream meta group has,
// online or not, or 0 when unknown: its size, or the servers this node
// knows if it knows more. A follower that has just started may not list
// every member yet (the leader tells it), but the group's size is known
// from the start: the servers it was bootstrapped with (at least two),
// grown by the leader as members join.
func clusterPeers(srv *server.Server) int {
	jsz, err := srv.Jsz(&server.JSzOptions{})
	if err != nil || jsz.Meta == nil {
		return 0
	}
	return max(jsz.Meta.Size, 1+len(jsz.Meta.Replicas))
}

// targetReplicas resolves Options.LogReplicas for a cluster of peers
// servers.
func targetReplicas(want, peers int) int {
	switch {
	case peers <= 0:
		return 1
	case want == 0 && peers >= DefaultLogReplicas:
		return DefaultLogReplicas
	case want == 0:
		return 1
	}
	return min(want, peers)
}

// manageReplicas keeps the managed streams at the target replica count
// while this node is the JetStream meta leader.
func (n *Node) manageReplicas() {
	defer n.bg.Done()
	wake := make(chan struct{}, 1)
	sub, err := n.nc.Subscribe("$JS.EVENT.ADVISORY.STREAM.CREATED.>", func(*nats.Msg) {
		select {
		case wake <- struct{}{}:
		default:
		}
	})
	if err == nil {
		defer sub.Unsubscribe()
	}
	t := time.NewTicker(replicasInterval)
	defer t.Stop()
	failed := map[string]string{} // stream -> last error logged
	for {
		select {
		case <-n.bgStop:
			return
		case <-t.C:
		case <-wake:
		}
		if !n.srv.JetStreamIsLeader() {
			continue
		}
		n.reconcileReplicas(failed)
	}
}

// reconcileReplicas updates the managed streams whose replica count is
// not the target: lower ones in automatic mode, any other with an
// explicit count.
func (n *Node) reconcileReplicas(failed map[string]string) {
	want := n.opts.LogReplicas
	target := targetReplicas(want, clusterPeers(n.srv))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go func() {
		select {
		case <-n.bgStop:
			cancel()
		case <-ctx.Done():
		}
	}()
	js, err := jetstream.New(n.nc)
	if err != nil {
		return
	}
	names := js.StreamNames(ctx)
	var list []string
	for name := range names.Name() {
		for _, p := range managedStreamPrefixes {
			if strings.HasPrefix(name, p) {
				list = append(list, name)
				break
			}
		}
	}
	if names.Err() != nil {
		return
	}
	for _, name := range list {
		s, err := js.Stream(ctx, name)
		if err != nil {
			continue
		}
		cfg := s.CachedInfo().Config
		if cfg.Replicas == target || (want == 0 && cfg.Replicas > target) {
			delete(failed, name)
			continue
		}
		from := cfg.Replicas
		cfg.Replicas = target
		if _, err := js.UpdateStream(ctx, cfg); err != nil {
			if failed[name] != err.Error() {
				n.log.Warn("stream replicas not changed yet (retrying)", "stream", name, "from", from, "to", target, "err", err)
				failed[name] = err.Error()
			}
			continue
		}
		delete(failed, name)
		n.log.Info("stream replicas changed", "stream", name, "from", from, "to", target)
	}
}
