package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/bus"
)

// natsServerBin builds the nats-server of the module's dependencies once
// (without the race detector: it is the system under test's peer, not
// the system under test).
var natsServerBuild = sync.OnceValues(func() (string, error) {
	out := filepath.Join(binDir, "nats-server")
	cmd := exec.Command("go", "build", "-o", out, "github.com/nats-io/nats-server/v2")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build nats-server: %v\n%s", err, b)
	}
	return out, nil
})

func natsServerBin(t testing.TB) string {
	t.Helper()
	p, err := natsServerBuild()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// natsServer is a standalone nats-server process.
type natsServer struct {
	*proc
	client string // client URL
	leaf   string // leafnode URL
}

// startNATSServer runs nats-server on loopback with JetStream, a
// leafnode listener and the given extra configuration.
func startNATSServer(t *testing.T, extra string) *natsServer {
	t.Helper()
	ports := freePorts(t, 2)
	dir := t.TempDir()
	conf := fmt.Sprintf(`
server_name: standalone
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
leafnodes {
  listen: 127.0.0.1:%d
  authorization { user: leaf, password: leafpw }
}
%s
`, ports[0], filepath.Join(dir, "js"), ports[1], extra)
	cf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, "nats-server", testEnv(), natsServerBin(t), "-c", cf)
	p.waitStderr(t, "Server is ready", 20*time.Second)
	return &natsServer{
		proc:   p,
		client: "nats://127.0.0.1:" + strconv.Itoa(ports[0]),
		leaf:   "127.0.0.1:" + strconv.Itoa(ports[1]),
	}
}

// callUntil calls tag through server until it answers want, as interest
// crosses leafnode connections and routes a moment after a subscription.
func callUntil(t *testing.T, want string, timeout time.Duration, args ...string) time.Duration {
	t.Helper()
	start := time.Now()
	var r result
	for time.Since(start) < timeout {
		r = runCLI(t, "", append([]string{"call", "--timeout", "2s"}, args...)...)
		if r.code == 0 && strings.TrimSpace(r.stdout) == want {
			return time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("peerbus call %v: exit %d, stdout %q, stderr %q; want %s", args, r.code, r.stdout, r.stderr, want)
	return 0
}

// peersOf lists the peer names a node sees.
func peersOf(t *testing.T, args ...string) []string {
	t.Helper()
	r := runCLI(t, "", append([]string{"peers", "--json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("peers %v: exit %d: %s", args, r.code, r.stderr)
	}
	var list []struct {
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
		t.Fatalf("peers --json printed %q: %v", r.stdout, err)
	}
	var names []string
	for _, p := range list {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	return names
}

// TestLeafAndExternalAgainstNATSServer runs a standalone nats-server
// (JetStream, leafnode listener, user and password on the client port),
// a peerbus node joining it as a leafnode, and a peerbus node using it
// as an external NATS; calls and events flow between peers on the leaf
// node and peers connected to the standalone server directly.
func TestLeafAndExternalAgainstNATSServer(t *testing.T) {
	hub := startNATSServer(t, `authorization { user: app, password: apppw }`)
	hubURL := strings.Replace(hub.client, "nats://", "nats://app:apppw@", 1)

	start := time.Now()
	leaf := startNodeProc(t, "leaf", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(),
		"--leaf", "nats-leaf://leaf:leafpw@"+hub.leaf, "--name", "edge", "--peer-name", "leafpeer",
		"--func", "leafup=tr a-z A-Z")
	leaf.waitReady(t, 30*time.Second)
	t.Logf("leaf node ready in %v", time.Since(start).Round(time.Millisecond))

	// External mode: credentials from flags, no embedded server.
	ext := startNodeProc(t, "external", "--nats-url", hub.client, "--user", "app", "--password", "apppw",
		"--peer-name", "hubpeer", "--func", "hubup=tr a-z A-Z | rev")
	ext.waitReady(t, 30*time.Second)
	if ext.info["client"] != hub.client {
		t.Errorf("external node's client = %q, want %q", ext.info["client"], hub.client)
	}
	if _, ok := ext.info["cluster"]; ok {
		t.Error("external node printed a cluster line")
	}

	// A client of the standalone server calls the peer on the leaf, and a
	// client of the leaf calls the peer of the external node.
	d := callUntil(t, `"ABC"`, 15*time.Second, "--server", hubURL, "leafup", `"abc"`)
	t.Logf("leaf's tag callable from the standalone server after %v", d.Round(time.Millisecond))
	callUntil(t, `"CBA"`, 15*time.Second, "--server", leaf.info["client"], "hubup", `"abc"`)
	// Calls to one chosen peer cross too.
	callUntil(t, `"XY"`, 5*time.Second, "--server", hubURL, "--peer", leaf.info["peer"], "leafup", `"xy"`)

	waitFor(t, "both peers seen from both sides", 10*time.Second, func() bool {
		return slices.Equal(peersOf(t, "--server", leaf.info["client"]), []string{"hubpeer", "leafpeer"}) &&
			slices.Equal(peersOf(t, "--server", hubURL), []string{"hubpeer", "leafpeer"})
	})

	// Events both ways: the leaf keeps its own log (JetStream domain
	// "edge"), the standalone server its own.
	testWatchEmit(t, hubURL, leaf.info["client"])
	testWatchEmit(t, leaf.info["client"], hubURL)

	// Without credentials the standalone server refuses clients.
	r := runCLI(t, "", "peers", "--server", hub.client)
	if r.code == 0 || !strings.Contains(r.stderr, "refused the credentials") {
		t.Errorf("peers without credentials: exit %d, stderr %q", r.code, r.stderr)
	}
	r = runCLI(t, "", "peers", "--server", hub.client, "--user", "app", "--password", "apppw")
	if r.code != 0 {
		t.Errorf("peers with --user/--password: exit %d, stderr %q", r.code, r.stderr)
	}
}

// TestLeafWrongCredentials checks that a leafnode refused by the hub
// fails to start with a clear message instead of hanging.
func TestLeafWrongCredentials(t *testing.T) {
	hub := startNATSServer(t, "")
	n := startNodeProc(t, "leaf", "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(),
		"--leaf", "nats-leaf://leaf:wrong@"+hub.leaf, "--ready-timeout", "3s")
	code, ok := n.wait(20 * time.Second)
	if !ok || code != 1 || !strings.Contains(n.stderr.String(), "leafnode connection to nats-leaf://leaf:xxxxx@") {
		t.Fatalf("leaf with a wrong password: exited=%v code=%d; stderr:\n%s", ok, code, n.stderr.String())
	}
}

// certs are the PEM files of a test CA and certificates it signed.
type certs struct {
	ca                 string
	nodeCert, nodeKey  string
	cliCert, cliKey    string
	rogueCA            string
	rogueCert, rogueKy string
}

func makeCerts(t *testing.T) certs {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, key, write(name+"-ca.pem", "CERTIFICATE", der)
	}
	issue := func(ca *x509.Certificate, caKey *ecdsa.PrivateKey, name string) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
		tmpl := &x509.Certificate{
			SerialNumber: serial, Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	ca, caKey, caFile := newCA("test")
	rca, rcaKey, rcaFile := newCA("rogue")
	c := certs{ca: caFile, rogueCA: rcaFile}
	c.nodeCert, c.nodeKey = issue(ca, caKey, "node")
	c.cliCert, c.cliKey = issue(ca, caKey, "client")
	c.rogueCert, c.rogueKy = issue(rca, rcaKey, "rogue")
	return c
}

// TestNodeSecurity runs secured nodes as processes: token from the
// environment, TLS with client certificates, mutual TLS and credentials
// on the routes; unauthenticated clients and nodes are rejected.
func TestNodeSecurity(t *testing.T) {
	c := makeCerts(t)
	ports := freePorts(t, 2)
	routes := fmt.Sprintf("127.0.0.1:%d,127.0.0.1:%d", ports[0], ports[1])
	node := func(name string, port int, extra ...string) *nodeProc {
		args := append([]string{"--name", name, "--listen", "127.0.0.1:-1", "--data-dir", t.TempDir(),
			"--cluster", "127.0.0.1:" + strconv.Itoa(port), "--routes", routes,
			"--tls-cert", c.nodeCert, "--tls-key", c.nodeKey, "--tls-ca", c.ca, "--tls-verify",
			"--cluster-tls-cert", c.nodeCert, "--cluster-tls-key", c.nodeKey, "--cluster-tls-ca", c.ca,
			"--peer-name", name, "--func", "who=echo '\"" + name + "\"'"}, extra...)
		p := startProc(t, name, testEnv(bus.EnvAuthToken+"=tok", bus.EnvClusterUser+"=route", bus.EnvClusterPassword+"=rpw"),
			peerbusBin(t), append([]string{"node", "--log-level", "warn"}, args...)...)
		return &nodeProc{proc: p, info: map[string]string{}}
	}
	a, b := node("a", ports[0]), node("b", ports[1])
	a.waitReady(t, 30*time.Second)
	b.waitReady(t, 30*time.Second)
	url := strings.Replace(a.info["client"], "nats://", "tls://", 1)
	good := []string{"--server", url, "--tls-ca", c.ca, "--tls-cert", c.cliCert, "--tls-key", c.cliKey}

	// Calls cross the secured route (the two nodes only reach a quorum
	// once their routes are up, so this works as soon as both are ready).
	callUntil(t, `"b"`, 10*time.Second, append(slices.Clone(good), "--token", "tok", "--peer", b.info["peer"], "who")...)

	for _, tc := range []struct {
		what string
		args []string
		want string
	}{
		{"no token", good, "refused the credentials"},
		{"wrong token", append(slices.Clone(good), "--token", "nope"), "refused the credentials"},
		{"no CA", []string{"--server", url, "--token", "tok", "--tls-cert", c.cliCert, "--tls-key", c.cliKey}, "TLS"},
		{"no client certificate", []string{"--server", url, "--token", "tok", "--tls-ca", c.ca}, "certificate"},
		{"client certificate of another CA", []string{"--server", url, "--token", "tok", "--tls-ca", c.ca,
			"--tls-cert", c.rogueCert, "--tls-key", c.rogueKy}, "certificate"},
	} {
		r := runCLI(t, "", append([]string{"peers"}, tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit 1 and %q", tc.what, r.code, r.stderr, tc.want)
		}
	}
	// The token from the environment works like --token.
	cmd := exec.Command(peerbusBin(t), append([]string{"peers"}, good...)...)
	cmd.Env = testEnv(bus.EnvAuthToken + "=tok")
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), b.info["peer"]) {
		t.Errorf("peers with $%s: %v\n%s", bus.EnvAuthToken, err, out)
	}

	// A third node with the right certificate but a wrong route password
	// does not join: its client sees no other peer, and it never reaches
	// a quorum.
	p3 := freePorts(t, 1)[0]
	bad := node("bad", p3, "--cluster-password", "wrong", "--ready-timeout", "3s")
	if code, ok := bad.wait(20 * time.Second); !ok || code != 1 || !strings.Contains(bad.stderr.String(), "not ready") {
		t.Errorf("node with a wrong route password: exited=%v code=%d; stderr:\n%s", ok, code, bad.stderr.String())
	}
	// So does a node whose route certificate another CA signed.
	rogue := node("rogue", freePorts(t, 1)[0], "--cluster-tls-cert", c.rogueCert, "--cluster-tls-key", c.rogueKy, "--ready-timeout", "3s")
	if code, ok := rogue.wait(20 * time.Second); !ok || code != 1 {
		t.Errorf("node with a rogue route certificate: exited=%v code=%d; stderr:\n%s", ok, code, rogue.stderr.String())
	}
	names := peersOf(t, append(slices.Clone(good), "--token", "tok")...)
	if !slices.Equal(names, []string{"a", "b"}) {
		t.Errorf("peers after the rejected nodes: %v", names)
	}
}

func TestNodeMultiNodeOptions(t *testing.T) {
	env := map[string]string{
		bus.EnvDiscover: "true", bus.EnvLeaf: "hub:7422", bus.EnvAuthToken: "envtok", bus.EnvLogReplicas: "1",
		bus.EnvClusterUser: "cu", bus.EnvClusterPassword: "cp",
	}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	cmd, _ := newNodeCmd()
	err := cmd.Flags().Parse([]string{
		"--discover=false", "--discovery-group", "239.1.1.1:7000", "--discovery-iface", "eth1",
		"--discovery-window", "500ms", "--leaf", "a:1", "--leaf", "b:2,c:3", "--js-domain", "edge",
		"--log-replicas", "-1", "--auth-token", "flagtok", "--nkeys-file", "keys", "--nkey-seed", "seed",
		"--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-ca", "ca.pem", "--tls-verify",
		"--cluster-tls-cert", "cc.pem", "--cluster-tls-key", "ck.pem", "--cluster-tls-ca", "cca.pem",
		"--cluster-password", "flagcp",
	})
	if err != nil {
		t.Fatal(err)
	}
	bo, _, err := nodeOptions(cmd.Flags(), lookup)
	if err != nil {
		t.Fatal(err)
	}
	want := bus.DefaultOptions()
	want.Discover, want.DiscoveryGroup, want.DiscoveryInterface = false, "239.1.1.1:7000", "eth1"
	want.DiscoveryWindow, want.LeafURLs, want.JetStreamDomain = 500*time.Millisecond, []string{"a:1", "b:2", "c:3"}, "edge"
	want.LogReplicas, want.Token, want.NKeysFile, want.NKeySeed = -1, "flagtok", "keys", "seed"
	want.TLSCert, want.TLSKey, want.TLSCA, want.TLSVerify = "c.pem", "k.pem", "ca.pem", true
	want.ClusterTLSCert, want.ClusterTLSKey, want.ClusterTLSCA = "cc.pem", "ck.pem", "cca.pem"
	want.ClusterUser, want.ClusterPassword = "cu", "flagcp" // user from env, password from the flag
	if fmt.Sprintf("%+v", bo) != fmt.Sprintf("%+v", want) {
		t.Errorf("options\n got %+v\nwant %+v", bo, want)
	}
}

// TestLoneClusterNode starts the first node of a cluster alone: it
// prints ready well within a short ready timeout and says its event log
// waits for a second node; a node that joins later gives the log its
// quorum, and an emit through the first node is stored.
func TestLoneClusterNode(t *testing.T) {
	dir := t.TempDir()
	ports := freePorts(t, 2)
	first := startNodeProc(t, "first", "--name", "first", "--listen", "127.0.0.1:-1",
		"--cluster", "127.0.0.1:"+strconv.Itoa(ports[0]), "--data-dir", dir+"/first", "--ready-timeout", "5s")
	first.waitReady(t, 10*time.Second)
	// stderr is a pipe of its own: the warning may be read after ready.
	waitFor(t, "the first node's word of the waiting event log", 10*time.Second, func() bool {
		return strings.Contains(first.stderr.String(), "first node of the cluster")
	})
	second := startNodeProc(t, "second", "--name", "second", "--listen", "127.0.0.1:-1",
		"--cluster", "127.0.0.1:"+strconv.Itoa(ports[1]), "--routes", first.info["cluster"], "--data-dir", dir+"/second")
	second.waitReady(t, 30*time.Second)
	if r := runCLI(t, "", "emit", "--server", first.info["client"], "demo.lone", `{"n":1}`); r.code != 0 {
		t.Fatalf("emit through the first node: %d %s", r.code, r.stderr)
	}
	if r := runCLI(t, "", "replay", "--server", second.info["client"], "demo.>"); r.code != 0 || !strings.Contains(r.stdout, "demo.lone") {
		t.Fatalf("replay through the second node: %d %q %s", r.code, r.stdout, r.stderr)
	}
}
