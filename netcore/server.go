package netcore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

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
		p.count(cRejected, 1) // before the client sees the close
		c.Close()
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
