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
