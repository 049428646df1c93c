package policy_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/peerbus/peerbus/bridge"
	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/peer"
	"github.com/peerbus/peerbus/policy"
)

func TestExampleParses(t *testing.T) {
	p, err := policy.Load("../docs/policy.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Users) < 3 {
		t.Fatalf("example has %d users", len(p.Users))
	}
}

func TestBadPolicyNamesLineAndField(t *testing.T) {
	key := func() string { id, _ := identity.New(); return id.PublicKey() }
	for _, c := range []struct{ name, in, want string }{
		{"empty", "", "p.yaml"},
		{"no users", "users: []\n", "no users"},
		{"unknown top field", "usres: []\n", `p.yaml:1: unknown field "usres"`},
		{"unknown user field", "users:\n  - name: a\n    key: " + key() + "\n    role: peer\n    serv: [x]\n", `p.yaml:5: unknown field "serv"`},
		{"bad key", "users:\n  - {name: a, key: Uxyz, role: peer}\n", `p.yaml:2: user "a": field key`},
		{"bad role", "users:\n  - {name: a, key: " + key() + ", role: root}\n", "field role"},
		{"no role", "users:\n  - {name: a, key: " + key() + "}\n", "field role"},
		{"bad tag", "users:\n  - {name: a, key: " + key() + ", role: peer, serve: ['a b']}\n", "field serve"},
		{"observer calls", "users:\n  - {name: a, key: " + key() + ", role: observer, call: [x]}\n", "field call"},
		{"bad group", "users:\n  - {name: a, key: " + key() + ", role: peer, group: a.b}\n", "field group"},
		{"syntax", "users: [\n", "p.yaml"},
	} {
		_, err := policy.Parse([]byte(c.in), "p.yaml")
		if !errors.Is(err, policy.ErrPolicy) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrPolicy naming %q", c.name, err, c.want)
		}
	}
	k := key()
	if _, err := policy.Parse([]byte("users:\n  - {name: a, key: "+k+", role: peer}\n  - {name: b, key: "+k+", role: peer}\n"), "p.yaml"); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("duplicate key: %v", err)
	}
	if _, err := policy.Parse([]byte(`{"users":[{"name":"j","key":"`+k+`","role":"peer","call":["x"]}]}`), "p.json"); err != nil {
		t.Errorf("JSON policy: %v", err)
	}
}

// The subjects the policy grants are those of the packages.
func TestSubjectsMatchPackages(t *testing.T) {
	id, _ := identity.New()
	u := policy.User{Key: id.PublicKey(), Role: policy.RolePeer, Group: "g", Serve: []string{"t"}, Call: []string{"t"},
		Emit: []string{"e"}, Read: []string{"e"}, Expose: []string{"s"}}
	perms := u.Permissions()
	has := func(list []string, s string) bool {
		for _, x := range list {
			if x == s {
				return true
			}
		}
		return false
	}
	for _, s := range []string{peer.AnySubject("t"), peer.AllSubject("t"), peer.GroupAnySubject("g", "t"), peer.CallSubject(id.PeerID(), ">"),
		peer.AnySubject(bridge.OpenTag("s")), peer.PresenceQuerySubject} {
		if !has(perms.Subscribe.Allow, s) {
			t.Errorf("serve: %s not granted: %v", s, perms.Subscribe.Allow)
		}
	}
	for _, s := range []string{peer.AnySubject("t"), peer.AllSubject("t"), eventlog.Subject("g", id.PeerID(), "e"), eventlog.TransientSubject("g", id.PeerID(), "e")} {
		if !has(perms.Publish.Allow, s) {
			t.Errorf("publish: %s not granted: %v", s, perms.Publish.Allow)
		}
	}
	if !strings.HasPrefix(bridge.SessionSubjectPrefix, "peerbus.bridge.") {
		t.Errorf("bridge sessions moved: %s", bridge.SessionSubjectPrefix)
	}
}

func FuzzParse(f *testing.F) {
	example, err := os.ReadFile("../docs/policy.example.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(`{"users":[{"name":"j","key":"UDXU4RCSJNZOIQHZNWXHXORDPRTGNJAHAHFRGZNEEJCPQTT2M7NLCNF4","role":"peer","call":["x"]}]}`))
	f.Add([]byte("users:\n  - {name: a, key: Uxyz, role: peer}\n"))
	f.Add([]byte("users: [\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := policy.Parse(b, "f.yaml")
		if err != nil {
			if !errors.Is(err, policy.ErrPolicy) {
				t.Fatalf("error %v does not wrap ErrPolicy", err)
			}
			return
		}
		// A policy that parses compiles, and every user is bound to its
		// key's id.
		for _, u := range p.NkeyUsers() {
			if !identity.IsPublicKey(u.Nkey) {
				t.Fatalf("user %q", u.Nkey)
			}
		}
		_ = p.NATSConfig()
	})
}
