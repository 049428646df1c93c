package netcore

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Message is one message received on a pipe: a datagram for UDP, a frame
// (or a chunk, with Raw framing) for TCP.
type Message struct {
	// Data is the message content. It is shared by every handler and
	// subscription that receives the message and must not be modified.
	Data []byte
	// From is the address of the sender.
	From netip.AddrPort
	// Pipe is the pipe the message arrived on: for a server, the pipe of
	// the client (TCP, or UDP when the remote has a client pipe), else the
	// server pipe itself.
	Pipe *Pipe
}

// Reply sends data back to the sender of m, through the pipe it arrived
// on.
func (m Message) Reply(ctx context.Context, data []byte) error {
	if m.Pipe == nil {
		return ErrNoPeer
	}
	if m.Pipe.role == roleServer {
		return m.Pipe.SendTo(ctx, data, m.From)
	}
	return m.Pipe.Send(ctx, data)
}

// Handler is a message callback, added with Pipe.AddHandler. Handlers run
// on the goroutine that read the message: one per TCP connection, one per
// UDP socket. A server's handlers therefore run concurrently for
// different clients, and a slow handler slows its connection down (TCP) or
// lets the socket buffer overflow (UDP). Handlers may call any method of
// any pipe, Close included.
type Handler func(Message)

// Stats are a pipe's counters. A server's counters include those of its
// clients.
type Stats struct {
	// MessagesIn and BytesIn count received messages and their bytes.
	MessagesIn, BytesIn uint64
	// MessagesOut and BytesOut count sent messages and their bytes (before
	// framing).
	MessagesOut, BytesOut uint64
	// Unmatched counts messages that matched no handler and no
	// subscription when they arrived; they were kept in the backlog.
	Unmatched uint64
	// BacklogDropped counts unclaimed messages pushed out of this pipe's
	// full backlog (not including those of a server's clients).
	BacklogDropped uint64
	// QueueDropped counts messages lost to full subscription queues.
	QueueDropped uint64
	// Rejected counts clients refused by the WithMaxConns limit.
	Rejected uint64
	// BadInput counts clients dropped for bad input (oversized or
	// truncated frames, failed TLS handshakes, idle timeouts) and
	// datagrams dropped as truncated.
	BadInput uint64
	// Errors counts read and write errors that did not close the pipe,
	// such as ICMP port unreachable reported on a UDP socket.
	Errors uint64
	// Clients is the number of clients a server holds now.
	Clients int
}

type counter int

const (
	cMessagesIn counter = iota
	cBytesIn
	cMessagesOut
	cBytesOut
	cUnmatched
	cBacklogDropped
	cQueueDropped
	cRejected
	cBadInput
	cErrors
	numCounters
)

type role uint8

const (
	roleClient role = iota
	roleServer
	roleAccepted
)

func (r role) String() string {
	switch r {
	case roleServer:
		return "server"
	case roleAccepted:
		return "accepted"
	}
	return "client"
}

type handlerEntry struct {
	id uint64
	fn Handler
}

type closeEntry struct {
	id uint64
	fn func(error)
}

// Pipe is a message-oriented connection over TCP or UDP, IPv4 or IPv6: a
// client (Dial), a server (Listen) or one client of a server (Accept). It
// delivers every received message to its handlers and matching
// subscriptions, and to those of its server for a server's client. All
// methods are safe for concurrent use.
type Pipe struct {
	proto     Protocol
	role      role
	family    Family
	dualStack bool // a server on all addresses of both families
	cfg       *config
	log       *slog.Logger
	local     netip.AddrPort
	remote    netip.AddrPort // zero for servers
	parent    *Pipe          // the server of an accepted pipe

	// TCP streams (client and accepted).
	conn net.Conn // possibly *tls.Conn
	wmu  sync.Mutex
	wbuf []byte
	wdl  bool // a write deadline is set on conn

	// UDP: the socket (the server's for an accepted pipe).
	udp *net.UDPConn

	// Direct receive mode (WithDirectRecv): Recv calls read, one at a
	// time; the holder of the token in rtok reads.
	pull bool
	rtok chan struct{}
	dec  Decoder // TCP
	rbuf []byte  // UDP
	rdl  bool    // a read deadline is set; guarded by the token

	// Lending mode (client pipes by default, see readLending): the
	// reader goroutine holds the token and lends it to Recv calls.
	lending  bool
	recvs    atomic.Int32  // Recv calls in progress
	wake     chan struct{} // AddHandler: the reader takes the token back
	lendTime *time.Timer

	// TCP servers.
	ln net.Listener

	// Servers: clients by remote address.
	cmu      sync.Mutex
	children map[netip.AddrPort]*Pipe
	acceptq  chan *Pipe

	handlers atomic.Pointer[[]handlerEntry]
	subs     atomic.Pointer[[]*Subscription]

	mu       sync.Mutex // guards the fields below and copy-on-write updates
	nextID   uint64
	backlog  []Message
	closeFns []closeEntry
	fnsRun   bool // close callbacks have been taken to run
	reason   error

	ctr         [numCounters]atomic.Uint64
	lastWarn    atomic.Int64 // unix nanoseconds of the last rate-limited warning
	gate        gate
	done        chan struct{}
	shut        atomic.Bool
	closeCalled atomic.Bool
}

func newPipe(proto Protocol, r role, cfg *config) *Pipe {
	return &Pipe{proto: proto, role: r, cfg: cfg, log: cfg.logger, done: make(chan struct{})}
}

// String describes the pipe, e.g. "tcp client 127.0.0.1:40000->127.0.0.1:7000".
func (p *Pipe) String() string {
	if p.role == roleServer {
		return fmt.Sprintf("%s server %s", p.proto, p.local)
	}
	return fmt.Sprintf("%s %s %s->%s", p.proto, p.role, p.local, p.remote)
}

// Protocol returns TCP or UDP.
func (p *Pipe) Protocol() Protocol { return p.proto }

// Family returns the pipe's address family.
func (p *Pipe) Family() Family { return p.family }

// IsServer reports whether the pipe is a server (made by Listen).
func (p *Pipe) IsServer() bool { return p.role == roleServer }

// LocalAddr returns the local address; for a server it tells the port
// chosen when Listen was given port 0.
func (p *Pipe) LocalAddr() netip.AddrPort { return p.local }

// RemoteAddr returns the peer's address; it is zero for a server.
func (p *Pipe) RemoteAddr() netip.AddrPort { return p.remote }

// Server returns the server pipe of a pipe returned by Accept, else nil.
func (p *Pipe) Server() *Pipe { return p.parent }

// Done returns a channel closed when the pipe closes.
func (p *Pipe) Done() <-chan struct{} { return p.done }

// Err returns why the pipe closed: nil while open or after Close, io.EOF
// when the peer closed the connection, or the error that closed it.
func (p *Pipe) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reason
}

// Stats returns a snapshot of the pipe's counters.
func (p *Pipe) Stats() Stats {
	s := Stats{
		MessagesIn:     p.ctr[cMessagesIn].Load(),
		BytesIn:        p.ctr[cBytesIn].Load(),
		MessagesOut:    p.ctr[cMessagesOut].Load(),
		BytesOut:       p.ctr[cBytesOut].Load(),
		Unmatched:      p.ctr[cUnmatched].Load(),
		BacklogDropped: p.ctr[cBacklogDropped].Load(),
		QueueDropped:   p.ctr[cQueueDropped].Load(),
		Rejected:       p.ctr[cRejected].Load(),
		BadInput:       p.ctr[cBadInput].Load(),
		Errors:         p.ctr[cErrors].Load(),
	}
	if p.role == roleServer {
		p.cmu.Lock()
		s.Clients = len(p.children)
		p.cmu.Unlock()
	}
	return s
}

// Clients returns the server's current clients, or nil for other pipes.
func (p *Pipe) Clients() []*Pipe {
	if p.role != roleServer {
		return nil
	}
	p.cmu.Lock()
	defer p.cmu.Unlock()
	out := make([]*Pipe, 0, len(p.children))
	for _, c := range p.children {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b *Pipe) int { return a.remote.Compare(b.remote) })
	return out
}

// warnLimited logs a warning about bad input at most once a second per
// server (or client pipe), so a flood cannot flood the log; the others go
// to debug level.
func (p *Pipe) warnLimited(msg string, args ...any) {
	srv := p
	if p.parent != nil {
		srv = p.parent
	}
	now := time.Now().UnixNano()
	last := srv.lastWarn.Load()
	if now-last >= int64(time.Second) && srv.lastWarn.CompareAndSwap(last, now) {
		p.log.Warn(msg, args...)
		return
	}
	p.log.Debug(msg, args...)
}

// count adds n to counter c of the pipe and of its server.
func (p *Pipe) count(c counter, n uint64) {
	p.ctr[c].Add(n)
	if p.parent != nil {
		p.parent.ctr[c].Add(n)
	}
}

// Dial opens a client pipe to addr ("host:port"). The host is resolved in
// the family given by WithRoute, WithLocalAddr or WithFamily (IPv4
// preferred otherwise), with ctx bounding resolution, connection and TLS
// handshake.
func Dial(ctx context.Context, proto Protocol, addr string, opts ...Option) (*Pipe, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("netcore: dial %s %q: %w", proto, addr, err)
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("netcore: dial %s %q: %w", proto, addr, err)
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("netcore: dial %s %q: bad port: %w", proto, addr, err)
	}
	ip, err := Resolve(ctx, cfg.resolver, host, cfg.family)
	if err != nil {
		return nil, fmt.Errorf("netcore: dial %s: %w", proto, err)
	}
	return dial(ctx, proto, netip.AddrPortFrom(ip, uint16(port)), host, cfg)
}

// DialAddr opens a client pipe to dst; see Dial. With TLS, the server name
// to verify is dst's address unless the TLS configuration sets one.
func DialAddr(ctx context.Context, proto Protocol, dst netip.AddrPort, opts ...Option) (*Pipe, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("netcore: dial %s %s: %w", proto, dst, err)
	}
	return dial(ctx, proto, dst, dst.Addr().WithZone("").String(), cfg)
}

func dial(ctx context.Context, proto Protocol, dst netip.AddrPort, host string, cfg *config) (*Pipe, error) {
	dst = netip.AddrPortFrom(dst.Addr().Unmap(), dst.Port())
	fam := FamilyOf(dst.Addr())
	if err := checkProto(proto, cfg); err != nil {
		return nil, err
	}
	if cfg.local.Addr().IsValid() && FamilyOf(cfg.local.Addr()) != fam {
		return nil, fmt.Errorf("netcore: dial %s %s from %s: %w", proto, dst, cfg.local, ErrFamilyMismatch)
	}
	d := net.Dialer{}
	network := proto.network(fam)
	if cfg.local.Addr().IsValid() {
		if proto == TCP {
			d.LocalAddr = net.TCPAddrFromAddrPort(cfg.local)
		} else {
			d.LocalAddr = net.UDPAddrFromAddrPort(cfg.local)
		}
	}
	c, err := d.DialContext(ctx, network, dst.String())
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("netcore: dial %s %s: %w", proto, dst, ctxCause(ctx))
		}
		return nil, fmt.Errorf("netcore: dial %s %s: %w", proto, dst, err)
	}
	p := newPipe(proto, roleClient, cfg)
	p.family = fam
	p.local = addrPortOf(c.LocalAddr())
	p.remote = addrPortOf(c.RemoteAddr())
	switch proto {
	case TCP:
		p.conn = c
		if cfg.tls != nil {
			tc := cfg.tls.Clone()
			if tc.ServerName == "" {
				tc.ServerName = host
			}
			tconn := tls.Client(c, tc)
			if err := tconn.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, fmt.Errorf("netcore: dial %s %s: tls handshake: %w", proto, dst, err)
			}
			p.conn = tconn
		}
	case UDP:
		p.udp = c.(*net.UDPConn)
	}
	if cfg.directRecv {
		p.pull = true
		p.rtok = make(chan struct{}, 1)
		p.rtok <- struct{}{}
		if proto == TCP {
			p.dec = cfg.framing.NewDecoder(p.conn)
		} else {
			p.rbuf = make([]byte, ReadBufferSize)
		}
	} else if proto == UDP || cfg.idleTimeout == 0 {
		p.lending = true
		p.rtok = make(chan struct{}, 1) // empty: the reader holds the token
		p.wake = make(chan struct{}, 1)
		if proto == TCP {
			p.dec = cfg.framing.NewDecoder(p.conn)
		} else {
			p.rbuf = make([]byte, ReadBufferSize)
		}
		p.gate.enter()
		go p.readLending()
	} else {
		p.gate.enter()
		go p.readStream()
	}
	p.log.Debug("netcore: pipe open", "pipe", p.String())
	return p, nil
}

// Listen opens a server pipe on the route's local address and port (0:
// any free port; LocalAddr tells which). An unspecified route address
// listens on all addresses of the family; an IPv6 server does not take
// IPv4 traffic. ctx bounds only the opening.
func Listen(ctx context.Context, proto Protocol, route Route, port uint16, opts ...Option) (*Pipe, error) {
	cfg, err := newConfig(opts)
	if err != nil {
		return nil, fmt.Errorf("netcore: listen %s: %w", proto, err)
	}
	if err := route.validate(); err != nil {
		return nil, err
	}
	if err := checkProto(proto, cfg); err != nil {
		return nil, err
	}
	if proto == TCP && cfg.tls != nil && len(cfg.tls.Certificates) == 0 && cfg.tls.GetCertificate == nil && cfg.tls.GetConfigForClient == nil {
		return nil, fmt.Errorf("netcore: listen tcp: %w: TLS server needs a certificate", ErrUnsupported)
	}
	fam := route.family()
	addr := ""
	if route.LocalIP.IsValid() {
		addr = route.LocalIP.String()
	}
	addr = net.JoinHostPort(addr, strconv.Itoa(int(port)))
	var lc net.ListenConfig
	p := newPipe(proto, roleServer, cfg)
	p.children = make(map[netip.AddrPort]*Pipe)
	p.acceptq = make(chan *Pipe, cfg.acceptQueue)
	switch proto {
	case TCP:
		ln, err := lc.Listen(ctx, proto.network(fam), addr)
		if err != nil {
			return nil, fmt.Errorf("netcore: listen %s %s: %w", proto, addr, err)
		}
		p.ln = ln
		p.local = addrPortOf(ln.Addr())
	case UDP:
		pc, err := lc.ListenPacket(ctx, proto.network(fam), addr)
		if err != nil {
			return nil, fmt.Errorf("netcore: listen %s %s: %w", proto, addr, err)
		}
		p.udp = pc.(*net.UDPConn)
		p.local = addrPortOf(pc.LocalAddr())
	}
	p.family = FamilyOf(p.local.Addr())
	if fam != AnyFamily {
		p.family = fam
	}
	p.dualStack = !route.LocalIP.IsValid() && fam == AnyFamily
	p.gate.enter()
	if proto == TCP {
		go p.acceptLoop()
	} else {
		go p.readDatagrams()
	}
	p.log.Debug("netcore: pipe open", "pipe", p.String())
	return p, nil
}

func checkProto(proto Protocol, cfg *config) error {
	switch proto {
	case TCP:
	case UDP:
		if cfg.tls != nil {
			return fmt.Errorf("netcore: udp: %w: TLS needs TCP", ErrUnsupported)
		}
	default:
		return fmt.Errorf("netcore: %w: protocol %s", ErrUnsupported, proto)
	}
	return nil
}

// addrPortOf converts a TCP or UDP address, unmapping IPv4-mapped IPv6.
func addrPortOf(a net.Addr) netip.AddrPort {
	var ap netip.AddrPort
	switch a := a.(type) {
	case *net.TCPAddr:
		ap = a.AddrPort()
	case *net.UDPAddr:
		ap = a.AddrPort()
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Close closes the pipe: for a server, its socket and all its clients. It
// waits until the pipe's goroutines have stopped reading; handlers that
// are running may finish after Close returns, and no new handler call
// starts. Queued subscription messages can still be received. A second
// Close returns an error matching ErrClosed (and net.ErrClosed).
func (p *Pipe) Close() error {
	if !p.closeCalled.CompareAndSwap(false, true) {
		return fmt.Errorf("netcore: close %s: %w", p, ErrClosed)
	}
	p.shutdown(nil)
	p.gate.closeAndWait()
	return nil
}

// shutdown closes the pipe once, for reason, and runs the close callbacks.
func (p *Pipe) shutdown(reason error) {
	if !p.shut.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	p.reason = reason
	fns := p.closeFns
	p.closeFns = nil
	p.fnsRun = true
	p.backlog = nil
	p.mu.Unlock()
	close(p.done)
	switch {
	case p.conn != nil:
		p.conn.Close()
	case p.ln != nil:
		p.ln.Close()
	case p.udp != nil && p.role != roleAccepted:
		p.udp.Close()
	}
	if p.parent != nil {
		p.parent.cmu.Lock()
		if p.parent.children[p.remote] == p {
			delete(p.parent.children, p.remote)
		}
		p.parent.cmu.Unlock()
	}
	if p.role == roleServer {
		p.cmu.Lock()
		children := make([]*Pipe, 0, len(p.children))
		for _, c := range p.children {
			children = append(children, c)
		}
		p.cmu.Unlock()
		for _, c := range children {
			c.shutdown(nil)
			c.gate.closeAndWait()
		}
		// The read or accept loop may still be running; the caller
		// (Close) waits for it.
	}
	p.log.Debug("netcore: pipe closed", "pipe", p.String(), "reason", reason)
	for _, e := range fns {
		e.fn(reason)
	}
}
