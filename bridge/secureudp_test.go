package bridge

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
)

// udpEnd is one end of a raw UDP path as a test drives it: a socket
// whose DTLS records go to the mux's connections and whose other
// packets to ctl. It records the DTLS records it received.
type udpEnd struct {
	u    *net.UDPConn
	sock *pathSocket
	mux  *udpMux
	ctl  chan []byte

	mu   sync.Mutex
	dtls [][]byte
}

func newUDPEnd(t *testing.T) *udpEnd {
	t.Helper()
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &udpEnd{u: u, sock: newPathSocket(u), ctl: make(chan []byte, 64)}
	e.mux = newUDPMux(e.sock)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := u.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			from = netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
			pkt := bytes.Clone(buf[:n])
			if isDTLS(pkt) {
				e.mu.Lock()
				e.dtls = append(e.dtls, pkt)
				e.mu.Unlock()
				e.mux.deliver(pkt, from)
				continue
			}
			select {
			case e.ctl <- pkt:
			default:
			}
		}
	}()
	t.Cleanup(func() { u.Close(); <-done })
	return e
}

func (e *udpEnd) addr() netip.AddrPort { return e.u.LocalAddr().(*net.UDPAddr).AddrPort() }

func (e *udpEnd) received() [][]byte {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([][]byte(nil), e.dtls...)
}

// secureUDPPair runs secureUDP between two ends: the dialer (client)
// with identity d expecting efp, the exposer (server) with e expecting
// dfp. It returns the server's end too.
func secureUDPPair(t *testing.T, d, e *identity, efp, dfp []byte) (server *udpEnd, errD, errE error) {
	a, b := newUDPEnd(t), newUDPEnd(t)
	ma, mb := a.mux.open(b.addr()), b.mux.open(a.addr())
	done := make(chan error, 1)
	go func() {
		c, err := secureUDP(context.Background(), mb, mb.addr, e, dfp, true, time.Now().Add(2*time.Second))
		if err == nil {
			t.Cleanup(func() { _ = c.Close() })
		}
		done <- err
	}()
	c, errD := secureUDP(context.Background(), ma, ma.addr, d, efp, false, time.Now().Add(2*time.Second))
	if errD == nil {
		// Closed only after the server's result: a close_notify that
		// overtakes the server's end of the handshake fails it.
		t.Cleanup(func() { _ = c.Close() })
	}
	return b, errD, <-done
}

func TestSecureUDPFingerprints(t *testing.T) {
	d, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newIdentity()
	other, _ := newIdentity()
	if _, ed, ee := secureUDPPair(t, d, e, e.fp, d.fp); ed != nil || ee != nil {
		t.Fatalf("matching fingerprints: %v / %v", ed, ee)
	}
	if _, ed, _ := secureUDPPair(t, d, other, e.fp, d.fp); !errors.Is(ed, ErrAuth) {
		t.Fatalf("dialer accepted another exposer certificate: %v", ed)
	}
	if _, _, ee := secureUDPPair(t, other, e, e.fp, d.fp); !errors.Is(ee, ErrAuth) {
		t.Fatalf("exposer accepted another dialer certificate: %v", ee)
	}
	// Garbage, and a truncated ClientHello: a typed error by the deadline.
	for _, junk := range [][]byte{{22, 0xfe, 0xfd, 0, 0}, bytes.Repeat([]byte{23}, 200), {22, 0xfe, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x40, 0}} {
		a, b := newUDPEnd(t), newUDPEnd(t)
		mb := b.mux.open(a.addr())
		if _, err := a.u.WriteToUDPAddrPort(junk, b.addr()); err != nil {
			t.Fatal(err)
		}
		if _, err := secureUDP(context.Background(), mb, mb.addr, e, d.fp, true, time.Now().Add(time.Second)); !errors.Is(err, ErrAuth) {
			t.Fatalf("junk %x: %v", junk, err)
		}
	}
}

// TestSecureUDPReplay records the dialer's side of a complete handshake
// and replays it, from another address, to a new server with the same
// certificate and expectations: both sides' fresh randomness makes it
// fail.
func TestSecureUDPReplay(t *testing.T) {
	d, _ := newIdentity()
	e, _ := newIdentity()
	server, ed, ee := secureUDPPair(t, d, e, e.fp, d.fp)
	if ed != nil || ee != nil {
		t.Fatalf("handshake: %v / %v", ed, ee)
	}
	rec := server.received()
	if len(rec) < 3 {
		t.Fatalf("recorded %d records", len(rec))
	}
	// Against the session's server, and against one without the hello
	// cookie exchange, where only the fresh server random stops it.
	for _, noCookie := range []bool{false, true} {
		attacker, victim := newUDPEnd(t), newUDPEnd(t)
		mv := victim.mux.open(attacker.addr())
		done := make(chan error, 1)
		go func() {
			c, err := dtlsServer(mv, mv.addr, e, d.fp, dtls.WithInsecureSkipVerifyHello(noCookie))
			if err == nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				err = c.HandshakeContext(ctx)
				cancel()
				_ = c.Close()
			}
			done <- err
		}()
		for range 2 {
			for _, p := range rec {
				if _, err := attacker.u.WriteToUDPAddrPort(p, victim.addr()); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := <-done; err == nil {
			t.Fatalf("the replayed handshake was accepted (no cookie: %v)", noCookie)
		} else {
			t.Logf("replay (no cookie: %v): %v", noCookie, err)
		}
	}
}

// udpProxy forwards datagrams between one client and addr, from its own
// socket, and records every datagram it saw. While held, it records the
// client's datagrams without forwarding them.
type udpProxy struct {
	front, back *net.UDPConn
	mu          sync.Mutex
	held        bool
	fromClient  [][]byte
	all         [][]byte
}

func (p *udpProxy) hold(h bool) {
	p.mu.Lock()
	p.held = h
	p.mu.Unlock()
}

func newUDPProxy(t *testing.T, addr netip.AddrPort) *udpProxy {
	t.Helper()
	front, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	back, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	p := &udpProxy{front: front, back: back}
	var client netip.AddrPort
	var cmu sync.Mutex
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			cmu.Lock()
			client = from
			cmu.Unlock()
			p.mu.Lock()
			p.fromClient = append(p.fromClient, bytes.Clone(buf[:n]))
			p.all = append(p.all, bytes.Clone(buf[:n]))
			held := p.held
			p.mu.Unlock()
			if !held {
				_, _ = back.WriteToUDPAddrPort(buf[:n], addr)
			}
		}
	}()
	go func() {
		defer wg.Done()
		buf := make([]byte, 65536)
		for {
			n, _, err := back.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			p.mu.Lock()
			p.all = append(p.all, bytes.Clone(buf[:n]))
			p.mu.Unlock()
			cmu.Lock()
			to := client
			cmu.Unlock()
			_, _ = front.WriteToUDPAddrPort(buf[:n], to)
		}
	}()
	t.Cleanup(func() { front.Close(); back.Close(); wg.Wait() })
	return p
}

func (p *udpProxy) addr() netip.AddrPort { return p.front.LocalAddr().(*net.UDPAddr).AddrPort() }

func (p *udpProxy) recorded() (fromClient, all [][]byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([][]byte(nil), p.fromClient...), append([][]byte(nil), p.all...)
}

// probeUntilAck sends the dialer's probe from e to addr until an ack
// comes back.
func probeUntilAck(t *testing.T, e *udpEnd, sec *secret, peerNonce []byte, addr netip.AddrPort) {
	t.Helper()
	probe := sec.appendUDPCtl(nil, udpProbe, peerNonce)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := e.u.WriteToUDPAddrPort(probe, addr); err != nil {
			t.Fatal(err)
		}
		select {
		case pkt := <-e.ctl:
			if typ, ok := sec.parseUDPCtl(pkt, peerNonce); ok && typ == udpAck {
				return
			}
		case <-time.After(probeInterval):
		}
	}
	t.Fatal("no ack to the probes")
}

// readInner reads messages inside DTLS until one of type typ.
func readInner(t *testing.T, c *dtls.Conn, typ byte, resend []byte) []byte {
	t.Helper()
	buf := make([]byte, 65536)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if resend != nil {
			if _, err := c.Write(resend); err != nil {
				t.Fatal(err)
			}
		}
		_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, err := c.Read(buf)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 && buf[0] == typ {
			return bytes.Clone(buf[1:n])
		}
	}
	t.Fatalf("no message of type %d", typ)
	return nil
}

// TestRawUDPPathPrivateAndReplayProof opens a UDP session by hand and
// attacks its path socket while the real dialer, through a recording
// proxy, has handshaken but not selected yet: a stray address's
// truncated handshake and the real dialer's recorded probe, handshake
// and select replayed from another address are both refused within the
// handshake bound, and neither becomes the path; the real dialer's path
// then carries the service's datagrams, encrypted on the wire; the
// exposer goes on serving.
func TestRawUDPPathPrivateAndReplayProof(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]), peer.AsClient())
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.UDP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	id, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sec, ans := openByHand(t, pd, pe.ID(), "udp", id)
	var exp netip.AddrPort
	for _, c := range ans.UDP {
		if c.Addr.Addr().IsLoopback() {
			exp = c.Addr
		}
	}
	if !exp.IsValid() {
		t.Fatalf("no loopback candidate in %v", ans.UDP)
	}

	// The real dialer, through the proxy: probe and handshake.
	proxy := newUDPProxy(t, exp)
	real := newUDPEnd(t)
	probeUntilAck(t, real, sec, ans.Nonce, proxy.addr())
	mc := real.mux.open(proxy.addr())
	c, err := secureUDP(context.Background(), mc, mc.addr, id, ans.FP, false, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Its select is recorded, not delivered yet.
	proxy.hold(true)
	if _, err := c.Write([]byte{udpSelect, strategyCode(Direct)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the select on the wire", 5*time.Second, func() bool {
		fc, _ := proxy.recorded()
		return isDTLS(fc[len(fc)-1]) && fc[len(fc)-1][0] == 23
	})
	recorded, _ := proxy.recorded()

	// A stray address that probed sends a truncated ClientHello.
	stray := newUDPEnd(t)
	probeUntilAck(t, stray, sec, ans.Nonce, exp)
	if _, err := stray.u.WriteToUDPAddrPort([]byte{22, 0xfe, 0xfd, 0, 0}, exp); err != nil {
		t.Fatal(err)
	}
	// The recorded probe, handshake and select, replayed.
	replay := newUDPEnd(t)
	for _, p := range recorded {
		if _, err := replay.u.WriteToUDPAddrPort(p, exp); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the stray and replayed handshakes to be refused", 15*time.Second, func() bool { return svc.Stats().RawRefused >= 2 })
	if st := svc.Stats(); st.Paths[Direct] != 0 {
		t.Fatalf("a stray or replayed handshake became the path: %+v", st)
	}

	// The real dialer selects its path and exchanges a datagram.
	proxy.hold(false)
	readInner(t, c, udpSelectAck, []byte{udpSelect, strategyCode(Direct)})
	payload := bytes.Repeat([]byte("secret payload "), 400)
	got := readInner(t, c, udpData, append([]byte{udpData}, payload...))
	if !bytes.Equal(got, payload) {
		t.Fatalf("echo of %d bytes: got %d", len(payload), len(got))
	}
	// At least the stray and the replayed handshake were refused; under
	// load the real dialer retransmits its ClientHello, the proxy records
	// each copy, and each replayed copy is refused too.
	if st := svc.Stats(); st.Paths[Direct] != 1 || st.RawRefused < 2 {
		t.Fatalf("stats %+v", st)
	}
	_, wire := proxy.recorded()
	var n int
	for _, p := range wire {
		n += len(p)
		if bytes.Contains(p, []byte("secret payload")) {
			t.Fatalf("the payload crossed the wire in clear")
		}
	}
	if n < len(payload) {
		t.Fatalf("%d bytes on the wire", n)
	}
	if _, err := c.Write([]byte{udpClose}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the session to end", 10*time.Second, func() bool { return svc.Stats().Active == 0 })

	// The exposer goes on serving.
	pc, err := DialPacket(ctxT(t, 20*time.Second), pd, pe.ID(), "echo", WithStrategies(Direct))
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.Write([]byte("again")); err != nil {
		t.Fatal(err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	if n, err := pc.Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("after the attacks: %q, %v", buf[:n], err)
	}
}
