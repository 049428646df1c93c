package policy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/internal/echotest"
	"github.com/peerbus/peerbus/peer"
	"github.com/peerbus/peerbus/policy"
)

// violations collects the permission violations a connection is told
// about.
type violations struct {
	mu   sync.Mutex
	errs []error
	ch   chan struct{}
}

func (v *violations) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
	select {
	case v.ch <- struct{}{}:
	default:
	}
}

// waitFor waits until the server reported a permissions violation
// naming subject.
func (v *violations) waitFor(t *testing.T, what, subject string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		v.mu.Lock()
		for _, err := range v.errs {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
				v.mu.Unlock()
				return
			}
		}
		v.mu.Unlock()
		select {
		case <-v.ch:
		case <-deadline:
			t.Fatalf("%s: no permissions violation for %q; errors: %v", what, subject, v.errs)
		}
	}
}

type actor struct {
	id *identity.Identity
	nc *nats.Conn
	v  *violations
}

func connect(t *testing.T, url string, id *identity.Identity) *actor {
	t.Helper()
	v := &violations{ch: make(chan struct{}, 1)}
	nc, err := nats.Connect(url, append(id.ConnectOptions(), nats.ErrorHandler(v.handler))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return &actor{id: id, nc: nc, v: v}
}

func newID(t *testing.T) *identity.Identity {
	t.Helper()
	id, err := identity.New()
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// attackPolicy is the policy of the attacker tests: alice serves,
// emits and exposes echo, bob calls, reads and dials echo, mallory may
// only call calc.add, and eve may dial echo and expose a service of
// her own.
func attackPolicy(t *testing.T) (alice, bob, mallory, eve *identity.Identity, pol *policy.Policy) {
	alice, bob, mallory, eve = newID(t), newID(t), newID(t), newID(t)
	pol, err := policy.Parse([]byte(fmt.Sprintf(`
users:
  - {name: alice, key: %s, role: peer, group: shop, serve: [calc.add], emit: [order.*], expose: [echo]}
  - {name: bob, key: %s, role: peer, call: [calc.add], read: [order.>], dial: [echo]}
  - {name: mallory, key: %s, role: peer, call: [calc.add]}
  - {name: eve, key: %s, role: peer, dial: [echo], expose: [spy]}
`, alice.PublicKey(), bob.PublicKey(), mallory.PublicKey(), eve.PublicKey())), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return alice, bob, mallory, eve, pol
}

func TestAttackerFails(t *testing.T) {
	alice, bob, mallory, eve, pol := attackPolicy(t)
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(t.TempDir()), bus.WithPolicy(pol))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	attack(t, alice, bob, mallory, eve, n, n, n)
}

// The same attacks on a 3-node cluster, each actor on its own node.
func TestAttackerFailsOnCluster(t *testing.T) {
	alice, bob, mallory, eve, pol := attackPolicy(t)
	nodes, err := bus.StartLocalCluster(context.Background(), 3, t.TempDir(), "att", bus.WithPolicy(pol))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, n := range nodes {
			_ = n.Close()
		}
	})
	attack(t, alice, bob, mallory, eve, nodes[0], nodes[1], nodes[2])
}

// attack runs the legitimate peers (alice on na, bob on nb) and the
// attackers mallory and eve on nm.
func attack(t *testing.T, alice, bob, mallory, eve *identity.Identity, na, nb, nm *bus.Node) {
	ctx := context.Background()
	n := na

	// The node's own peer creates the log.
	np, err := peer.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = np.Close() })
	nlog, err := eventlog.New(np)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nlog.Emit(ctx, "node.started", nil); err != nil {
		t.Fatal(err)
	}

	// Legitimate peers: alice serves calc.add and emits, bob calls and
	// reads.
	a := connect(t, na.ClientURL(), alice)
	ap, err := peer.New(a.nc, peer.WithIdentity(alice), peer.WithGroup("shop"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ap.Close() })
	if _, err := peer.Register(ap, "calc.add", func(_ context.Context, in [2]int) (int, error) { return in[0] + in[1], nil }); err != nil {
		t.Fatal(err)
	}
	alog, err := eventlog.New(ap)
	if err != nil {
		t.Fatal(err)
	}
	b := connect(t, nb.ClientURL(), bob)
	bp, err := peer.New(b.nc, peer.WithIdentity(bob), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() })
	blog, err := eventlog.New(bp)
	if err != nil {
		t.Fatal(err)
	}
	legit := func(round int) {
		t.Helper()
		out, err := bp.Call(ctx, "calc.add", []byte("[2,3]"), peer.OnAny())
		if err != nil || string(out) != "5" {
			t.Fatalf("round %d: bob calls calc.add: %q, %v", round, out, err)
		}
		if _, err := alog.Emit(ctx, "order.created", map[string]int{"round": round}); err != nil {
			t.Fatalf("round %d: alice emits: %v", round, err)
		}
		count := 0
		for e, err := range blog.Replay(ctx, "order.>", eventlog.FromStart()) {
			if err != nil {
				t.Fatalf("round %d: bob replays: %v", round, err)
			}
			if e.Peer != alice.PeerID() || e.Group != "shop" {
				t.Fatalf("event from %s/%s, want alice's", e.Peer, e.Group)
			}
			count++
		}
		if count != round {
			t.Fatalf("round %d: bob replayed %d events", round, count)
		}
	}
	// Bob's node knows alice serves calc.add (on a cluster, through the
	// routes) once her presence reaches him.
	deadline := time.Now().Add(30 * time.Second)
	for serving := false; !serving; {
		infos, err := bp.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, i := range infos {
			serving = serving || (i.ID == alice.PeerID() && i.HasTag("calc.add"))
		}
		if !serving && time.Now().After(deadline) {
			t.Fatalf("bob never saw alice serving calc.add: %v", infos)
		}
	}
	legit(1)
	// A relayed bridge session from bob to alice's echo, its frames on
	// the bus.
	svc, err := bridge.Expose(ctx, ap, "echo", echotest.TCP(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Close() })
	bc, err := bridge.Dial(ctx, bp, alice.PeerID(), "echo", bridge.WithStrategies(bridge.Relay))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bc.Close() })
	echo := func(c net.Conn, msg string) {
		t.Helper()
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, len(msg))
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != msg {
			t.Fatalf("echo %q over a bridge session: %q, %v", msg, buf, err)
		}
	}
	echo(bc, "before")
	// peerbus.bridge.<dialer>.<exposer>.<session>
	session := bridge.SessionSubjectPrefix + bob.PeerID() + "." + alice.PeerID() + "." + bc.Result().Session

	m := connect(t, nm.ClientURL(), mallory)
	sub := func(what, subject string) {
		t.Helper()
		if _, err := m.nc.Subscribe(subject, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		m.v.waitFor(t, what, subject)
	}
	pub := func(what, subject string, data string) {
		t.Helper()
		if err := m.nc.Publish(subject, []byte(data)); err != nil {
			t.Fatal(err)
		}
		m.v.waitFor(t, what, subject)
	}
	// SUB > to read every call, reply and event.
	sub("read everything", ">")
	sub("read alice's calls", "peerbus.call."+alice.PeerID()+".>")
	sub("read others' replies", "_INBOX.>")
	sub("read bob's replies", identity.InboxPrefix(bob.PeerID())+".>")
	sub("read events", "peerbus.evt.>")
	// A forged queue responder on the any subject of a tag it was not
	// granted to serve.
	if _, err := m.nc.QueueSubscribe("peerbus.any.calc.add", "peerbus", func(msg *nats.Msg) {
		r := nats.NewMsg(msg.Reply)
		r.Header.Set(peer.HeaderPeer, alice.PeerID())
		r.Header.Set(peer.HeaderStatus, "ok")
		r.Data = []byte("666")
		_ = m.nc.PublishMsg(r)
	}); err != nil {
		t.Fatal(err)
	}
	m.v.waitFor(t, "serve calc.add on the any subject", "peerbus.any.calc.add")
	sub("serve calc.add on the fan-out subject", "peerbus.all.calc.add")
	sub("serve calc.add in alice's group", "peerbus.gany.shop.calc.add")
	// Presence under alice's id.
	pub("announce presence for alice", "peerbus.presence.hb."+alice.PeerID(), `{"id":"`+alice.PeerID()+`"}`)
	// The JetStream API beyond reading.
	pub("purge the log", "$JS.API.STREAM.PURGE.PEERBUS_EVENTS", "{}")
	pub("delete the log", "$JS.API.STREAM.DELETE.PEERBUS_EVENTS", "")
	pub("update the log", "$JS.API.STREAM.UPDATE.PEERBUS_EVENTS", `{"name":"PEERBUS_EVENTS","max_msgs":1,"discard":"new"}`)
	pub("read the log", "$JS.API.CONSUMER.CREATE.PEERBUS_EVENTS", "{}")
	// Events under another id or group, and its own.
	pub("emit as alice", "peerbus.evt.shop."+alice.PeerID()+".order.created", "{}")
	pub("emit in another group", "peerbus.evt.shop."+mallory.PeerID()+".order.created", "{}")
	pub("emit", "peerbus.evt._."+mallory.PeerID()+".order.created", "{}")
	// Bridge sessions.
	pub("junk on a bridge session", session+".e", "junk")
	sub("listen to a bridge session", session+".d")
	// The reflection attack: a request whose reply subject is the
	// JetStream API gets no answer with the API's permissions.
	pub("reply onto the JetStream API", "$JS.API.STREAM.PURGE.PEERBUS_EVENTS", "")

	// Forged presence: answers to every query on its reply inbox, with a
	// phantom peer and with alice's id serving a tag she does not, and
	// an answer on alice's bound answer subject.
	phantom := `{"v":2,"rev":9,"id":"00000000-0000-4000-8000-000000000666","name":"phantom","tags":["calc.add","info","ping"]}`
	fakeAlice := `{"v":2,"rev":9,"id":"` + alice.PeerID() + `","name":"fake","tags":["calc.add","calc.mul","info","ping"]}`
	if _, err := m.nc.Subscribe("peerbus.presence.query", func(q *nats.Msg) {
		_ = m.nc.Publish(q.Reply, []byte(phantom))
		_ = m.nc.Publish(q.Reply, []byte(fakeAlice))
	}); err != nil {
		t.Fatal(err)
	}
	if err := m.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	pub("answer a query as alice", peer.AnswerSubject("tok", alice.PeerID()), fakeAlice)
	infos, err := bp.Peers(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range infos {
		if i.Name == "phantom" || i.Name == "fake" || i.HasTag("calc.mul") {
			t.Fatalf("bob lists a forged peer: %+v", i)
		}
	}
	if !slices.ContainsFunc(infos, func(i peer.Info) bool { return i.ID == alice.PeerID() && i.HasTag("calc.add") }) {
		t.Fatalf("bob does not list alice: %v", infos)
	}
	// A fan-out waits for alice alone and gets her answer, not a timeout
	// for a phantom.
	replies, err := bp.CallAll(ctx, "calc.add", []byte("[1,2]"), peer.Timeout(20*time.Second))
	if err != nil || len(replies) != 1 || replies[0].Peer != alice.PeerID() || replies[0].Err != nil {
		t.Fatalf("bob's fan-out with forged presence: %+v, %v", replies, err)
	}

	// Bob may read order.>, through a consumer filtered to it only.
	for _, subj := range []string{
		"$JS.API.CONSUMER.CREATE.PEERBUS_EVENTS.spy",
		"$JS.API.CONSUMER.CREATE.PEERBUS_EVENTS.spy.peerbus.evt.>",
		"$JS.API.CONSUMER.DURABLE.CREATE.PEERBUS_EVENTS.spy",
	} {
		if err := b.nc.Publish(subj, []byte(`{"stream_name":"PEERBUS_EVENTS","config":{}}`)); err != nil {
			t.Fatal(err)
		}
		b.v.waitFor(t, "read beyond the read grant", subj)
	}
	// Its own grant still works, and every legitimate call, emit and
	// replay goes on; mallory's forged responder got none of bob's calls.
	mp, err := peer.New(m.nc, peer.WithIdentity(mallory), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mp.Close() })
	for i := 0; i < 5; i++ {
		if out, err := mp.Call(ctx, "calc.add", []byte("[1,1]"), peer.OnAny()); err != nil || string(out) != "2" {
			t.Fatalf("mallory's granted call: %q, %v", out, err)
		}
	}
	// A call it was not granted fails with a typed error naming the
	// subject, not with a timeout.
	cctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	_, err = mp.Call(cctx, "calc.mul", nil, peer.OnAny())
	if !errors.Is(err, peer.ErrPermission) || !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), "peerbus.any.calc.mul") {
		t.Fatalf("call of a tag not granted: %v, want ErrPermission naming the subject", err)
	}
	if _, err := mp.CallAll(cctx, "calc.mul", nil); !errors.Is(err, peer.ErrPermission) {
		t.Fatalf("fan-out call of a tag not granted: %v, want ErrPermission", err)
	}
	// Serving a tag it was not granted fails at Register, naming the
	// subject, rather than serving nothing in silence.
	ms, err := peer.New(connect(t, nm.ClientURL(), mallory).nc, peer.WithIdentity(mallory))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ms.Close() })
	if _, err := peer.Register(ms, "calc.add", func(context.Context, [2]int) (int, error) { return 666, nil }); !errors.Is(err, peer.ErrPermission) || !strings.Contains(err.Error(), `.calc.add" (the policy does not grant serving it)`) {
		t.Fatalf("register of a tag not granted: %v, want ErrPermission naming the subject", err)
	}
	if ms.Info().HasTag("calc.add") {
		t.Fatal("a refused tag is still listed as served")
	}
	// An event name alice was not granted fails with ErrPermission
	// naming the subject, not with a timeout or an unknown outcome.
	if _, err := alog.Emit(cctx, "payment.done", nil); !errors.Is(err, peer.ErrPermission) || !strings.Contains(err.Error(), "payment.done") {
		t.Fatalf("emit of a name not granted: %v, want ErrPermission naming the subject", err)
	}
	legit(2)
	for i := 3; i < 8; i++ {
		legit(i)
	}
	bridgeAttack(t, eve, nm, session, alice.PeerID())
	echo(bc, "after the attacks")
}

// bridgeAttack has eve, who may dial and expose, try bob's session with
// alice (subjects stem session), then dial alice's echo herself.
func bridgeAttack(t *testing.T, eve *identity.Identity, nm *bus.Node, session, alice string) {
	t.Helper()
	e := connect(t, nm.ClientURL(), eve)
	for _, subj := range []string{session + ".d", session + ".e", session + ".ctl", session + ".>",
		"peerbus.bridge.*." + alice + ".>", "peerbus.bridge.>"} {
		if _, err := e.nc.Subscribe(subj, func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		e.v.waitFor(t, "eve listens to a session she is not part of", subj)
	}
	for _, subj := range []string{session + ".d", session + ".e", session + ".ctl"} {
		for _, data := range []string{"junk", `{"op":"close"}`, `{"op":"reverse","timeout_ms":1000}`} {
			if err := e.nc.Publish(subj, []byte(data)); err != nil {
				t.Fatal(err)
			}
		}
		e.v.waitFor(t, "eve publishes on a session she is not part of", subj)
	}
	// Her own grant works: a session of her own with alice.
	ep, err := peer.New(e.nc, peer.WithIdentity(eve), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ep.Close() })
	ec, err := bridge.Dial(context.Background(), ep, alice, "echo", bridge.WithStrategies(bridge.Relay))
	if err != nil {
		t.Fatalf("eve dials echo, as granted: %v", err)
	}
	defer ec.Close()
	msg := "eve's own session"
	if _, err := ec.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	_ = ec.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(ec, buf); err != nil || string(buf) != msg {
		t.Fatalf("eve's session: %q, %v", buf, err)
	}
}

func TestUnknownAndMissingIdentityRejected(t *testing.T) {
	known := newID(t)
	pol, err := policy.Parse([]byte("users:\n  - {name: k, key: "+known.PublicKey()+", role: observer, read: [x]}\n"), "p.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream(), bus.WithPolicy(pol))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	if _, err := nats.Connect(n.ClientURL(), nats.NoReconnect()); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("no identity: %v", err)
	}
	if _, err := nats.Connect(n.ClientURL(), append(newID(t).ConnectOptions(), nats.NoReconnect())...); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("unknown key: %v", err)
	}
	nc, err := nats.Connect(n.ClientURL(), known.ConnectOptions()...)
	if err != nil {
		t.Fatalf("known key: %v", err)
	}
	nc.Close()
}

// A reload revokes a grant for new subscriptions without dropping the
// connection, and drops an identity no longer listed.
func TestReloadRevokes(t *testing.T) {
	reader, gone := newID(t), newID(t)
	parse := func(read string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse([]byte(fmt.Sprintf("users:\n  - {name: r, key: %s, role: peer, read: [%s]}\n  - {name: g, key: %s, role: peer}\n",
			reader.PublicKey(), read, gone.PublicKey())), "p.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream(), bus.WithPolicy(parse("a, b")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	r := connect(t, n.ClientURL(), reader)
	g := connect(t, n.ClientURL(), gone)
	if _, err := r.nc.SubscribeSync("peerbus.evt.*.*.a"); err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	only, err := policy.Parse([]byte(fmt.Sprintf("users:\n  - {name: r, key: %s, role: peer, read: [b]}\n", reader.PublicKey())), "p2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := n.ReloadPolicy(only); err != nil {
		t.Fatal(err)
	}
	if _, err := r.nc.SubscribeSync("peerbus.evt.*.*.a"); err != nil {
		t.Fatal(err)
	}
	r.v.waitFor(t, "subscribe a revoked read", "peerbus.evt.*.*.a")
	if _, err := r.nc.SubscribeSync("peerbus.evt.*.*.b"); err != nil {
		t.Fatal(err)
	}
	if err := r.nc.Flush(); err != nil || !r.nc.IsConnected() {
		t.Fatalf("reader after the reload: %v, connected %v", err, r.nc.IsConnected())
	}
	deadline := time.Now().Add(10 * time.Second)
	for g.nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("an identity no longer listed stays connected")
		}
		_ = g.nc.Flush()
	}
	if _, err := nats.Connect(n.ClientURL(), append(gone.ConnectOptions(), nats.NoReconnect())...); !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("an identity no longer listed connects: %v", err)
	}
}

// policyNode starts a node enforcing the policy users, a YAML list of
// users whose %s are the public keys of ids.
func policyNode(t *testing.T, users string, ids ...*identity.Identity) *bus.Node {
	t.Helper()
	keys := make([]any, len(ids))
	for i, id := range ids {
		keys[i] = id.PublicKey()
	}
	pol, err := policy.Parse([]byte("users:\n"+fmt.Sprintf(users, keys...)), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(t.TempDir()), bus.WithPolicy(pol))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// TestReplyInAnothersName has trudy, granted to serve the same tag as
// alice, answer bob's calls with a raw connection in alice's name: on
// the caller's reply subject, on alice's bound reply subject, and on her
// own with alice's id in the headers and the payload. The first two are
// permissions violations; the third reaches bob as trudy's reply. She
// cannot publish into bob's inboxes either (the delivery subjects of his
// replays among them).
func TestReplyInAnothersName(t *testing.T) {
	alice, bob, trudy := newID(t), newID(t), newID(t)
	n := policyNode(t, `
  - {name: alice, key: %s, role: peer, serve: [calc.add]}
  - {name: bob, key: %s, role: peer, call: [calc.add]}
  - {name: trudy, key: %s, role: peer, serve: [calc.add]}
`, alice, bob, trudy)
	ctx := context.Background()
	ap, err := peer.New(connect(t, n.ClientURL(), alice).nc, peer.WithIdentity(alice))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ap.Close() })
	if _, err := peer.Register(ap, "calc.add", func(_ context.Context, in [2]int) (int, error) { return in[0] + in[1], nil }); err != nil {
		t.Fatal(err)
	}
	b := connect(t, n.ClientURL(), bob)
	bp, err := peer.New(b.nc, peer.WithIdentity(bob), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bp.Close() })

	tr := connect(t, n.ClientURL(), trudy)
	forged := `{"peer":"` + alice.PeerID() + `","tag":"calc.add","code":"internal","message":"forged"}`
	answer := func(msg *nats.Msg) {
		for _, subj := range []string{msg.Reply, msg.Reply + "." + alice.PeerID(), peer.ReplySubject(msg.Reply, trudy.PeerID())} {
			r := nats.NewMsg(subj)
			r.Header.Set(peer.HeaderPeer, alice.PeerID())
			r.Header.Set(peer.HeaderStatus, "error")
			r.Data = []byte(forged)
			_ = tr.nc.PublishMsg(r)
		}
	}
	got := make(chan string, 1)
	if _, err := tr.nc.QueueSubscribe("peerbus.any.calc.add", "peerbus", func(msg *nats.Msg) {
		answer(msg)
		select {
		case got <- msg.Reply:
		default:
		}
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.nc.Subscribe("peerbus.all.calc.add", answer); err != nil {
		t.Fatal(err)
	}
	if err := tr.nc.Flush(); err != nil {
		t.Fatal(err)
	}

	// Bob's calls on any peer: alice's answers are hers; trudy's reach
	// him in trudy's name, whatever her headers and payload say.
	var reply string
	for i := 0; reply == ""; i++ {
		if i == 200 {
			t.Fatal("no call of bob's reached trudy in 200 calls")
		}
		out, err := bp.Call(ctx, "calc.add", []byte("[2,3]"), peer.OnAny())
		var re *peer.RemoteError
		switch {
		case err == nil && string(out) == "5":
		case errors.As(err, &re) && re.Peer == trudy.PeerID() && re.Message == "forged":
		default:
			t.Fatalf("call %d: %q, %v (as remote error: %+v); want alice's 5 or trudy's own error", i, out, err, re)
		}
		select {
		case reply = <-got:
		default:
		}
	}
	tr.v.waitFor(t, "reply on the caller's reply subject", reply)
	tr.v.waitFor(t, "reply on alice's bound reply subject", reply+"."+alice.PeerID())

	// A fan-out: one reply from each, each in its own name.
	replies, err := bp.CallAll(ctx, "calc.add", []byte("[1,2]"), peer.Timeout(20*time.Second))
	if err != nil || len(replies) != 2 {
		t.Fatalf("fan-out: %+v, %v; want 2 replies", replies, err)
	}
	for _, r := range replies {
		var re *peer.RemoteError
		switch r.Peer {
		case alice.PeerID():
			if r.Err != nil || string(r.Data) != "3" {
				t.Fatalf("alice's fan-out reply: %q, %v", r.Data, r.Err)
			}
		case trudy.PeerID():
			if !errors.As(r.Err, &re) || re.Peer != trudy.PeerID() {
				t.Fatalf("trudy's fan-out reply: %q, %v", r.Data, r.Err)
			}
		default:
			t.Fatalf("fan-out reply from %s", r.Peer)
		}
	}

	// Bob's inboxes, the replay delivery subjects among them, and a bound
	// reply in alice's name to a request trudy never saw.
	for _, subj := range []string{
		identity.InboxPrefix(bob.PeerID()) + ".x",
		identity.InboxPrefix(bob.PeerID()) + ".x.y",
		identity.InboxPrefix(bob.PeerID()) + ".x." + peer.BoundReplyMark + "1." + alice.PeerID(),
	} {
		if err := tr.nc.Publish(subj, []byte("5")); err != nil {
			t.Fatal(err)
		}
		tr.v.waitFor(t, "publish into bob's inbox", subj)
	}
}

// A transient emit the policy does not grant fails with ErrPermission
// naming the subject rather than vanishing: at once on the first emit of
// the name, and on the emits after a reload that revokes a grant; a
// reload that grants a refused name lets its emits through again.
func TestTransientEmitRefused(t *testing.T) {
	alice := newID(t)
	parse := func(emit string) *policy.Policy {
		t.Helper()
		p, err := policy.Parse([]byte(fmt.Sprintf("users:\n  - {name: alice, key: %s, role: peer, emit: [%s]}\n", alice.PublicKey(), emit)), "p.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	n, err := bus.Start(context.Background(), bus.WithListen("127.0.0.1:-1"), bus.WithDataDir(t.TempDir()), bus.WithPolicy(parse("order.*")))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ap, err := peer.New(connect(t, n.ClientURL(), alice).nc, peer.WithIdentity(alice), peer.AsClient())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ap.Close() })
	alog, err := eventlog.New(ap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alog.Close() })
	ctx := context.Background()
	refused := func(name string, err error) bool {
		return errors.Is(err, peer.ErrPermission) && errors.Is(err, nats.ErrPermissionViolation) &&
			strings.Contains(err.Error(), `"`+eventlog.TransientSubject("", alice.PeerID(), name)+`"`)
	}
	if _, err := alog.EmitTransient(ctx, "order.progress", 1); err != nil {
		t.Fatalf("granted transient emit: %v", err)
	}
	for i := 0; i < 3; i++ {
		if _, err := alog.EmitTransient(ctx, "payment.done", 1); !refused("payment.done", err) {
			t.Fatalf("transient emit %d of a name not granted: %v, want ErrPermission naming the subject", i, err)
		}
	}
	// A revoked grant: the server's refusal of an emit reaches the next.
	if err := n.ReloadPolicy(parse("payment.*")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := alog.EmitTransient(ctx, "order.progress", 2)
		if refused("order.progress", err) {
			break
		}
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("transient emits after the grant was revoked: %v, want ErrPermission", err)
		}
		if err := ap.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
	}
	// The name now granted goes through once its refusal is checked
	// again.
	for {
		_, err := alog.EmitTransient(ctx, "payment.done", 2)
		if err == nil {
			break
		}
		if !refused("payment.done", err) || time.Now().After(deadline) {
			t.Fatalf("transient emits of a name granted by a reload: %v", err)
		}
		if err := ap.Conn().Flush(); err != nil {
			t.Fatal(err)
		}
	}
}

// A reader granted only event names replays, counts and subscribes
// from several peers or groups at once: the server gets one filter
// within its grant, and the reader keeps the peers and groups asked for.
func TestMultiFilterReadWithoutLogAdmin(t *testing.T) {
	alice, carol, dave, bob := newID(t), newID(t), newID(t), newID(t)
	n := policyNode(t, `
  - {name: alice, key: %s, role: peer, group: shop, emit: [order.*]}
  - {name: carol, key: %s, role: peer, emit: [order.*]}
  - {name: dave, key: %s, role: peer, group: depot, emit: [order.*]}
  - {name: bob, key: %s, role: peer, read: [order.>]}
`, alice, carol, dave, bob)
	ctx := context.Background()
	np, err := peer.New(n.Conn())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = np.Close() })
	nlog, err := eventlog.New(np)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nlog.Emit(ctx, "node.started", nil); err != nil { // the node's peer creates the log
		t.Fatal(err)
	}
	logOf := func(id *identity.Identity, group string) *eventlog.Log {
		t.Helper()
		p, err := peer.New(connect(t, n.ClientURL(), id).nc, peer.WithIdentity(id), peer.WithGroup(group), peer.AsClient())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		l, err := eventlog.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	emitters := map[string]*eventlog.Log{
		alice.PeerID(): logOf(alice, "shop"), carol.PeerID(): logOf(carol, ""), dave.PeerID(): logOf(dave, "depot"),
	}
	emitted := map[string]int{}
	emit := func(id string) {
		t.Helper()
		if _, err := emitters[id].Emit(ctx, "order.created", nil); err != nil {
			t.Fatal(err)
		}
		emitted[id]++
	}
	for range 3 {
		for id := range emitters {
			emit(id)
		}
	}
	blog := logOf(bob, "")
	for _, tc := range []struct {
		name   string
		filter eventlog.Filter
		want   map[string]bool
	}{
		{"peers", eventlog.FromPeers(alice.PeerID(), carol.PeerID()), map[string]bool{alice.PeerID(): true, carol.PeerID(): true}},
		{"groups", eventlog.FromGroups("shop", ""), map[string]bool{alice.PeerID(): true, carol.PeerID(): true}},
		{"groups and peers", eventlog.FromGroups("shop", "depot"), map[string]bool{alice.PeerID(): true, dave.PeerID(): true}},
	} {
		want := 0
		for id := range tc.want {
			want += emitted[id]
		}
		got := 0
		for e, err := range blog.Replay(ctx, "order.>", eventlog.FromStart(), tc.filter) {
			if err != nil {
				t.Fatalf("%s: replay: %v", tc.name, err)
			}
			if !tc.want[e.Peer] {
				t.Fatalf("%s: replay gave an event of %s", tc.name, e.Peer)
			}
			got++
		}
		if got != want {
			t.Fatalf("%s: replayed %d events, want %d", tc.name, got, want)
		}
		if c, err := blog.Count(ctx, "order.>", tc.filter); err != nil || c != uint64(want) {
			t.Fatalf("%s: count %d, %v; want %d", tc.name, c, err, want)
		}
		seen := make(chan string, 64)
		sub, err := blog.Subscribe("order.>", func(_ context.Context, e eventlog.Event) error {
			seen <- e.Peer
			return nil
		}, eventlog.FromStart(), tc.filter)
		if err != nil {
			t.Fatalf("%s: subscribe: %v", tc.name, err)
		}
		for range want {
			if p := <-seen; !tc.want[p] {
				t.Fatalf("%s: subscription gave an event of %s", tc.name, p)
			}
		}
		// Later events: of a peer not asked for (none, unless asked for)
		// then of one asked for, which comes next.
		emit(carol.PeerID())
		for id := range tc.want {
			emit(id)
			if p := <-seen; !tc.want[p] {
				t.Fatalf("%s: subscription gave a live event of %s", tc.name, p)
			}
			break
		}
		_ = sub.Close()
	}
}
