package bridge

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// Private raw TCP paths. Each side of a session makes an ephemeral
// ed25519 key and a self-signed certificate for it; the SHA-256
// fingerprint of the certificate (its DER bytes) travels in the offer
// (the dialer's) and the answer (the exposer's). Every raw TCP
// connection of the session is then TLS 1.3 (crypto/tls): the dialer is
// the TLS client and the exposer the TLS server, whoever opened the TCP
// connection, and each side accepts exactly the certificate whose
// fingerprint the other announced (no certificate authority is
// involved). TLS 1.3 gives both sides fresh randomness in every
// handshake, so a recorded handshake replayed on a new connection fails.
// See docs/PROTOCOL.md, "Bridge raw paths".

// ErrAuth reports a raw path connection whose other end did not prove
// to be the session's peer: a failed or garbled TLS handshake, or a
// certificate other than the announced one.
var ErrAuth = errors.New("bridge: raw path authentication failed")

// tlsALPN names the bridge's raw-path protocol in the TLS handshake.
const tlsALPN = "peerbus-bridge/2"

// fingerprintSize is the size of a certificate fingerprint.
const fingerprintSize = sha256.Size

// identity is one side's ephemeral certificate for one session.
type identity struct {
	cert tls.Certificate
	fp   []byte // SHA-256 of cert.Certificate[0]
}

// newIdentity makes a fresh ed25519 key and self-signed certificate.
func newIdentity() (*identity, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "peerbus-bridge"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		return nil, err
	}
	fp := sha256.Sum256(der)
	return &identity{cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv}, fp: fp[:]}, nil
}

// verifyFingerprint accepts only a single certificate with fingerprint
// want.
func verifyFingerprint(want []byte) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) != 1 {
			return fmt.Errorf("%w: %d peer certificates, want 1", ErrAuth, len(raw))
		}
		got := sha256.Sum256(raw[0])
		if len(want) != fingerprintSize || subtle.ConstantTimeCompare(got[:], want) != 1 {
			return fmt.Errorf("%w: the peer's certificate is not the one announced for the session", ErrAuth)
		}
		return nil
	}
}

// tlsConfig is the TLS configuration of one side: it presents own and
// accepts only the certificate with fingerprint peer. InsecureSkipVerify
// only skips the certificate chain check, which the fingerprint check
// replaces (VerifyPeerCertificate runs regardless).
func tlsConfig(own *identity, peer []byte, server bool) *tls.Config {
	c := &tls.Config{
		MinVersion:            tls.VersionTLS13,
		Certificates:          []tls.Certificate{own.cert},
		NextProtos:            []string{tlsALPN},
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyFingerprint(peer),
		// Full-size records from the start: the paths carry bulk data.
		DynamicRecordSizingDisabled: true,
	}
	if server {
		c.ClientAuth = tls.RequireAnyClientCert
	} else {
		c.ServerName = "peerbus-bridge"
	}
	return c
}

// secureTCP runs the TLS handshake of a raw TCP connection until
// deadline: as client on the dialer's side, as server on the exposer's.
// The returned connection carries the session; on error c is closed.
func secureTCP(c net.Conn, own *identity, peer []byte, server bool, deadline time.Time) (*batchedTLS, error) {
	cfg := tlsConfig(own, peer, server)
	w := newWriteBatcher(c)
	var tc *tls.Conn
	if server {
		tc = tls.Server(w, cfg)
	} else {
		tc = tls.Client(w, cfg)
	}
	if err := c.SetDeadline(deadline); err != nil {
		_ = c.Close()
		return nil, err
	}
	if err := tc.Handshake(); err != nil {
		_ = c.Close()
		if !errors.Is(err, ErrAuth) {
			err = fmt.Errorf("%w: TLS handshake: %v", ErrAuth, err)
		}
		return nil, err
	}
	if tc.ConnectionState().NegotiatedProtocol != tlsALPN {
		_ = c.Close()
		return nil, fmt.Errorf("%w: TLS without the bridge protocol", ErrAuth)
	}
	if err := c.SetDeadline(time.Time{}); err != nil {
		_ = c.Close()
		return nil, err
	}
	return &batchedTLS{Conn: tc, w: w}, nil
}
