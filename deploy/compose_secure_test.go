//go:build compose

package deploy_test

import (
	"context"
	"errors"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/peer"
)

// TestComposeSecure runs the secured variant, docker-compose.secure.yml
// over docker-compose.yml, with secrets made by deploy/secrets.sh: the
// routes authenticate (the cluster forms), no node warns that it is
// unprotected, an application identity calls calc and emits and
// replays, and an identity granted one call fails to serve calc's tag,
// purge the log or read others' replies, while connections with no
// identity or an unknown one are refused.
func TestComposeSecure(t *testing.T) {
	secrets := filepath.Join(t.TempDir(), "secrets")
	d, port := newDeployment(t, "COMPOSE_FILE=docker-compose.yml:docker-compose.secure.yml", "PEERBUS_SECRETS="+secrets)
	d.must(time.Minute, "deploy/secrets.sh")
	d.build()
	nodes := []string{"node1", "node2", "node3"}
	ids := d.upAndReady(nodes)
	for _, n := range nodes {
		if out, _ := d.run(time.Minute, "docker", "logs", ids[n]); strings.Contains(out, "UNPROTECTED") {
			t.Errorf("%s warns it is unprotected:\n%s", n, out)
		}
	}
	load := func(name string) *identity.Identity {
		t.Helper()
		id, err := identity.Load(filepath.Join(secrets, name+".nk"))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	url := "nats://127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// Refused: no identity, and an identity the policy does not list.
	stranger, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	for what, opts := range map[string][]nats.Option{"no identity": nil, "an unknown identity": stranger.ConnectOptions()} {
		var err error
		waitFor(t, "node 1's published port", 30*time.Second, func() bool {
			var nc *nats.Conn
			nc, err = nats.Connect(url, append(opts, nats.NoReconnect())...)
			if err == nil {
				nc.Close()
			}
			return err == nil || errors.Is(err, nats.ErrAuthorization)
		})
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Fatalf("connect with %s: %v, want an authorization violation", what, err)
		}
	}

	// The application: calls calc, emits and replays.
	app := load("app")
	anc, err := nats.Connect(url, append(app.ConnectOptions(), nats.MaxReconnects(-1))...)
	if err != nil {
		t.Fatal(err)
	}
	defer anc.Close()
	ap, err := peer.New(anc, peer.WithIdentity(app), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	defer ap.Close()
	var out []byte
	waitFor(t, "app calls multiply on calc", time.Minute, func() bool {
		out, err = ap.Call(ctx, "multiply", []byte(`{"a":5,"b":10}`), peer.OnAny(), peer.Timeout(3*time.Second))
		return err == nil
	})
	if string(out) != "50" {
		t.Fatalf("multiply: %q", out)
	}
	lg, err := eventlog.New(ap)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := lg.Emit(ctx, "compose.secure", i); err != nil {
			t.Fatalf("app emits: %v", err)
		}
	}
	n := 0
	for _, err := range lg.Replay(ctx, "compose.>", eventlog.FromStart()) {
		if err != nil {
			t.Fatalf("app replays: %v", err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("app replayed %d events, want 3", n)
	}
	// From inside a container, with the node's own identity.
	if out := d.must(time.Minute, "docker", "exec", ids["node3"], "/peerbus", "call", "multiply", `{"a":6,"b":7}`); strings.TrimSpace(out) != "42" {
		t.Errorf("multiply from node 3's container printed %q", out)
	}

	// The attacker, granted only to call multiply.
	var mu sync.Mutex
	var errs []error
	mallory := load("mallory")
	mnc, err := nats.Connect(url, append(mallory.ConnectOptions(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	defer mnc.Close()
	refused := func(what, subject string) {
		t.Helper()
		waitFor(t, what+" refused", 10*time.Second, func() bool {
			mu.Lock()
			defer mu.Unlock()
			for _, err := range errs {
				if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
					return true
				}
			}
			return false
		})
	}
	if _, err := mnc.QueueSubscribe("peerbus.any.multiply", "peerbus", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	refused("serve calc's tag", "peerbus.any.multiply")
	if _, err := mnc.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
		t.Fatal(err)
	}
	refused("read others' replies", "_INBOX.>")
	if err := mnc.Publish("$JS.API.STREAM.PURGE."+eventlog.Stream, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	refused("purge the log", "$JS.API.STREAM.PURGE."+eventlog.Stream)
	// What it was granted works, and the log kept every event.
	mp, err := peer.New(mnc, peer.WithIdentity(mallory), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	defer mp.Close()
	if out, err := mp.Call(ctx, "multiply", []byte(`{"a":2,"b":3}`), peer.OnAny()); err != nil || string(out) != "6" {
		t.Fatalf("mallory's granted call: %q, %v", out, err)
	}
	if c, err := lg.Count(ctx, "compose.>"); err != nil || c != 3 {
		t.Fatalf("events in the log after the attacks: %d, %v; want 3", c, err)
	}
}
