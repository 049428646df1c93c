package netcore

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

type tlsFixture struct {
	server *tls.Config // certificate for 127.0.0.1, ::1 and localhost
	client *tls.Config // trusts the test CA only
}

var (
	tlsOnce sync.Once
	tlsFix  tlsFixture
	tlsErr  error
)

// testTLS returns TLS configurations built on a CA generated for the
// tests.
func testTLS(t testing.TB) tlsFixture {
	t.Helper()
	tlsOnce.Do(func() { tlsFix, tlsErr = makeTLSFixture() })
	if tlsErr != nil {
		t.Fatal(tlsErr)
	}
	return tlsFixture{server: tlsFix.server.Clone(), client: tlsFix.client.Clone()}
}

func makeTLSFixture() (tlsFixture, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFixture{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "netcore test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return tlsFixture{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return tlsFixture{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tlsFixture{}, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tlsFixture{}, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return tlsFixture{
		server: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: key}}},
		client: &tls.Config{RootCAs: pool},
	}, nil
}

func TestTLS(t *testing.T) {
	fix := testTLS(t)
	for _, f := range testFamilies(t) {
		t.Run(f.String(), func(t *testing.T) {
			t.Parallel()
			srv := mustListen(t, TCP, f, WithTLS(fix.server), WithFraming(LengthPrefixed(0)))
			srv.AddHandler(echo)
			ctx := testCtx(t)
			c := mustDial(t, TCP, srv, WithTLS(fix.client), WithFraming(LengthPrefixed(0)))
			sub := mustSubscribe(t, c, "")
			if err := c.Send(ctx, []byte("secret")); err != nil {
				t.Fatal(err)
			}
			m, err := sub.Recv(ctx)
			if err != nil || string(m.Data) != "secret" {
				t.Fatalf("got %q, %v", m.Data, err)
			}

			// A client that does not trust the CA refuses the server.
			_, err = Dial(ctx, TCP, srv.LocalAddr().String(), WithTLS(&tls.Config{RootCAs: x509.NewCertPool()}))
			var unknown x509.UnknownAuthorityError
			if !errors.As(err, &unknown) {
				t.Fatalf("untrusted CA: err = %v", err)
			}
			// A name the certificate does not cover is refused.
			wrongName := fix.client.Clone()
			wrongName.ServerName = "peerbus.invalid"
			_, err = Dial(ctx, TCP, srv.LocalAddr().String(), WithTLS(wrongName))
			var hostErr x509.HostnameError
			if !errors.As(err, &hostErr) {
				t.Fatalf("wrong name: err = %v", err)
			}
			// The server dropped both and still serves.
			waitFor(t, "failed handshakes counted", func() bool { return srv.Stats().BadInput == 2 })
			if err := c.Send(ctx, []byte("still here")); err != nil {
				t.Fatal(err)
			}
			if m, err := sub.Recv(ctx); err != nil || string(m.Data) != "still here" {
				t.Fatalf("got %q, %v", m.Data, err)
			}
		})
	}
}

func TestTLSHandshakeTimeout(t *testing.T) {
	t.Parallel()
	fix := testTLS(t)
	srv := mustListen(t, TCP, IPv4, WithTLS(fix.server), WithHandshakeTimeout(50*time.Millisecond))
	// A client that connects and never says hello.
	conn, err := net.Dial("tcp", srv.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Fatal("server did not close a silent TLS client")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("server kept a silent TLS client")
	}
	waitFor(t, "bad input counted", func() bool { return srv.Stats().BadInput == 1 })
	if _, err := Listen(testCtx(t), TCP, LoopbackRoute(IPv4), 0, WithTLS(&tls.Config{})); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("TLS server without certificate: %v", err)
	}
}
