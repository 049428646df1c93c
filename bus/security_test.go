package bus_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/peerbus/peerbus/bus"
)

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	dir  string
	// File is the CA certificate's PEM file.
	File string
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, dir: t.TempDir()}
	ca.File = filepath.Join(ca.dir, name+"-ca.pem")
	writePEM(t, ca.File, "CERTIFICATE", der)
	return ca
}

// issue returns the PEM files of a certificate for 127.0.0.1 and
// localhost, good for servers and clients alike.
func (ca *testCA) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile = filepath.Join(ca.dir, name+".pem")
	keyFile = filepath.Join(ca.dir, name+"-key.pem")
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "EC PRIVATE KEY", kder)
	return certFile, keyFile
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// mustReject checks that a client with opts cannot connect to url.
func mustReject(t *testing.T, url, what string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.NoReconnect(), nats.Timeout(3 * time.Second)}, opts...)...)
	if err == nil {
		nc.Close()
		t.Fatalf("%s: connected, want a rejection", what)
	}
	t.Logf("%s: rejected: %v", what, err)
}

// mustAccept checks that a client with opts connects to url and can
// make a round trip.
func mustAccept(t *testing.T, url, what string, opts ...nats.Option) {
	t.Helper()
	nc, err := nats.Connect(url, append([]nats.Option{nats.NoReconnect(), nats.Timeout(3 * time.Second)}, opts...)...)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	defer nc.Close()
	if _, err := nc.RTT(); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// checkInProcess checks the node's own connection and JetStream with auth on.
func checkInProcess(t *testing.T, n *bus.Node) {
	t.Helper()
	if !n.Conn().IsConnected() {
		t.Fatal("in-process connection not connected")
	}
	js, err := n.JetStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.AccountInfo(context.Background()); err != nil {
		t.Fatalf("jetstream through the in-process connection: %v", err)
	}
	nc, err := n.Connect()
	if err != nil {
		t.Fatalf("additional in-process connection: %v", err)
	}
	nc.Close()
}

func TestClientAuth(t *testing.T) {
	t.Run("token", func(t *testing.T) {
		n := startNode(t, bus.WithToken("s3cret"))
		checkInProcess(t, n)
		mustReject(t, n.ClientURL(), "no token")
		mustReject(t, n.ClientURL(), "wrong token", nats.Token("guess"))
		mustAccept(t, n.ClientURL(), "token", nats.Token("s3cret"))
	})
	t.Run("user", func(t *testing.T) {
		n := startNode(t, bus.WithUser("app", "pw"))
		checkInProcess(t, n)
		mustReject(t, n.ClientURL(), "no user")
		mustReject(t, n.ClientURL(), "wrong password", nats.UserInfo("app", "nope"))
		mustAccept(t, n.ClientURL(), "user", nats.UserInfo("app", "pw"))
	})
	t.Run("nkeys", func(t *testing.T) {
		kp, _ := nkeys.CreateUser()
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		other, _ := nkeys.CreateUser()
		opub, _ := other.PublicKey()
		dir := t.TempDir()
		keys := filepath.Join(dir, "nkeys")
		if err := os.WriteFile(keys, []byte("# allowed users\n"+pub+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		o := bus.DefaultOptions()
		o.Listen, o.DataDir, o.NKeysFile = "127.0.0.1:-1", t.TempDir(), keys
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		n, err := bus.Start(ctx, bus.WithOptions(o))
		if err != nil {
			t.Fatal(err)
		}
		defer n.Close()
		checkInProcess(t, n) // with a key of its own
		mustReject(t, n.ClientURL(), "no nkey")
		mustReject(t, n.ClientURL(), "unknown nkey", nats.Nkey(opub, other.Sign))
		mustAccept(t, n.ClientURL(), "nkey", nats.Nkey(pub, kp.Sign))

		// An external node presents a seed, given literally.
		ext, err := bus.Start(ctx, bus.WithExternalURL(n.ClientURL()),
			func(o *bus.Options) error { o.NKeySeed = string(seed); return nil })
		if err != nil {
			t.Fatalf("external node with the seed: %v", err)
		}
		ext.Close()
	})
	t.Run("external", func(t *testing.T) {
		n := startNode(t, bus.WithUser("app", "pw"))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := bus.Start(ctx, bus.WithExternalURL(n.ClientURL())); !errors.Is(err, bus.ErrNotReady) {
			t.Fatalf("external node without credentials: %v, want ErrNotReady", err)
		}
		ext, err := bus.Start(ctx, bus.WithExternalURL(n.ClientURL()), bus.WithUser("app", "pw"))
		if err != nil {
			t.Fatal(err)
		}
		defer ext.Close()
		if _, err := ext.JetStream(); err != nil {
			t.Fatalf("jetstream of the external node: %v", err)
		}
		extra, err := ext.Connect()
		if err != nil {
			t.Fatalf("additional external connection: %v", err)
		}
		extra.Close()
	})
}

func TestClientTLS(t *testing.T) {
	ca := newTestCA(t, "client")
	cert, key := ca.issue(t, "node")
	ccert, ckey := ca.issue(t, "client")
	rogue := newTestCA(t, "rogue")
	rcert, rkey := rogue.issue(t, "rogue")

	n := startNode(t, bus.WithTLS(cert, key, ca.File, true), bus.WithUser("app", "pw"))
	checkInProcess(t, n)
	url := strings.Replace(n.ClientURL(), "nats://", "tls://", 1)
	creds := nats.UserInfo("app", "pw")
	mustReject(t, n.ClientURL(), "TLS without the CA", creds)
	mustReject(t, url, "no client certificate", creds, nats.RootCAs(ca.File))
	mustReject(t, url, "client certificate of another CA", creds, nats.RootCAs(ca.File), nats.ClientCert(rcert, rkey))
	mustReject(t, url, "untrusted server", creds, nats.ClientCert(ccert, ckey))
	mustAccept(t, url, "mutual TLS", creds, nats.RootCAs(ca.File), nats.ClientCert(ccert, ckey))

	// An external node trusts the CA and presents its certificate.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ext, err := bus.Start(ctx, bus.WithExternalURL(url), bus.WithUser("app", "pw"), bus.WithTLS(ccert, ckey, ca.File, false))
	if err != nil {
		t.Fatal(err)
	}
	ext.Close()
}

// routed reports whether n gets a route within d.
func routed(n *bus.Node, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if n.NumRoutes() > 0 {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// logTap is a slog handler that counts the records whose message
// contains one of its substrings.
type logTap struct {
	mu    sync.Mutex
	match []string
	n     int
}

func (l *logTap) Enabled(context.Context, slog.Level) bool { return true }
func (l *logTap) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logTap) WithGroup(string) slog.Handler            { return l }
func (l *logTap) Handle(_ context.Context, r slog.Record) error {
	for _, m := range l.match {
		if strings.Contains(r.Message, m) {
			l.mu.Lock()
			l.n++
			l.mu.Unlock()
			return nil
		}
	}
	return nil
}

func (l *logTap) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// mustRefuseRoutes checks that the seed refuses the route connections
// of every intruder node. An intruder's own route count is no evidence
// either way: a soliciting server registers its route when the remote's
// INFO arrives, which the remote sends before it checks the CONNECT, so
// the intruder counts a route for the instant before the seed closes
// it. What matters is the seed's side: it must have refused several
// attempts (taps counts its refusals), never register a route, and no
// message may cross between the seed and an intruder in either
// direction while they retry.
func mustRefuseRoutes(t *testing.T, seed *bus.Node, tap *logTap, intruders ...*bus.Node) {
	t.Helper()
	in := make(chan *nats.Msg, 16)
	sub, err := seed.Conn().ChanSubscribe("probe.in", in)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	out := make(chan *nats.Msg, 16)
	for _, x := range intruders {
		s, err := x.Conn().ChanSubscribe("probe.out", out)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Unsubscribe()
	}
	// An intruder opens a few pooled route connections per attempt and
	// retries about once a second: eight refusals per intruder span
	// several attempts of each.
	want := 8 * len(intruders)
	deadline := time.Now().Add(20 * time.Second)
	for tap.count() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the seed refused %d route attempts in 20s, want %d", tap.count(), want)
		}
		if r := seed.NumRoutes(); r != 0 {
			t.Fatalf("the seed registered %d routes from nodes without the cluster credential", r)
		}
		for _, x := range intruders {
			_ = x.Conn().Publish("probe.in", []byte("intruder"))
		}
		_ = seed.Conn().Publish("probe.out", []byte("seed"))
		select {
		case m := <-in:
			t.Fatalf("a message of a node without the credential reached the seed: %q", m.Data)
		case m := <-out:
			t.Fatalf("a message of the seed reached a node without the credential: %q", m.Data)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// mustCross checks that a message published on a reaches a subscriber
// on b: the positive control of mustRefuseRoutes.
func mustCross(t *testing.T, a, b *bus.Node) {
	t.Helper()
	got := make(chan *nats.Msg, 16)
	sub, err := b.Conn().ChanSubscribe("probe.cross", got)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	_ = b.Conn().Flush()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_ = a.Conn().Publish("probe.cross", []byte("member"))
		select {
		case <-got:
			return
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("a message of a cluster member did not reach the seed")
		}
	}
}

func TestClusterAuth(t *testing.T) {
	tap := &logTap{match: []string{"authentication error"}}
	seed := startNode(t, bus.WithoutJetStream(), bus.WithCluster("127.0.0.1:-1"), bus.WithClusterAuth("route", "good"),
		bus.WithLogger(slog.New(tap)))
	wrong := startNode(t, bus.WithoutJetStream(), bus.WithRoutes(seed.ClusterURL()),
		bus.WithCluster("127.0.0.1:-1"), bus.WithClusterAuth("route", "bad"))
	none := startNode(t, bus.WithoutJetStream(), bus.WithRoutes(seed.ClusterURL()), bus.WithCluster("127.0.0.1:-1"))
	mustRefuseRoutes(t, seed, tap, wrong, none)
	good := startNode(t, bus.WithoutJetStream(), bus.WithRoutes(seed.ClusterURL()),
		bus.WithCluster("127.0.0.1:-1"), bus.WithClusterAuth("route", "good"))
	if !routed(good, 10*time.Second) {
		t.Fatal("a node with the cluster credential did not join")
	}
	mustCross(t, good, seed)
}

func TestClusterTLS(t *testing.T) {
	ca := newTestCA(t, "cluster")
	c1, k1 := ca.issue(t, "n1")
	c2, k2 := ca.issue(t, "n2")
	rogue := newTestCA(t, "rogue")
	rc, rk := rogue.issue(t, "rogue")

	tap := &logTap{match: []string{"TLS route handshake error"}}
	seed := startNode(t, bus.WithoutJetStream(), bus.WithCluster("127.0.0.1:-1"), bus.WithClusterTLS(c1, k1, ca.File),
		bus.WithLogger(slog.New(tap)))
	// The rogue node trusts the cluster CA but its own certificate is
	// signed by another: the seed refuses it.
	bad := startNode(t, bus.WithoutJetStream(), bus.WithRoutes(seed.ClusterURL()),
		bus.WithCluster("127.0.0.1:-1"), bus.WithClusterTLS(rc, rk, ca.File))
	plain := startNode(t, bus.WithoutJetStream(), bus.WithRoutes(seed.ClusterURL()), bus.WithCluster("127.0.0.1:-1"))
	mustRefuseRoutes(t, seed, tap, bad, plain)
	good := startNode(t, bus.WithoutJetStream(), bus.WithRoutes(seed.ClusterURL()),
		bus.WithCluster("127.0.0.1:-1"), bus.WithClusterTLS(c2, k2, ca.File))
	if !routed(good, 10*time.Second) {
		t.Fatal("a node with a certificate of the cluster CA did not join")
	}
	mustCross(t, good, seed)
}

func TestSecurityOptions(t *testing.T) {
	kp, _ := nkeys.CreateUser()
	pub, _ := kp.PublicKey()
	for name, o := range map[string][]bus.Option{
		"token and user":      {bus.WithToken("t"), bus.WithUser("u", "p")},
		"token and nkeys":     {bus.WithToken("t"), bus.WithNKeys(pub)},
		"user no password":    {bus.WithUser("u", "")},
		"bad nkey":            {bus.WithNKeys("UNOPE")},
		"cert without key":    {bus.WithTLS("c.pem", "", "", false)},
		"verify without CA":   {bus.WithTLS("c.pem", "k.pem", "", true)},
		"route TLS partial":   {bus.WithClusterTLS("c.pem", "k.pem", "")},
		"cluster user only":   {bus.WithClusterAuth("u", "")},
		"discovery group":     {bus.WithDiscovery(), bus.WithDiscoveryGroup("10.0.0.1:1", "")},
		"discovery external":  {bus.WithDiscovery(), bus.WithExternalURL("nats://127.0.0.1:4222")},
		"leaf scheme":         {bus.WithLeaf("http://hub:7422")},
		"log replicas":        {bus.WithLogReplicas(7)},
		"js domain":           {bus.WithJetStreamDomain("a.b")},
		"seed and creds file": {bus.WithExternalURL("nats://h:1"), func(o *bus.Options) error { o.NKeySeed, o.CredsFile = "x", "y"; return nil }},
	} {
		if _, err := bus.New(o...); !errors.Is(err, bus.ErrInvalidOption) {
			t.Errorf("%s: got %v, want ErrInvalidOption", name, err)
		}
	}
	// Unreadable material fails Start with ErrAuth, and no goroutine or
	// listener stays behind.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := bus.Start(ctx, bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream(),
		bus.WithTLS("/nonexistent/c.pem", "/nonexistent/k.pem", "", false))
	if !errors.Is(err, bus.ErrAuth) {
		t.Errorf("missing certificate: %v, want ErrAuth", err)
	}
	o := bus.DefaultOptions()
	o.Listen, o.NoJetStream, o.NKeysFile = "127.0.0.1:-1", true, "/nonexistent/nkeys"
	if _, err := bus.Start(ctx, bus.WithOptions(o)); !errors.Is(err, bus.ErrAuth) {
		t.Errorf("missing nkeys file: %v, want ErrAuth", err)
	}
}

func TestSecurityEnv(t *testing.T) {
	env := map[string]string{
		bus.EnvAuthToken: "tok", bus.EnvTLSCert: "c", bus.EnvTLSKey: "k", bus.EnvTLSCA: "ca", bus.EnvTLSVerify: "true",
		bus.EnvClusterUser: "cu", bus.EnvClusterPassword: "cp", bus.EnvClusterTLSCert: "cc",
		bus.EnvClusterTLSKey: "ck", bus.EnvClusterTLSCA: "cca", bus.EnvDiscover: "1", bus.EnvDiscoveryGroup: "239.1.2.3:9",
		bus.EnvDiscoveryIface: "eth9", bus.EnvDiscoveryWindow: "5s", bus.EnvLeaf: "hub:7422,hub2:7422",
		bus.EnvJSDomain: "edge", bus.EnvLogReplicas: "-1", bus.EnvNKeySeed: "seed", bus.EnvCreds: "creds",
		bus.EnvUser: "u", bus.EnvPassword: "p", bus.EnvNKeysFile: "nk",
	}
	o := bus.DefaultOptions()
	if err := o.ApplyEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if o.Token != "tok" || o.TLSCert != "c" || o.TLSKey != "k" || o.TLSCA != "ca" || !o.TLSVerify ||
		o.ClusterUser != "cu" || o.ClusterPassword != "cp" || o.ClusterTLSCert != "cc" || o.ClusterTLSKey != "ck" ||
		o.ClusterTLSCA != "cca" || !o.Discover || o.DiscoveryGroup != "239.1.2.3:9" || o.DiscoveryInterface != "eth9" ||
		o.DiscoveryWindow != 5*time.Second || len(o.LeafURLs) != 2 || o.JetStreamDomain != "edge" ||
		o.LogReplicas != -1 || o.NKeySeed != "seed" || o.CredsFile != "creds" || o.User != "u" ||
		o.Password != "p" || o.NKeysFile != "nk" {
		t.Fatalf("env not applied: %+v", o)
	}
	for k, v := range map[string]string{bus.EnvDiscover: "perhaps", bus.EnvDiscoveryWindow: "soon", bus.EnvLogReplicas: "three"} {
		o := bus.DefaultOptions()
		err := o.ApplyEnv(func(key string) (string, bool) {
			if key == k {
				return v, true
			}
			return "", false
		})
		if !errors.Is(err, bus.ErrInvalidOption) || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
}
