package bridge

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/pion/transport/v4/packetio"
)

// Private raw UDP paths. Every raw UDP path is DTLS 1.2
// (github.com/pion/dtls/v3) on the path socket the probes found (and,
// for punched paths, opened): the dialer is the DTLS client and the
// exposer the server, and each side accepts exactly the session
// certificate whose fingerprint the other announced in the offer or the
// answer, as on TCP paths (secure.go). Both sides put fresh randomness
// into every handshake (the hello randoms and ECDHE keys), so a recorded
// handshake replayed later fails. The probes and acks that find the
// addresses travel in clear beside the DTLS records on the same socket
// (udpMux tells them apart by their first byte).

// maxUDPPathDatagram is the largest datagram a raw UDP path carries:
// with its type byte and the DTLS record's header, explicit nonce and
// tag, it fits the 8 KiB pion/dtls reads a datagram into.
const maxUDPPathDatagram = 8192 - 13 - 8 - 16 - 1

// maxUDPHandshakes is the most DTLS handshakes one side of a session
// runs at once (one per remote address).
const maxUDPHandshakes = 4

// dtlsLog keeps pion/dtls quiet; failures come back as errors.
var dtlsLog = &logging.DefaultLoggerFactory{Writer: io.Discard, DefaultLogLevel: logging.LogLevelDisabled}

// checkFingerprint accepts only a single certificate with fingerprint
// want.
func checkFingerprint(raw [][]byte, want []byte) error {
	if len(raw) != 1 {
		return fmt.Errorf("%w: %d peer certificates, want 1", ErrAuth, len(raw))
	}
	got := sha256.Sum256(raw[0])
	if len(want) != fingerprintSize || subtle.ConstantTimeCompare(got[:], want) != 1 {
		return fmt.Errorf("%w: the peer's certificate is not the one announced for the session", ErrAuth)
	}
	return nil
}

// dtlsOptions are the DTLS options both sides share: present own and
// accept only the certificate with fingerprint peer, checked both when
// the certificate arrives and once the handshake is verified.
// InsecureSkipVerify only skips the certificate chain check, which the
// fingerprint check replaces.
func dtlsOptions(own *identity, peer []byte) []dtls.Option {
	return []dtls.Option{
		dtls.WithCertificates(own.cert),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(func(raw [][]byte, _ [][]*x509.Certificate) error {
			return checkFingerprint(raw, peer)
		}),
		dtls.WithVerifyConnection(func(st *dtls.State) error {
			return checkFingerprint(st.PeerCertificates, peer)
		}),
		dtls.WithSupportedProtocols(tlsALPN),
		dtls.WithFlightInterval(100 * time.Millisecond),
		dtls.WithLoggerFactory(dtlsLog),
	}
}

// dtlsServer is the exposer's side of a DTLS path: it requires the
// dialer's certificate. extra options follow the shared ones.
func dtlsServer(pc net.PacketConn, remote net.Addr, own *identity, peer []byte, extra ...dtls.ServerOption) (*dtls.Conn, error) {
	var opts []dtls.ServerOption
	for _, o := range dtlsOptions(own, peer) {
		opts = append(opts, o)
	}
	opts = append(opts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
	return dtls.ServerWithOptions(pc, remote, append(opts, extra...)...)
}

// dtlsClient is the dialer's side of a DTLS path.
func dtlsClient(pc net.PacketConn, remote net.Addr, own *identity, peer []byte) (*dtls.Conn, error) {
	var opts []dtls.ClientOption
	for _, o := range dtlsOptions(own, peer) {
		opts = append(opts, o)
	}
	opts = append(opts, dtls.WithServerName("peerbus-bridge"))
	return dtls.ClientWithOptions(pc, remote, opts...)
}

// secureUDP runs the DTLS handshake with remote over pc until deadline
// or until ctx ends: as client on the dialer's side, as server on the
// exposer's. On error pc is closed; the error wraps ErrAuth.
func secureUDP(ctx context.Context, pc net.PacketConn, remote net.Addr, own *identity, peer []byte, server bool, deadline time.Time) (*dtls.Conn, error) {
	var c *dtls.Conn
	var err error
	if server {
		c, err = dtlsServer(pc, remote, own, peer)
	} else {
		c, err = dtlsClient(pc, remote, own, peer)
	}
	if err != nil {
		_ = pc.Close()
		return nil, fmt.Errorf("%w: DTLS: %v", ErrAuth, err)
	}
	hctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := c.HandshakeContext(hctx); err != nil {
		_ = c.Close()
		if !errors.Is(err, ErrAuth) {
			err = fmt.Errorf("%w: DTLS handshake: %v", ErrAuth, err)
		}
		return nil, err
	}
	if st, ok := c.ConnectionState(); !ok || st.NegotiatedProtocol != tlsALPN {
		_ = c.Close()
		return nil, fmt.Errorf("%w: DTLS without the bridge protocol", ErrAuth)
	}
	return c, nil
}

// isDTLS tells a DTLS record from a probe or ack (RFC 7983).
func isDTLS(b []byte) bool { return len(b) > 0 && b[0] >= 20 && b[0] <= 63 }

// udpMux hands the DTLS records read from a path socket to the conn of
// the remote they came from.
type udpMux struct {
	sock  *pathSocket
	mu    sync.Mutex
	conns map[netip.AddrPort]*muxConn
}

func newUDPMux(sock *pathSocket) *udpMux {
	return &udpMux{sock: sock, conns: map[netip.AddrPort]*muxConn{}}
}

// open registers a conn for remote; it returns nil when remote has one
// already or maxUDPHandshakes conns are open.
func (m *udpMux) open(remote netip.AddrPort) *muxConn {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns[remote] != nil || len(m.conns) >= maxUDPHandshakes {
		return nil
	}
	in := packetio.NewBuffer()
	in.SetLimitSize(1 << 20)
	c := &muxConn{mux: m, remote: remote, addr: net.UDPAddrFromAddrPort(remote), in: in}
	m.conns[remote] = c
	return c
}

// deliver passes a DTLS record from remote to its conn; it reports false
// when remote has none. A record that does not fit the conn's buffer is
// dropped, as a full socket buffer would.
func (m *udpMux) deliver(b []byte, remote netip.AddrPort) bool {
	m.mu.Lock()
	c := m.conns[remote]
	m.mu.Unlock()
	if c == nil {
		return false
	}
	_, _ = c.in.Write(b)
	return true
}

func (m *udpMux) remove(c *muxConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conns[c.remote] == c {
		delete(m.conns, c.remote)
	}
}

// muxConn is the packet connection under the DTLS conn of one remote: it
// reads what the mux delivers and writes to the remote on the shared
// socket. Closing it leaves the socket open.
type muxConn struct {
	mux    *udpMux
	remote netip.AddrPort
	addr   *net.UDPAddr
	in     *packetio.Buffer
}

func (c *muxConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, err := c.in.Read(b)
	if errors.Is(err, io.EOF) {
		err = net.ErrClosed
	}
	return n, c.addr, err
}

func (c *muxConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	return c.mux.sock.sendErr(b, c.remote)
}

func (c *muxConn) Close() error {
	c.mux.remove(c)
	return c.in.Close()
}

func (c *muxConn) LocalAddr() net.Addr { return c.mux.sock.LocalAddr() }

func (c *muxConn) SetDeadline(t time.Time) error { return c.in.SetReadDeadline(t) }

func (c *muxConn) SetReadDeadline(t time.Time) error { return c.in.SetReadDeadline(t) }

// SetWriteDeadline does nothing: writes to a UDP socket do not wait.
func (c *muxConn) SetWriteDeadline(time.Time) error { return nil }

var _ net.PacketConn = (*muxConn)(nil)
