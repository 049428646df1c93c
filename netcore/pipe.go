package netcore

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"regexp"
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
	cfg := newConfig(opts)
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
	return dial(ctx, proto, dst, dst.Addr().WithZone("").String(), newConfig(opts))
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
	} else {
		p.gate.enter()
		if proto == TCP {
			go p.readStream()
		} else {
			go p.readDatagrams()
		}
	}
	p.log.Debug("netcore: pipe open", "pipe", p.String())
	return p, nil
}

// Listen opens a server pipe on the route's local address and port (0:
// any free port; LocalAddr tells which). An unspecified route address
// listens on all addresses of the family; an IPv6 server does not take
// IPv4 traffic. ctx bounds only the opening.
func Listen(ctx context.Context, proto Protocol, route Route, port uint16, opts ...Option) (*Pipe, error) {
	cfg := newConfig(opts)
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

// acceptLoop accepts TCP clients until the listener closes.
func (p *Pipe) acceptLoop() {
	defer p.gate.leave()
	var delay time.Duration
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if p.shut.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: back off, as
			// net/http does, instead of spinning.
			p.count(cErrors, 1)
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("netcore: accept failed", "pipe", p.String(), "err", err, "retry_in", delay)
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-p.done:
				t.Stop()
				return
			}
			continue
		}
		delay = 0
		p.startClient(c)
	}
}

// startClient makes the pipe of a new TCP client and starts serving it,
// or closes the connection when the server is full or closing.
func (p *Pipe) startClient(c net.Conn) {
	remote := addrPortOf(c.RemoteAddr())
	p.cmu.Lock()
	if p.shut.Load() {
		p.cmu.Unlock()
		c.Close()
		return
	}
	if p.cfg.maxConns > 0 && len(p.children) >= p.cfg.maxConns {
		p.cmu.Unlock()
		c.Close()
		p.count(cRejected, 1)
		p.warnLimited("netcore: client rejected, server full", "pipe", p.String(), "remote", remote, "max_conns", p.cfg.maxConns)
		return
	}
	child := p.newChild(remote)
	child.conn = c
	if p.cfg.tls != nil {
		child.conn = tls.Server(c, p.cfg.tls)
	}
	child.local = addrPortOf(c.LocalAddr())
	p.children[remote] = child
	child.gate.enter()
	p.cmu.Unlock()
	go child.serveClient()
}

func (p *Pipe) newChild(remote netip.AddrPort) *Pipe {
	c := newPipe(p.proto, roleAccepted, p.cfg)
	c.parent = p
	c.family = FamilyOf(remote.Addr())
	c.local = p.local
	c.remote = remote
	c.udp = p.udp
	return c
}

// offer puts a new client in the accept queue if there is room.
func (p *Pipe) offer(child *Pipe) bool {
	select {
	case p.acceptq <- child:
		return true
	default:
		return false
	}
}

// serveClient runs a TCP client of a server: TLS handshake, then reading.
func (p *Pipe) serveClient() {
	if tc, ok := p.conn.(*tls.Conn); ok {
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.handshakeTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			p.gate.leave()
			if !p.shut.Load() {
				p.count(cBadInput, 1)
				p.warnLimited("netcore: client dropped: tls handshake failed", "pipe", p.String(), "err", err)
			}
			p.shutdown(fmt.Errorf("netcore: tls handshake: %w", err))
			return
		}
	}
	p.parent.offer(p)
	p.log.Debug("netcore: client connected", "pipe", p.String())
	p.readStream()
}

// readStream reads messages from a TCP connection until it fails. The
// caller has entered the gate.
func (p *Pipe) readStream() {
	dec := p.cfg.framing.NewDecoder(p.conn)
	for {
		if p.cfg.idleTimeout > 0 {
			p.conn.SetReadDeadline(time.Now().Add(p.cfg.idleTimeout))
		}
		data, err := dec.Next()
		p.gate.leave()
		if err != nil {
			p.readFailed(err)
			return
		}
		p.receive(data, p.remote)
		if !p.gate.enter() {
			return
		}
	}
}

// readFailed closes a stream pipe after a read error, counting bad input.
func (p *Pipe) readFailed(err error) {
	if p.shut.Load() {
		return
	}
	switch {
	case errors.Is(err, io.EOF):
		p.log.Debug("netcore: peer closed", "pipe", p.String())
		p.shutdown(io.EOF)
		return
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = fmt.Errorf("netcore: idle for %v: %w", p.cfg.idleTimeout, ErrTimeout)
	case errors.Is(err, ErrMessageTooLarge), errors.Is(err, io.ErrUnexpectedEOF):
	default:
		p.log.Debug("netcore: read failed", "pipe", p.String(), "err", err)
		p.shutdown(err)
		return
	}
	p.count(cBadInput, 1)
	p.warnLimited("netcore: connection dropped for bad input", "pipe", p.String(), "err", err)
	p.shutdown(err)
}

// readDatagrams reads a UDP socket until it closes. The caller has
// entered the gate.
func (p *Pipe) readDatagrams() {
	buf := make([]byte, ReadBufferSize)
	failures := 0
	for {
		n, _, flags, from, err := p.udp.ReadMsgUDPAddrPort(buf, nil)
		if err != nil {
			if p.shut.Load() || errors.Is(err, net.ErrClosed) {
				p.gate.leave()
				return
			}
			// For example ICMP port unreachable on a connected socket.
			p.count(cErrors, 1)
			p.log.Debug("netcore: udp read error", "pipe", p.String(), "err", err)
			if failures++; failures > 8 {
				t := time.NewTimer(10 * time.Millisecond)
				select {
				case <-t.C:
				case <-p.done:
					t.Stop()
				}
			}
			continue
		}
		failures = 0
		if flags&msgTrunc != 0 {
			p.count(cBadInput, 1)
			p.warnLimited("netcore: truncated datagram dropped", "pipe", p.String(), "from", from)
			continue
		}
		data := bytes.Clone(buf[:n])
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		p.gate.leave()
		p.receiveDatagram(data, from)
		if !p.gate.enter() {
			return
		}
	}
}

// pullOne reads one message in direct receive mode and dispatches it. The
// caller has taken the read token; pullOne gives it back. A nil error
// means a message was read (or a harmless UDP error counted); the caller
// then looks at its queue again.
func (p *Pipe) pullOne(ctx context.Context) error {
	defer func() { p.rtok <- struct{}{} }()
	if !p.gate.enter() {
		return fmt.Errorf("netcore: recv on %s: %w", p, ErrClosed)
	}
	var rc interface{ SetReadDeadline(time.Time) error } = p.udp
	if p.proto == TCP {
		rc = p.conn
	}
	dl, hasDeadline := ctx.Deadline()
	if hasDeadline {
		rc.SetReadDeadline(dl)
		p.rdl = true
	} else if p.rdl {
		rc.SetReadDeadline(time.Time{})
		p.rdl = false
	}
	var stop func() bool
	var fired chan struct{}
	if ctx.Done() != nil {
		fired = make(chan struct{})
		stop = context.AfterFunc(ctx, func() {
			defer close(fired)
			rc.SetReadDeadline(longAgo)
		})
	}
	var (
		data  []byte
		from  = p.remote
		err   error
		flags int
	)
	if p.proto == TCP {
		data, err = p.dec.Next()
	} else {
		var n int
		n, _, flags, from, err = p.udp.ReadMsgUDPAddrPort(p.rbuf, nil)
		if err == nil {
			data = bytes.Clone(p.rbuf[:n])
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		}
	}
	if stop != nil && !stop() {
		<-fired
		p.rdl = true
	}
	p.gate.leave()
	if err != nil {
		switch {
		case p.shut.Load():
			return fmt.Errorf("netcore: recv on %s: %w", p, ErrClosed)
		case errors.Is(err, os.ErrDeadlineExceeded) && (hasDeadline || ctx.Err() != nil):
			if ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("netcore: recv on %s: %w", p, ErrTimeout)
			}
			return ctxErr(ctx, "recv on "+p.String())
		case p.proto == UDP:
			p.count(cErrors, 1)
			return nil
		}
		p.readFailed(err)
		return fmt.Errorf("netcore: recv on %s: %w: %w", p, ErrClosed, err)
	}
	if flags&msgTrunc != 0 {
		p.count(cBadInput, 1)
		return nil
	}
	p.receive(data, from)
	return nil
}

// receiveDatagram hands a datagram read by a server to the client pipe of
// its sender, making one if there is room, or to the server itself.
func (p *Pipe) receiveDatagram(data []byte, from netip.AddrPort) {
	if p.role != roleServer {
		p.receive(data, from)
		return
	}
	p.cmu.Lock()
	child := p.children[from]
	if child == nil && !p.shut.Load() {
		switch {
		case p.cfg.maxConns > 0 && len(p.children) >= p.cfg.maxConns:
			p.count(cRejected, 1)
		case len(p.acceptq) < cap(p.acceptq):
			child = p.newChild(from)
			p.children[from] = child
			p.offer(child) // only this goroutine sends on acceptq: room is certain
		}
	}
	p.cmu.Unlock()
	if child != nil && !child.shut.Load() {
		child.receive(data, from)
		return
	}
	p.receive(data, from)
}

// receive delivers a message that arrived on p to p's handlers and
// subscriptions, then to those of its server; if none took it, it is kept
// in p's backlog.
func (p *Pipe) receive(data []byte, from netip.AddrPort) {
	p.count(cMessagesIn, 1)
	p.count(cBytesIn, uint64(len(data)))
	m := Message{Data: data, From: from, Pipe: p}
	taken := p.deliver(&m)
	if p.parent != nil && p.parent.deliver(&m) {
		taken = true
	}
	if !taken {
		p.keepUnclaimed(m)
	}
}

// deliver hands m to p's handlers and matching subscriptions and reports
// whether any took it.
func (p *Pipe) deliver(m *Message) bool {
	taken := false
	if hs := p.handlers.Load(); hs != nil && len(*hs) > 0 {
		for _, h := range *hs {
			h.fn(*m)
		}
		taken = true
	}
	if ss := p.subs.Load(); ss != nil {
		for _, s := range *ss {
			if s.matches(m) {
				s.push(*m)
				taken = true
			}
		}
	}
	return taken
}

// keepUnclaimed handles a message that no handler or subscription took:
// a subscription added meanwhile may still take it; otherwise it is counted
// as unmatched and kept in the backlog of p and of p's server.
func (p *Pipe) keepUnclaimed(m Message) {
	taken := p.keepIfUnclaimed(m)
	if p.parent != nil && p.parent.keepIfUnclaimed(m) {
		taken = true
	}
	if !taken {
		p.count(cUnmatched, 1)
	}
}

// keepIfUnclaimed gives m to a subscription of p added since delivery, or
// keeps it in p's backlog. It reports whether a subscription took it.
func (p *Pipe) keepIfUnclaimed(m Message) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if ss := p.subs.Load(); ss != nil {
		for _, s := range *ss {
			if s.matches(&m) {
				s.push(m)
				return true
			}
		}
	}
	if p.shut.Load() {
		return false
	}
	if p.cfg.backlog == 0 {
		p.ctr[cBacklogDropped].Add(1)
		return false
	}
	if len(p.backlog) >= p.cfg.backlog {
		copy(p.backlog, p.backlog[1:])
		p.backlog[len(p.backlog)-1] = Message{}
		p.backlog = p.backlog[:len(p.backlog)-1]
		p.ctr[cBacklogDropped].Add(1)
	}
	p.backlog = append(p.backlog, m)
	return false
}

// AddHandler adds h, called for every message the pipe receives (for a
// server: from every client), and returns a function that removes it.
// Removing is idempotent; a message being delivered when it is removed may
// still reach h. Messages already in the backlog are not replayed to h:
// use Subscribe for those.
func (p *Pipe) AddHandler(h Handler) (remove func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.nextID++
	id := p.nextID
	var list []handlerEntry
	if old := p.handlers.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, handlerEntry{id: id, fn: h})
	p.handlers.Store(&list)
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		old := p.handlers.Load()
		list := slices.DeleteFunc(slices.Clone(*old), func(e handlerEntry) bool { return e.id == id })
		p.handlers.Store(&list)
	}
}

// OnClose adds fn, called once when the pipe closes with the reason (nil
// after Close, io.EOF when the peer closed, otherwise the error that
// closed the pipe), and returns a function that removes it. If the pipe is
// already closed, fn runs at once. Close does not wait for close callbacks
// started by a failing reader.
func (p *Pipe) OnClose(fn func(reason error)) (remove func()) {
	p.mu.Lock()
	if p.fnsRun {
		reason := p.reason
		p.mu.Unlock()
		fn(reason)
		return func() {}
	}
	p.nextID++
	id := p.nextID
	p.closeFns = append(p.closeFns, closeEntry{id: id, fn: fn})
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.closeFns = slices.DeleteFunc(p.closeFns, func(e closeEntry) bool { return e.id == id })
	}
}

// Subscribe returns a subscription to the pipe's messages whose content
// matches the regular expression pattern ("" matches all), optionally only
// from one address (From). Messages waiting in the pipe's backlog that
// match are moved to the new subscription first, in order. On a server
// pipe the subscription sees the messages of every client.
//
// The backlog holds messages no handler or subscription took when they
// arrived. A message from a server's client is kept both by the client
// pipe and by the server, so either may claim it.
func (p *Pipe) Subscribe(pattern string, opts ...SubscribeOption) (*Subscription, error) {
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("netcore: subscribe: %w", err)
	}
	s := &Subscription{
		pipe:   p,
		re:     re,
		size:   DefaultQueueSize,
		notify: make(chan struct{}, 1),
		closed: make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.shut.Load() {
		return nil, fmt.Errorf("netcore: subscribe on %s: %w", p, ErrClosed)
	}
	kept := p.backlog[:0]
	for _, m := range p.backlog {
		if s.matches(&m) {
			s.push(m)
		} else {
			kept = append(kept, m)
		}
	}
	clear(p.backlog[len(kept):])
	p.backlog = kept
	var list []*Subscription
	if old := p.subs.Load(); old != nil {
		list = slices.Clone(*old)
	}
	list = append(list, s)
	p.subs.Store(&list)
	return s, nil
}

func (p *Pipe) unsubscribe(s *Subscription) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if old := p.subs.Load(); old != nil {
		list := slices.DeleteFunc(slices.Clone(*old), func(x *Subscription) bool { return x == s })
		p.subs.Store(&list)
	}
}

// Recv waits for the next message of sub, which must belong to p; see
// Subscription.Recv.
func (p *Pipe) Recv(ctx context.Context, sub *Subscription) (Message, error) {
	if sub == nil || sub.pipe != p {
		return Message{}, fmt.Errorf("netcore: recv on %s: subscription belongs to another pipe", p)
	}
	return sub.Recv(ctx)
}

// Accept waits for the next client of a server pipe and returns its pipe:
// a TCP connection (after its TLS handshake), or for UDP a remote address
// without a client pipe (one never seen, or whose pipe was closed).
// Messages the client sent before the caller subscribes wait in the client
// pipe's backlog. Up to WithAcceptQueue clients wait for Accept; the
// caller should Close the UDP client pipes it no longer needs, as they
// count against WithMaxConns until then. A deadline on ctx gives an error
// matching ErrTimeout.
func (p *Pipe) Accept(ctx context.Context) (*Pipe, error) {
	if p.role != roleServer {
		return nil, fmt.Errorf("netcore: accept on %s: %w", p, ErrNotServer)
	}
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("netcore: accept on %s: %w", p, ErrClosed)
		default:
		}
		select {
		case c := <-p.acceptq:
			if c.shut.Load() {
				continue
			}
			return c, nil
		case <-p.done:
			return nil, fmt.Errorf("netcore: accept on %s: %w", p, ErrClosed)
		case <-ctx.Done():
			return nil, ctxErr(ctx, fmt.Sprintf("accept on %s", p))
		}
	}
}

// Send sends one message to the pipe's peer. For TCP it is framed by the
// pipe's framing; for UDP it is one datagram, and one larger than the
// family allows fails with *MessageTooLargeError. ctx's deadline and
// cancellation bound a TCP write that blocks; a TCP write cut short
// mid-frame closes the pipe, as the stream can no longer be framed. Send
// on a server pipe fails with ErrNoPeer; use SendTo.
func (p *Pipe) Send(ctx context.Context, data []byte) error {
	if p.shut.Load() {
		return fmt.Errorf("netcore: send on %s: %w", p, ErrClosed)
	}
	if p.role == roleServer {
		return fmt.Errorf("netcore: send on %s: %w", p, ErrNoPeer)
	}
	if err := ctx.Err(); err != nil {
		return ctxErr(ctx, "send on "+p.String())
	}
	if p.proto == UDP {
		return p.sendDatagram(data, p.remote)
	}
	return p.sendStream(ctx, data)
}

// SendTo sends one message to addr: any address for a UDP server, a
// connected client for a TCP server, and only the peer's address for other
// pipes (else ErrUnknownPeer).
func (p *Pipe) SendTo(ctx context.Context, data []byte, addr netip.AddrPort) error {
	addr = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	if p.role != roleServer {
		if addr != p.remote {
			return fmt.Errorf("netcore: send on %s to %s: %w", p, addr, ErrUnknownPeer)
		}
		return p.Send(ctx, data)
	}
	if p.shut.Load() {
		return fmt.Errorf("netcore: send on %s: %w", p, ErrClosed)
	}
	if p.proto == UDP {
		if err := ctx.Err(); err != nil {
			return ctxErr(ctx, "send on "+p.String())
		}
		if !p.dualStack && FamilyOf(addr.Addr()) != p.family {
			return fmt.Errorf("netcore: send on %s to %s: %w", p, addr, ErrFamilyMismatch)
		}
		return p.sendDatagram(data, addr)
	}
	p.cmu.Lock()
	c := p.children[addr]
	p.cmu.Unlock()
	if c == nil {
		return fmt.Errorf("netcore: send on %s to %s: %w", p, addr, ErrUnknownPeer)
	}
	return c.Send(ctx, data)
}

func (p *Pipe) sendDatagram(data []byte, to netip.AddrPort) error {
	limit := MaxDatagramIPv4
	if FamilyOf(to.Addr()) == IPv6 {
		limit = MaxDatagramIPv6
	}
	if len(data) > limit {
		return fmt.Errorf("netcore: send on %s: %w", p, &MessageTooLargeError{What: "datagram", Size: int64(len(data)), Limit: limit})
	}
	var err error
	if p.role == roleClient {
		_, err = p.udp.Write(data)
	} else {
		_, err = p.udp.WriteToUDPAddrPort(data, to)
	}
	if err != nil {
		if p.shut.Load() {
			return fmt.Errorf("netcore: send on %s: %w", p, ErrClosed)
		}
		p.count(cErrors, 1)
		return fmt.Errorf("netcore: send on %s: %w", p, err)
	}
	p.count(cMessagesOut, 1)
	p.count(cBytesOut, uint64(len(data)))
	return nil
}

// maxKeptWriteBuffer is the largest write buffer a pipe keeps between
// sends.
const maxKeptWriteBuffer = 1 << 20

// longAgo is a deadline in the past, to interrupt a blocked write.
var longAgo = time.Unix(1, 0)

func (p *Pipe) sendStream(ctx context.Context, data []byte) error {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	frame := data
	if !p.cfg.raw {
		buf, err := p.cfg.framing.AppendFrame(p.wbuf[:0], data)
		if err != nil {
			return fmt.Errorf("netcore: send on %s: %w", p, err)
		}
		frame = buf
		if cap(buf) <= maxKeptWriteBuffer {
			p.wbuf = buf[:0]
		}
	}
	if len(frame) == 0 {
		return nil
	}
	if dl, ok := ctx.Deadline(); ok {
		p.conn.SetWriteDeadline(dl)
		p.wdl = true
	} else if p.wdl {
		p.conn.SetWriteDeadline(time.Time{})
		p.wdl = false
	}
	if ctx.Done() != nil {
		fired := make(chan struct{})
		stop := context.AfterFunc(ctx, func() {
			defer close(fired)
			p.conn.SetWriteDeadline(longAgo)
		})
		defer func() {
			if !stop() {
				<-fired
				p.wdl = true
			}
		}()
	}
	n, werr := p.conn.Write(frame)
	if werr != nil {
		if p.shut.Load() {
			return fmt.Errorf("netcore: send on %s: %w", p, ErrClosed)
		}
		var err error
		_, hasDeadline := ctx.Deadline()
		switch {
		case errors.Is(ctx.Err(), context.Canceled):
			err = ctxErr(ctx, "send on "+p.String())
		case hasDeadline && errors.Is(werr, os.ErrDeadlineExceeded):
			err = fmt.Errorf("netcore: send on %s: %w", p, ErrTimeout)
		default:
			err = fmt.Errorf("netcore: send on %s: %w", p, werr)
		}
		if (n > 0 && !p.cfg.raw) || !errors.Is(werr, os.ErrDeadlineExceeded) {
			// A partial frame or a broken connection: the stream is lost.
			p.count(cErrors, 1)
			p.shutdown(err)
		}
		return err
	}
	p.count(cMessagesOut, 1)
	p.count(cBytesOut, uint64(len(data)))
	return nil
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
