// Package bus runs a peerbus node: a NATS server embedded in the process
// (or, in external mode, a connection to an existing NATS deployment),
// with an in-process client connection and JetStream.
//
// A Node is created with New, started with Start (which blocks until the
// server accepts connections and JetStream is current) and stopped with
// Close, which drains the connection and shuts the server down within
// documented bounds. Nodes given routes to each other form one NATS
// cluster: one bus.
//
// Options start from DefaultOptions; Option functions (With*) change them
// and refuse values they cannot use with ErrInvalidOption. Settings is
// the table of the settings the environment (PEERBUS_*, see FromEnv) and
// the flags of the peerbus node command give.
package bus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// externalPingInterval is the ping interval of a node's connection to an
// external NATS: with two pings outstanding, a dead server is noticed
// within about three intervals.
const externalPingInterval = 3 * time.Second

// externalDialTimeout bounds one connection attempt to an external NATS.
const externalDialTimeout = 5 * time.Second

// Sentinel errors returned by this package.
var (
	// ErrInvalidOption reports an option value that cannot be used.
	ErrInvalidOption = errors.New("bus: invalid option")
	// ErrNotReady reports a node whose server or JetStream did not become
	// ready within the ready timeout or the caller's context.
	ErrNotReady = errors.New("bus: node not ready")
	// ErrNotStarted reports use of a node before Start.
	ErrNotStarted = errors.New("bus: node not started")
	// ErrClosed reports use of a node after Close. It wraps net.ErrClosed.
	ErrClosed = fmt.Errorf("bus: node closed: %w", net.ErrClosed)
	// ErrNoJetStream reports that JetStream is disabled or unavailable.
	ErrNoJetStream = errors.New("bus: jetstream not available")
	// ErrAddrInUse reports a listen address (client or cluster port)
	// that another process holds; Start's error wraps it together with
	// ErrNotReady and names the address.
	ErrAddrInUse = errors.New("bus: address in use")
)

// Node is one peerbus node. Its methods are safe for concurrent use.
type Node struct {
	opts Options
	log  *slog.Logger

	mu       sync.Mutex
	started  bool
	closed   bool
	tornDown bool
	startErr error

	srv    *server.Server
	nc     *nats.Conn
	js     jetstream.JetStream
	inproc []nats.Option // credentials of in-process connections

	disc     *discoverer     // LAN discovery, or nil
	routesMu sync.Mutex      // serialises route reloads
	sbase    *server.Options // pristine server options, for reloads
	routes   []*url.URL      // the server's current routes
	lone     bool            // first node of a cluster: JetStream waits for a second
	seeded   bool            // routes name other nodes
	bg       sync.WaitGroup  // background goroutines (replicas, routes)
	bgStop   chan struct{}   // closed by teardown
	stopOnce sync.Once       // closes bgStop
	addRoute chan struct{}   // wakes the route adder

	fatalMu  sync.Mutex
	fatalMsg string
	routeErr string // the server's last route error line
}

// New validates the options and returns a node that is not started yet.
// Options are applied in order over DefaultOptions.
func New(opts ...Option) (*Node, error) {
	o := DefaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if err := o.validate(); err != nil {
		return nil, err
	}
	l := o.Logger
	if l == nil {
		l = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Node{opts: o, log: l, bgStop: make(chan struct{}), addRoute: make(chan struct{}, 1)}, nil
}

// Start creates and starts a node in one step.
func Start(ctx context.Context, opts ...Option) (*Node, error) {
	n, err := New(opts...)
	if err != nil {
		return nil, err
	}
	if err := n.Start(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// Start starts the embedded server (or connects to the external NATS)
// and blocks until it accepts connections and JetStream is current. It
// is idempotent: later calls return the first call's result.
func (n *Node) Start(ctx context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if n.started {
		return n.startErr
	}
	n.started = true
	ctx, cancel := context.WithTimeout(ctx, n.opts.ReadyTimeout)
	defer cancel()
	if n.opts.ExternalURL != "" {
		n.startErr = n.startExternal(ctx)
	} else {
		n.startErr = n.startEmbedded(ctx)
	}
	if n.startErr != nil {
		if err := n.teardown(); err != nil {
			n.log.Warn("bus node not torn down in time after a failed start", "err", err)
		}
	}
	return n.startErr
}

// startPlan is what startEmbedded works out before it builds the
// server's options: addresses, the name, discovery.
type startPlan struct {
	host   string // client listen host
	port   int    // client listen port (-1: chosen by the server)
	chost  string // cluster listen host, when clustered
	cport  int    // cluster listen port, when clustered
	chosen bool   // cport was chosen here (the option gave none)
	// clustered: a cluster listener (routes, a cluster address or
	// discovery).
	clustered bool
	announce  netip.Addr     // discovery: the route address others dial
	ifi       *net.Interface // discovery interface
	leafs     []*url.URL
}

// startEmbedded starts the embedded server in named steps: plan the
// addresses, discover other nodes, build the server options and start
// the server (again on another port when a port chosen here was taken
// meanwhile), connect in-process, and wait for readiness.
func (n *Node) startEmbedded(ctx context.Context) error {
	p, err := n.plan()
	if err != nil {
		return err
	}
	if err := checkClientPort(p); err != nil {
		return err
	}
	found, err := n.discover(ctx, p)
	if err != nil {
		return err
	}
	const attempts = 5
	for i := 1; ; i++ {
		sopts, err := n.serverOptions(ctx, p, found)
		if err != nil {
			return err
		}
		err = n.startServer(ctx, sopts)
		if err == nil {
			break
		}
		// The port was free when it was chosen, but another process can
		// take it before the server binds it: choose again.
		if !p.chosen || n.disc != nil || i == attempts || !strings.Contains(err.Error(), "router port") {
			return n.addrInUse(err, p)
		}
		n.log.Debug("cluster port taken meanwhile, choosing another", "port", p.cport, "err", err)
		n.stopServer()
		if p.cport, err = pickPort(p.chost); err != nil {
			return fmt.Errorf("bus: cluster listener: %w", err)
		}
	}
	if what := n.opts.exposure(p); what != "" {
		n.log.Warn("UNPROTECTED: this node listens beyond loopback without authentication: " + what)
	}
	if n.disc != nil {
		// Nodes heard from now on are added at once, also while this
		// node waits for its JetStream quorum: a node alone cannot elect
		// a meta leader (the expected size is at least two), so two
		// lone nodes that missed each other's beacons merge safely.
		n.bg.Add(1)
		go n.routeAdder()
		n.disc.OnNew(func(netip.AddrPort) { n.wakeRouteAdder() })
		n.wakeRouteAdder() // routes heard since the window closed
	}
	if err := n.connectInProcess(); err != nil {
		return err
	}
	return n.waitReady(ctx, p)
}

// AddrInUseError reports a listen address that another process holds.
// It matches ErrAddrInUse and ErrNotReady with errors.Is.
type AddrInUseError struct {
	// Listener is "client", "cluster" or "monitor".
	Listener string
	// Addr is the address, host:port.
	Addr string
	// JoinURL is the URL of a node that listens on a taken client port
	// (loopback for an unspecified host), for WithExternalURL; empty for
	// a cluster port.
	JoinURL string
	// Err is the server's error.
	Err error
}

// Error says which port is taken and what to do about it.
func (e *AddrInUseError) Error() string {
	if e.Listener == "monitor" {
		return fmt.Sprintf("bus: monitor port %s is taken by another process (choose another: %s, bus.WithMonitor)", e.Addr, EnvMonitor)
	}
	if e.Listener == "cluster" {
		return fmt.Sprintf("bus: cluster port %s is taken by another process "+
			"(another node of this machine? give each node its own cluster address: %s, bus.WithCluster)",
			e.Addr, EnvCluster)
	}
	return fmt.Sprintf("bus: client port %s is taken by another process, probably a running peerbus node "+
		"or NATS server: join it with %s=%s (bus.WithExternalURL), "+
		"or listen elsewhere with %s (port -1 picks a free one)", e.Addr, EnvNATSURL, e.JoinURL, EnvListen)
}

// Unwrap returns ErrNotReady, ErrAddrInUse and the server's error.
func (e *AddrInUseError) Unwrap() []error { return []error{ErrNotReady, ErrAddrInUse, e.Err} }

// checkClientPort fails with an *AddrInUseError when another process
// holds the client port, before the server starts: a server that fails
// to listen has opened its JetStream store already, which may be the
// directory of the node that holds the port (the same default name).
func checkClientPort(p *startPlan) error {
	if p.port <= 0 {
		return nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(p.host, strconv.Itoa(p.port)))
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return clientInUse(err, p)
		}
		return nil // the server reports other failures in its own words
	}
	return l.Close()
}

// addrInUse returns err, or, when the server could not bind a port that
// another process holds, an *AddrInUseError naming the port.
func (n *Node) addrInUse(err error, p *startPlan) error {
	msg := err.Error()
	if !strings.Contains(msg, "address already in use") {
		return err
	}
	switch {
	case strings.Contains(msg, "router port"):
		return &AddrInUseError{Listener: "cluster", Addr: net.JoinHostPort(p.chost, strconv.Itoa(p.cport)), Err: err}
	case strings.Contains(msg, "Error listening on port"):
		return clientInUse(err, p)
	case strings.Contains(msg, "monitor port"):
		host, port, _ := monitorHostPort(n.opts.Monitor)
		return &AddrInUseError{Listener: "monitor", Addr: net.JoinHostPort(host, strconv.Itoa(port)), Err: err}
	}
	return fmt.Errorf("%w: %w", err, ErrAddrInUse)
}

// clientInUse is the *AddrInUseError of the plan's client port.
func clientInUse(err error, p *startPlan) *AddrInUseError {
	e := &AddrInUseError{Listener: "client", Addr: net.JoinHostPort(p.host, strconv.Itoa(p.port)), Err: err}
	join := p.host
	if ip, err := netip.ParseAddr(p.host); p.host == "" || (err == nil && ip.IsUnspecified()) {
		join = "127.0.0.1"
	}
	e.JoinURL = "nats://" + net.JoinHostPort(join, strconv.Itoa(p.port))
	return e
}

// plan works out the node's addresses and name from its options.
func (n *Node) plan() (*startPlan, error) {
	o := n.opts
	p := &startPlan{}
	p.host, p.port, _ = hostPort(o.Listen, "listen")
	p.clustered = o.ClusterListen != "" || len(o.Routes) > 0 || o.Discover
	if p.clustered {
		p.chost, p.cport = p.host, DefaultClusterPort
		if o.ClusterListen != "" {
			p.chost, p.cport, _ = hostPort(o.ClusterListen, "cluster")
		}
		if o.Discover {
			given := ""
			if o.ClusterListen != "" {
				given = p.chost
			}
			var err error
			p.ifi, p.announce, err = discoveryInterface(o.DiscoveryInterface, given)
			if err != nil {
				return nil, err
			}
			if o.ClusterListen == "" {
				p.chost = p.announce.String()
			}
		}
		if p.cport <= 0 {
			// JetStream needs the node's own route URL when it has no
			// seeds, and discovery announces it, so a system-chosen
			// port is chosen here.
			c, err := pickPort(p.chost)
			if err != nil {
				return nil, fmt.Errorf("bus: cluster listener: %w", err)
			}
			p.cport, p.chosen = c, true
		}
	}
	if n.opts.Name == "" {
		n.opts.Name = defaultNodeName(p.port, p.chost)
	}
	p.leafs, _ = leafURLs(o.LeafURLs)
	return p, nil
}

// discover listens for the beacons of the node's cluster for the
// discovery window and returns the routes it heard (none without
// discovery).
func (n *Node) discover(ctx context.Context, p *startPlan) ([]string, error) {
	o := n.opts
	if !p.clustered || !o.Discover {
		return nil, nil
	}
	conn, err := listenBeacons(p.ifi, p.announce, mustGroup(o.DiscoveryGroup))
	if err != nil {
		return nil, err
	}
	self := Beacon{Cluster: o.ClusterName, Name: o.Name, Route: netip.AddrPortFrom(p.announce, uint16(p.cport))}
	d, err := newDiscoverer(conn, self, o.DiscoveryInterval, n.log.With("component", "discovery"))
	if err != nil {
		conn.Close()
		return nil, err
	}
	n.disc = d
	n.log.Info("discovery: listening", "interface", p.ifi.Name, "group", o.DiscoveryGroup,
		"route", self.Route, "window", o.DiscoveryWindow)
	heard := d.Wait(ctx, o.DiscoveryWindow)
	if ctx.Err() != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotReady, ctx.Err())
	}
	found := make([]string, 0, len(heard))
	for _, r := range heard {
		found = append(found, routeString(r))
	}
	n.log.Info("discovery: window over", "found", len(found))
	return found, nil
}

// serverOptions builds the embedded server's options from the plan:
// listeners, security, routes, leafnode remote, JetStream.
func (n *Node) serverOptions(ctx context.Context, p *startPlan, found []string) (*server.Options, error) {
	o := n.opts
	sopts := &server.Options{
		Host:       p.host,
		Port:       p.port,
		NoSigs:     true,
		MaxPayload: o.MaxPayload,
		Debug:      o.Debug,
		ServerName: o.Name,
	}
	inproc, err := n.opts.secureServer(sopts)
	if err != nil {
		return nil, err
	}
	n.inproc = inproc
	sopts.HTTPHost, sopts.HTTPPort, _ = monitorHostPort(o.Monitor)
	if p.clustered {
		sopts.Cluster.Name, sopts.Cluster.Host, sopts.Cluster.Port = o.ClusterName, p.chost, p.cport
		sopts.Routes = n.clusterRoutes(ctx, p, found)
	}
	if len(p.leafs) > 0 {
		r, err := n.opts.leafRemote(p.leafs)
		if err != nil {
			return nil, err
		}
		sopts.LeafNode.Remotes = []*server.RemoteLeafOpts{r}
	}
	if !o.NoJetStream {
		if err := n.jetStreamOptions(sopts, p); err != nil {
			return nil, err
		}
	}
	return sopts, nil
}

// clusterRoutes returns the routes of a clustered node: the configured
// ones, the discovered ones and, for a seed or a discovering node, its
// own; each host once, with the cluster credentials. It records them
// and whether the node is the first of its cluster.
func (n *Node) clusterRoutes(ctx context.Context, p *startPlan, found []string) []*url.URL {
	o := n.opts
	routes := append(append([]string(nil), o.Routes...), found...)
	if !o.NoJetStream && (len(o.Routes) == 0 || o.Discover) {
		// A first (seed) node routes to itself: the server skips
		// the self route, and clustered JetStream accepts the
		// setup. A discovering node lists itself among the nodes it
		// found, so that the expected cluster size counts it.
		// Configured routes are left alone: they usually name this
		// node already, and a second name for it would inflate the
		// expected size (and the quorum) of the JetStream cluster.
		self := p.chost
		if ip := net.ParseIP(self); ip != nil && ip.IsUnspecified() {
			self = "127.0.0.1"
		}
		routes = append(routes, net.JoinHostPort(self, strconv.Itoa(p.cport)))
	}
	all, _ := routeURLs(routes)
	var urls []*url.URL
	seen := map[string]bool{}
	for _, u := range all {
		if !seen[u.Host] {
			seen[u.Host] = true
			urls = append(urls, n.opts.withRouteCreds(u))
		}
	}
	n.routes = urls
	n.seeded = hasOtherRoute(ctx, urls, p.chost, p.cport)
	n.lone = !o.NoJetStream && !n.seeded
	return urls
}

// jetStreamOptions turns on JetStream in sopts: the data directory
// (created if needed) and the domain, which a leafnode's JetStream gets
// by default.
func (n *Node) jetStreamOptions(sopts *server.Options, p *startPlan) error {
	o := n.opts
	dir := o.DataDir
	if dir == "" {
		dir = defaultDataDir(o.Name)
		n.opts.DataDir = dir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("bus: data directory: %w", err)
	}
	sopts.JetStream = true
	sopts.StoreDir = dir
	if o.LogSync == LogSyncAlways {
		sopts.SyncAlways = true
	} else {
		sopts.SyncInterval = o.LogSync
	}
	sopts.JetStreamDomain = o.JetStreamDomain
	if sopts.JetStreamDomain == "" && len(p.leafs) > 0 {
		// A leafnode's JetStream needs a domain of its own, or the
		// hub's and the leaf's JetStream APIs collide.
		sopts.JetStreamDomain = nameSafe(o.Name)
	}
	n.opts.JetStreamDomain = sopts.JetStreamDomain
	return nil
}

// startServer creates and starts the server and waits until it accepts
// connections.
func (n *Node) startServer(ctx context.Context, sopts *server.Options) error {
	n.sbase = sopts.Clone()
	srv, err := server.NewServer(sopts)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidOption, err)
	}
	srv.SetLoggerV2(&serverLogger{n: n}, n.opts.Debug, false, false)
	n.srv = srv
	srv.Start()
	return n.waitServer(ctx)
}

// stopServer shuts down a server that failed to start and forgets its
// fatal message, for another attempt.
func (n *Node) stopServer() {
	n.srv.Shutdown()
	n.srv.WaitForShutdown()
	n.srv = nil
	n.fatalMu.Lock()
	n.fatalMsg = ""
	n.fatalMu.Unlock()
}

// connectInProcess opens the node's in-process client connection.
func (n *Node) connectInProcess() error {
	nc, err := nats.Connect("", append([]nats.Option{nats.InProcessServer(n.srv), nats.Name("peerbus:" + n.opts.Name),
		nats.MaxReconnects(-1), nats.DrainTimeout(5 * time.Second)}, n.inproc...)...)
	if err != nil {
		return fmt.Errorf("%w: in-process connection: %v", ErrNotReady, err)
	}
	n.nc = nc
	return nil
}

// waitReady waits for the leafnode connection and JetStream, and starts
// the replica manager of a clustered node.
func (n *Node) waitReady(ctx context.Context, p *startPlan) error {
	o := n.opts
	if len(p.leafs) > 0 {
		if err := n.waitLeaf(ctx); err != nil {
			return err
		}
	}
	switch {
	case o.NoJetStream:
	case n.lone:
		// The first node of a cluster: clustered JetStream elects its
		// meta leader only with a second node (nats-server's meta group
		// never runs with one member), so the node is ready now and its
		// event log once another node routes to it.
		js, err := jetstream.New(n.nc)
		if err != nil {
			return fmt.Errorf("%w: %v", ErrNoJetStream, err)
		}
		n.js = js
		n.log.Warn("first node of the cluster: the event log starts when a second node joins "+
			"(clustered JetStream needs two nodes for a quorum); join it with --routes "+n.ClusterURL()+
			", or run a single node without --cluster for a log of its own",
			"cluster", o.ClusterName)
		n.bg.Add(1)
		go n.reportLogReady()
	default:
		if err := n.waitJetStream(ctx); err != nil {
			return err
		}
	}
	if n.seeded {
		n.bg.Add(1)
		go n.watchRoutes(routeWarnAfter)
	}
	if p.clustered && !o.NoJetStream && o.LogReplicas >= 0 {
		n.bg.Add(1)
		go n.manageReplicas()
	}
	n.log.Debug("bus node ready", "name", o.Name, "client", n.ClientURL(), "cluster", n.ClusterURL(),
		"jetstream", !o.NoJetStream, "domain", n.opts.JetStreamDomain, "data_dir", n.opts.DataDir,
		"routes", len(n.routes), "leaf", len(p.leafs) > 0)
	return nil
}

// waitLeaf waits until the leafnode connection is up.
func (n *Node) waitLeaf(ctx context.Context) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for n.srv.NumLeafNodes() == 0 {
		if msg := n.fatal(); msg != "" {
			return fmt.Errorf("%w: %s", ErrNotReady, msg)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: leafnode connection to %s not established: %v",
				ErrNotReady, redactURLs(n.opts.LeafURLs), ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// wakeRouteAdder asks the route adder to look for new routes.
func (n *Node) wakeRouteAdder() {
	select {
	case n.addRoute <- struct{}{}:
	default:
	}
}

// routeAdder adds the routes discovery finds after the start to the
// running server, with a configuration reload.
func (n *Node) routeAdder() {
	defer n.bg.Done()
	for {
		select {
		case <-n.bgStop:
			return
		case <-n.addRoute:
		}
		if err := n.addDiscoveredRoutes(); err != nil {
			n.log.Warn("discovery: adding routes failed", "err", err)
		}
	}
}

// addDiscoveredRoutes reloads the server with the discovered routes it
// does not have yet.
func (n *Node) addDiscoveredRoutes() error {
	n.routesMu.Lock()
	defer n.routesMu.Unlock()
	have := map[string]bool{}
	for _, u := range n.routes {
		have[u.Host] = true
	}
	var add []*url.URL
	for _, r := range n.disc.Routes() {
		if have[r.String()] {
			continue
		}
		u, _ := url.Parse(routeString(r))
		add = append(add, n.opts.withRouteCreds(u))
	}
	if len(add) == 0 {
		return nil
	}
	nopts := n.sbase.Clone()
	nopts.Routes = append(append([]*url.URL(nil), n.routes...), add...)
	if err := n.srv.ReloadOptions(nopts); err != nil {
		return err
	}
	n.routes = nopts.Routes
	for _, u := range add {
		n.log.Info("discovery: route added", "route", u.Redacted())
	}
	return nil
}

// waitServer waits until the server accepts connections, or a fatal log
// line, ctx or the ready timeout ends the wait.
func (n *Node) waitServer(ctx context.Context) error {
	for {
		if n.srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		if msg := n.fatal(); msg != "" {
			return fmt.Errorf("%w: %s", ErrNotReady, msg)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%w: server did not accept connections: %v", ErrNotReady, ctx.Err())
		}
	}
}

// waitJetStream waits until JetStream is current and answers an account
// info request, which needs a meta leader in a cluster.
func (n *Node) waitJetStream(ctx context.Context) error {
	js, err := jetstream.New(n.nc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoJetStream, err)
	}
	n.js = js
	return n.jetStreamReady(ctx, js)
}

// jetStreamReady polls until JetStream is current and answers an
// account info request.
func (n *Node) jetStreamReady(ctx context.Context, js jetstream.JetStream) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	var last error
	for {
		if n.srv.JetStreamIsCurrent() {
			actx, cancel := context.WithTimeout(ctx, 2*time.Second)
			_, last = js.AccountInfo(actx)
			cancel()
			if last == nil {
				return nil
			}
		}
		if msg := n.fatal(); msg != "" {
			return fmt.Errorf("%w: %s", ErrNotReady, msg)
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("jetstream not current")
			}
			return fmt.Errorf("%w: %v (%v)", ErrNotReady, last, ctx.Err())
		case <-t.C:
		}
	}
}

// WaitJetStream blocks until the node's JetStream (and so the event log)
// is ready, or ctx ends. Start returns before that only for the first
// node of a cluster, whose JetStream needs a second node; for every
// other node it returns at once. It fails with ErrNoJetStream when
// JetStream is off or unavailable, and with ErrNotReady when ctx ends
// first.
func (n *Node) WaitJetStream(ctx context.Context) error {
	n.mu.Lock()
	js, srv, started, closed := n.js, n.srv, n.started, n.closed
	n.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !started:
		return ErrNotStarted
	case js == nil:
		return ErrNoJetStream
	case srv == nil:
		return nil // external: Start checked it
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-n.bgStop:
			cancel()
		case <-ctx.Done():
		}
	}()
	return n.jetStreamReady(ctx, js)
}

// reportLogReady logs when the JetStream of the first node of a cluster
// becomes ready.
func (n *Node) reportLogReady() {
	defer n.bg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-n.bgStop:
			cancel()
		case <-ctx.Done():
		}
	}()
	if n.jetStreamReady(ctx, n.js) == nil {
		n.log.Info("event log ready: the JetStream cluster has its quorum", "nodes", clusterPeers(n.srv))
	}
}

// hasOtherRoute reports whether a route names a node other than this
// one, whose cluster listener is chost:cport. A route names this node
// when its port is cport and its host is chost, a loopback address, an
// address of this machine when chost is unspecified, or a name that
// resolves to one of those.
func hasOtherRoute(ctx context.Context, routes []*url.URL, chost string, cport int) bool {
	for _, u := range routes {
		if !namesSelf(ctx, u, chost, cport) {
			return true
		}
	}
	return false
}

// namesSelf reports whether route u names this node (see hasOtherRoute).
func namesSelf(ctx context.Context, u *url.URL, chost string, cport int) bool {
	if u.Port() != strconv.Itoa(cport) {
		return false
	}
	host := u.Hostname()
	if host == chost {
		return true
	}
	var ips []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		ips = []netip.Addr{a}
	} else {
		rctx, cancel := context.WithTimeout(ctx, time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(rctx, "ip", host)
		cancel()
		if err != nil {
			return false
		}
		ips = addrs
	}
	listen, _ := netip.ParseAddr(chost)
	for _, a := range ips {
		a = a.Unmap()
		switch {
		case a.IsLoopback(), listen.IsValid() && a == listen.Unmap():
			return true
		case listen.IsValid() && listen.IsUnspecified() && isLocalAddr(a):
			return true
		}
	}
	return false
}

// isLocalAddr reports whether a is an address of one of this machine's
// interfaces.
func isLocalAddr(a netip.Addr) bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, x := range addrs {
		if p, err := netip.ParsePrefix(x.String()); err == nil && p.Addr().Unmap() == a {
			return true
		}
	}
	return false
}

// startExternal connects the node to the external NATS at
// Options.ExternalURL and uses its JetStream when it has one.
func (n *Node) startExternal(ctx context.Context) error {
	name := n.opts.Name
	if name == "" {
		name = defaultName(-1)
		n.opts.Name = name
	}
	creds, err := n.opts.clientCreds()
	if err != nil {
		return err
	}
	n.inproc = creds
	// Pings every few seconds: a node cut off by a partition sends no
	// RST, and the client default (two minutes) would keep the peers of
	// this connection on the wrong side that long.
	opts := append([]nats.Option{nats.Name("peerbus:" + name), nats.MaxReconnects(-1),
		nats.DrainTimeout(5 * time.Second), nats.Timeout(externalDialTimeout),
		nats.PingInterval(externalPingInterval), nats.MaxPingsOutstanding(2)}, creds...)
	// The timeout is also the dial timeout of every reconnect: a server
	// cut off by a partition drops SYNs, and each attempt to reach it
	// costs that long, so it stays short.
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < externalDialTimeout {
		opts = append(opts, nats.Timeout(time.Until(dl)))
	}
	nc, err := nats.Connect(n.opts.ExternalURL, opts...)
	if err != nil {
		return fmt.Errorf("%w: connect %s: %v", ErrNotReady, redactURLs([]string{n.opts.ExternalURL}), err)
	}
	n.nc = nc
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoJetStream, err)
	}
	actx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(actx); err != nil {
		n.log.Warn("external NATS has no usable JetStream; the event log is unavailable", "url", n.opts.ExternalURL, "err", err)
	} else {
		n.js = js
	}
	n.log.Debug("bus node connected to external NATS", "name", name, "url", nc.ConnectedUrlRedacted())
	return nil
}

// Bounds of the waits of Close (variables, so that a test can shorten
// them).
var (
	// closeBackgroundWait bounds the wait for the node's background
	// goroutines (route adder, replica manager, log readiness report),
	// which end at once when told to unless a JetStream request of theirs
	// is under way.
	closeBackgroundWait = 5 * time.Second
	// closeDrainWait bounds the drain of the in-process connection; the
	// connection is closed when it runs out.
	closeDrainWait = 10 * time.Second
	// closeShutdownWait bounds the wait for the embedded server's
	// shutdown.
	closeShutdownWait = 10 * time.Second
)

// Close drains the node's connection and shuts the embedded server down,
// and waits until the node's goroutines have ended. Every wait is
// bounded: 5 s for the background goroutines, 10 s for the drain (then
// the connection is closed), 10 s for the server's shutdown, so Close
// returns within about 25 s. A wait that runs out does not stop Close:
// it goes on with the next step, and returns an error wrapping
// context.DeadlineExceeded that names the step (which then ends in the
// background). A second call returns ErrClosed, which wraps
// net.ErrClosed. Close is safe to call on a node that was never started.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	n.closed = true
	err := n.teardown()
	n.log.Debug("bus node closed", "name", n.opts.Name)
	return err
}

// teardown stops the background goroutines, drains the connection and
// shuts the server down, each within its bound (see Close). It runs
// once; later calls return nil.
func (n *Node) teardown() error {
	if n.tornDown {
		return nil
	}
	n.tornDown = true
	n.stopOnce.Do(func() { close(n.bgStop) })
	if n.disc != nil {
		_ = n.disc.Close()
	}
	var errs []error
	if !waitFor(n.bg.Wait, closeBackgroundWait) {
		errs = append(errs, fmt.Errorf("bus: close: background goroutines still running after %v: %w",
			closeBackgroundWait, context.DeadlineExceeded))
	}
	if n.nc != nil && !n.nc.IsClosed() {
		done := make(chan struct{})
		n.nc.SetClosedHandler(func(*nats.Conn) { close(done) })
		if err := n.nc.Drain(); err != nil {
			n.nc.Close()
		}
		t := time.NewTimer(closeDrainWait)
		select {
		case <-done:
		case <-t.C:
			n.nc.Close()
		}
		t.Stop()
	}
	if srv := n.srv; srv != nil {
		if !waitFor(func() { srv.Shutdown(); srv.WaitForShutdown() }, closeShutdownWait) {
			errs = append(errs, fmt.Errorf("bus: close: server shutdown not complete after %v: %w",
				closeShutdownWait, context.DeadlineExceeded))
		}
	}
	return errors.Join(errs...)
}

// waitFor runs f in a goroutine and reports whether it returned within d.
func waitFor(f func(), d time.Duration) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// Conn returns the node's in-process client connection (nil before Start).
func (n *Node) Conn() *nats.Conn {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.nc
}

// JetStream returns the node's JetStream context, or ErrNoJetStream.
func (n *Node) JetStream() (jetstream.JetStream, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.js == nil {
		return nil, ErrNoJetStream
	}
	return n.js, nil
}

// Connect opens an additional client connection to the node: in-process
// for an embedded server, to the external URL otherwise. The caller
// closes it.
func (n *Node) Connect(opts ...nats.Option) (*nats.Conn, error) {
	n.mu.Lock()
	srv, url, started, closed, creds := n.srv, n.opts.ExternalURL, n.started, n.closed, n.inproc
	n.mu.Unlock()
	switch {
	case closed:
		return nil, ErrClosed
	case !started:
		return nil, ErrNotStarted
	case srv != nil:
		return nats.Connect("", append(append([]nats.Option{nats.InProcessServer(srv)}, creds...), opts...)...)
	default:
		return nats.Connect(url, append(creds, opts...)...)
	}
}

// Name returns the node name (generated at Start when none was given).
func (n *Node) Name() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts.Name
}

// Options returns the node's effective options.
func (n *Node) Options() Options {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.opts
}

// Server returns the embedded server, or nil in external mode.
func (n *Node) Server() *server.Server {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.srv
}

// ClientURL returns the URL NATS clients use to reach this node.
func (n *Node) ClientURL() string {
	if n.srv != nil {
		return n.srv.ClientURL()
	}
	return n.opts.ExternalURL
}

// MonitorURL returns the URL of the embedded server's HTTP monitoring
// (http://host:port), or "" when it serves none (see Options.Monitor).
func (n *Node) MonitorURL() string {
	n.mu.Lock()
	srv := n.srv
	n.mu.Unlock()
	if srv == nil || n.opts.Monitor == "" {
		return ""
	}
	a := srv.MonitorAddr()
	if a == nil {
		return ""
	}
	return "http://" + a.String()
}

// ClusterURL returns the route URL other nodes use as a seed to join
// this node, or "" when the node has no cluster listener.
func (n *Node) ClusterURL() string {
	if n.srv == nil {
		return ""
	}
	a := n.srv.ClusterAddr()
	if a == nil {
		return ""
	}
	host := a.IP.String()
	if a.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	return "nats-route://" + net.JoinHostPort(host, strconv.Itoa(a.Port))
}

// NumRoutes reports how many route connections the embedded server has.
func (n *Node) NumRoutes() int {
	if n.srv == nil {
		return 0
	}
	return n.srv.NumRoutes()
}

// fatal returns the first fatal message of the server, or "".
func (n *Node) fatal() string {
	n.fatalMu.Lock()
	defer n.fatalMu.Unlock()
	return n.fatalMsg
}

// quietWarnings are the beginnings of server warnings that the node
// replaces with its own: a first node of a cluster, or one whose routes
// do not connect, says so once (see watchRoutes and the first-node
// warning) where the server repeats "Waiting for routing" every few
// seconds.
var quietWarnings = []string{"Waiting for routing to be established"}

// serverLogger adapts the embedded server's logger to slog. Its Fatalf
// records the message so Start can fail with it; it never exits.
type serverLogger struct{ n *Node }

// logf logs one line of the server at level.
func (l *serverLogger) logf(level slog.Level, format string, v []any) {
	l.n.log.Log(context.Background(), level, fmt.Sprintf(format, v...), "component", "nats-server", "node", l.n.opts.Name)
}

// Noticef logs at debug level: the server's notices (banner, listeners,
// JetStream settings, route and leafnode connections) repeat what the
// node itself reports, and drown its own lines at info level.
func (l *serverLogger) Noticef(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Warnf logs at warn level, except the warnings the node reports in its
// own words (quietWarnings), which are logged at debug level.
func (l *serverLogger) Warnf(format string, v ...any) {
	level := slog.LevelWarn
	msg := fmt.Sprintf(format, v...)
	for _, q := range quietWarnings {
		if strings.HasPrefix(msg, q) {
			level = slog.LevelDebug
		}
	}
	l.logf(level, format, v)
	l.n.noteRouteError(format, v)
}

// Errorf logs at error level.
func (l *serverLogger) Errorf(format string, v ...any) {
	l.logf(slog.LevelError, format, v)
	l.n.noteRouteError(format, v)
}

// Debugf logs at debug level.
func (l *serverLogger) Debugf(format string, v ...any) { l.logf(slog.LevelDebug, format, v) }

// Tracef logs below debug level.
func (l *serverLogger) Tracef(format string, v ...any) { l.logf(slog.LevelDebug-4, format, v) }

// Fatalf logs at error level and records the first fatal message, for
// Start to fail with; it does not exit.
func (l *serverLogger) Fatalf(format string, v ...any) {
	l.logf(slog.LevelError, format, v)
	l.n.fatalMu.Lock()
	if l.n.fatalMsg == "" {
		l.n.fatalMsg = fmt.Sprintf(format, v...)
	}
	l.n.fatalMu.Unlock()
}

// pickPort chooses the cluster port of a node whose options give none
// (a variable, so that a test can hand out a port that is taken).
var pickPort = freePort

// freePort asks the system for a free TCP port on host.
func freePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// defaultNodeName is defaultName, with the cluster address added when
// the node has a cluster listener on a specific address other than
// loopback: "<hostname>-<ip>-<port>". Machines (or network namespaces,
// or cloned VMs) often share a hostname and the default port, but not
// their address on the network the cluster uses.
func defaultNodeName(port int, clusterHost string) string {
	a, err := netip.ParseAddr(clusterHost)
	if err != nil || a.IsLoopback() || a.IsUnspecified() {
		return defaultName(port)
	}
	ip := nameSafe(a.Unmap().String())
	if port > 0 {
		return hostLabel() + "-" + ip + "-" + strconv.Itoa(port)
	}
	return defaultName(port) + "-" + ip
}

// defaultName builds "<hostname>-<port>", or "<hostname>-<random>" when
// the port is chosen by the system.
func defaultName(port int) string {
	h := hostLabel()
	if port > 0 {
		return h + "-" + strconv.Itoa(port)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return h + "-" + hex.EncodeToString(b[:])
}

// hostLabel is the hostname made usable in a node name.
func hostLabel() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "peerbus"
	}
	return strings.NewReplacer(".", "-", " ", "-", "*", "-", ">", "-").Replace(h)
}

// redactURLs joins URLs for messages, hiding passwords.
func redactURLs(list []string) string {
	out := make([]string, len(list))
	for i, s := range list {
		if u, err := url.Parse(s); err == nil && u.User != nil {
			s = u.Redacted()
		}
		out[i] = s
	}
	return strings.Join(out, ",")
}

// mustGroup parses a group validate has accepted.
func mustGroup(s string) netip.AddrPort {
	g, _ := parseGroup(s)
	return g
}
