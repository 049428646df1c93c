package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
)

// Env holds what the cases share: a temporary directory, the nodes
// started on loopback (on first use), and how to start node processes.
// Close stops the nodes and removes the directory.
type Env struct {
	// NodeCommand returns the command of a peerbus node process that
	// keeps its data in dataDir, listens on a free loopback port, and
	// prints a line "ready" on stdout once ready (the CLI: "peerbus
	// node"). Nil makes the node-rss case unavailable.
	NodeCommand func(dataDir string) *exec.Cmd
	// BareCommand is the same for the baseline of node-rss: a process
	// that runs a bare NATS server with JetStream (see RunBareServer).
	BareCommand func(dataDir string) *exec.Cmd

	dir string
	log *slog.Logger

	mu      sync.Mutex
	closed  bool
	node    *bus.Node
	lazy    *bus.Node
	cluster []*bus.Node
	seq     int
}

// NewEnv returns an environment with a new temporary directory under
// parent ("" for the system's).
func NewEnv(parent string) (*Env, error) {
	dir, err := os.MkdirTemp(parent, "peerbus-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return &Env{dir: dir, log: slog.New(slog.DiscardHandler)}, nil
}

// Dir returns the environment's temporary directory.
func (e *Env) Dir() string { return e.dir }

// TempDir returns a new directory under the environment's directory.
func (e *Env) TempDir(prefix string) (string, error) {
	e.mu.Lock()
	e.seq++
	n := e.seq
	e.mu.Unlock()
	d := filepath.Join(e.dir, prefix+"-"+strconv.Itoa(n))
	return d, os.MkdirAll(d, 0o700)
}

// Node returns the shared single node (JetStream on, client port on a
// free loopback port), starting it on first use.
func (e *Env) Node(ctx context.Context) (*bus.Node, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, bus.ErrClosed
	}
	if e.node != nil {
		return e.node, nil
	}
	n, err := bus.Start(ctx, bus.WithName("bench"), bus.WithListen("127.0.0.1:-1"),
		bus.WithDataDir(filepath.Join(e.dir, "node")), bus.WithLogger(e.log))
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	e.node = n
	return n, nil
}

// LazyNode returns the shared single node that syncs its JetStream
// store every 2 minutes (bus.WithLogSync, nats-server's default) rather
// than on every write, starting it on first use.
func (e *Env) LazyNode(ctx context.Context) (*bus.Node, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, bus.ErrClosed
	}
	if e.lazy != nil {
		return e.lazy, nil
	}
	n, err := bus.Start(ctx, bus.WithName("bench-lazy"), bus.WithListen("127.0.0.1:-1"),
		bus.WithDataDir(filepath.Join(e.dir, "node-lazy")), bus.WithLogger(e.log), bus.WithLogSync(2*time.Minute))
	if err != nil {
		return nil, fmt.Errorf("start node: %w", err)
	}
	e.lazy = n
	return n, nil
}

// Cluster returns the shared two-node cluster (no JetStream, routes on
// loopback), starting it on first use. It returns once the nodes route
// to each other.
func (e *Env) Cluster(ctx context.Context) ([]*bus.Node, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, bus.ErrClosed
	}
	if e.cluster != nil {
		return e.cluster, nil
	}
	nodes, err := bus.StartLocalCluster(ctx, 2, filepath.Join(e.dir, "cluster"), "bench-c",
		bus.WithoutJetStream(), bus.WithLogger(e.log))
	if err != nil {
		return nil, fmt.Errorf("start cluster: %w", err)
	}
	for _, n := range nodes {
		for n.NumRoutes() < len(nodes)-1 {
			if ctx.Err() != nil {
				closeNodes(nodes)
				return nil, fmt.Errorf("cluster routes: %w", ctx.Err())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	e.cluster = nodes
	return nodes, nil
}

// Connect opens a TCP client connection to n's client port, as a peer
// in another process would.
func Connect(n *bus.Node, name string) (*nats.Conn, error) {
	return nats.Connect(n.ClientURL(), nats.Name(name), nats.MaxReconnects(-1))
}

// Close stops the nodes and removes the directory. A second call does
// nothing.
func (e *Env) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	nodes := append([]*bus.Node(nil), e.cluster...)
	for _, n := range []*bus.Node{e.node, e.lazy} {
		if n != nil {
			nodes = append(nodes, n)
		}
	}
	e.mu.Unlock()
	closeNodes(nodes)
	return os.RemoveAll(e.dir)
}

func closeNodes(nodes []*bus.Node) {
	var wg sync.WaitGroup
	for _, n := range nodes {
		if n != nil {
			wg.Go(func() { _ = n.Close() })
		}
	}
	wg.Wait()
}

// cleanups runs functions in reverse order.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }

func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}

// closer adds the closing of x, ignoring its error.
func (c *cleanups) closer(x io.Closer) { c.add(func() { _ = x.Close() }) }

// errNoCommand reports a node-rss case without commands to run.
var errNoCommand = fmt.Errorf("%w: no node command (run it through peerbus bench)", ErrUnavailable)
