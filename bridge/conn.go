package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
)

// Attempt is the record of one strategy tried by Dial.
type Attempt struct {
	// Strategy is the strategy.
	Strategy Strategy
	// Duration is how long it ran.
	Duration time.Duration
	// Skipped says why the strategy was not tried ("" if it was).
	Skipped string
	// Err is why it failed (nil for the one that worked or a skipped one).
	Err error
}

// String describes the attempt, e.g. "direct: failed after 2s: ...".
func (a Attempt) String() string {
	switch {
	case a.Skipped != "":
		return fmt.Sprintf("%s: skipped: %s", a.Strategy, a.Skipped)
	case a.Err != nil:
		return fmt.Sprintf("%s: failed after %v: %v", a.Strategy, a.Duration.Round(time.Millisecond), a.Err)
	}
	return fmt.Sprintf("%s: connected in %v", a.Strategy, a.Duration.Round(time.Millisecond))
}

// DialResult tells how a connection was made.
type DialResult struct {
	// Peer is the id of the exposing peer (useful when dialing any).
	Peer string
	// Service is the service name.
	Service string
	// Proto is the service's protocol, "tcp" or "udp".
	Proto string
	// Session is the session id (it names the session's bus subjects).
	Session string
	// Path is the strategy that connected.
	Path Strategy
	// Local and Remote are the raw path's addresses (invalid for Relay).
	Local, Remote netip.AddrPort
	// Attempts lists the strategies considered, in the order of
	// DefaultStrategies (they ran at once).
	Attempts []Attempt
	// Open is how long the open call took; Setup the whole dial.
	Open, Setup time.Duration
	// Offered is when the offer was sent, from the start of the dial
	// (after the NAT classification): Setup - Offered is how long the
	// exposer's answer and the path took.
	Offered time.Duration
	// LocalNAT and RemoteNAT are the NAT information the sides exchanged
	// (nil without STUN).
	LocalNAT, RemoteNAT *NATInfo
	// LocalCandidates and RemoteCandidates are the addresses the sides
	// offered for raw paths: UDP ones (UDP services), then TCP ones.
	LocalCandidates, RemoteCandidates []Candidate
}

// Conn is a stream connection to a TCP service on another peer, made by
// Dial: a raw TCP connection (direct, reverse or hole-punched) or a
// stream relayed over the bus. It implements net.Conn; CloseWrite
// half-closes it.
type Conn struct {
	c      net.Conn // *net.TCPConn or *relay
	res    DialResult
	closed atomic.Bool
}

// Read reads from the service.
func (c *Conn) Read(b []byte) (int, error) { return c.c.Read(b) }

// Write writes to the service. Over the relay it waits for credit from
// the other side, so it blocks while the other side does not read.
func (c *Conn) Write(b []byte) (int, error) { return c.c.Write(b) }

// Close closes the connection. A second Close returns an error wrapping
// ErrClosed.
func (c *Conn) Close() error { return closeOnce(&c.closed, c.c) }

// closeOnce closes c the first time and returns ErrClosed after.
func closeOnce(closed *atomic.Bool, c io.Closer) error {
	if closed.Swap(true) {
		return fmt.Errorf("bridge: close: %w", ErrClosed)
	}
	return c.Close()
}

// CloseWrite half-closes the connection: the service reads EOF, while
// this side can go on reading its answer.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.c.(closeWriter); ok {
		return cw.CloseWrite()
	}
	return fmt.Errorf("%w: no half-close on this path", ErrProtocol)
}

// LocalAddr returns the local address: a *net.TCPAddr on a raw path, an
// Addr on the relay.
func (c *Conn) LocalAddr() net.Addr { return c.c.LocalAddr() }

// RemoteAddr returns the remote address: a *net.TCPAddr on a raw path,
// an Addr on the relay.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *Conn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *Conn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// Path returns the strategy that connected.
func (c *Conn) Path() Strategy { return c.res.Path }

// Result returns how the connection was made.
func (c *Conn) Result() DialResult { return c.res }

var _ net.Conn = (*Conn)(nil)

// PacketConn is a datagram connection to a UDP service on another peer,
// made by DialPacket: a raw UDP path (direct, reverse or hole-punched)
// or datagrams relayed over the bus. It implements net.Conn with
// datagram semantics, like a connected UDP socket: each Write sends one
// datagram, each Read returns one (truncated to the buffer). Datagrams
// may be lost, as over UDP.
type PacketConn struct {
	c      net.Conn // *udpPath or *relay
	res    DialResult
	closed atomic.Bool
}

// Read reads one datagram from the service.
func (c *PacketConn) Read(b []byte) (int, error) { return c.c.Read(b) }

// Write sends b as one datagram to the service.
func (c *PacketConn) Write(b []byte) (int, error) { return c.c.Write(b) }

// Close closes the connection and tells the exposer to end the session.
// A second Close returns an error wrapping ErrClosed.
func (c *PacketConn) Close() error { return closeOnce(&c.closed, c.c) }

// LocalAddr returns the local address: a *net.UDPAddr on a raw path, an
// Addr on the relay.
func (c *PacketConn) LocalAddr() net.Addr { return c.c.LocalAddr() }

// RemoteAddr returns the remote address: a *net.UDPAddr on a raw path,
// an Addr on the relay.
func (c *PacketConn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

// SetDeadline sets the read and write deadlines.
func (c *PacketConn) SetDeadline(t time.Time) error { return c.c.SetDeadline(t) }

// SetReadDeadline sets the read deadline.
func (c *PacketConn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }

// SetWriteDeadline sets the write deadline.
func (c *PacketConn) SetWriteDeadline(t time.Time) error { return c.c.SetWriteDeadline(t) }

// Path returns the strategy that connected.
func (c *PacketConn) Path() Strategy { return c.res.Path }

// Result returns how the connection was made.
func (c *PacketConn) Result() DialResult { return c.res }

var _ net.Conn = (*PacketConn)(nil)

// udpPath is the dialer's end of a raw UDP path: a DTLS connection on
// the path socket, whose reader (udpMux) runs until Close. Each message
// inside DTLS starts with its type; only data ones are returned.
type udpPath struct {
	c          *dtls.Conn
	sock       *net.UDPConn
	remote     netip.AddrPort
	readerDone chan struct{} // closed when the socket's reader returned

	rmu     sync.Mutex
	rbuf    []byte
	pending []byte // a datagram that came with the path's selection
	wmu     sync.Mutex
	wbuf    []byte

	lastSent atomic.Int64
	closed   atomic.Bool
	done     chan struct{}
	once     sync.Once
	wg       sync.WaitGroup
}

func newUDPPath(w udpWin, sock *net.UDPConn, readerDone chan struct{}) *udpPath {
	u := &udpPath{c: w.c, sock: sock, remote: w.remote, readerDone: readerDone, pending: w.pending,
		rbuf: make([]byte, 65536), done: make(chan struct{})}
	u.lastSent.Store(time.Now().UnixNano())
	u.wg.Add(1)
	go u.keepalive()
	return u
}

// keepalive keeps the NAT mappings of the path open while idle.
func (u *udpPath) keepalive() {
	defer u.wg.Done()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-u.done:
			return
		case now := <-tick.C:
			if now.Sub(time.Unix(0, u.lastSent.Load())) > udpKeepaliveInterval {
				u.lastSent.Store(now.UnixNano())
				u.wmu.Lock()
				_, _ = u.c.Write([]byte{udpKeepalive})
				u.wmu.Unlock()
			}
		}
	}
}

// mapErr maps an error of the DTLS connection.
func (u *udpPath) mapErr(op string, err error) error {
	if u.closed.Load() {
		return fmt.Errorf("bridge: %s: %w", op, ErrClosed)
	}
	if errors.Is(err, dtls.ErrConnClosed) {
		err = io.EOF // closed by the peer's close_notify
	}
	return mapNetErr(op, err)
}

func (u *udpPath) Read(b []byte) (int, error) {
	u.rmu.Lock()
	defer u.rmu.Unlock()
	if u.pending != nil {
		n := copy(b, u.pending)
		u.pending = nil
		return n, nil
	}
	for {
		n, err := u.c.Read(u.rbuf)
		if err != nil {
			return 0, u.mapErr("read", err)
		}
		if n == 0 {
			continue
		}
		switch u.rbuf[0] {
		case udpData:
			return copy(b, u.rbuf[1:n]), nil
		case udpClose:
			return 0, fmt.Errorf("bridge: read: %w", ErrPeerClosed)
		}
	}
}

func (u *udpPath) Write(b []byte) (int, error) {
	if len(b) > maxUDPPathDatagram {
		return 0, fmt.Errorf("%w: datagram of %d bytes exceeds the raw UDP path's %d", ErrProtocol, len(b), maxUDPPathDatagram)
	}
	u.wmu.Lock()
	defer u.wmu.Unlock()
	u.wbuf = append(append(u.wbuf[:0], udpData), b...)
	if _, err := u.c.Write(u.wbuf); err != nil {
		return 0, u.mapErr("write", err)
	}
	u.lastSent.Store(time.Now().UnixNano())
	return len(b), nil
}

// Close tells the exposer (twice, it is UDP, then with the DTLS
// close_notify) and closes the socket.
func (u *udpPath) Close() error {
	err := fmt.Errorf("bridge: close: %w", ErrClosed)
	u.once.Do(func() {
		u.closed.Store(true)
		close(u.done)
		u.wmu.Lock()
		for range 2 {
			_, _ = u.c.Write([]byte{udpClose})
		}
		u.wmu.Unlock()
		_ = u.c.Close()
		err = u.sock.Close()
		<-u.readerDone
		u.wg.Wait()
	})
	return err
}

func (u *udpPath) LocalAddr() net.Addr                { return u.sock.LocalAddr() }
func (u *udpPath) RemoteAddr() net.Addr               { return net.UDPAddrFromAddrPort(u.remote) }
func (u *udpPath) SetDeadline(t time.Time) error      { return u.c.SetDeadline(t) }
func (u *udpPath) SetReadDeadline(t time.Time) error  { return u.c.SetReadDeadline(t) }
func (u *udpPath) SetWriteDeadline(t time.Time) error { return u.c.SetWriteDeadline(t) }

// maxFramedDatagram is the largest datagram carried over a TCP path.
const maxFramedDatagram = 65535

// tcpPacket carries the datagrams of a UDP service over a raw TCP path
// (hole-punched TCP), each prefixed by its length (2 bytes, big-endian).
type tcpPacket struct {
	net.Conn
	rmu  sync.Mutex
	wmu  sync.Mutex
	hdr  [2]byte
	wbuf []byte
}

func (t *tcpPacket) Read(b []byte) (int, error) {
	t.rmu.Lock()
	defer t.rmu.Unlock()
	if _, err := io.ReadFull(t.Conn, t.hdr[:]); err != nil {
		return 0, mapNetErr("read", err)
	}
	n := int(binary.BigEndian.Uint16(t.hdr[:]))
	if n <= len(b) {
		_, err := io.ReadFull(t.Conn, b[:n])
		return n, mapNetErr("read", err)
	}
	// Truncate, as a UDP socket does, and skip the rest.
	if _, err := io.ReadFull(t.Conn, b); err != nil {
		return 0, mapNetErr("read", err)
	}
	_, err := io.CopyN(io.Discard, t.Conn, int64(n-len(b)))
	return len(b), mapNetErr("read", err)
}

func (t *tcpPacket) Write(b []byte) (int, error) {
	if len(b) > maxFramedDatagram {
		return 0, fmt.Errorf("%w: datagram of %d bytes", ErrProtocol, len(b))
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	t.wbuf = binary.BigEndian.AppendUint16(t.wbuf[:0], uint16(len(b)))
	t.wbuf = append(t.wbuf, b...)
	if _, err := t.Conn.Write(t.wbuf); err != nil {
		return 0, mapNetErr("write", err)
	}
	return len(b), nil
}

// mapNetErr maps socket timeouts and closes to this package's errors.
func mapNetErr(op string, err error) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	switch {
	case errors.Is(err, net.ErrClosed):
		return fmt.Errorf("bridge: %s: %w", op, ErrClosed)
	case errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("bridge: %s: %w", op, ErrTimeout)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("bridge: %s: %w", op, ErrPeerClosed)
	}
	return err
}

// forwardFramed carries framed datagrams between a TCP path and a UDP
// target until either fails.
func forwardFramed(path *tcpPacket, target net.Conn, touch func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, maxFramedDatagram)
		for {
			n, err := path.Read(buf)
			if err != nil {
				_ = target.Close()
				return
			}
			touch()
			_, _ = target.Write(buf[:n])
		}
	}()
	buf := make([]byte, maxFramedDatagram)
	for {
		n, err := target.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				break
			}
			continue // e.g. ICMP port unreachable from the target
		}
		touch()
		if _, err := path.Write(buf[:n]); err != nil {
			break
		}
	}
	_ = path.Close()
	<-done
}
