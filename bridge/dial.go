package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"
	"github.com/pion/dtls/v3"

	"github.com/peerbus/peerbus/internal/names"
	"github.com/peerbus/peerbus/peer"
)

// AnyPeer, given as the peer id to Dial or DialPacket, lets any peer
// exposing the service answer (the bus picks one).
const AnyPeer = "any"

// Dial connects to the TCP service name exposed by the peer with id
// peerID (AnyPeer or "": any peer exposing it), running the allowed
// strategies at once (see Strategy) and taking the first path up. p may be a
// client-only peer. ctx bounds the whole setup, not the connection.
// The error wraps ErrNoSuchService, ErrWrongProtocol,
// ErrServiceUnavailable or ErrNoPath (with every attempt) when that is
// the cause. An invalid option is an error wrapping ErrInvalidOption.
func Dial(ctx context.Context, p *peer.Peer, peerID, name string, opts ...DialOption) (*Conn, error) {
	cfg, err := dialConfig(opts)
	if err != nil {
		return nil, err
	}
	c, res, err := dial(ctx, p, peerID, name, "tcp", cfg)
	if err != nil {
		return nil, err
	}
	return &Conn{c: c, res: res}, nil
}

// DialPacket connects to the UDP service name exposed by the peer with
// id peerID (AnyPeer or "": any peer exposing it); see Dial.
func DialPacket(ctx context.Context, p *peer.Peer, peerID, name string, opts ...DialOption) (*PacketConn, error) {
	cfg, err := dialConfig(opts)
	if err != nil {
		return nil, err
	}
	c, res, err := dial(ctx, p, peerID, name, "udp", cfg)
	if err != nil {
		return nil, err
	}
	return &PacketConn{c: c, res: res}, nil
}

// dialer is the dialing side of one session during its setup.
type dialer struct {
	p        *peer.Peer
	nc       *nats.Conn
	cfg      *config
	log      *slog.Logger
	sec      *secret
	id       *identity // this side's TLS certificate
	hs       *noise.HandshakeState
	rkeys    *relayKeys // the relay's frame keys, from the answer
	noiseMsg []byte
	proto    string
	name     string
	ans      answer

	setup    context.Context
	endSetup context.CancelFunc
	wg       sync.WaitGroup

	ln       *pathListener
	port     uint16
	udp      *net.UDPConn
	sock     *pathSocket // writes of udp
	tcpCands []Candidate
	udpCands []Candidate
	localNAT *NATInfo

	found    chan tcpWin // authenticated raw TCP connections, not selected
	mux      *udpMux     // the DTLS connections on udp
	udpReady chan udpWin // authenticated raw UDP connections, not selected

	pathChosen atomic.Bool // the raw UDP path is chosen: probes are over

	mu         sync.Mutex
	finished   bool
	selectable map[netip.AddrPort]bool
	errs       map[Strategy][]string // by strategy; "" for raw UDP connections

	readerDone chan struct{} // closed when udp's reader returned
}

// udpWin is an authenticated raw UDP connection: its DTLS connection,
// remote and, once selected, the datagram that came in place of the
// acknowledgement, if one did.
type udpWin struct {
	c       *dtls.Conn
	remote  netip.AddrPort
	pending []byte
}

func dial(ctx context.Context, p *peer.Peer, peerID, name, proto string, cfg *config) (net.Conn, DialResult, error) {
	start := time.Now()
	res := DialResult{Service: name, Proto: proto}
	if err := ValidateName(name); err != nil {
		return nil, res, err
	}
	if peerID == AnyPeer {
		peerID = ""
	}
	sec, err := newSecret()
	if err != nil {
		return nil, res, fmt.Errorf("bridge: random: %w", err)
	}
	res.Session = sec.idHex()
	id, err := newIdentity()
	if err != nil {
		return nil, res, fmt.Errorf("bridge: session certificate: %w", err)
	}
	hs, noiseMsg, err := noiseInitiator(res.Session)
	if err != nil {
		return nil, res, fmt.Errorf("bridge: relay handshake: %w", err)
	}
	d := &dialer{
		p: p, nc: p.Conn(), cfg: cfg, sec: sec, id: id, hs: hs, noiseMsg: noiseMsg, proto: proto, name: name,
		log:        cfg.log.With("session", res.Session, "service", name),
		found:      make(chan tcpWin, 16),
		udpReady:   make(chan udpWin, 4),
		errs:       map[Strategy][]string{},
		selectable: map[netip.AddrPort]bool{},
	}
	d.setup, d.endSetup = context.WithCancel(ctx)
	var keep net.Conn
	defer func() { d.cleanup(keep) }()

	if err := d.prepare(ctx); err != nil {
		return nil, res, err
	}
	res.LocalNAT = d.localNAT
	res.Offered = time.Since(start)
	if err := d.open(ctx, peerID); err != nil {
		return nil, res, err
	}
	res.Peer, res.RemoteNAT, res.Open = d.ans.Peer, d.ans.NAT, time.Since(start)
	res.LocalCandidates = append(append([]Candidate(nil), d.udpCands...), d.tcpCands...)
	res.RemoteCandidates = append(append([]Candidate(nil), d.ans.UDP...), d.ans.TCP...)
	d.log.Debug("session opened", "peer", d.ans.Peer, "tcp", d.ans.TCP, "udp", d.ans.UDP, "took", res.Open)
	if d.ln != nil {
		d.goSafe(d.acceptLoop)
	}
	if d.udp != nil {
		// The reader outlives the setup when the socket becomes the
		// path: it is not one of d.wg's goroutines.
		d.mux = newUDPMux(d.sock)
		d.readerDone = make(chan struct{})
		go d.udpReader()
	}

	if c, k := d.tryStrategies(ctx, &res, start); c != nil {
		keep = k
		return c, res, nil
	}
	d.notifyClose()
	res.Setup = time.Since(start)
	if ctx.Err() != nil {
		return nil, res, fmt.Errorf("%w (%s)", ctxErr(ctx, "dial "+name), summarize(res.Attempts))
	}
	return nil, res, fmt.Errorf("%w: service %q on peer %s: %s", ErrNoPath, name, res.Peer, summarize(res.Attempts))
}

func summarize(atts []Attempt) string {
	if len(atts) == 0 {
		return "no strategy allowed"
	}
	parts := make([]string, len(atts))
	for i, a := range atts {
		parts[i] = a.String()
	}
	return strings.Join(parts, "; ")
}

func (d *dialer) goSafe(f func()) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		f()
	}()
}

// rawAllowed reports whether any raw-path strategy applies.
func (d *dialer) rawAllowed() bool {
	c := d.cfg
	if d.proto == "tcp" {
		return c.allowed(Direct) || c.allowed(Reverse) || c.allowed(PunchTCP)
	}
	return c.allowed(Direct) || c.allowed(Reverse) || c.allowed(PunchUDP) || c.allowed(PunchTCP)
}

// prepare classifies the NAT and opens the local path sockets.
func (d *dialer) prepare(ctx context.Context) error {
	if !d.rawAllowed() {
		return nil
	}
	d.localNAT = classify(ctx, d.cfg.stun)
	loopback := !d.cfg.noLoopback
	if (d.proto == "tcp" && d.cfg.allowed(Reverse)) || d.cfg.allowed(PunchTCP) {
		l, err := listenPath(ctx, hostAddrs(loopback))
		if err != nil {
			return err
		}
		d.ln = l
		d.port = l.port
		d.tcpCands = l.candidates()
		if n := d.localNAT; n != nil && n.NAT && n.Mapped.Is4() {
			d.tcpCands = addCandidate(d.tcpCands, Candidate{Addr: netip.AddrPortFrom(n.Mapped, d.port), Kind: KindMapped})
		}
		sortCandidates(d.tcpCands)
	}
	if d.proto == "udp" && (d.cfg.allowed(Direct) || d.cfg.allowed(Reverse) || d.cfg.allowed(PunchUDP)) {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{})
		if err != nil {
			return fmt.Errorf("bridge: path socket: %w", err)
		}
		d.udp = u
		d.sock = newPathSocket(u)
		d.udpCands = hostCandidates(uint16(u.LocalAddr().(*net.UDPAddr).Port), loopback)
		if len(d.cfg.stun.Servers) > 0 {
			if m, err := mappedAddr(ctx, u, d.cfg.stun); err == nil {
				d.udpCands = addCandidate(d.udpCands, Candidate{Addr: m, Kind: KindMapped})
			} else {
				d.log.Debug("no mapped address for the path socket", "err", err)
			}
		}
		sortCandidates(d.udpCands)
	}
	return nil
}

// open sends the offer and takes the answer.
func (d *dialer) open(ctx context.Context, peerID string) error {
	var strategies []Strategy
	var setup time.Duration
	for _, st := range DefaultStrategies {
		if d.cfg.allowed(st) {
			strategies = append(strategies, st)
			setup += d.cfg.timeouts[st]
		}
	}
	o := offer{
		V: protoVersion, Session: d.sec.idHex(), Name: d.name, Proto: d.proto,
		Nonce: d.sec.nonce[:], FP: d.id.fp, Noise: d.noiseMsg, Strategies: strategies,
		TCP: d.tcpCands, UDP: d.udpCands, NAT: d.localNAT,
		KeepAliveMS: d.cfg.relay.keepalive.Milliseconds(), SetupMS: setup.Milliseconds(),
		Host: hostProof(roleDialer, d.sec.idHex()),
	}
	o.Peer = d.p.ID()
	fn, err := peer.Stub[offer, answer](d.p, OpenTag(d.name))
	if err != nil {
		return fmt.Errorf("bridge: open %q: %w", d.name, err)
	}
	target := peer.OnAny()
	who := "any peer"
	if peerID != "" {
		target = peer.OnPeer(peerID)
		who = "peer " + peerID
	}
	ans, err := fn.Call(ctx, o, target, peer.Timeout(d.cfg.openTimeout))
	switch {
	case errors.Is(err, peer.ErrNoSuchTag):
		return fmt.Errorf("%w: %s does not expose %q", ErrNoSuchService, who, d.name)
	case errors.Is(err, peer.ErrNoResponders) && peerID == "":
		return fmt.Errorf("%w: no peer exposes %q", ErrNoSuchService, d.name)
	case errors.Is(err, peer.ErrNoResponders):
		return fmt.Errorf("%w: %s is not on the bus (or exposes nothing)", ErrNoSuchService, who)
	case err != nil:
		return fmt.Errorf("bridge: open %q on %s: %w", d.name, who, err)
	}
	switch ans.Code {
	case "":
	case codeWrongProto:
		return fmt.Errorf("%w: %s", ErrWrongProtocol, ans.Error)
	case codeUnavailable:
		return fmt.Errorf("%w: %q on peer %s: %s", ErrServiceUnavailable, d.name, ans.Peer, ans.Error)
	case codeClosed:
		return fmt.Errorf("%w: %q on peer %s is closing", ErrNoSuchService, d.name, ans.Peer)
	case codeLimit:
		return fmt.Errorf("%w: %q on peer %s refused the session: %s", ErrLimit, d.name, ans.Peer, ans.Error)
	default:
		return fmt.Errorf("%w: open refused (%s): %s", ErrProtocol, ans.Code, ans.Error)
	}
	if len(ans.Nonce) != nonceSize || names.Token(ans.Peer) != nil || len(ans.FP) != fingerprintSize {
		return fmt.Errorf("%w: malformed answer", ErrProtocol)
	}
	rk, err := noiseFinish(d.hs, ans.Noise)
	if err != nil {
		return err
	}
	d.rkeys = rk
	// Only candidates this side may connect to are kept; loopback ones
	// only from an exposer on this host.
	sameHost := checkHostProof(ans.Host, roleExposer, o.Session)
	lim := DefaultLimits()
	ans.TCP = usableCandidates(ans.TCP, sameHost, nil, lim.MaxCandidates)
	ans.UDP = usableCandidates(ans.UDP, sameHost, nil, lim.MaxCandidates)
	d.ans = ans
	return nil
}

// skip says why a strategy cannot work here, or "".
func (d *dialer) skip(st Strategy, remote *NATInfo) string {
	tcp := d.proto == "tcp"
	switch st {
	case Direct:
		if (tcp && len(reachable(d.ans.TCP, remote)) == 0) || (!tcp && (d.udp == nil || len(reachable(d.ans.UDP, remote)) == 0)) {
			return "the exposer offered no address reachable without punching"
		}
	case Reverse:
		if (tcp && d.ln == nil) || (!tcp && d.udp == nil) {
			return "no local path socket"
		}
	case PunchUDP:
		if tcp {
			return "TCP service: UDP hole punching carries datagrams only, TCP services punch with TCP"
		}
		if d.udp == nil || len(d.ans.UDP) == 0 {
			return "no path sockets"
		}
		if d.localNAT.symmetric() && remote.symmetric() {
			return "both peers are behind symmetric NATs"
		}
	case PunchTCP:
		switch {
		case !reuseSupported:
			return "this platform cannot share a port between sockets"
		case d.ln == nil || len(d.ans.TCP) == 0:
			return "no path listeners"
		case !d.localNAT.predictable():
			return fmt.Sprintf("this side's external port is unpredictable (%s NAT, %s port allocation)", d.localNAT.Mapping, d.localNAT.PortAllocation)
		case !remote.predictable():
			return fmt.Sprintf("the exposer's external port is unpredictable (%s NAT, %s port allocation)", remote.Mapping, remote.PortAllocation)
		}
	}
	return ""
}

// base is the stem of the session's subjects (once answered).
func (d *dialer) base() string { return sessionBase(d.p.ID(), d.ans.Peer, d.sec.idHex()) }

// ctl sends a control request to the exposer's session.
func (d *dialer) ctl(ctx context.Context, op string, timeout time.Duration) error {
	data, _ := json.Marshal(ctlRequest{Op: op, TimeoutMS: timeout.Milliseconds()})
	m, err := d.ctlRequest(ctx, data)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return fmt.Errorf("%w: the exposer's session is gone", ErrPeerGone)
		}
		return fmt.Errorf("bridge: control %s: %w", op, err)
	}
	var r ctlReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		return fmt.Errorf("%w: control reply: %v", ErrProtocol, err)
	}
	if !r.OK {
		return fmt.Errorf("bridge: control %s refused: %s", op, r.Error)
	}
	return nil
}

// ctlRequest sends a control request and waits for its reply, which
// comes on a session subject (ctlReplySubject) that the policy lets only
// the exposer publish on, not on an inbox any peer could reply to.
func (d *dialer) ctlRequest(ctx context.Context, data []byte) (*nats.Msg, error) {
	base := d.base()
	reply := ctlReplySubject(base, nuid.Next())
	sub, err := d.nc.SubscribeSync(reply)
	if err != nil {
		return nil, err
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := d.nc.PublishRequest(ctlSubject(base), reply, data); err != nil {
		return nil, err
	}
	m, err := sub.NextMsgWithContext(ctx)
	if err != nil {
		return nil, err
	}
	if len(m.Data) == 0 && m.Header.Get("Status") == "503" {
		return nil, nats.ErrNoResponders
	}
	return m, nil
}

// notifyClose tells the exposer to drop the session (no reply awaited).
func (d *dialer) notifyClose() {
	if d.ans.Peer == "" {
		return
	}
	data, _ := json.Marshal(ctlRequest{Op: opClose})
	_ = d.nc.Publish(ctlSubject(d.base()), data)
}

// noteErr records why a connection of strategy st failed; st is "" for
// the raw UDP connections, which any UDP strategy may have found.
func (d *dialer) noteErr(st Strategy, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.errs[st]) < 4 {
		d.errs[st] = append(d.errs[st], err.Error())
	}
}

// errsOf joins the errors noted for st (and, for a UDP strategy, those of
// the raw UDP connections).
func (d *dialer) errsOf(st Strategy) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	errs := d.errs[st]
	if d.proto == "udp" && st != PunchTCP && st != Relay {
		errs = append(append([]string(nil), errs...), d.errs[""]...)
	}
	return strings.Join(errs, "; ")
}

// stageErr describes strategy st that timed out.
func (d *dialer) stageErr(st Strategy, timeout time.Duration) error {
	err := fmt.Errorf("no answer within %v", timeout)
	if d.setup.Err() != nil {
		err = ctxErr(d.setup, "setup")
	}
	if errs := d.errsOf(st); errs != "" {
		err = fmt.Errorf("%w (%s)", err, errs)
	}
	return err
}

// connect dials one of the exposer's candidates and authenticates; it
// reports whether the connection was handed to the race.
func (d *dialer) connect(ctx context.Context, cand Candidate, origin tcpOrigin) bool {
	punch := origin == fromPunch
	c, err := connectTCP(ctx, cand, d.port, punch, nil, d.log)
	if err != nil {
		if ctx.Err() == nil || !punch {
			d.noteErr(origin.strategy(), err)
		}
		return false
	}
	return d.authenticate(c, origin)
}

// acceptLoop takes connections from the exposer (reverse and punch).
func (d *dialer) acceptLoop() {
	for {
		c, err := d.ln.Accept()
		if err != nil {
			return
		}
		d.goSafe(func() { d.authenticate(c, fromAccept) })
	}
}

// authenticate runs the handshake on c and hands it to the race; c is
// closed if the setup ends first. It reports whether c was handed over.
func (d *dialer) authenticate(raw net.Conn, origin tcpOrigin) bool {
	stop := context.AfterFunc(d.setup, func() { _ = raw.Close() })
	tc, err := secureTCP(raw, d.id, d.ans.FP, false, time.Now().Add(handshakeTimeout))
	if !stop() {
		if err == nil {
			_ = tc.Close()
		}
		return false // closed by the end of the setup
	}
	if err != nil {
		st := origin.strategy()
		if origin == fromAccept {
			st = Reverse
		}
		d.noteErr(st, fmt.Errorf("%s: %w", raw.RemoteAddr(), err))
		return false
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finished {
		_ = tc.Close()
		return false
	}
	select {
	case d.found <- tcpWin{c: tc, origin: origin}:
		return true
	default:
		_ = tc.Close()
		return false
	}
}

// udpReader reads the path socket until it closes: during the setup it
// answers probes and starts a DTLS handshake with every address the
// exposer's probes and acks come from; DTLS records go to their
// connection.
func (d *dialer) udpReader() {
	defer close(d.readerDone)
	buf := make([]byte, 65536)
	ack := d.sec.appendUDPCtl(nil, udpAck, d.ans.Nonce)
	for {
		n, from, err := d.udp.ReadFromUDPAddrPort(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
		if isDTLS(buf[:n]) {
			d.mux.deliver(buf[:n], from)
			continue
		}
		if d.pathChosen.Load() {
			continue
		}
		typ, ok := d.sec.parseUDPCtl(buf[:n], d.ans.Nonce)
		if !ok {
			continue
		}
		if typ == udpProbe {
			d.sock.send(ack, from)
		}
		d.markSelectable(from)
	}
}

// markSelectable records an address the exposer reached us from and
// starts a DTLS handshake with it.
func (d *dialer) markSelectable(a netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finished || d.selectable[a] {
		return
	}
	mc := d.mux.open(a)
	if mc == nil {
		return // too many handshakes at once; a later probe retries
	}
	d.selectable[a] = true
	d.wg.Add(1) // under d.mu: cleanup waits only once finished is set
	go func() {
		defer d.wg.Done()
		d.handshakeUDP(mc)
	}()
}

// handshakeUDP authenticates the exposer at mc's remote and hands the
// connection to the race, which selects it (selectUDP) or not.
func (d *dialer) handshakeUDP(mc *muxConn) {
	c, err := secureUDP(d.setup, mc, mc.addr, d.id, d.ans.FP, false, time.Now().Add(handshakeTimeout))
	if err != nil {
		if d.setup.Err() == nil {
			d.noteErr("", fmt.Errorf("%s: %w", mc.remote, err))
		}
		d.mu.Lock()
		delete(d.selectable, mc.remote)
		d.mu.Unlock()
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.finished {
		_ = c.Close()
		return
	}
	select {
	case d.udpReady <- udpWin{c: c, remote: mc.remote}:
	default:
		_ = c.Close()
	}
}

// selectUDP asks the exposer, inside DTLS, to make c the path of
// strategy st, until it acknowledges (or sends a datagram, returned) or
// the attempt times out.
func (d *dialer) selectUDP(c *dtls.Conn, st Strategy) ([]byte, error) {
	deadline := time.Now().Add(handshakeTimeout)
	buf := make([]byte, 65536)
	for time.Now().Before(deadline) {
		if d.setup.Err() != nil {
			return nil, ctxErr(d.setup, "select")
		}
		if _, err := c.Write([]byte{udpSelect, strategyCode(st)}); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(probeInterval))
		for {
			n, err := c.Read(buf)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("select: %w", err)
			}
			if n == 0 {
				continue
			}
			switch buf[0] {
			case udpSelectAck:
				_ = c.SetReadDeadline(time.Time{})
				return nil, nil
			case udpData:
				_ = c.SetReadDeadline(time.Time{})
				return append([]byte(nil), buf[1:n]...), nil
			}
		}
	}
	return nil, errors.New("the exposer did not acknowledge the selection")
}

// relay asks the exposer for a relay and starts this side's.
func (d *dialer) relay(ctx context.Context, timeout time.Duration) (net.Conn, error) {
	local := Addr{Peer: d.p.ID(), Service: d.name}
	remote := Addr{Peer: d.ans.Peer, Service: d.name}
	rl, err := newRelay(d.nc, toDialer(d.base()), toExposer(d.base()), d.proto == "udp", d.cfg.relay, local, remote, d.rkeys)
	if err != nil {
		return nil, err
	}
	if err := d.ctl(ctx, opRelay, timeout); err != nil {
		_ = rl.Close()
		return nil, err
	}
	if err := rl.start(); err != nil {
		_ = rl.Close()
		return nil, err
	}
	return rl, nil
}

// cleanup ends the setup: every raw connection and socket not kept as
// the path is closed, and every setup goroutine has returned.
func (d *dialer) cleanup(keep net.Conn) {
	d.mu.Lock()
	d.finished = true
	d.mu.Unlock()
	d.endSetup()
	if d.ln != nil {
		_ = d.ln.Close()
	}
	d.wg.Wait()
	for drained := false; !drained; {
		select {
		case w := <-d.found:
			_ = w.c.Close()
		case w := <-d.udpReady:
			_ = w.c.Close()
		default:
			drained = true
		}
	}
	if d.udp != nil && keep == nil {
		_ = d.udp.Close()
		if d.readerDone != nil {
			<-d.readerDone
		}
	}
}
