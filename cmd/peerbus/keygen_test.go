package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/peer"
)

// keyLines parses "key: value" lines.
func keyLines(out string) map[string]string {
	m := map[string]string{}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(l, ": "); ok {
			m[k] = v
		}
	}
	return m
}

func TestKeygenAndIdentity(t *testing.T) {
	dir := t.TempDir()
	nodeKey, clientKey := filepath.Join(dir, "node.nk"), filepath.Join(dir, "client.nk")
	r := runCLI(t, "", "keygen", nodeKey)
	if r.code != 0 {
		t.Fatalf("keygen: %d %s", r.code, r.stderr)
	}
	kv := keyLines(r.stdout)
	st, err := os.Stat(nodeKey)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v, %v", st, err)
	}
	id, err := identity.Load(nodeKey)
	if err != nil {
		t.Fatal(err)
	}
	if kv["public"] != id.PublicKey() || kv["peer"] != id.PeerID() || kv["file"] != nodeKey {
		t.Fatalf("keygen printed %v; file holds %s / %s", kv, id.PublicKey(), id.PeerID())
	}
	if r := runCLI(t, "", "keygen", nodeKey); r.code == 0 || !strings.Contains(r.stderr, "exists") {
		t.Fatalf("keygen over an existing file: %d %q", r.code, r.stderr)
	}
	r = runCLI(t, "", "keygen", clientKey)
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	// The node admits the client's key (an identity authenticates with
	// its nkey).
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte(keyLines(r.stdout)["public"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNodeProc(t, "idnode", "--listen", "127.0.0.1:-1", "--no-jetstream", "--identity", nodeKey, "--nkeys-file", keys)
	n.waitReady(t, 30*time.Second)
	if n.info["peer"] != id.PeerID() {
		t.Fatalf("node peer %q, identity gives %q", n.info["peer"], id.PeerID())
	}
	r = runCLI(t, "", "call", "--server", n.info["client"], "--identity", clientKey, "--peer", id.PeerID(), "info")
	if r.code != 0 || !strings.Contains(r.stdout, id.PeerID()) {
		t.Fatalf("call info with an identity: %d %q %q", r.code, r.stdout, r.stderr)
	}
	r = runCLI(t, "", "call", "--server", n.info["client"], "--identity", filepath.Join(dir, "none.nk"), "ping")
	if r.code == 0 || !strings.Contains(r.stderr, "none.nk") {
		t.Fatalf("call with a missing identity file: %d %q", r.code, r.stderr)
	}
}

func TestNodeAuthorize(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "c.nk")
	r := runCLI(t, "", "keygen", key)
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	pub := keyLines(r.stdout)["public"]
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("users:\n  - name: c\n    key: "+pub+"\n    role: peer\n    serv: [x]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, "", "node", "--listen", "127.0.0.1:-1", "--no-jetstream", "--authorize", bad)
	if r.code == 0 || !strings.Contains(r.stderr, "bad.yaml:5") || !strings.Contains(r.stderr, `"serv"`) {
		t.Fatalf("node with a malformed policy: %d %q", r.code, r.stderr)
	}
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("users:\n  - {name: c, key: "+pub+", role: peer}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNodeProc(t, "authnode", "--listen", "127.0.0.1:-1", "--no-jetstream", "--authorize", good)
	n.waitReady(t, 30*time.Second)
	if r := runCLI(t, "", "call", "--server", n.info["client"], "--identity", key, "ping"); r.code != 0 {
		t.Fatalf("call ping with a listed identity: %d %q", r.code, r.stderr)
	}
	if r := runCLI(t, "", "call", "--server", n.info["client"], "ping"); r.code == 0 || !strings.Contains(r.stderr, "refused the credentials") {
		t.Fatalf("call without an identity: %d %q", r.code, r.stderr)
	}
	// SIGHUP reloads the file: a key no longer listed is refused; a
	// malformed file leaves the policy in force.
	other := filepath.Join(dir, "o.nk")
	r = runCLI(t, "", "keygen", other)
	if r.code != 0 {
		t.Fatal(r.stderr)
	}
	if err := os.WriteFile(good, []byte("users:\n  - {name: o, key: "+keyLines(r.stdout)["public"]+", role: peer}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := n.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := runCLI(t, "", "call", "--server", n.info["client"], "--identity", key, "ping")
		if r.code != 0 && strings.Contains(r.stderr, "refused the credentials") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the removed key still connects after SIGHUP: %d %q", r.code, r.stderr)
		}
	}
	if r := runCLI(t, "", "call", "--server", n.info["client"], "--identity", other, "ping"); r.code != 0 {
		t.Fatalf("the added key after SIGHUP: %d %q", r.code, r.stderr)
	}
}

// 260 requests without a deadline to a --func tag that hangs: the
// excess is answered busy at once and ping still answers.
func TestFuncOverloadBusy(t *testing.T) {
	n := startNodeProc(t, "busynode", "--listen", "127.0.0.1:-1", "--no-jetstream", "--func", "hang=sleep 100",
		"--func", "few=sleep 100", "--func-concurrency", "few=2")
	n.waitReady(t, 30*time.Second)
	nc, err := nats.Connect(n.info["client"])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const total = 260
	inbox := nats.NewInbox()
	replies := make(chan *nats.Msg, total)
	if _, err := nc.ChanSubscribe(inbox, replies); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < total; i++ {
		if err := nc.PublishRequest(peer.AnySubject("hang"), inbox, []byte("null")); err != nil {
			t.Fatal(err)
		}
	}
	for busy := 0; busy < total-peer.DefaultTagConcurrency; busy++ {
		select {
		case m := <-replies:
			if !strings.Contains(string(m.Data), `"code":"busy"`) {
				t.Fatalf("reply %d: %s", busy, m.Data)
			}
		case <-time.After(30 * time.Second):
			t.Fatalf("%d busy replies of %d", busy, total-peer.DefaultTagConcurrency)
		}
	}
	if r := runCLI(t, "", "call", "--server", n.info["client"], "--peer", n.info["peer"], "ping"); r.code != 0 {
		t.Fatalf("ping while hang is saturated: %d %q", r.code, r.stderr)
	}
	// --func-concurrency few=2: the third call is busy.
	for i := 0; i < 3; i++ {
		if err := nc.PublishRequest(peer.AnySubject("few"), inbox, []byte("null")); err != nil {
			t.Fatal(err)
		}
	}
	for got := false; !got; {
		select {
		case m := <-replies:
			if strings.Contains(string(m.Data), `"tag":"hang"`) {
				continue // a running call of hang that reached its deadline
			}
			if !strings.Contains(string(m.Data), `"code":"busy"`) || !strings.Contains(string(m.Data), `"tag":"few"`) {
				t.Fatalf("third call of few: %s", m.Data)
			}
			got = true
		case <-time.After(30 * time.Second):
			t.Fatal("no busy reply for the third call of few")
		}
	}
	if r := runCLI(t, "", "node", "--func", "a=true", "--func-concurrency", "b=1"); r.code == 0 || !strings.Contains(r.stderr, `no --func serves tag "b"`) {
		t.Fatalf("--func-concurrency of an unknown tag: %d %q", r.code, r.stderr)
	}
}

func TestPolicyNATSConfig(t *testing.T) {
	r := runCLI(t, "", "policy", "nats-config", "--authorize", "../../docs/policy.example.yaml")
	if r.code != 0 || !strings.HasPrefix(strings.SplitN(r.stdout, "\n", 2)[1], "authorization {") || !strings.Contains(r.stdout, `"$JS.API.INFO"`) {
		t.Fatalf("nats-config: %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := runCLI(t, "", "policy", "nats-config"); r.code == 0 || !strings.Contains(r.stderr, "--authorize") {
		t.Fatalf("nats-config without a policy: %d %q", r.code, r.stderr)
	}
}

func TestNodeSecure(t *testing.T) {
	dir := t.TempDir()
	n := startNodeProc(t, "securenode", "--listen", "127.0.0.1:-1", "--no-jetstream", "--secure", "--data-dir", dir)
	n.waitReady(t, 30*time.Second)
	key := filepath.Join(dir, "admin.nk")
	if st, err := os.Stat(key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("admin identity: %v %v", st, err)
	}
	if !strings.Contains(n.stderr.String(), "--identity "+key) {
		t.Fatalf("no hint for clients on stderr: %q", n.stderr.String())
	}
	if r := runCLI(t, "", "call", "--server", n.info["client"], "--identity", key, "ping"); r.code != 0 {
		t.Fatalf("call with the admin identity: %d %q", r.code, r.stderr)
	}
	if r := runCLI(t, "", "call", "--server", n.info["client"], "ping"); r.code == 0 {
		t.Fatal("a call without an identity passed a --secure node")
	}
}

// Under a policy the node creates the event log: a peer granted emit
// (but not the JetStream API) emits, and a reader replays.
func TestNodeAuthorizeEventLog(t *testing.T) {
	dir := t.TempDir()
	em, rd := filepath.Join(dir, "em.nk"), filepath.Join(dir, "rd.nk")
	var keys []string
	for _, k := range []string{em, rd} {
		r := runCLI(t, "", "keygen", k)
		if r.code != 0 {
			t.Fatal(r.stderr)
		}
		keys = append(keys, keyLines(r.stdout)["public"])
	}
	pol := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(pol, []byte("users:\n  - {name: em, key: "+keys[0]+", role: peer, emit: [order.*]}\n"+
		"  - {name: rd, key: "+keys[1]+", role: observer, read: [order.>]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNodeProc(t, "lognode", "--listen", "127.0.0.1:-1", "--data-dir", filepath.Join(dir, "data"), "--authorize", pol)
	n.waitReady(t, 30*time.Second)
	if r := runCLI(t, "", "emit", "--server", n.info["client"], "--identity", em, "order.created", `{"a":1}`); r.code != 0 {
		t.Fatalf("emit with a granted identity: %d %q", r.code, r.stderr)
	}
	r := runCLI(t, "", "replay", "order.>", "--json", "--server", n.info["client"], "--identity", rd)
	if r.code != 0 || !strings.Contains(r.stdout, `"order.created"`) {
		t.Fatalf("replay with a reader identity: %d %q %q", r.code, r.stdout, r.stderr)
	}
}
