package netcore

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
)

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
