package policy_test

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/policy"
)

// The printed block, loaded by a standalone nats-server, grants exactly
// the permissions the node would, and the server enforces them.
func TestNATSConfigOnStandaloneServer(t *testing.T) {
	admin, peerID, obs := newID(t), newID(t), newID(t)
	pol, err := policy.Parse([]byte(fmt.Sprintf(`
users:
  - {name: ops, key: %s, role: admin}
  - {name: svc, key: %s, role: peer, group: g, serve: [calc.>], call: [x], emit: [a.*], read: [a.>], log_admin: true, expose: [db]}
  - {name: dash, key: %s, role: observer, read: [">"]}
`, admin.PublicKey(), peerID.PublicKey(), obs.PublicKey())), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(conf, []byte("listen: 127.0.0.1:-1\n"+pol.NATSConfig()), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("nats-server refuses the block: %v\n%s", err, pol.NATSConfig())
	}
	want := map[string]*server.Permissions{}
	for _, u := range pol.NkeyUsers() {
		want[u.Nkey] = u.Permissions
	}
	if len(opts.Nkeys) != len(want) {
		t.Fatalf("%d users in the config, want %d", len(opts.Nkeys), len(want))
	}
	for _, u := range opts.Nkeys {
		if !reflect.DeepEqual(u.Permissions, want[u.Nkey]) {
			t.Errorf("%s: permissions %+v, want %+v", u.Nkey, u.Permissions, want[u.Nkey])
		}
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(s.Shutdown)
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	o := connect(t, s.ClientURL(), obs)
	if _, err := o.nc.Subscribe("peerbus.evt.g.x.a.b", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	if err := o.nc.Publish("peerbus.any.x", nil); err != nil {
		t.Fatal(err)
	}
	o.v.waitFor(t, "an observer calls", "peerbus.any.x")
	if _, err := nats.Connect(s.ClientURL(), nats.NoReconnect()); err == nil {
		t.Fatal("a client without a listed key connected")
	}
}
