package bridge

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Relay defaults.
const (
	// DefaultWindow is the receive window of a relayed stream: the most
	// bytes the other side may have in flight towards this side.
	DefaultWindow = 4 << 20
	// DefaultChunkSize is the largest data payload of one relay frame. It
	// is lowered to fit the bus's max payload.
	DefaultChunkSize = 256 << 10
	// DefaultKeepAlive is how often an idle relay sends a ping frame. A
	// relay that receives nothing for DeadFactor keepalive intervals
	// fails with ErrPeerGone.
	DefaultKeepAlive = time.Second
	// DeadFactor multiplies the keepalive interval into the silence after
	// which the other side of a relay is considered gone.
	DeadFactor = 5
	// DefaultDatagramQueue is how many received datagrams a relayed
	// packet connection holds for Read; more are dropped, as a UDP socket
	// buffer would.
	DefaultDatagramQueue = 256
	// minChunk is the smallest chunk a relay will use.
	minChunk = 1024
)

// relayConfig is the part of the options a relay uses.
type relayConfig struct {
	window    int
	chunk     int
	keepalive time.Duration
	queue     int
}

// Addr is the address of one end of a relayed connection: the peer and
// the service.
type Addr struct {
	// Peer is the peer id.
	Peer string
	// Service is the service name.
	Service string
}

// Network returns "peerbus".
func (a Addr) Network() string { return "peerbus" }

// String returns "<peer>/<service>".
func (a Addr) String() string { return a.Peer + "/" + a.Service }

// relay is one end of a relayed connection over two bus subjects: frames
// to the other side are published on sendSubj, frames from it arrive on
// recvSubj. In stream mode it is an ordered, credit-flow-controlled byte
// stream with half-close; in packet mode it carries datagrams, dropping
// those that find the receive queue full. See docs/PROTOCOL.md.
type relay struct {
	nc       *nats.Conn
	sendSubj string
	sub      *nats.Subscription
	packet   bool
	cfg      relayConfig
	laddr    net.Addr
	raddr    net.Addr

	wmu  sync.Mutex // serializes data, datagram and fin frames
	wbuf []byte

	mu sync.Mutex
	// Receive side.
	rq      [][]byte // stream chunks or datagrams not read yet
	rqBytes int
	recvOff uint64 // stream bytes received
	readOff uint64 // stream bytes read by Read
	granted uint64 // credit granted to the other side
	finRecv bool
	finAt   uint64
	rerr    error // ends reading once rq is empty
	dropped uint64
	// Send side.
	sendOff      uint64 // stream bytes reserved for publishing
	pubOff       uint64 // stream bytes published
	credit       uint64 // the other side's grant
	finSent      bool
	finPublished bool
	werr         error
	dgramSeq     uint64
	// Both.
	lastRecv   time.Time
	lastSend   time.Time
	peerClosed bool
	closed     bool
	started    bool

	readable chan struct{}
	writable chan struct{}
	done     chan struct{}
	rdl, wdl deadline
	wg       sync.WaitGroup

	seal     *frameSeal // nil: frames travel as they are
	rejected uint64     // messages that did not open (under mu)
}

// publish sends one frame to the other side, sealed when the relay has
// keys.
func (r *relay) publish(b []byte) error {
	if r.seal == nil {
		return r.nc.Publish(r.sendSubj, b)
	}
	return r.seal.seal(b, func(m []byte) error { return r.nc.Publish(r.sendSubj, m) })
}

// Rejected returns how many messages on the relay's subject were dropped
// because they did not open with the session's keys (or came again).
func (r *relay) Rejected() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.rejected
}

// newRelay subscribes recvSubj. Frames may arrive from then on; start
// sends this side's first frame and starts the keepalive.
//
// keys, if not nil, seal every frame this side sends and open every
// frame it receives (relaysec.go); messages that do not open are dropped
// and counted (Rejected).
func newRelay(nc *nats.Conn, recvSubj, sendSubj string, packet bool, cfg relayConfig, laddr, raddr net.Addr, keys *relayKeys) (*relay, error) {
	if cfg.window <= 0 {
		cfg.window = DefaultWindow
	}
	if cfg.chunk <= 0 {
		cfg.chunk = DefaultChunkSize
	}
	if limit := int(nc.MaxPayload()) - frameHeaderSize - sealOverhead - 64; cfg.chunk > limit {
		cfg.chunk = limit
	}
	cfg.chunk = max(cfg.chunk, minChunk)
	if cfg.keepalive <= 0 {
		cfg.keepalive = DefaultKeepAlive
	}
	if cfg.queue <= 0 {
		cfg.queue = DefaultDatagramQueue
	}
	r := &relay{
		nc: nc, sendSubj: sendSubj, packet: packet, cfg: cfg, laddr: laddr, raddr: raddr,
		readable: make(chan struct{}, 1),
		writable: make(chan struct{}, 1),
		done:     make(chan struct{}),
		rdl:      makeDeadline(),
		wdl:      makeDeadline(),
	}
	if keys != nil {
		r.seal = &frameSeal{keys: keys}
	}
	if !packet {
		r.granted = uint64(cfg.window)
	}
	sub, err := nc.Subscribe(recvSubj, r.onMsg)
	if err != nil {
		return nil, fmt.Errorf("bridge: relay subscribe: %w", err)
	}
	// The credit bounds what the other side sends; these limits only
	// catch a peer that ignores it (the loss is then detected).
	msgs, bytes := 1<<16, 2*cfg.window+4*cfg.chunk+(1<<20)
	if packet {
		msgs, bytes = 4*cfg.queue+64, 16<<20
	}
	if err := sub.SetPendingLimits(msgs, bytes); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("bridge: relay subscribe: %w", err)
	}
	r.sub = sub
	return r, nil
}

// start announces this side (a ping carrying the initial credit grant)
// and starts the keepalive.
func (r *relay) start() error {
	r.mu.Lock()
	if r.closed || r.started {
		r.mu.Unlock()
		return nil
	}
	r.started = true
	now := time.Now()
	r.lastRecv, r.lastSend = now, now
	f := r.pingLocked()
	r.mu.Unlock()
	r.wg.Add(1)
	go r.keepalive()
	return r.send(f)
}

func (r *relay) pingLocked() frame {
	return frame{typ: framePing, value: r.granted, sent: r.pubOff, fin: r.finPublished}
}

// send publishes a control frame.
func (r *relay) send(f frame) error {
	b := appendFrame(make([]byte, 0, frameHeaderSize+pingPayloadSize+len(f.payload)), f)
	if err := r.publish(b); err != nil {
		return fmt.Errorf("bridge: relay publish: %w", err)
	}
	r.mu.Lock()
	r.lastSend = time.Now()
	r.mu.Unlock()
	return nil
}

func wake(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// failLocked ends both directions with err (queued data stays readable)
// and reports whether the other side should be told with a close frame.
func (r *relay) failLocked(err error) bool {
	first := r.rerr == nil || r.werr == nil
	if r.rerr == nil {
		r.rerr = err
	}
	if r.werr == nil {
		r.werr = err
	}
	wake(r.readable)
	wake(r.writable)
	return first && !r.peerClosed
}

// onMsg handles one frame from the other side (NATS callback).
func (r *relay) onMsg(m *nats.Msg) {
	data := m.Data
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	if r.seal != nil {
		pt, ok := r.seal.open(data)
		if !ok {
			r.rejected++
			r.mu.Unlock()
			return
		}
		data = pt
	}
	f, err := decodeFrame(data)
	r.lastRecv = time.Now()
	if err == nil {
		err = r.handleLocked(f)
	}
	notify := false
	if err != nil {
		notify = r.failLocked(err)
	}
	r.mu.Unlock()
	if notify {
		reason := err.Error()
		if len(reason) > maxCloseReason {
			reason = reason[:maxCloseReason]
		}
		_ = r.send(frame{typ: frameClose, payload: []byte(reason)})
	}
}

func (r *relay) handleLocked(f frame) error {
	if r.rerr != nil && f.typ != frameClose && f.typ != framePing && f.typ != frameCredit {
		return nil // already failed: ignore the rest
	}
	switch f.typ {
	case frameData:
		if r.packet {
			return fmt.Errorf("%w: data frame on a packet relay", ErrProtocol)
		}
		if r.finRecv {
			return fmt.Errorf("%w: data after fin", ErrProtocol)
		}
		if f.value != r.recvOff {
			return fmt.Errorf("%w: chunk at offset %d, expected %d", ErrRelayLost, f.value, r.recvOff)
		}
		end := f.value + uint64(len(f.payload))
		if end > r.granted {
			return fmt.Errorf("%w: data up to offset %d exceeds the credit of %d", ErrProtocol, end, r.granted)
		}
		r.rq = append(r.rq, f.payload)
		r.rqBytes += len(f.payload)
		r.recvOff = end
		wake(r.readable)
	case frameCredit:
		r.grow(f.value)
	case frameFin:
		if r.packet {
			return fmt.Errorf("%w: fin frame on a packet relay", ErrProtocol)
		}
		if f.value != r.recvOff {
			return fmt.Errorf("%w: stream of %d bytes ended, %d received", ErrRelayLost, f.value, r.recvOff)
		}
		r.finRecv, r.finAt = true, f.value
		wake(r.readable)
	case frameClose:
		r.peerClosed = true
		why := ErrPeerClosed
		if len(f.payload) > 0 {
			why = fmt.Errorf("%w: %s", ErrPeerClosed, f.payload)
		}
		if r.werr == nil {
			r.werr = why
		}
		if r.rerr == nil && (r.packet || !r.finRecv) {
			r.rerr = why
		}
		wake(r.readable)
		wake(r.writable)
	case framePing:
		r.grow(f.value)
		if !r.packet && !r.finRecv {
			if f.sent > r.recvOff {
				return fmt.Errorf("%w: peer sent %d bytes, %d received", ErrRelayLost, f.sent, r.recvOff)
			}
			if f.fin && f.sent == r.recvOff {
				r.finRecv, r.finAt = true, f.sent
				wake(r.readable)
			}
		}
	case frameDgram:
		if !r.packet {
			return fmt.Errorf("%w: datagram frame on a stream relay", ErrProtocol)
		}
		if len(r.rq) >= r.cfg.queue {
			r.dropped++
			return nil
		}
		r.rq = append(r.rq, f.payload)
		wake(r.readable)
	}
	return nil
}

// grow raises the send credit.
func (r *relay) grow(limit uint64) {
	if !r.packet && limit > r.credit {
		r.credit = limit
		wake(r.writable)
	}
}

// keepalive pings an idle relay and fails it when the other side has
// been silent for DeadFactor keepalive intervals.
func (r *relay) keepalive() {
	defer r.wg.Done()
	tick := time.NewTicker(r.cfg.keepalive / 2)
	defer tick.Stop()
	dead := time.Duration(DeadFactor) * r.cfg.keepalive
	for {
		select {
		case <-r.done:
			return
		case now := <-tick.C:
			r.mu.Lock()
			if r.peerClosed {
				r.mu.Unlock()
				return
			}
			if now.Sub(r.lastRecv) > dead {
				r.failLocked(fmt.Errorf("%w: nothing heard from %s for %v", ErrPeerGone, r.raddr, now.Sub(r.lastRecv).Round(time.Millisecond)))
				r.mu.Unlock()
				return
			}
			ping := now.Sub(r.lastSend) >= r.cfg.keepalive/2
			f := r.pingLocked()
			r.mu.Unlock()
			if ping {
				_ = r.send(f)
			}
		}
	}
}

// Read reads stream bytes (stream mode) or one datagram (packet mode; a
// datagram longer than b is truncated).
func (r *relay) Read(b []byte) (int, error) {
	for {
		if isClosedChan(r.rdl.wait()) {
			return 0, fmt.Errorf("bridge: read: %w", ErrTimeout)
		}
		r.mu.Lock()
		if r.closed {
			r.mu.Unlock()
			return 0, fmt.Errorf("bridge: read: %w", ErrClosed)
		}
		if len(r.rq) > 0 {
			if r.packet {
				d := r.rq[0]
				r.rq[0] = nil
				r.rq = r.rq[1:]
				r.mu.Unlock()
				return copy(b, d), nil
			}
			if len(b) == 0 {
				r.mu.Unlock()
				return 0, nil
			}
			n := 0
			for n < len(b) && len(r.rq) > 0 {
				c := copy(b[n:], r.rq[0])
				n += c
				if c == len(r.rq[0]) {
					r.rq[0] = nil
					r.rq = r.rq[1:]
				} else {
					r.rq[0] = r.rq[0][c:]
				}
			}
			r.rqBytes -= n
			r.readOff += uint64(n)
			var grant uint64
			if limit := r.readOff + uint64(r.cfg.window); limit-r.granted >= uint64(r.cfg.window/4) && r.rerr == nil {
				r.granted = limit
				grant = limit
			}
			r.mu.Unlock()
			if grant > 0 {
				_ = r.send(frame{typ: frameCredit, value: grant})
			}
			return n, nil
		}
		if !r.packet && r.finRecv && r.readOff == r.finAt {
			r.mu.Unlock()
			return 0, io.EOF
		}
		if r.rerr != nil {
			err := r.rerr
			r.mu.Unlock()
			return 0, err
		}
		r.mu.Unlock()
		select {
		case <-r.readable:
		case <-r.done:
		case <-r.rdl.wait():
		}
	}
}

// Write writes stream bytes, waiting for credit (stream mode), or sends
// b as one datagram (packet mode).
func (r *relay) Write(b []byte) (int, error) {
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if r.packet {
		return r.writeDgram(b)
	}
	n := 0
	for n < len(b) {
		if isClosedChan(r.wdl.wait()) {
			return n, fmt.Errorf("bridge: write: %w", ErrTimeout)
		}
		r.mu.Lock()
		switch {
		case r.closed:
			r.mu.Unlock()
			return n, fmt.Errorf("bridge: write: %w", ErrClosed)
		case r.finSent:
			r.mu.Unlock()
			return n, ErrWriteClosed
		case r.werr != nil:
			err := r.werr
			r.mu.Unlock()
			return n, err
		}
		if r.credit <= r.sendOff {
			r.mu.Unlock()
			select {
			case <-r.writable:
			case <-r.done:
			case <-r.wdl.wait():
			}
			continue
		}
		k := min(int(min(r.credit-r.sendOff, uint64(r.cfg.chunk))), len(b)-n)
		off := r.sendOff
		r.sendOff += uint64(k)
		r.mu.Unlock()
		r.wbuf = appendFrame(r.wbuf[:0], frame{typ: frameData, value: off, payload: b[n : n+k]})
		if err := r.publish(r.wbuf); err != nil {
			err = fmt.Errorf("bridge: relay publish: %w", err)
			r.mu.Lock()
			r.failLocked(err)
			r.mu.Unlock()
			return n, err
		}
		r.mu.Lock()
		r.pubOff = off + uint64(k)
		r.lastSend = time.Now()
		r.mu.Unlock()
		n += k
	}
	return n, nil
}

func (r *relay) writeDgram(b []byte) (int, error) {
	if isClosedChan(r.wdl.wait()) {
		return 0, fmt.Errorf("bridge: write: %w", ErrTimeout)
	}
	if len(b) > r.cfg.chunk {
		return 0, fmt.Errorf("%w: datagram of %d bytes exceeds the relay's %d", ErrProtocol, len(b), r.cfg.chunk)
	}
	r.mu.Lock()
	switch {
	case r.closed:
		r.mu.Unlock()
		return 0, fmt.Errorf("bridge: write: %w", ErrClosed)
	case r.werr != nil:
		err := r.werr
		r.mu.Unlock()
		return 0, err
	}
	seq := r.dgramSeq
	r.dgramSeq++
	r.mu.Unlock()
	r.wbuf = appendFrame(r.wbuf[:0], frame{typ: frameDgram, value: seq, payload: b})
	if err := r.publish(r.wbuf); err != nil {
		return 0, fmt.Errorf("bridge: relay publish: %w", err)
	}
	r.mu.Lock()
	r.lastSend = time.Now()
	r.mu.Unlock()
	return len(b), nil
}

// CloseWrite ends this side's stream: the other side reads EOF once it
// has read everything before, while this side can still read.
func (r *relay) CloseWrite() error {
	if r.packet {
		return nil
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("bridge: close write: %w", ErrClosed)
	}
	if r.finSent {
		r.mu.Unlock()
		return nil
	}
	r.finSent = true
	off := r.sendOff
	r.mu.Unlock()
	if err := r.send(frame{typ: frameFin, value: off}); err != nil {
		return err
	}
	r.mu.Lock()
	r.finPublished = true
	r.mu.Unlock()
	return nil
}

// Close ends the stream (a fin, if not sent yet) and tells the other side
// this side is gone (a close frame); it releases the subscription and
// the keepalive. A second Close returns ErrClosed.
func (r *relay) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("bridge: close: %w", ErrClosed)
	}
	r.closed = true
	close(r.done)
	peerClosed := r.peerClosed
	r.mu.Unlock()
	r.wmu.Lock()
	r.mu.Lock()
	fin := !r.packet && !r.finSent && r.werr == nil
	r.finSent = true
	off := r.sendOff
	r.mu.Unlock()
	if !peerClosed {
		if fin {
			_ = r.send(frame{typ: frameFin, value: off})
		}
		_ = r.send(frame{typ: frameClose})
	}
	r.wmu.Unlock()
	err := r.sub.Unsubscribe()
	if errors.Is(err, nats.ErrConnectionClosed) || errors.Is(err, nats.ErrBadSubscription) {
		err = nil
	}
	r.wg.Wait()
	r.rdl.stop()
	r.wdl.stop()
	return err
}

// Dropped returns how many received datagrams a packet relay dropped
// because its queue was full.
func (r *relay) Dropped() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

func (r *relay) LocalAddr() net.Addr  { return r.laddr }
func (r *relay) RemoteAddr() net.Addr { return r.raddr }

func (r *relay) SetDeadline(t time.Time) error {
	r.rdl.set(t)
	r.wdl.set(t)
	return nil
}
func (r *relay) SetReadDeadline(t time.Time) error  { r.rdl.set(t); return nil }
func (r *relay) SetWriteDeadline(t time.Time) error { r.wdl.set(t); return nil }

var _ net.Conn = (*relay)(nil)
