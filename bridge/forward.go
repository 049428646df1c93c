package bridge

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerbus/peerbus/peer"
)

// DefaultSessionSetupTimeout bounds the setup of one session that
// ForwardUDP opens.
const DefaultSessionSetupTimeout = 30 * time.Second

// ForwardUDP carries the datagrams of every client of the local socket
// pc to the UDP service name exposed by peer peerID ("any" for any peer
// exposing it), like DialPacket. Each client address gets its own
// session, set up within the session setup timeout
// (WithSessionSetupTimeout, default DefaultSessionSetupTimeout) and
// ended after the UDP idle timeout (WithUDPIdleTimeout, default
// DefaultUDPIdleTimeout) without a datagram from either side; the
// service's replies go back to that client from pc. A client whose
// session does not keep up loses datagrams, as UDP may. Sessions are
// logged at info level on the WithLogger logger.
//
// ForwardUDP closes pc and returns nil when ctx ends, once every session
// has ended; an invalid option is an error wrapping ErrInvalidOption
// (pc is closed then too).
func ForwardUDP(ctx context.Context, p *peer.Peer, pc *net.UDPConn, peerID, name string, opts ...DialOption) error {
	cfg, err := dialConfig(opts)
	if err != nil {
		_ = pc.Close()
		return err
	}
	f := &udpForward{p: p, pc: pc, peerID: peerID, name: name, opts: opts, cfg: cfg,
		sessions: map[netip.AddrPort]*udpClient{}}
	defer f.wg.Wait()
	defer pc.Close()
	stop := context.AfterFunc(ctx, func() { _ = pc.Close() })
	defer stop()
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			continue
		}
		f.dispatch(ctx, from, append([]byte(nil), buf[:n]...))
	}
}

// udpForward is the state of one ForwardUDP.
type udpForward struct {
	p            *peer.Peer
	pc           *net.UDPConn
	peerID, name string
	opts         []DialOption
	cfg          *config
	wg           sync.WaitGroup

	mu       sync.Mutex
	sessions map[netip.AddrPort]*udpClient
}

// udpClient is the session of one local UDP client.
type udpClient struct {
	addr    netip.AddrPort
	pending chan []byte // datagrams from the client, sent in order
}

// dispatch hands a datagram from a client to its session, starting one
// for a new client.
func (f *udpForward) dispatch(ctx context.Context, from netip.AddrPort, data []byte) {
	f.mu.Lock()
	s := f.sessions[from]
	if s == nil {
		s = &udpClient{addr: from, pending: make(chan []byte, 64)}
		f.sessions[from] = s
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			f.serve(ctx, s)
			f.mu.Lock()
			delete(f.sessions, from)
			f.mu.Unlock()
		}()
	}
	f.mu.Unlock()
	select {
	case s.pending <- data:
	default: // the session is not keeping up: drop, as UDP may
	}
}

// serve runs the session of one client until it is idle, the service
// side ends it, or ctx ends.
func (f *udpForward) serve(ctx context.Context, s *udpClient) {
	log := f.cfg.log
	dctx, cancel := context.WithTimeout(ctx, f.cfg.sessionSetup)
	c, err := DialPacket(dctx, f.p, f.peerID, f.name, f.opts...)
	cancel()
	if err != nil {
		log.Warn("udp session refused", "from", s.addr, "err", err)
		return
	}
	defer c.Close()
	res := c.Result()
	log.Info("udp session", "from", s.addr, "peer", res.Peer, "path", res.Path,
		"remote", remoteString(res), "setup", res.Setup.Round(time.Millisecond))
	var last atomic.Int64
	touch := func() { last.Store(time.Now().UnixNano()) }
	touch()
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		f.replies(c, s.addr, touch)
	}()
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	idle := make(chan bool, 1)
	go func() { idle <- watchIdle(sctx, f.cfg.udpIdle, &last, nil) }()
	for {
		select {
		case d := <-s.pending:
			touch()
			_, _ = c.Write(d)
		case <-readerDone:
			log.Info("udp session ended by the service side", "from", s.addr)
			stop()
			<-idle
			return
		case timedOut := <-idle:
			if timedOut {
				log.Info("udp session idle", "from", s.addr)
			}
			_ = c.Close()
			<-readerDone
			return
		}
	}
}

// replies sends the service's datagrams on c back to the client until c
// ends.
func (f *udpForward) replies(c *PacketConn, client netip.AddrPort, touch func()) {
	buf := make([]byte, 65536)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if errors.Is(err, ErrClosed) || errors.Is(err, ErrPeerClosed) || errors.Is(err, ErrPeerGone) {
				return
			}
			continue
		}
		touch()
		_, _ = f.pc.WriteToUDPAddrPort(buf[:n], client)
	}
}

// watchIdle waits until ctx ends (false) or last (unix nanoseconds) is
// older than idle (true), looking at least every second; onTick, if not
// nil, runs at every look that finds the session active.
func watchIdle(ctx context.Context, idle time.Duration, last *atomic.Int64, onTick func(now time.Time)) bool {
	tick := time.NewTicker(min(idle/4, time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case now := <-tick.C:
			if now.Sub(time.Unix(0, last.Load())) > idle {
				return true
			}
			if onTick != nil {
				onTick(now)
			}
		}
	}
}

// remoteString is the raw path's remote address, "-" for a relay.
func remoteString(res DialResult) string {
	if res.Remote.IsValid() {
		return res.Remote.String()
	}
	return "-"
}
