package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/pion/dtls/v3"
	"golang.org/x/time/rate"

	"github.com/peerbus/peerbus/internal/names"
	"github.com/peerbus/peerbus/peer"
)

// Exposer-side limits.
const (
	// targetDialTimeout bounds the exposer's connection to its service.
	targetDialTimeout = 5 * time.Second
	// handshakeTimeout bounds the authentication of one raw connection.
	handshakeTimeout = 5 * time.Second
	// probeInterval is how often UDP probes (and selects) are sent.
	probeInterval = 50 * time.Millisecond
	// punchRetry is the pause between two TCP simultaneous-open attempts.
	punchRetry = 50 * time.Millisecond
	// udpKeepaliveInterval keeps NAT mappings of raw UDP paths alive.
	udpKeepaliveInterval = 15 * time.Second
)

// ServiceStats are counters of an exposed service.
type ServiceStats struct {
	// Opened counts sessions opened by dialers.
	Opened uint64
	// Active is the number of sessions still running.
	Active int
	// Paths counts sessions by the path they got.
	Paths map[Strategy]uint64
	// Pending is the number of sessions without a path yet.
	Pending int
	// Refused counts offers refused, ErrLimit ones included.
	Refused uint64
	// Attempts counts the TCP connection attempts and UDP probes the
	// service sent to dialers' candidates (reverse and hole punching);
	// Limits.AttemptRate bounds their rate.
	Attempts uint64
	// RawRefused counts raw path connections refused during a setup: TLS
	// or DTLS handshakes that failed (garbled, replayed, truncated, timed
	// out, or with a certificate other than the dialer's).
	RawRefused uint64
}

// Service is a local TCP or UDP service exposed on the bus under a name
// by one peer, created by Expose. Only the exposed target is reachable
// through it: dialers name the service, never an address. Its methods
// are safe for concurrent use.
type Service struct {
	p     *peer.Peer
	name  string
	proto string
	addr  string
	cfg   *config
	log   *slog.Logger

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	attempts *rate.Limiter
	seen     seenSessions
	nAttempt atomic.Uint64
	nRefused atomic.Uint64

	mu        sync.Mutex
	closed    bool
	sessions  map[string]*exSession
	opened    uint64
	refused   uint64
	paths     map[Strategy]uint64
	pending   int
	pendingBy map[string]int
}

// Expose makes the local service at target ("tcp://host:port" or
// "udp://host:port") reachable by other peers as name on peer p, until
// Close. p must be a peer that serves tags (not a client-only peer):
// dialers reach the service through p's tag "bridge.open.<name>". ctx
// bounds only the setup. The target is dialled for each session, when a
// dialer opens one.
func Expose(ctx context.Context, p *peer.Peer, name, target string, opts ...ExposeOption) (*Service, error) {
	if err := ValidateName(name); err != nil {
		return nil, err
	}
	proto, addr, err := ParseTarget(target)
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, ctxErr(ctx, "expose "+name)
	}
	cfg, err := exposeConfig(opts)
	if err != nil {
		return nil, err
	}
	s := &Service{
		p: p, name: name, proto: proto, addr: addr, cfg: cfg,
		log:       cfg.log.With("service", name),
		sessions:  map[string]*exSession{},
		paths:     map[Strategy]uint64{},
		pendingBy: map[string]int{},
		attempts:  newAttemptLimiter(cfg.limits),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if _, err := peer.Register(p, OpenTag(name), s.open); err != nil {
		s.cancel()
		if errors.Is(err, peer.ErrDuplicateTag) {
			return nil, fmt.Errorf("%w: %q on peer %s", ErrAlreadyExposed, name, p.ID())
		}
		return nil, fmt.Errorf("bridge: expose %q: %w", name, err)
	}
	if len(cfg.stun.Servers) > 0 {
		// Classify now, so the first dialer does not wait for it.
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			classify(s.ctx, cfg.stun)
		}()
	}
	s.log.Debug("service exposed", "target", target, "peer", p.ID())
	return s, nil
}

// Name returns the service name.
func (s *Service) Name() string { return s.name }

// Target returns the exposed target, "tcp://host:port" or
// "udp://host:port".
func (s *Service) Target() string { return s.proto + "://" + s.addr }

// Stats returns the service's counters.
func (s *Service) Stats() ServiceStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := ServiceStats{Opened: s.opened, Active: len(s.sessions), Paths: map[Strategy]uint64{},
		Pending: s.pending, Refused: s.refused, Attempts: s.nAttempt.Load(),
		RawRefused: s.nRefused.Load()}
	for k, v := range s.paths {
		st.Paths[k] = v
	}
	return st
}

// Close stops exposing the service, ends every session (their
// connections to the target close) and waits for them, at most
// DefaultCloseTimeout (then it returns an error wrapping
// context.DeadlineExceeded). A second Close returns ErrClosed.
func (s *Service) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return fmt.Errorf("bridge: close service %q: %w", s.name, ErrClosed)
	}
	s.closed = true
	s.mu.Unlock()
	err := s.p.Unregister(OpenTag(s.name))
	if errors.Is(err, peer.ErrNoSuchTag) {
		err = nil
	}
	s.cancel()
	if werr := waitBounded(&s.wg, DefaultCloseTimeout); werr != nil {
		err = errors.Join(err, fmt.Errorf("bridge: close service %q: %w", s.name, werr))
	}
	s.log.Debug("service closed")
	return err
}

// open serves an offer (the tag bridge.open.<name>).
func (s *Service) open(ctx context.Context, o offer) (answer, error) {
	ans := answer{V: protoVersion, Peer: s.p.ID(), Proto: s.proto}
	refuse := func(code string, err error) (answer, error) {
		ans.Code, ans.Error = code, err.Error()
		s.mu.Lock()
		s.refused++
		s.mu.Unlock()
		s.log.Debug("session refused", "session", o.Session, "code", code, "err", err)
		return ans, nil
	}
	if o.V != protoVersion {
		return refuse(codeBadRequest, fmt.Errorf("protocol version %d not supported (want %d)", o.V, protoVersion))
	}
	if err := names.Token(o.Peer); err != nil {
		return refuse(codeBadRequest, fmt.Errorf("dialer peer id %q: %v", o.Peer, err))
	}
	if o.Proto != s.proto {
		return refuse(codeWrongProto, fmt.Errorf("service %q is %s, not %s", s.name, s.proto, o.Proto))
	}
	sec, err := exposerSecret(o.Session)
	if err != nil {
		return refuse(codeBadRequest, err)
	}
	if len(o.FP) != fingerprintSize {
		return refuse(codeBadRequest, errors.New("no certificate fingerprint"))
	}
	rkeys, noiseReply, err := noiseRespond(o.Session, o.Noise)
	if err != nil {
		return refuse(codeBadRequest, err)
	}
	if len(o.Nonce) != nonceSize {
		return refuse(codeBadRequest, errors.New("bad nonce"))
	}
	if err := s.checkOffer(&o); err != nil {
		return refuse(codeLimit, err)
	}
	caller := peer.CallerFrom(ctx)
	if caller == "" {
		caller = o.Peer
	}
	lim := s.cfg.limits
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return refuse(codeClosed, errors.New("service closing"))
	case s.sessions[o.Session] != nil:
		s.mu.Unlock()
		return refuse(codeBadRequest, errors.New("session exists"))
	case len(s.sessions) >= lim.MaxSessions:
		s.mu.Unlock()
		return refuse(codeLimit, fmt.Errorf("%w: %d sessions (MaxSessions)", ErrLimit, lim.MaxSessions))
	case s.pending >= lim.MaxPending:
		s.mu.Unlock()
		return refuse(codeLimit, fmt.Errorf("%w: %d sessions without a path (MaxPending)", ErrLimit, lim.MaxPending))
	case s.pendingBy[caller] >= lim.MaxPendingPerPeer:
		s.mu.Unlock()
		return refuse(codeLimit, fmt.Errorf("%w: %d sessions without a path from peer %q (MaxPendingPerPeer)", ErrLimit, lim.MaxPendingPerPeer, caller))
	}
	// The reservation holds until the session has its path or ends.
	s.pending++
	s.pendingBy[caller]++
	s.mu.Unlock()
	sameHost := checkHostProof(o.Host, roleDialer, o.Session) && s.seen.first(o.Session)

	ss, err := s.newSession(ctx, o, sec, caller, sameHost)
	if err != nil {
		s.unreserve(caller)
		return refuse(codeUnavailable, err)
	}
	ans.Nonce = sec.nonce[:]
	ans.TCP, ans.UDP, ans.NAT = ss.tcpCands, ss.udpCands, ss.nat
	ans.Host = hostProof(roleExposer, o.Session)
	ans.FP = ss.id.fp
	ans.Noise = noiseReply
	ss.rkeys = rkeys
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ss.teardown()
		ss.release()
		return refuse(codeClosed, errors.New("service closing"))
	}
	s.sessions[o.Session] = ss
	s.opened++
	s.wg.Add(1)
	s.mu.Unlock()
	go ss.run()
	return ans, nil
}

// exSession is the exposer's side of one session.
type exSession struct {
	svc   *Service
	log   *slog.Logger
	sec   *secret
	id    *identity  // this side's TLS certificate
	rkeys *relayKeys // the relay's frame keys
	o     offer
	nc    *nats.Conn
	nat   *NATInfo
	peer  Addr // the dialer, as a relay address

	ctx      context.Context // the session's life
	cancel   context.CancelFunc
	setup    context.Context // until a path is chosen
	endSetup context.CancelFunc
	wg       sync.WaitGroup
	wgMu     sync.Mutex // guards ended and wg.Add against run's wg.Wait
	ended    bool

	target net.Conn // *net.TCPConn, or a connected *net.UDPConn
	ln     *pathListener
	port   uint16
	udp    *net.UDPConn
	sock   *pathSocket // writes of udp
	mux    *udpMux     // the DTLS connections on udp
	ctl    *nats.Subscription

	tcpCands, udpCands []Candidate
	// peerTCP and peerUDP are the dialer's candidates this side may
	// connect or send to (usableCandidates).
	peerTCP, peerUDP []Candidate
	caller           string // whose pending reservation the session holds
	released         atomic.Bool

	mu        sync.Mutex
	chosen    bool
	path      Strategy
	udpRemote netip.AddrPort
	relay     *relay
	conns     []net.Conn // raw connections being authenticated or used
	// known are the addresses valid probes or acks came from: the only
	// ones a DTLS handshake is accepted from.
	known map[netip.AddrPort]bool

	lastActive atomic.Int64 // unix nanoseconds, UDP sessions
	lastSent   atomic.Int64
}

// base is the stem of the session's subjects.
func (ss *exSession) base() string { return sessionBase(ss.o.Peer, ss.svc.p.ID(), ss.o.Session) }

func (s *Service) newSession(ctx context.Context, o offer, sec *secret, caller string, sameHost bool) (*exSession, error) {
	ss := &exSession{
		svc: s, sec: sec, o: o, nc: s.p.Conn(), caller: caller,
		log:   s.log.With("session", o.Session, "dialer", o.Peer),
		peer:  Addr{Peer: o.Peer, Service: s.name},
		known: map[netip.AddrPort]bool{},
	}
	id, err := newIdentity()
	if err != nil {
		return nil, fmt.Errorf("bridge: session certificate: %w", err)
	}
	ss.id = id
	lim := s.cfg.limits
	ss.peerTCP = usableCandidates(o.TCP, sameHost, lim.Networks, lim.MaxCandidates)
	ss.peerUDP = usableCandidates(o.UDP, sameHost, lim.Networks, lim.MaxCandidates)
	ss.ctx, ss.cancel = context.WithCancel(s.ctx)
	ss.setup, ss.endSetup = context.WithCancel(ss.ctx)
	ok := false
	defer func() {
		if !ok {
			ss.teardown()
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, targetDialTimeout)
	defer cancel()
	var d net.Dialer
	t, err := d.DialContext(dctx, s.proto, s.addr)
	if err != nil {
		return nil, err
	}
	ss.target = t
	has := func(st Strategy) bool {
		for _, x := range o.Strategies {
			if x == st {
				return true
			}
		}
		return false
	}
	raw := has(Direct) || has(Reverse) || has(PunchUDP) || has(PunchTCP)
	if raw && len(s.cfg.stun.Servers) > 0 {
		ss.nat = classify(ctx, s.cfg.stun)
	}
	// Loopback addresses are offered only to a dialer on this host.
	loopback := !s.cfg.noLoopback && sameHost
	if (s.proto == "tcp" && has(Direct)) || has(PunchTCP) {
		l, err := listenPath(ctx, hostAddrs(loopback))
		if err != nil {
			return nil, err
		}
		ss.ln = l
		ss.port = l.port
		ss.tcpCands = l.candidates()
		if ss.nat != nil && ss.nat.NAT && ss.nat.Mapped.Is4() {
			ss.tcpCands = addCandidate(ss.tcpCands, Candidate{Addr: netip.AddrPortFrom(ss.nat.Mapped, ss.port), Kind: KindMapped})
		}
		sortCandidates(ss.tcpCands)
	}
	if s.proto == "udp" && (has(Direct) || has(Reverse) || has(PunchUDP)) {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			return nil, fmt.Errorf("bridge: path socket: %w", err)
		}
		ss.udp = u
		ss.sock = newPathSocket(u)
		ss.mux = newUDPMux(ss.sock)
		port := uint16(u.LocalAddr().(*net.UDPAddr).Port)
		ss.udpCands = hostCandidates(port, loopback)
		if len(s.cfg.stun.Servers) > 0 {
			if m, err := mappedAddr(ctx, u, s.cfg.stun); err == nil {
				ss.udpCands = addCandidate(ss.udpCands, Candidate{Addr: m, Kind: KindMapped})
			} else {
				ss.log.Debug("no mapped address for the path socket", "err", err)
			}
		}
		sortCandidates(ss.udpCands)
	}
	sub, err := ss.nc.Subscribe(ctlSubject(ss.base()), ss.onCtl)
	if err != nil {
		return nil, fmt.Errorf("bridge: subscribe: %w", err)
	}
	ss.ctl = sub
	ok = true
	return ss, nil
}

// run starts the session's goroutines and waits for its end.
func (ss *exSession) run() {
	defer ss.svc.wg.Done()
	setupLimit := time.Duration(ss.o.SetupMS)*time.Millisecond + setupGrace
	setupLimit = min(setupLimit, ss.svc.cfg.limits.MaxSetup)
	ss.touch()
	timer := time.AfterFunc(setupLimit, func() {
		ss.mu.Lock()
		chosen := ss.chosen
		ss.mu.Unlock()
		if !chosen {
			ss.log.Debug("session setup timed out")
			ss.cancel()
		}
	})
	if ss.ln != nil {
		ss.goSafe(ss.acceptLoop)
	}
	if ss.udp != nil {
		ss.goSafe(ss.udpReader)
	}
	<-ss.ctx.Done()
	timer.Stop()
	ss.teardown()
	ss.wgMu.Lock()
	ss.ended = true
	ss.wgMu.Unlock()
	ss.wg.Wait()
	ss.release()
	ss.svc.mu.Lock()
	delete(ss.svc.sessions, ss.o.Session)
	ss.svc.mu.Unlock()
	ss.log.Debug("session ended")
}

// goSafe runs f in a goroutine of the session, unless the session has
// ended (run waits for them): an Add after run's Wait started would be
// a misuse of the WaitGroup.
func (ss *exSession) goSafe(f func()) {
	ss.wgMu.Lock()
	if ss.ended {
		ss.wgMu.Unlock()
		return
	}
	ss.wg.Add(1)
	ss.wgMu.Unlock()
	go func() {
		defer ss.wg.Done()
		f()
	}()
}

// teardown closes every resource of the session; it is idempotent.
func (ss *exSession) teardown() {
	ss.cancel()
	if ss.ctl != nil {
		_ = ss.ctl.Unsubscribe()
	}
	if ss.ln != nil {
		_ = ss.ln.Close()
	}
	ss.mu.Lock()
	conns := ss.conns
	ss.conns = nil
	rl := ss.relay
	ss.mu.Unlock()
	// Raw connections first: a DTLS close_notify still leaves.
	for _, c := range conns {
		_ = c.Close()
	}
	if ss.udp != nil {
		_ = ss.udp.Close()
	}
	if ss.target != nil {
		_ = ss.target.Close()
	}
	if rl != nil {
		_ = rl.Close()
	}
}

// refusedRaw counts a raw connection whose authentication failed while
// the setup was on (not one given up because another became the path).
func (ss *exSession) refusedRaw(error) {
	if ss.setup.Err() == nil {
		ss.svc.nRefused.Add(1)
	}
}

func (ss *exSession) touch() { ss.lastActive.Store(time.Now().UnixNano()) }

// track remembers a raw connection so teardown closes it; it reports
// false (and closes c) when the session already ended.
func (ss *exSession) track(c net.Conn) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.ctx.Err() != nil {
		_ = c.Close()
		return false
	}
	ss.conns = append(ss.conns, c)
	return true
}

// choose makes the path; only the first call wins. It ends the setup:
// the listener closes and probing and punching stop.
func (ss *exSession) choose(path Strategy, remote netip.AddrPort) bool {
	ss.mu.Lock()
	if ss.chosen || ss.ctx.Err() != nil {
		ss.mu.Unlock()
		return false
	}
	ss.chosen, ss.path, ss.udpRemote = true, path, remote
	ss.mu.Unlock()
	ss.release()
	ss.endSetup()
	if ss.ln != nil {
		_ = ss.ln.Close()
	}
	ss.svc.mu.Lock()
	ss.svc.paths[path]++
	ss.svc.mu.Unlock()
	ss.log.Debug("session path chosen", "path", path, "remote", remote)
	if fn := ss.svc.cfg.onSession; fn != nil {
		fn(SessionInfo{Service: ss.svc.name, Session: ss.o.Session, Peer: ss.o.Peer, Path: path, Remote: remote})
	}
	return true
}

// onCtl serves the dialer's control requests.
func (ss *exSession) onCtl(m *nats.Msg) {
	var req ctlRequest
	reply := func(err error) {
		if m.Reply == "" {
			return
		}
		r := ctlReply{OK: err == nil}
		if err != nil {
			r.Error = err.Error()
		}
		data, _ := json.Marshal(r)
		_ = m.Respond(data)
	}
	if err := json.Unmarshal(m.Data, &req); err != nil {
		reply(fmt.Errorf("%w: control request: %v", ErrProtocol, err))
		return
	}
	if ss.ctx.Err() != nil {
		reply(fmt.Errorf("bridge: session %w", ErrClosed))
		return
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	if max := ss.svc.cfg.limits.MaxStrategyTimeout; timeout > max {
		reply(fmt.Errorf("%w: timeout_ms %d beyond %v (MaxStrategyTimeout)", ErrLimit, req.TimeoutMS, max))
		return
	}
	if timeout <= 0 {
		timeout = min(DefaultPunchTCPTimeout, ss.svc.cfg.limits.MaxStrategyTimeout)
	}
	ss.log.Debug("control request", "op", req.Op, "timeout", timeout)
	switch req.Op {
	case opClose:
		ss.cancel()
		reply(nil)
	case opReverse, opPunchUDP, opPunchTCP:
		st := Strategy(req.Op)
		if req.Op == opReverse {
			st = Reverse
		}
		reply(ss.startStrategy(st, req.Op, timeout))
	case opRelay:
		rl, err := ss.openRelay()
		if err != nil {
			reply(err)
			return
		}
		reply(nil)
		ss.carryRelay(rl)
	default:
		reply(fmt.Errorf("%w: unknown control op %q", ErrProtocol, req.Op))
	}
}

// startStrategy starts the exposer's part of strategy st (the control
// operation op) for timeout: dialing the dialer's TCP candidates,
// punching, or probing its UDP candidates.
func (ss *exSession) startStrategy(st Strategy, op string, timeout time.Duration) error {
	switch {
	case ss.svc.proto == "tcp" && st == Reverse:
		ss.startTCPDials(timeout, reachable(ss.peerTCP, ss.o.NAT), false)
	case st == PunchTCP:
		if ss.ln == nil {
			return fmt.Errorf("%w: no path listener", ErrProtocol)
		}
		// Both sides connect from their advertised ports now. Behind
		// a NAT, a listener would answer a SYN that arrives between
		// two attempts with a SYN-ACK the NAT drops (see path.go).
		if ss.nat != nil && ss.nat.NAT {
			_ = ss.ln.Close()
		}
		ss.startTCPDials(timeout, ss.peerTCP, true)
	case ss.svc.proto == "udp" && (st == Reverse || st == PunchUDP):
		if ss.udp == nil {
			return fmt.Errorf("%w: no path socket", ErrProtocol)
		}
		cands, punch := reachable(ss.peerUDP, ss.o.NAT), st == PunchUDP
		if punch {
			cands = ss.peerUDP
		}
		ss.goSafe(func() { ss.probe(timeout, cands, punch) })
	default:
		return fmt.Errorf("%w: %s for a %s service", ErrProtocol, op, ss.svc.proto)
	}
	return nil
}

// openRelay sets up the relay of the session and chooses it as the
// path.
func (ss *exSession) openRelay() (*relay, error) {
	cfg := ss.svc.cfg.relay
	if ss.o.KeepAliveMS > 0 {
		cfg.keepalive = time.Duration(ss.o.KeepAliveMS) * time.Millisecond
	}
	local := Addr{Peer: ss.svc.p.ID(), Service: ss.svc.name}
	rl, err := newRelay(ss.nc, toExposer(ss.base()), toDialer(ss.base()), ss.svc.proto == "udp", cfg, local, ss.peer, ss.rkeys)
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	ss.relay = rl
	ss.mu.Unlock()
	if ss.ctx.Err() != nil || !ss.choose(Relay, netip.AddrPort{}) {
		return nil, fmt.Errorf("%w: a path was chosen already", ErrProtocol)
	}
	if err := rl.start(); err != nil {
		ss.cancel()
		return nil, err
	}
	return rl, nil
}

// carryRelay carries the session over the relay until it ends.
func (ss *exSession) carryRelay(rl *relay) {
	packet := ss.svc.proto == "udp"
	if packet {
		ss.goSafe(func() { ss.forwardUDPRelay(rl) })
	} else {
		ss.goSafe(func() {
			Join(ss.ctx, rl, ss.target)
			ss.cancel()
		})
	}
}

// acceptLoop authenticates every connection to the path listener.
func (ss *exSession) acceptLoop() {
	for {
		c, err := ss.ln.Accept()
		if err != nil {
			return
		}
		if !ss.track(c) {
			return
		}
		ss.goSafe(func() { ss.serveRaw(c) })
	}
}

// serveRaw authenticates a raw TCP connection, waits for the dialer to
// select it and then carries the session over it.
func (ss *exSession) serveRaw(raw net.Conn) {
	c, err := secureTCP(raw, ss.id, ss.o.FP, true, time.Now().Add(handshakeTimeout))
	if err != nil {
		ss.refusedRaw(err)
		ss.log.Debug("raw connection refused", "remote", raw.RemoteAddr(), "err", err)
		return
	}
	stop := context.AfterFunc(ss.setup, func() { _ = c.SetReadDeadline(time.Now()) })
	var b [2]byte
	_, err = io.ReadFull(c, b[:])
	stop()
	st, ok := codeStrategy(b[1])
	if err != nil || b[0] != tcpSelect || !ok {
		_ = c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	remote := addrPort(c.RemoteAddr())
	if !ss.choose(st, remote) {
		_ = c.Close()
		return
	}
	if ss.svc.proto == "udp" {
		// Datagrams over the TCP path, framed.
		ss.goSafe(func() { ss.idleWatch(nil) })
		stop := context.AfterFunc(ss.ctx, func() { _ = c.Close() })
		forwardFramed(&tcpPacket{Conn: c}, ss.target, ss.touch)
		stop()
	} else {
		Join(ss.ctx, c, ss.target)
	}
	ss.cancel()
}

// startTCPDials connects to the dialer's TCP candidates from ephemeral
// ports (reverse), or, to punch, sends opening SYNs to them from the path
// listener's port so that the dialer's SYNs get through (openTCP).
func (ss *exSession) startTCPDials(timeout time.Duration, cands []Candidate, punch bool) {
	ctx, cancel := context.WithTimeout(ss.setup, timeout)
	var wg sync.WaitGroup
	for _, cand := range cands {
		wg.Add(1)
		ss.goSafe(func() {
			defer wg.Done()
			var c net.Conn
			var err error
			if punch {
				c, err = connectTCP(ctx, cand, ss.port, true, ss.attempt, ss.log)
			} else {
				c, err = connectTCP(ctx, cand, 0, false, ss.attempt, ss.log)
			}
			if err != nil {
				return
			}
			if !ss.track(c) {
				return
			}
			ss.serveRaw(c)
		})
	}
	ss.goSafe(func() {
		wg.Wait()
		cancel()
	})
}

// probe sends UDP probes to the dialer's candidates until the setup
// ends or the timeout; with punch, opening probes first (see punch.go).
func (ss *exSession) probe(timeout time.Duration, cands []Candidate, punch bool) {
	ctx, cancel := context.WithTimeout(ss.setup, timeout)
	defer cancel()
	probeLoop(ctx, ss.sock, ss.sec.appendUDPCtl(nil, udpProbe, ss.o.Nonce), cands, punch, ss.allowProbe, nil)
}

// maxKnownAddrs bounds the addresses a session remembers probes from.
const maxKnownAddrs = 64

// udpReader reads the path socket for the whole session: probes and acks
// during the setup, and the DTLS records of the raw connections.
func (ss *exSession) udpReader() {
	buf := make([]byte, 65536)
	ack := ss.sec.appendUDPCtl(nil, udpAck, ss.o.Nonce)
	for {
		n, from, err := ss.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ss.ctx.Err() != nil {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		pkt := buf[:n]
		if isDTLS(pkt) {
			if !ss.mux.deliver(pkt, from) {
				ss.acceptUDP(pkt, from)
			}
			continue
		}
		typ, ok := ss.sec.parseUDPCtl(pkt, ss.o.Nonce)
		if !ok || ss.setup.Err() != nil {
			continue
		}
		ss.mu.Lock()
		if len(ss.known) < maxKnownAddrs {
			ss.known[from] = true
		}
		ss.mu.Unlock()
		// Acks go to addresses no candidate named: they count against
		// the attempt rate, so the socket reflects nothing at will.
		if typ == udpProbe && ss.allowProbe() {
			ss.sock.send(ack, from)
		}
	}
}

// acceptUDP starts the DTLS server side for the first record from
// address from, if from is known and the session has no path yet.
func (ss *exSession) acceptUDP(pkt []byte, from netip.AddrPort) {
	ss.mu.Lock()
	ok := ss.known[from] && !ss.chosen
	ss.mu.Unlock()
	if !ok || ss.setup.Err() != nil {
		return
	}
	mc := ss.mux.open(from)
	if mc == nil {
		return // too many handshakes at once; the client retransmits
	}
	_, _ = mc.in.Write(pkt)
	ss.goSafe(func() { ss.serveUDP(mc) })
}

// serveUDP authenticates the dialer over DTLS at mc's remote, waits for
// it to select the connection and then carries the session over it.
func (ss *exSession) serveUDP(mc *muxConn) {
	c, err := secureUDP(ss.setup, mc, mc.addr, ss.id, ss.o.FP, true, time.Now().Add(handshakeTimeout))
	if err != nil {
		ss.refusedRaw(err)
		ss.log.Debug("raw UDP handshake refused", "remote", mc.remote, "err", err)
		return
	}
	if !ss.track(c) {
		return
	}
	var mine atomic.Bool // this connection is the path
	stop := context.AfterFunc(ss.setup, func() {
		if !mine.Load() {
			_ = c.Close()
		}
	})
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if mine.Load() {
				ss.log.Debug("raw UDP path ended", "err", err)
				ss.cancel()
			}
			_ = c.Close()
			return
		}
		if n == 0 {
			continue
		}
		switch buf[0] {
		case udpSelect:
			if !mine.Load() {
				st, ok := Strategy(""), n >= 2
				if ok {
					st, ok = codeStrategy(buf[1])
				}
				if !ok {
					continue // not a select of this protocol version
				}
				mine.Store(true)
				if !ss.choose(st, mc.remote) {
					_ = c.Close()
					return
				}
				_, _ = c.Write([]byte{udpSelectAck})
				ss.goSafe(func() { ss.forwardUDPRaw(c) })
				continue
			}
			_, _ = c.Write([]byte{udpSelectAck}) // a repeated select
		case udpData:
			if mine.Load() {
				ss.touch()
				_, _ = ss.target.Write(buf[1:n])
			}
		case udpClose:
			if mine.Load() {
				ss.cancel()
				_ = c.Close()
				return
			}
		}
	}
}

// forwardUDPRaw sends the target's datagrams over the raw UDP path c and
// keeps the session alive until idle.
func (ss *exSession) forwardUDPRaw(c *dtls.Conn) {
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		_, err := c.Write(b)
		return err
	}
	ss.goSafe(func() { ss.idleWatch(func() { _ = write([]byte{udpKeepalive}) }) })
	buf := make([]byte, 65536)
	for {
		n, err := ss.target.Read(buf[1:])
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ss.ctx.Err() != nil {
				return
			}
			continue // e.g. ICMP port unreachable from the target
		}
		if n > maxUDPPathDatagram {
			ss.log.Debug("datagram too large for the raw UDP path dropped", "size", n)
			continue
		}
		buf[0] = udpData
		ss.touch()
		ss.lastSent.Store(time.Now().UnixNano())
		if err := write(buf[:1+n]); err != nil && (ss.ctx.Err() != nil || errors.Is(err, dtls.ErrConnClosed)) {
			return
		}
	}
}

// forwardUDPRelay carries datagrams between the relay and the target.
func (ss *exSession) forwardUDPRelay(rl *relay) {
	ss.goSafe(func() { ss.idleWatch(nil) })
	ss.goSafe(func() {
		buf := make([]byte, 65536)
		for {
			n, err := rl.Read(buf)
			if err != nil {
				ss.cancel()
				return
			}
			ss.touch()
			_, _ = ss.target.Write(buf[:n])
		}
	})
	buf := make([]byte, 65536)
	for {
		n, err := ss.target.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || ss.ctx.Err() != nil {
				return
			}
			continue
		}
		ss.touch()
		if _, err := rl.Write(buf[:n]); err != nil && !errors.Is(err, ErrProtocol) {
			ss.cancel()
			return
		}
	}
}

// idleWatch ends a UDP session idle for the idle timeout; keepalive, if
// not nil, runs when nothing was sent for udpKeepaliveInterval.
func (ss *exSession) idleWatch(keepalive func()) {
	var onTick func(time.Time)
	if keepalive != nil {
		onTick = func(now time.Time) {
			if now.Sub(time.Unix(0, ss.lastSent.Load())) > udpKeepaliveInterval {
				ss.lastSent.Store(now.UnixNano())
				keepalive()
			}
		}
	}
	if watchIdle(ss.ctx, ss.svc.cfg.udpIdle, &ss.lastActive, onTick) {
		ss.log.Debug("udp session idle")
		ss.cancel()
	}
}

// DefaultCloseTimeout bounds how long Service.Close waits for the
// service's sessions to end.
const DefaultCloseTimeout = 10 * time.Second

// waitBounded waits for wg at most d; it returns an error wrapping
// context.DeadlineExceeded when d passes first.
func waitBounded(wg *sync.WaitGroup, d time.Duration) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return nil
	case <-t.C:
		return fmt.Errorf("sessions still running after %v: %w", d, context.DeadlineExceeded)
	}
}

// addrPort converts a net.Addr of a TCP or UDP socket.
func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}
