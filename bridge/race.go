package bridge

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// The dialer runs its strategies at once, as a race (docs/PROTOCOL.md,
// "Strategies and raw paths"): every raw strategy that can work starts
// when the answer arrives, each bounded by its own timeout, and the
// first raw path that is up becomes the session's path. The dialer alone
// selects, one path at a time, so both sides agree on it and on its
// strategy (the select message names it).
//
// Two preferences hold the first path briefly: a path that comes up
// while a strategy earlier in DefaultStrategies still runs waits
// preferWindow for it, and a TCP path of a UDP service waits
// udpPreferWait for a UDP one. The relay, which needs no raw path,
// starts when every raw strategy has failed, or relayDelay after the
// start when none is up and no hole punching runs (a punched path may
// need its whole timeout: the crossing of both sides' first packets is
// luck); with no raw strategy it starts at once.
const (
	preferWindow  = 50 * time.Millisecond
	udpPreferWait = 500 * time.Millisecond
	relayDelay    = 1500 * time.Millisecond
)

// tcpOrigin says how a raw TCP connection of the dialer came about.
type tcpOrigin int

const (
	fromDirect tcpOrigin = iota // this side connected to a candidate
	fromPunch                   // this side connected from its path port
	fromAccept                  // the exposer connected to this side's listener
)

// strategy is the strategy a connection of the origin belongs to, as far
// as the origin alone tells.
func (o tcpOrigin) strategy() Strategy {
	switch o {
	case fromDirect:
		return Direct
	case fromPunch:
		return PunchTCP
	}
	return Reverse
}

// tcpWin is an authenticated raw TCP connection, not selected yet.
type tcpWin struct {
	c      net.Conn
	origin tcpOrigin
}

// run is one strategy of the race.
type run struct {
	st       Strategy
	start    time.Time
	deadline time.Time
	timeout  time.Duration
	ended    bool
	err      error
	took     time.Duration
}

// stratEnd reports a strategy that failed before its timeout.
type stratEnd struct {
	st  Strategy
	err error
}

// relayDone is the outcome of the relay's setup.
type relayDone struct {
	c   net.Conn
	err error
}

// held is a raw TCP path kept unselected while a preferred strategy may
// still come up.
type held struct {
	c     net.Conn
	st    Strategy
	until time.Time
}

// rank is the place of st in DefaultStrategies (the preference order).
func rank(st Strategy) int { return slices.Index(DefaultStrategies, st) }

// race runs the strategies of one dial.
type race struct {
	d       *dialer
	runs    map[Strategy]*run
	order   []Strategy // the started strategies, in preference order
	ends    chan stratEnd
	cancels []context.CancelFunc
}

// tryStrategies runs the allowed strategies that can work as a race,
// recording each in res. It returns the connection of the path (and the
// socket the cleanup must keep open for it), or nil when none works.
func (d *dialer) tryStrategies(ctx context.Context, res *DialResult, start time.Time) (conn, keep net.Conn) {
	r := &race{d: d, runs: map[Strategy]*run{}, ends: make(chan stratEnd, len(DefaultStrategies))}
	defer func() {
		for _, cancel := range r.cancels {
			cancel()
		}
	}()
	skipped := map[Strategy]string{}
	var raw []Strategy
	useRelay := false
	for _, st := range DefaultStrategies {
		if !d.cfg.allowed(st) {
			continue
		}
		if why := d.skip(st, res.RemoteNAT); why != "" {
			skipped[st] = why
			d.log.Debug("strategy skipped", "strategy", st, "why", why)
			continue
		}
		if st == Relay {
			useRelay = true
		} else {
			raw = append(raw, st)
		}
	}
	t0 := time.Now()
	for _, st := range raw {
		r.launch(st, t0)
	}
	relayAt := t0.Add(relayDelay)
	if len(raw) == 0 {
		relayAt = t0
	}

	var (
		relayCh   chan relayDone // set while the relay's setup runs
		relayRun  *run
		hold      *held
		winner    Strategy
		wake      = time.NewTimer(time.Hour)
		selectErr = func(st Strategy, err error) {
			d.log.Debug("path selection failed", "strategy", st, "err", err)
			d.noteErr(st, err)
		}
	)
	defer wake.Stop()
	defer func() {
		if hold != nil && hold.c != conn {
			_ = hold.c.Close()
		}
	}()

	finish := func(st Strategy, c net.Conn) (net.Conn, net.Conn) {
		winner = st
		if rr := r.runs[st]; rr != nil {
			rr.ended, rr.err, rr.took = true, nil, time.Since(rr.start)
		}
		res.Path = st
		if st != Relay {
			res.Local, res.Remote = addrPort(c.LocalAddr()), addrPort(c.RemoteAddr())
		}
		if u, ok := c.(*udpPath); ok {
			keep = u // the raw UDP path: the socket stays
		} else if d.proto == "udp" && st != Relay {
			c = &tcpPacket{Conn: c} // datagrams over a TCP path
		}
		return c, keep
	}
	// selectTCP makes h the path; false if writing the select failed.
	selectTCP := func(h *held) bool {
		err := h.c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
		if err == nil {
			_, err = h.c.Write([]byte{tcpSelect, strategyCode(h.st)})
		}
		if err != nil {
			_ = h.c.Close()
			selectErr(h.st, err)
			return false
		}
		_ = h.c.SetWriteDeadline(time.Time{})
		return true
	}

loop:
	for {
		now := time.Now()
		for _, st := range r.order {
			if rr := r.runs[st]; !rr.ended && !now.Before(rr.deadline) {
				rr.ended, rr.err, rr.took = true, d.stageErr(st, rr.timeout), now.Sub(rr.start)
				d.log.Debug("strategy failed", "strategy", st, "err", rr.err, "took", rr.took)
			}
		}
		rawLeft := r.running(len(DefaultStrategies))
		if hold != nil && relayCh == nil && (!now.Before(hold.until) || !r.running(rank(hold.st))) {
			h := hold
			hold = nil
			if selectTCP(h) {
				conn, keep = finish(h.st, h.c)
				break loop
			}
			continue
		}
		punching := r.runningAny(PunchUDP, PunchTCP)
		if useRelay && relayRun == nil && hold == nil && ((!now.Before(relayAt) && !punching) || !rawLeft) {
			relayRun = &run{st: Relay, start: now, timeout: d.cfg.timeouts[Relay]}
			relayRun.deadline = now.Add(relayRun.timeout)
			relayCh = make(chan relayDone, 1)
			rctx, cancel := context.WithTimeout(d.setup, relayRun.timeout)
			r.cancels = append(r.cancels, cancel)
			d.log.Debug("strategy", "strategy", Relay)
			d.goSafe(func() {
				c, err := d.relay(rctx, relayRun.timeout)
				relayCh <- relayDone{c, err}
			})
		}
		if !rawLeft && hold == nil && relayCh == nil {
			break loop // nothing can come any more
		}
		next := now.Add(time.Hour)
		for _, st := range r.order {
			if rr := r.runs[st]; !rr.ended && rr.deadline.Before(next) {
				next = rr.deadline
			}
		}
		if hold != nil && hold.until.Before(next) {
			next = hold.until
		}
		if useRelay && relayRun == nil && !punching && relayAt.Before(next) {
			next = relayAt
		}
		wake.Reset(time.Until(next))
		// While the relay's setup runs nothing else is selected: the
		// exposer takes the first path asked for.
		found, ready := d.found, d.udpReady
		if relayCh != nil {
			found, ready = nil, nil
		}
		select {
		case w := <-found:
			st := r.tcpStrategy(w)
			d.log.Debug("raw TCP path up", "strategy", st, "remote", w.c.RemoteAddr())
			until := time.Now().Add(preferWindow)
			if d.proto == "udp" {
				until = time.Now().Add(udpPreferWait)
			}
			switch {
			case hold == nil:
				hold = &held{c: w.c, st: st, until: until}
			case rank(st) < rank(hold.st):
				_ = hold.c.Close()
				hold = &held{c: w.c, st: st, until: hold.until}
			default:
				_ = w.c.Close()
			}
		case w := <-ready:
			st := r.udpStrategy(w.remote)
			d.log.Debug("raw UDP path up", "strategy", st, "remote", w.remote)
			pending, err := d.selectUDP(w.c, st)
			if err != nil {
				_ = w.c.Close()
				selectErr("", fmt.Errorf("%s: %w", w.remote, err))
				d.mu.Lock()
				delete(d.selectable, w.remote)
				d.mu.Unlock()
				continue
			}
			w.pending = pending
			d.pathChosen.Store(true)
			conn, keep = finish(st, newUDPPath(w, d.udp, d.readerDone))
			break loop
		case e := <-r.ends:
			if rr := r.runs[e.st]; !rr.ended {
				rr.ended, rr.err, rr.took = true, e.err, time.Since(rr.start)
				d.log.Debug("strategy failed", "strategy", e.st, "err", e.err, "took", rr.took)
			}
		case rd := <-relayCh:
			relayCh = nil
			relayRun.ended, relayRun.took = true, time.Since(relayRun.start)
			if rd.err != nil {
				relayRun.err = rd.err
				d.log.Debug("strategy failed", "strategy", Relay, "err", rd.err, "took", relayRun.took)
				break
			}
			conn, keep = finish(Relay, rd.c)
			break loop
		case <-wake.C:
		case <-ctx.Done():
			break loop
		}
	}
	if relayCh != nil {
		// The setup ended while the relay's was running: wait for it,
		// so that its relay does not outlive the setup.
		if rd := <-relayCh; rd.c != nil {
			_ = rd.c.Close()
		}
		relayRun.ended, relayRun.err, relayRun.took = true, ctxErr(ctx, "relay"), time.Since(relayRun.start)
	}

	// The attempts, in the order of DefaultStrategies.
	now := time.Now()
	for _, st := range DefaultStrategies {
		if why, ok := skipped[st]; ok {
			res.Attempts = append(res.Attempts, Attempt{Strategy: st, Skipped: why})
			continue
		}
		rr := r.runs[st]
		if st == Relay {
			rr = relayRun
		}
		if rr == nil {
			continue
		}
		if !rr.ended {
			rr.took = now.Sub(rr.start)
			switch {
			case winner != "":
				rr.err = fmt.Errorf("stopped: %s connected first", winner)
			case ctx.Err() != nil:
				rr.err = ctxErr(ctx, string(st))
			default:
				rr.err = errors.New("stopped")
			}
		}
		res.Attempts = append(res.Attempts, Attempt{Strategy: st, Duration: rr.took, Err: rr.err})
	}
	if conn != nil {
		res.Setup = time.Since(start)
		d.log.Debug("connected", "peer", d.ans.Peer, "path", res.Path, "remote", res.Remote, "took", res.Setup)
	}
	return conn, keep
}

// running reports whether a raw strategy ranked before limit still runs.
func (r *race) running(limit int) bool {
	for _, st := range r.order {
		if rank(st) < limit && !r.runs[st].ended {
			return true
		}
	}
	return false
}

// runningAny reports whether one of sts still runs.
func (r *race) runningAny(sts ...Strategy) bool {
	for _, st := range sts {
		if rr := r.runs[st]; rr != nil && !rr.ended {
			return true
		}
	}
	return false
}

// started reports whether st was started.
func (r *race) started(st Strategy) bool { return r.runs[st] != nil }

// tcpStrategy attributes a raw TCP connection: one this side opened to
// the strategy that opened it; an accepted one to punch-tcp when that
// runs and the exposer connected from its path port (or reverse does not
// run), else to reverse.
func (r *race) tcpStrategy(w tcpWin) Strategy {
	if w.origin != fromAccept {
		return w.origin.strategy()
	}
	if !r.started(PunchTCP) {
		return Reverse
	}
	if !r.started(Reverse) {
		return PunchTCP
	}
	port := addrPort(w.c.RemoteAddr()).Port()
	for _, c := range r.d.ans.TCP {
		if c.Addr.Port() == port {
			return PunchTCP
		}
	}
	return Reverse
}

// udpStrategy attributes a raw UDP path by the exposer's address it
// reached: direct if the exposer offered that address as reachable
// without punching and direct runs, else punch-udp, reverse or direct,
// the first of them that runs (or, failing that, that was started).
func (r *race) udpStrategy(remote netip.AddrPort) Strategy {
	order := []Strategy{PunchUDP, Reverse, Direct}
	for _, c := range reachable(r.d.ans.UDP, r.d.ans.NAT) {
		if c.Addr == remote {
			order = []Strategy{Direct, PunchUDP, Reverse}
			break
		}
	}
	for _, st := range order {
		if rr := r.runs[st]; rr != nil && !rr.ended {
			return st
		}
	}
	for _, st := range order {
		if r.started(st) {
			return st
		}
	}
	return Direct
}

// launch starts strategy st at t0, bounded by its timeout: the control
// request to the exposer and this side's connections or probes.
func (r *race) launch(st Strategy, t0 time.Time) {
	d := r.d
	timeout := d.cfg.timeouts[st]
	rr := &run{st: st, start: t0, deadline: t0.Add(timeout), timeout: timeout}
	r.runs[st] = rr
	r.order = append(r.order, st)
	sctx, cancel := context.WithDeadline(d.setup, rr.deadline)
	r.cancels = append(r.cancels, cancel)
	fail := func(err error) { r.ends <- stratEnd{st, err} } // at most once per strategy
	d.log.Debug("strategy", "strategy", st)
	tcp := d.proto == "tcp"
	switch st {
	case Direct:
		if !tcp {
			d.goSafe(func() {
				probeLoop(sctx, d.sock, d.sec.appendUDPCtl(nil, udpProbe, d.ans.Nonce), reachable(d.ans.UDP, d.ans.NAT), false, nil, nil)
			})
			return
		}
		// Every candidate failing ends the strategy early.
		var wg sync.WaitGroup
		var up atomic.Bool
		for _, c := range reachable(d.ans.TCP, d.ans.NAT) {
			wg.Add(1)
			d.goSafe(func() {
				defer wg.Done()
				if d.connect(sctx, c, fromDirect) {
					up.Store(true)
				}
			})
		}
		d.goSafe(func() {
			wg.Wait()
			if !up.Load() && sctx.Err() == nil {
				fail(fmt.Errorf("every address failed (%s)", d.errsOf(Direct)))
			}
		})
	case Reverse:
		d.goSafe(func() {
			if err := d.ctl(sctx, opReverse, timeout); err != nil {
				fail(err)
			}
		})
	case PunchUDP:
		d.goSafe(func() {
			if err := d.ctl(sctx, opPunchUDP, timeout); err != nil {
				fail(err)
				return
			}
			probeLoop(sctx, d.sock, d.sec.appendUDPCtl(nil, udpProbe, d.ans.Nonce), d.ans.UDP, true, nil, nil)
		})
	case PunchTCP:
		d.goSafe(func() {
			if err := d.ctl(sctx, opPunchTCP, timeout); err != nil {
				fail(err)
				return
			}
			// Both sides connect from their advertised ports now. Behind
			// a NAT the listener would answer a SYN that arrives between
			// two attempts with a SYN-ACK the NAT drops (see connectTCP).
			if d.localNAT != nil && d.localNAT.NAT {
				_ = d.ln.Close()
			}
			for _, c := range d.ans.TCP {
				d.goSafe(func() { d.connect(sctx, c, fromPunch) })
			}
		})
	}
}
