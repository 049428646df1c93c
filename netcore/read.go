package netcore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"time"
)

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
			failures = p.udpReadFailed(err, failures)
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

// udpReadFailed counts a UDP read error that does not end the pipe (for
// example ICMP port unreachable on a connected socket) and returns the
// number of errors in a row; after more than 8 it waits 10ms (or until
// the pipe closes) so that a socket that keeps failing does not spin.
func (p *Pipe) udpReadFailed(err error, failures int) int {
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
	return failures
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

// lendPeriod is how long the reader goroutine of a client pipe in
// lending mode leaves reading to Recv calls before it takes the read
// token back.
const lendPeriod = time.Millisecond

// readLending is the reader goroutine of a client pipe that reads with
// a read token shared with Recv calls (every client pipe but those in
// direct receive mode, and TCP clients with an idle timeout). It reads
// and dispatches like readStream and readDatagrams while it holds the
// token. When it has delivered a message while a Recv call is in
// progress and the pipe has no handlers, it lends the token: the next
// Recv calls read the socket themselves, as in direct receive mode,
// which saves a goroutine hand-off per message in request/response
// traffic. After lendPeriod (or at once when a handler is added) it
// takes the token back, waiting for a Recv that reads to finish, so
// that a pipe nobody reads is read again within lendPeriod. The caller
// has entered the gate; the goroutine holds the token.
func (p *Pipe) readLending() {
	failures := 0
	for {
		data, from, trunc, err := p.readHeld()
		p.gate.leave()
		switch {
		case err != nil && (p.proto == TCP || p.shut.Load() || errors.Is(err, net.ErrClosed)):
			if p.proto == TCP {
				p.readFailed(err)
			}
			p.rtok <- struct{}{} // for Recv calls, which then see the end
			return
		case err != nil:
			failures = p.udpReadFailed(err, failures)
		case trunc:
			failures = 0
			p.count(cBadInput, 1)
			p.warnLimited("netcore: truncated datagram dropped", "pipe", p.String(), "from", from)
		default:
			failures = 0
			p.receive(data, from)
		}
		if !p.gate.enter() {
			p.rtok <- struct{}{}
			return
		}
		if err == nil && !trunc && p.recvs.Load() > 0 && !p.hasHandlers() && !p.lend() {
			return
		}
	}
}

// readHeld reads one message with the read token held: a frame for TCP,
// a datagram for UDP (trunc when it was cut).
func (p *Pipe) readHeld() (data []byte, from netip.AddrPort, trunc bool, err error) {
	var rc interface{ SetReadDeadline(time.Time) error } = p.udp
	if p.proto == TCP {
		rc = p.conn
	}
	if p.rdl { // left by a Recv that read with a deadline
		rc.SetReadDeadline(time.Time{})
		p.rdl = false
	}
	if p.proto == TCP {
		data, err = p.dec.Next()
		return data, p.remote, false, err
	}
	n, _, flags, from, err := p.udp.ReadMsgUDPAddrPort(p.rbuf, nil)
	if err != nil {
		return nil, from, false, err
	}
	if flags&msgTrunc != 0 {
		return nil, from, true, nil
	}
	return bytes.Clone(p.rbuf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), false, nil
}

// lend gives the read token to Recv calls for lendPeriod (less when a
// handler is added), then takes it back. It is called inside the gate
// and returns false, having left the gate, when the pipe closes.
func (p *Pipe) lend() bool {
	p.rtok <- struct{}{}
	if p.lendTime == nil {
		p.lendTime = time.NewTimer(lendPeriod)
	} else {
		p.lendTime.Reset(lendPeriod)
	}
	select {
	case <-p.done:
		p.lendTime.Stop()
		p.gate.leave()
		return false
	case <-p.wake:
		p.lendTime.Stop()
	case <-p.lendTime.C:
	}
	select {
	case <-p.rtok:
		return true
	case <-p.done:
		p.gate.leave()
		return false
	}
}

// hasHandlers reports whether the pipe has handlers.
func (p *Pipe) hasHandlers() bool {
	hs := p.handlers.Load()
	return hs != nil && len(*hs) > 0
}
