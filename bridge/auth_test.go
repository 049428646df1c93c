package bridge

import (
	"encoding/json"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
)

// tcpPair returns the two ends of a loopback TCP connection (the
// handshake needs socket buffers: both sides write before reading).
func tcpPair() (net.Conn, net.Conn) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	ca, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		panic(err)
	}
	cb, err := l.Accept()
	if err != nil {
		panic(err)
	}
	return ca, cb
}

// handshakePair runs handshakeTCP on both ends of a connection.
func handshakePair(a, b *secret) (errA, errB error) {
	ca, cb := tcpPair()
	defer ca.Close()
	defer cb.Close()
	done := make(chan error, 1)
	go func() {
		err := handshakeTCP(cb, b, time.Now().Add(2*time.Second))
		if err != nil {
			cb.Close()
		}
		done <- err
	}()
	errA = handshakeTCP(ca, a, time.Now().Add(2*time.Second))
	if errA != nil {
		ca.Close()
	}
	return errA, <-done
}

func TestHandshakeTCP(t *testing.T) {
	d, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	e, err := exposerSecret(d.idHex(), d.key)
	if err != nil {
		t.Fatal(err)
	}
	if ea, eb := handshakePair(d, e); ea != nil || eb != nil {
		t.Fatalf("matching secrets: %v / %v", ea, eb)
	}
	// A stray side with another key.
	stray, _ := newSecret()
	strayE, _ := exposerSecret(d.idHex(), stray.key)
	if _, eb := handshakePair(d, strayE); !errors.Is(eb, ErrProtocol) && eb == nil {
		t.Fatal("the dialer's proof verified with another key")
	}
	if ea, _ := handshakePair(d, strayE); ea == nil {
		t.Fatal("a side without the key passed the dialer's check")
	}
	// The same role on both ends (a reflected hello).
	if ea, eb := handshakePair(d, d); ea == nil || eb == nil {
		t.Fatal("a reflected hello was accepted")
	}
	// Another session.
	other, _ := newSecret()
	otherE, _ := exposerSecret(other.idHex(), d.key)
	if ea, eb := handshakePair(d, otherE); ea == nil || eb == nil {
		t.Fatal("a hello for another session was accepted")
	}
	// Garbage.
	ca, cb := tcpPair()
	go func() {
		_, _ = cb.Write([]byte("GET / HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n"))
		_, _ = io.Copy(io.Discard, cb)
	}()
	if err := handshakeTCP(ca, e, time.Now().Add(time.Second)); !errors.Is(err, ErrProtocol) {
		t.Fatalf("garbage: %v", err)
	}
	ca.Close()
	cb.Close()
}

// TestStrayConnectionRefused opens a session by hand and connects to the
// exposer's path listener: without the session key the connection is
// dropped and never reaches the service; with it, it does.
func TestStrayConnectionRefused(t *testing.T) {
	nodes := startCluster(t, 1)
	pe := newPeer(t, connect(t, nodes[0]))
	pd := newPeer(t, connect(t, nodes[0]), peer.AsClient())
	svc, err := Expose(ctxT(t, 5*time.Second), pe, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	sec, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	open, err := peer.Stub[offer, answer](pd, OpenTag("echo"))
	if err != nil {
		t.Fatal(err)
	}
	ans, err := open.Call(ctxT(t, 10*time.Second), offer{V: protoVersion, Session: sec.idHex(), Name: "echo", Proto: "tcp",
		Key: sec.key, Nonce: sec.nonce[:], Strategies: []Strategy{Direct}}, peer.OnPeer(pe.ID()))
	if err != nil || ans.Code != "" || len(ans.TCP) == 0 {
		t.Fatalf("open: %+v, %v", ans, err)
	}
	addr := ans.TCP[len(ans.TCP)-1].Addr.String() // loopback, last

	// A stray client: right session id, wrong key.
	strayKey, _ := newSecret()
	stray := &secret{id: sec.id, key: strayKey.key, role: roleDialer, nonce: strayKey.nonce}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := handshakeTCP(c, stray, time.Now().Add(5*time.Second)); err == nil {
		t.Fatal("the exposer accepted a proof made with another key")
	}
	_, _ = c.Write([]byte{tcpSelect})
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatalf("the stray connection got %d bytes", n)
	}
	c.Close()
	if st := svc.Stats(); st.Paths[Direct] != 0 {
		t.Fatalf("a stray connection became the session's path: %+v", st)
	}

	// The real dialer.
	c, err = net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := handshakeTCP(c, sec, time.Now().Add(5*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(append([]byte{tcpSelect}, "hello"...)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 5)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("echo %q, %v", buf, err)
	}
	_ = c.Close()
	data, _ := json.Marshal(ctlRequest{Op: opClose})
	_ = pd.Conn().Publish(ctlSubject(sec.idHex()), data)
	waitFor(t, "the session to end", 5*time.Second, func() bool { return svc.Stats().Active == 0 })

}
