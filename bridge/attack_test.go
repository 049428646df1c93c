package bridge

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
)

// Attacks on an exposer from a plain NATS connection: forged offers and
// control requests, as any client of the bus could send them.

// forgedOffer is an offer as an attacker makes it: well-formed, with
// fresh session credentials, no host proof.
func forgedOffer(t testing.TB, proto string, sts ...Strategy) offer {
	t.Helper()
	sec, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	id, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	o := offer{
		V: protoVersion, Session: sec.idHex(), Name: "svc", Proto: proto,
		Nonce: sec.nonce[:], FP: id.fp, Peer: "attacker", Strategies: sts,
		KeepAliveMS: 1000, SetupMS: 5000,
	}
	if _, o.Noise, err = noiseInitiator(o.Session); err != nil {
		t.Fatal(err)
	}
	return o
}

// sendOffer publishes o on the service's any-subject and decodes the
// answer; caller, if not empty, is sent as the caller's peer id.
func sendOffer(t testing.TB, nc *nats.Conn, o offer, caller string) answer {
	t.Helper()
	data, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg(peer.AnySubject(OpenTag(o.Name)))
	m.Data = data
	if caller != "" {
		m.Header.Set("Peerbus-Caller", caller)
	}
	r, err := nc.RequestMsg(m, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if st := r.Header.Get(peer.HeaderStatus); st != "ok" {
		t.Fatalf("open: status %q: %s", st, r.Data)
	}
	var a answer
	if err := json.Unmarshal(r.Data, &a); err != nil {
		t.Fatalf("answer %s: %v", r.Data, err)
	}
	return a
}

// sendCtl sends a control request to a session and decodes the reply.
func sendCtl(t testing.TB, nc *nats.Conn, base, op string, timeout time.Duration) ctlReply {
	t.Helper()
	data, _ := json.Marshal(ctlRequest{Op: op, TimeoutMS: timeout.Milliseconds()})
	m, err := nc.Request(ctlSubject(base), data, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var r ctlReply
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// countingListener counts the connections made to a TCP address.
func countingListener(t testing.TB, addr string) (netip.AddrPort, *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		<-done
	})
	return l.Addr().(*net.TCPAddr).AddrPort(), &n
}

// nonLoopback returns an interface address of this host that is not
// loopback, or skips the test.
func nonLoopback(t testing.TB) netip.Addr {
	for _, a := range hostAddrs(false) {
		return a
	}
	t.Skip("no non-loopback IPv4 address on this host")
	return netip.Addr{}
}

// TestAttackReverseToArbitraryAddress: a forged reverse offer naming a
// loopback address (the exposer's own services) makes no connection
// there; neither does one naming an address outside Limits.Networks. An
// offer with the host proof of a dialer on this host does reach it, so
// the test sees connections when they happen.
func TestAttackReverseToArbitraryAddress(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	nc := connect(t, nodes[0])
	lim := DefaultLimits()
	lim.Networks = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "svc", echotest.TCP(t), WithLimits(lim))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	flushed(t, pe)
	victim, hits := countingListener(t, "127.0.0.1:0")
	cands := []Candidate{{Addr: victim, Kind: KindHost}}
	if a := hostAddrs(false); len(a) > 0 {
		outside, outsideHits := countingListener(t, a[0].String()+":0")
		cands = append(cands, Candidate{Addr: outside, Kind: KindHost})
		defer func() {
			if n := outsideHits.Load(); n != 0 {
				t.Errorf("%d connections to %v, outside the allowed networks", n, outside)
			}
		}()
	}

	o := forgedOffer(t, "tcp", Reverse)
	o.TCP = cands
	if a := sendOffer(t, nc, o, ""); a.Code != "" {
		t.Fatalf("forged offer refused (%s: %s); the attack needs a session", a.Code, a.Error)
	}
	if r := sendCtl(t, nc, sessionBase(o.Peer, pe.ID(), o.Session), opReverse, time.Second); !r.OK {
		t.Logf("reverse refused: %s", r.Error)
	}
	// The same from a dialer on this host: the loopback candidate is
	// used.
	honest := forgedOffer(t, "tcp", Reverse)
	honest.TCP = []Candidate{{Addr: victim, Kind: KindHost}}
	honest.Host = hostProof(roleDialer, honest.Session)
	if a := sendOffer(t, nc, honest, ""); a.Code != "" {
		t.Fatalf("offer with host proof refused: %s", a.Error)
	}
	if r := sendCtl(t, nc, sessionBase(honest.Peer, pe.ID(), honest.Session), opReverse, time.Second); !r.OK {
		t.Fatalf("reverse: %s", r.Error)
	}
	waitFor(t, "the same-host reverse connection", 5*time.Second, func() bool { return hits.Load() >= 1 })
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d connections to the loopback address, want 1 (the same-host dialer's)", n)
	}
	// A replay of the same-host offer (recorded on the bus) is not from
	// this host any more.
	replay := honest
	replay.Session = forgedOffer(t, "tcp").Session
	if a := sendOffer(t, nc, replay, ""); a.Code != "" {
		t.Fatalf("replayed offer refused: %s", a.Error)
	}
	_ = sendCtl(t, nc, sessionBase(replay.Peer, pe.ID(), replay.Session), opReverse, time.Second)
	waitFor(t, "sessions to end", 15*time.Second, func() bool { return svc.Stats().Active == 0 })
	if n := hits.Load(); n != 1 {
		t.Fatalf("%d connections to the loopback address after the replay, want 1", n)
	}
}

// TestAttackOfferBeyondLimits: offers with too many candidates or too
// long a setup, and control requests with too long a timeout, are
// refused with the limit code.
func TestAttackOfferBeyondLimits(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	nc := connect(t, nodes[0])
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "svc", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	flushed(t, pe)
	lim := DefaultLimits()

	o := forgedOffer(t, "tcp", Reverse)
	for i := range lim.MaxCandidates + 1 {
		o.TCP = append(o.TCP, Candidate{Addr: netip.AddrPortFrom(netip.MustParseAddr("198.51.100.1"), uint16(1000+i)), Kind: KindHost})
	}
	if a := sendOffer(t, nc, o, ""); a.Code != codeLimit {
		t.Errorf("offer with %d candidates: code %q, want %q", len(o.TCP), a.Code, codeLimit)
	}
	o = forgedOffer(t, "tcp", Reverse)
	o.SetupMS = 110000
	if a := sendOffer(t, nc, o, ""); a.Code != codeLimit {
		t.Errorf("offer with setup_ms 110000: code %q, want %q", a.Code, codeLimit)
	}
	o = forgedOffer(t, "tcp", PunchTCP)
	if a := sendOffer(t, nc, o, ""); a.Code != "" || a.Peer != pe.ID() {
		t.Fatalf("offer: %+v (exposer %s)", a, pe.ID())
	}
	if r := sendCtl(t, nc, sessionBase(o.Peer, pe.ID(), o.Session), opPunchTCP, 60*time.Second); r.OK || !strings.Contains(r.Error, ErrLimit.Error()) {
		t.Errorf("punch for 60 s: %+v", r)
	}
	if st := svc.Stats(); st.Refused != 2 {
		t.Errorf("stats %+v, want 2 refused", st)
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	return len(ents)
}

// TestAttackPendingExhaustion: 300 forged opens leave the exposer within
// MaxPending sessions (and their descriptors), one peer within
// MaxPendingPerPeer; sessions without a path end after their setup time
// and make room again.
func TestAttackPendingExhaustion(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	nc := connect(t, nodes[0])
	lim := DefaultLimits()
	lim.MaxPending, lim.MaxPendingPerPeer = 16, 4
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "svc", echotest.TCP(t), WithLimits(lim))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	flushed(t, pe)
	before := openFDs(t)
	// The sessions must stay pending while the offers are sent (a
	// session that ended would make room and let one more in): their
	// setup time is far beyond the few seconds the 310 offers take.
	const pendingSetup = 20000

	// One peer id: only MaxPendingPerPeer sessions.
	ok := 0
	for range 10 {
		o := forgedOffer(t, "tcp", Direct, PunchTCP)
		o.SetupMS = pendingSetup
		if a := sendOffer(t, nc, o, "mallory"); a.Code == "" {
			ok++
		} else if a.Code != codeLimit {
			t.Fatalf("code %q: %s", a.Code, a.Error)
		}
	}
	if ok != lim.MaxPendingPerPeer {
		t.Fatalf("%d sessions for one peer, want %d", ok, lim.MaxPendingPerPeer)
	}
	// Many peer ids: only MaxPending sessions.
	for i := range 300 {
		o := forgedOffer(t, "tcp", Direct, PunchTCP)
		o.SetupMS = pendingSetup
		if a := sendOffer(t, nc, o, "p"+string(rune('a'+i%26))+o.Session[:6]); a.Code == "" {
			ok++
		}
	}
	if ok != lim.MaxPending {
		t.Fatalf("%d sessions in all, want %d", ok, lim.MaxPending)
	}
	// Each pending session holds its connection to the target (both
	// ends are in this process, and the echo server's splice holds a
	// pipe pair) and a listener per host address.
	perSession := 4 + len(hostAddrs(false))
	if grown := openFDs(t) - before; grown > lim.MaxPending*perSession+16 {
		t.Errorf("%d more descriptors for %d sessions (at most %d each)", grown, lim.MaxPending, perSession)

	}
	waitFor(t, "the pending sessions to time out", 2*pendingSetup*time.Millisecond, func() bool { return svc.Stats().Active == 0 })
	if st := svc.Stats(); st.Pending != 0 {
		t.Fatalf("stats %+v", st)
	}
	if a := sendOffer(t, nc, forgedOffer(t, "tcp", Direct), "mallory"); a.Code != "" {
		t.Fatalf("after the timeouts: %s", a.Error)
	}
}

// TestAttackPunchAmplification: a forged punch towards closed ports makes
// at most Limits.AttemptRate connection attempts per second.
func TestAttackPunchAmplification(t *testing.T) {
	if !reuseSupported {
		t.Skip("no TCP hole punching here")
	}
	ip := nonLoopback(t)
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	nc := connect(t, nodes[0])
	lim := DefaultLimits()
	lim.AttemptRate = 20
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "svc", echotest.TCP(t), WithLimits(lim))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	flushed(t, pe)
	o := forgedOffer(t, "tcp", PunchTCP)
	o.SetupMS = 2000
	for range 3 {
		// Closed ports: bound, then closed.
		l, err := net.Listen("tcp4", ip.String()+":0")
		if err != nil {
			t.Fatal(err)
		}
		o.TCP = append(o.TCP, Candidate{Addr: l.Addr().(*net.TCPAddr).AddrPort(), Kind: KindHost})
		_ = l.Close()
	}
	if a := sendOffer(t, nc, o, ""); a.Code != "" {
		t.Fatalf("offer: %s", a.Error)
	}
	start := time.Now()
	if r := sendCtl(t, nc, sessionBase(o.Peer, pe.ID(), o.Session), opPunchTCP, 3*time.Second); !r.OK {
		t.Fatalf("punch: %s", r.Error)
	}
	waitFor(t, "the session to end", 15*time.Second, func() bool { return svc.Stats().Active == 0 })
	took := time.Since(start)
	n := svc.Stats().Attempts
	bound := uint64(float64(lim.AttemptRate)*took.Seconds()) + uint64(max(1, lim.AttemptRate/10)) + 1
	if n == 0 || n > bound {
		t.Fatalf("%d connection attempts in %v, want 1 to %d", n, took, bound)
	}
	t.Logf("%d attempts in %v", n, took)
}

// flushed waits until the server has p's subscriptions (those of an
// Expose), so that a request from another connection finds them.
func flushed(t testing.TB, p *peer.Peer) {
	t.Helper()
	if err := p.Conn().Flush(); err != nil {
		t.Fatal(err)
	}
}

// TestAttackRelayJunk: messages that a third party publishes on a relayed
// session's subjects (garbage, well-formed frames without the session's
// keys, and sealed frames it recorded and sends again) are dropped and
// counted; the session goes on working both ways.
func TestAttackRelayJunk(t *testing.T) {
	for _, proto := range []string{"tcp", "udp"} {
		t.Run(proto, func(t *testing.T) {
			nodes := startCluster(t, 1)
			pe := newPeer(t, connect(t, nodes[0]))
			pd := newPeer(t, connect(t, nodes[0]))
			nc := connect(t, nodes[0])
			target := echotest.TCP(t)
			if proto == "udp" {
				target = echotest.UDP(t)
			}
			svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", target)
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Close()
			// An observer records what crosses the session subjects.
			recorded := make(chan *nats.Msg, 64)
			obs, err := nc.Subscribe(SessionSubjectPrefix+">", func(m *nats.Msg) {
				select {
				case recorded <- m:
				default:
				}
			})
			if err != nil {
				t.Fatal(err)
			}
			defer obs.Unsubscribe()
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			var c net.Conn
			var rl *relay
			if proto == "tcp" {
				conn, err := Dial(ctxT(t, 10*time.Second), pd, pe.ID(), "echo", WithStrategies(Relay))
				if err != nil {
					t.Fatal(err)
				}
				c, rl = conn, conn.c.(*relay)
			} else {
				conn, err := DialPacket(ctxT(t, 10*time.Second), pd, pe.ID(), "echo", WithStrategies(Relay))
				if err != nil {
					t.Fatal(err)
				}
				c, rl = conn, conn.c.(*relay)
			}
			defer c.Close()
			echo := func(msg string) {
				t.Helper()
				if _, err := c.Write([]byte(msg)); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, len(msg))
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
					t.Fatalf("echo %q: %q, %v", msg, buf, err)
				}
			}
			echo("before")
			session := c.(interface{ Result() DialResult }).Result().Session
			var replays [][]byte
			for len(replays) < 2 {
				select {
				case m := <-recorded:
					if strings.HasSuffix(m.Subject, ".d") || strings.HasSuffix(m.Subject, ".e") {
						replays = append(replays, m.Data)
					}
				case <-time.After(10 * time.Second):
					t.Fatal("nothing recorded on the session subjects")
				}
			}
			junk := [][]byte{
				[]byte("garbage"),
				{},
				appendFrame(nil, frame{typ: frameData, value: 0, payload: []byte("forged")}),
				appendFrame(nil, frame{typ: frameClose, payload: []byte("forged close")}),
				appendFrame(nil, frame{typ: frameDgram, value: 0, payload: []byte("forged")}),
				bytes.Repeat([]byte{0xff}, 64),
			}
			junk = append(junk, replays...)
			base := sessionBase(pd.ID(), pe.ID(), session)
			for _, subj := range []string{toDialer(base), toExposer(base)} {
				for _, j := range junk {
					if err := nc.Publish(subj, j); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the dialer to drop the junk", 10*time.Second, func() bool { return rl.Rejected() >= uint64(len(junk)) })
			echo("after the junk")
			echo("and more")
		})
	}
}

// An offer whose dialer id is not one subject token (it names the
// session's subjects) is refused, wildcards included.
func TestOfferDialerIDIsAToken(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	nc := connect(t, nodes[0])
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "svc", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	flushed(t, pe)
	for _, id := range []string{"", "*", ">", "a.b", "a b"} {
		o := forgedOffer(t, "tcp", Direct)
		o.Peer = id
		if a := sendOffer(t, nc, o, ""); a.Code != codeBadRequest {
			t.Errorf("dialer id %q: %+v, want %s", id, a, codeBadRequest)
		}
	}
	if st := svc.Stats(); st.Active != 0 {
		t.Fatalf("sessions opened: %+v", st)
	}
}
