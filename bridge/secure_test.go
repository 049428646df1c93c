package bridge

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ca, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cb, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

// securePair runs secureTCP on both ends: the dialer (client) with its
// identity d expecting fingerprint efp, the exposer (server) with e
// expecting dfp.
func securePair(t testing.TB, d, e *identity, efp, dfp []byte) (errD, errE error) {
	ca, cb := tcpPair(t)
	done := make(chan error, 1)
	go func() {
		_, err := secureTCP(cb, e, dfp, true, time.Now().Add(2*time.Second))
		done <- err
	}()
	_, errD = secureTCP(ca, d, efp, false, time.Now().Add(2*time.Second))
	if errD != nil {
		ca.Close()
	}
	return errD, <-done
}

func TestSecureTCPFingerprints(t *testing.T) {
	d, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	e, _ := newIdentity()
	other, _ := newIdentity()
	if ed, ee := securePair(t, d, e, e.fp, d.fp); ed != nil || ee != nil {
		t.Fatalf("matching fingerprints: %v / %v", ed, ee)
	}
	// An exposer with another certificate than announced.
	if ed, _ := securePair(t, d, other, e.fp, d.fp); !errors.Is(ed, ErrAuth) {
		t.Fatalf("dialer accepted another exposer certificate: %v", ed)
	}
	// A dialer with another certificate than announced.
	if _, ee := securePair(t, other, e, e.fp, d.fp); !errors.Is(ee, ErrAuth) {
		t.Fatalf("exposer accepted another dialer certificate: %v", ee)
	}
	// Garbage, and a truncated handshake: a typed error within the
	// deadline.
	for _, junk := range [][]byte{[]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), {0x16, 0x03, 0x01, 0x00}} {
		ca, cb := tcpPair(t)
		go func() {
			_, _ = cb.Write(junk)
			_, _ = io.Copy(io.Discard, cb)
		}()
		if _, err := secureTCP(ca, e, d.fp, true, time.Now().Add(time.Second)); !errors.Is(err, ErrAuth) {
			t.Fatalf("junk %q: %v", junk, err)
		}
		cb.Close()
	}
}

// openByHand opens a direct session on the exposer of the service name
// ("echo", proto "tcp" or "udp") the way Dial does, with the dialer
// identity id, and returns the dialer's secret and the answer.
func openByHand(t *testing.T, pd *peer.Peer, exposer, proto string, id *identity) (*secret, answer) {
	t.Helper()
	sec, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	open, err := peer.Stub[offer, answer](pd, OpenTag("echo"))
	if err != nil {
		t.Fatal(err)
	}
	_, msg, err := noiseInitiator(sec.idHex())
	if err != nil {
		t.Fatal(err)
	}
	ans, err := open.Call(ctxT(t, 10*time.Second), offer{V: protoVersion, Session: sec.idHex(), Name: "echo", Proto: proto, Peer: pd.ID(),
		Nonce: sec.nonce[:], FP: id.fp, Noise: msg, Strategies: []Strategy{Direct}, SetupMS: 20000,
		Host: hostProof(roleDialer, sec.idHex())}, peer.OnPeer(exposer))
	if err != nil || ans.Code != "" || (proto == "tcp" && len(ans.TCP) == 0) || (proto == "udp" && len(ans.UDP) == 0) {
		t.Fatalf("open: %+v, %v", ans, err)
	}
	return sec, ans
}

// recordingProxy forwards one connection to addr and records what the
// client sent.
type recordingProxy struct {
	l    net.Listener
	mu   sync.Mutex
	sent bytes.Buffer
	wg   sync.WaitGroup
}

func newRecordingProxy(t *testing.T, addr string) *recordingProxy {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &recordingProxy{l: l}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		c, err := l.Accept()
		if err != nil {
			return
		}
		s, err := net.Dial("tcp4", addr)
		if err != nil {
			c.Close()
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			_, _ = io.Copy(c, s)
			c.Close()
		}()
		buf := make([]byte, 32<<10)
		for {
			n, err := c.Read(buf)
			if n > 0 {
				p.mu.Lock()
				p.sent.Write(buf[:n])
				p.mu.Unlock()
				_, _ = s.Write(buf[:n])
			}
			if err != nil {
				s.Close()
				return
			}
		}
	}()
	t.Cleanup(func() { l.Close(); p.wg.Wait() })
	return p
}

func (p *recordingProxy) recorded() []byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return bytes.Clone(p.sent.Bytes())
}

// TestRawPathPrivateAndReplayProof opens a session by hand and attacks
// its path listener: a stray client with another certificate is refused
// and reaches nothing; the service's bytes on the wire (read by a proxy
// on the way) are not in clear; the dialer's recorded handshake replayed
// on a new connection is refused; the real dialer's connection still
// works.
func TestRawPathPrivateAndReplayProof(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]), peer.AsClient())
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	id, err := newIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sec, ans := openByHand(t, pd, pe.ID(), "tcp", id)
	session := sec.idHex()
	addr := ans.TCP[0].Addr.String()

	// A stray client: another certificate.
	stray, _ := newIdentity()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := secureTCP(c, stray, ans.FP, false, time.Now().Add(5*time.Second)); err == nil {
		// TLS 1.3: the client may finish before the server refuses.
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	}
	c.Close()

	// The real dialer, through a recording proxy. It handshakes but does
	// not select yet, so the session stays open for the replay.
	proxy := newRecordingProxy(t, addr)
	raw, err := net.Dial("tcp", proxy.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	real, err := secureTCP(raw, id, ans.FP, false, time.Now().Add(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	hello := proxy.recorded()

	// Replay: the recorded handshake on a new connection. The exposer
	// answers with a fresh ServerHello, the replayed Finished does not
	// verify and the connection is closed (an accepted one would wait
	// for the select byte, and this read would time out).
	rc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if _, err := rc.Write(append(hello, tcpSelect, strategyCode(Direct))); err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("the replayed handshake was not refused: %v", err)
	}
	if st := svc.Stats(); st.Paths[Direct] != 0 {
		t.Fatalf("a stray or replayed connection became the path: %+v", st)
	}

	// The real connection carries the session, encrypted on the wire.
	payload := bytes.Repeat([]byte("secret payload "), 1000)
	if _, err := real.Write(append([]byte{tcpSelect, strategyCode(Direct)}, payload...)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(payload))
	_ = real.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(real, got); err != nil || !bytes.Equal(got, payload) {
		t.Fatalf("echo of %d bytes: %v", len(payload), err)
	}
	if wire := proxy.recorded(); bytes.Contains(wire, []byte("secret payload")) || len(wire) < len(payload) {
		t.Fatalf("the payload crossed the wire in clear (%d bytes seen)", len(wire))
	}
	if st := svc.Stats(); st.Paths[Direct] != 1 {
		t.Fatalf("stats %+v", st)
	}
	var cs tls.ConnectionState = real.ConnectionState()
	if cs.Version != tls.VersionTLS13 {
		t.Fatalf("TLS version %x", cs.Version)
	}
	_ = real.Close()
	data, _ := json.Marshal(ctlRequest{Op: opClose})
	_ = pd.Conn().Publish(ctlSubject(sessionBase(pd.ID(), pe.ID(), session)), data)
	waitFor(t, "the session to end", 5*time.Second, func() bool { return svc.Stats().Active == 0 })
}
