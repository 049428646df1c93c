package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// CHANGE-REQUEST flags (RFC 5780 section 7.2).
const (
	changePortFlag uint32 = 0x02
	changeIPFlag   uint32 = 0x04
)

// changeRequest is a CHANGE-REQUEST attribute; pion/stun has no type for
// it, so it is a stun.Setter here.
type changeRequest uint32

// AddTo adds CHANGE-REQUEST to m.
func (c changeRequest) AddTo(m *stun.Message) error {
	var v [4]byte
	binary.BigEndian.PutUint32(v[:], uint32(c))
	m.Add(stun.AttrChangeRequest, v[:])
	return nil
}

func changeName(flags uint32) string {
	switch flags & (changeIPFlag | changePortFlag) {
	case changeIPFlag | changePortFlag:
		return "ip+port"
	case changePortFlag:
		return "port"
	case changeIPFlag:
		return "ip"
	}
	return ""
}

// answer is a decoded STUN response.
type answer struct {
	from     netip.AddrPort
	at       time.Time
	mapped   netip.AddrPort
	other    netip.AddrPort
	origin   netip.AddrPort
	errCode  int
	errText  string
	response bool // a success or error response (not a request)
}

// decodeAnswer decodes a Binding response. ok is false for anything that
// is not a well-formed Binding response.
func decodeAnswer(b []byte, from netip.AddrPort, at time.Time) (a answer, tid [stun.TransactionIDSize]byte, ok bool) {
	if !stun.IsMessage(b) {
		return a, tid, false
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return a, tid, false
	}
	if m.Type.Method != stun.MethodBinding {
		return a, tid, false
	}
	if m.Type.Class != stun.ClassSuccessResponse && m.Type.Class != stun.ClassErrorResponse {
		return a, tid, false
	}
	if m.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(m); err != nil {
			return a, tid, false
		}
	}
	a = answer{from: from, at: at, response: true}
	if m.Type.Class == stun.ClassErrorResponse {
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(m); err == nil {
			a.errCode = int(ec.Code)
			a.errText = string(ec.Reason)
		} else {
			a.errCode = -1
		}
		return a, m.TransactionID, true
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(m); err == nil {
		a.mapped = toAddrPort(xor.IP, xor.Port)
	} else {
		var ma stun.MappedAddress
		if err := ma.GetFrom(m); err == nil {
			a.mapped = toAddrPort(ma.IP, ma.Port)
		}
	}
	var other stun.OtherAddress
	if err := other.GetFrom(m); err == nil {
		a.other = toAddrPort(other.IP, other.Port)
	}
	var origin stun.ResponseOrigin
	if err := origin.GetFrom(m); err == nil {
		a.origin = toAddrPort(origin.IP, origin.Port)
	}
	return a, m.TransactionID, true
}

func toAddrPort(ip net.IP, port int) netip.AddrPort {
	addr, ok := netip.AddrFromSlice(ip)
	if !ok || port < 0 || port > 0xffff {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port))
}

// netAddrPort converts a net.Addr from ReadFrom to a netip.AddrPort.
func netAddrPort(a net.Addr) netip.AddrPort {
	if ua, ok := a.(*net.UDPAddr); ok {
		ap := ua.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// socket is one probe socket with a reader that hands responses to the
// probes waiting for them, by transaction ID.
type socket struct {
	conn  net.PacketConn
	local netip.AddrPort

	mu      sync.Mutex
	pending map[[stun.TransactionIDSize]byte]chan answer

	done chan struct{} // closed when the reader exits
}

func (s *socket) readLoop() {
	defer close(s.done)
	buf := make([]byte, 4096)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return // closed (or broken): pending probes time out
		}
		a, tid, ok := decodeAnswer(buf[:n], netAddrPort(from), time.Now())
		if !ok {
			continue
		}
		s.mu.Lock()
		ch := s.pending[tid]
		s.mu.Unlock()
		if ch != nil {
			select {
			case ch <- a:
			default: // a duplicate answer to a retransmission
			}
		}
	}
}

func (s *socket) register(tid [stun.TransactionIDSize]byte) chan answer {
	ch := make(chan answer, 1)
	s.mu.Lock()
	s.pending[tid] = ch
	s.mu.Unlock()
	return ch
}

func (s *socket) unregister(tid [stun.TransactionIDSize]byte) {
	s.mu.Lock()
	delete(s.pending, tid)
	s.mu.Unlock()
}

// run holds the sockets and probes of one Classify or ExternalAddress
// call; close releases everything and waits for every goroutine.
type run struct {
	cfg    *config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	rtts []*firstRTT // per server, by index

	mu      sync.Mutex
	sockets []*socket
	tests   []Test
}

// firstRTT is the first round trip measured to one server; known is
// closed once it is set.
type firstRTT struct {
	once  sync.Once
	known chan struct{}
	rtt   time.Duration
}

func (f *firstRTT) set(rtt time.Duration) {
	f.once.Do(func() {
		f.rtt = rtt
		close(f.known)
	})
}

func newRun(ctx context.Context, cfg *config) *run {
	ctx, cancel := context.WithCancel(ctx)
	r := &run{cfg: cfg, ctx: ctx, cancel: cancel}
	for range cfg.servers {
		r.rtts = append(r.rtts, &firstRTT{known: make(chan struct{})})
	}
	return r
}

// open opens a probe socket bound to local and starts its reader.
func (r *run) open(local netip.AddrPort) (*socket, error) {
	addr := ""
	if local.Addr().IsValid() {
		addr = local.String()
	} else if local.Port() != 0 {
		addr = fmt.Sprintf(":%d", local.Port())
	}
	conn, err := r.cfg.ListenPacket(r.ctx, r.cfg.network, addr)
	if err != nil {
		return nil, fmt.Errorf("nat: open probe socket %q: %w", addr, err)
	}
	s := &socket{
		conn:    conn,
		local:   netAddrPort(conn.LocalAddr()),
		pending: make(map[[stun.TransactionIDSize]byte]chan answer),
		done:    make(chan struct{}),
	}
	r.mu.Lock()
	r.sockets = append(r.sockets, s)
	r.mu.Unlock()
	go s.readLoop()
	return s, nil
}

// close cancels outstanding probes, closes the sockets and waits for all
// goroutines of the run.
func (r *run) close() {
	r.cancel()
	r.wg.Wait()
	r.mu.Lock()
	socks := r.sockets
	r.sockets = nil
	r.mu.Unlock()
	for _, s := range socks {
		_ = s.conn.Close()
	}
	for _, s := range socks {
		<-s.done
	}
}

func (r *run) record(t Test) {
	r.mu.Lock()
	r.tests = append(r.tests, t)
	r.mu.Unlock()
}

func (r *run) recorded() []Test {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Test(nil), r.tests...)
}

// probe is one STUN transaction with retransmissions.
type probe struct {
	test   Test
	ans    answer
	done   chan struct{}
	cancel context.CancelFunc
}

// wait blocks until the probe finished and returns its outcome.
func (p *probe) wait() (answer, bool) {
	<-p.done
	return p.ans, p.test.Answered
}

// stop abandons a probe whose outcome is no longer needed; it is then
// not recorded in the tests.
func (p *probe) stop() { p.cancel() }

// start sends a Binding request (with the given CHANGE-REQUEST flags, if
// any) from s to dst. The first transmission happens before start
// returns, so probes started one after another leave in that order;
// retransmissions and the wait run in a goroutine.
func (r *run) start(name string, srv server, s *socket, dst netip.AddrPort, change uint32) *probe {
	ctx, cancel := context.WithCancel(r.ctx)
	p := &probe{
		test: Test{
			Name:        name,
			Server:      srv.name,
			Local:       s.local,
			Destination: dst,
			Change:      changeName(change),
		},
		done:   make(chan struct{}),
		cancel: cancel,
	}
	setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
	if change != 0 {
		setters = append(setters, changeRequest(change))
	}
	setters = append(setters, stun.Fingerprint)
	msg, err := stun.Build(setters...)
	if err != nil { // cannot happen with these setters
		p.test.Error = fmt.Sprintf("build request: %v", err)
		close(p.done)
		cancel()
		r.record(p.test)
		return p
	}
	if dst.Addr().Is4() != (r.cfg.network == "udp4") {
		p.test.Error = "address family differs from the primary server's"
		close(p.done)
		cancel()
		r.record(p.test)
		return p
	}
	ch := s.register(msg.TransactionID)
	udpDst := net.UDPAddrFromAddrPort(dst)
	begin := time.Now()
	_, sendErr := s.conn.WriteTo(msg.Raw, udpDst)
	p.test.Attempts = 1

	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		defer close(p.done)
		defer cancel()
		defer s.unregister(msg.TransactionID)
		recordIt := true
		defer func() {
			p.test.RTTMillis = millis(p.test.RTT)
			if recordIt {
				r.record(p.test)
			}
			r.cfg.log.Debug("stun probe",
				"test", p.test.Name, "server", p.test.Server, "local", p.test.Local,
				"dst", dst, "change", p.test.Change, "answered", p.test.Answered,
				"mapped", p.test.Mapped, "source", p.test.Source,
				"attempts", p.test.Attempts, "rtt", p.test.RTT, "error", p.test.Error)
		}()
		if sendErr != nil {
			p.test.Error = fmt.Sprintf("send: %v", sendErr)
			return
		}
		recordIt = r.await(ctx, p, s, msg.Raw, udpDst, begin, ch, r.rtts[srv.index])
	}()
	return p
}

// await waits for the answer to p's request raw, sent from s to dst at
// begin, retransmitting it with a doubling interval until the timeout.
// The timeout is the configured one until the server's first round trip
// is known (srv), then the one derived from it (config.noAnswer), and
// the interval at most a quarter of that. An answer sets the server's
// first round trip, if none was known. It fills p's test and reports
// whether it is to be recorded (not when the probe was stopped).
func (r *run) await(ctx context.Context, p *probe, s *socket, raw []byte, dst *net.UDPAddr, begin time.Time, ch chan answer, srv *firstRTT) bool {
	timeout := r.cfg.Timeout
	deadline := begin.Add(timeout)
	rto := r.cfg.Retransmit
	sent := begin
	next := sent.Add(rto)
	timer := time.NewTimer(time.Until(minTime(next, deadline)))
	defer timer.Stop()
	known := srv.known
	for {
		select {
		case a := <-ch:
			srv.set(a.at.Sub(begin))
			p.ans = a
			p.test.Answered = true
			p.test.RTT = a.at.Sub(begin)
			p.test.Source = a.from
			p.test.Mapped = a.mapped
			p.test.Other = a.other
			if a.errCode != 0 {
				p.test.Error = fmt.Sprintf("error response %d %s", a.errCode, a.errText)
			}
			return true
		case <-ctx.Done():
			// Stopped: the answer is no longer needed, or the run
			// (or the caller's context) ended.
			p.test.Error = "canceled"
			return false
		case <-known:
			known = nil
			if w := r.cfg.noAnswer(srv.rtt); w < timeout {
				timeout, deadline = w, begin.Add(w)
			}
			if q := timeout / 4; q < rto {
				rto = q
				next = minTime(next, sent.Add(rto))
			}
			timer.Reset(time.Until(minTime(next, deadline)))
		case now := <-timer.C:
			if !now.Before(deadline) {
				p.test.Error = fmt.Sprintf("no response after %d attempts in %v", p.test.Attempts, timeout)
				return true
			}
			if now.Before(next) {
				timer.Reset(time.Until(minTime(next, deadline)))
				continue
			}
			if _, err := s.conn.WriteTo(raw, dst); err != nil {
				p.test.Error = fmt.Sprintf("send: %v", err)
				return true
			}
			p.test.Attempts++
			sent = now
			rto *= 2
			next = now.Add(rto)
			timer.Reset(time.Until(minTime(next, deadline)))
		}
	}
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
