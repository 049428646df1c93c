// Package policy is the authorization policy of a node: which
// identities (public nkeys) may connect and what each may do, compiled
// into nats-server permissions (publish and subscribe allow lists per
// nkey). The NATS server enforces them; peerbus checks nothing in the
// message path.
//
// A policy file is YAML (or JSON, which YAML reads), see
// docs/policy.example.yaml and SECURITY.md:
//
//	users:
//	  - name: alice
//	    key: UAB...            # public user nkey (peerbus keygen)
//	    role: peer             # admin, peer or observer
//	    group: shop            # the group of alice's peer ("" for none)
//	    serve: [calc.add]      # tags alice may serve
//	    call: [calc.>]         # tags alice may call
//	    emit: [order.*]        # event names alice may emit
//	    read: [order.>]        # event names alice may read (live and log)
//	    log_admin: false       # purge, delete, update the event log
//	    expose: [ssh]          # bridge services alice may expose
//	    dial: [ssh]            # bridge services alice may dial
//
// The peer id of an identity is identity.PeerID of its key: a user may
// publish and subscribe only the subjects of that id (its direct call
// subject, its presence, its events, its reply inboxes _INBOX.<id>.>),
// so no connection can claim another's id. A user publishes replies only
// as bound replies, on _INBOX.<caller>.<inbox>.pbb-<n>.<its id> (see
// peer.ReplySubject): a reply names its responder in a token the server
// checks, and no user can publish into another's inbox, the delivery
// subjects of its event replays among them. Response permissions
// (allow_responses) are not used, because they let a user "reply" to a
// request whose reply subject is any subject, a JetStream API subject
// among them.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"go.yaml.in/yaml/v3"

	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/internal/names"
)

// ErrPolicy reports a policy that cannot be used; the message names the
// file, the line and the field.
var ErrPolicy = errors.New("policy: invalid policy")

// Roles.
const (
	// RoleAdmin may do everything, the JetStream API included.
	RoleAdmin = "admin"
	// RolePeer may serve, call, emit, read, expose and dial what its
	// entry lists, and administer the event log with LogAdmin.
	RolePeer = "peer"
	// RoleObserver may list peers and read the events its entry lists;
	// it calls and serves nothing and emits nothing.
	RoleObserver = "observer"
)

// Policy is a parsed policy.
type Policy struct {
	// Users are the identities allowed to connect.
	Users []User `yaml:"users" json:"users"`
}

// User is one identity of a policy and its grants.
type User struct {
	Name     string   `yaml:"name" json:"name"`
	Key      string   `yaml:"key" json:"key"`
	Role     string   `yaml:"role" json:"role"`
	Group    string   `yaml:"group" json:"group"`
	Serve    []string `yaml:"serve" json:"serve"`
	Call     []string `yaml:"call" json:"call"`
	Emit     []string `yaml:"emit" json:"emit"`
	Read     []string `yaml:"read" json:"read"`
	LogAdmin bool     `yaml:"log_admin" json:"log_admin"`
	Expose   []string `yaml:"expose" json:"expose"`
	Dial     []string `yaml:"dial" json:"dial"`

	line int
}

// PeerID returns the peer id of the user's key.
func (u User) PeerID() string { id, _ := identity.PeerID(u.Key); return id }

// Load reads and checks the policy file at path.
func Load(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPolicy, err)
	}
	return Parse(b, path)
}

// Parse parses and checks a policy; name (a file name) goes into error
// messages.
func Parse(data []byte, name string) (*Policy, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPolicy, name, err)
	}
	var p Policy
	if err := root.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrPolicy, name, err)
	}
	if err := strictFields(&root, name); err != nil {
		return nil, err
	}
	// Lines of the user entries, for the messages below.
	if len(root.Content) == 1 && root.Content[0].Kind == yaml.MappingNode {
		m := root.Content[0]
		for i := 0; i+1 < len(m.Content); i += 2 {
			if m.Content[i].Value == "users" && m.Content[i+1].Kind == yaml.SequenceNode {
				for j, u := range m.Content[i+1].Content {
					if j < len(p.Users) {
						p.Users[j].line = u.Line
					}
				}
			}
		}
	}
	if err := p.check(name); err != nil {
		return nil, err
	}
	return &p, nil
}

// strictFields refuses unknown fields (a misspelt grant would otherwise
// grant nothing, silently).
func strictFields(root *yaml.Node, name string) error {
	known := map[string]bool{}
	for _, f := range []string{"name", "key", "role", "group", "serve", "call", "emit", "read", "log_admin", "expose", "dial"} {
		known[f] = true
	}
	if len(root.Content) != 1 || root.Content[0].Kind != yaml.MappingNode {
		return fmt.Errorf("%w: %s: want a mapping with a \"users\" list", ErrPolicy, name)
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		k := m.Content[i]
		if k.Value != "users" {
			return fmt.Errorf("%w: %s:%d: unknown field %q (want \"users\")", ErrPolicy, name, k.Line, k.Value)
		}
		for _, u := range m.Content[i+1].Content {
			if u.Kind != yaml.MappingNode {
				return fmt.Errorf("%w: %s:%d: a user is a mapping", ErrPolicy, name, u.Line)
			}
			for j := 0; j+1 < len(u.Content); j += 2 {
				if f := u.Content[j]; !known[f.Value] {
					return fmt.Errorf("%w: %s:%d: unknown field %q of a user", ErrPolicy, name, f.Line, f.Value)
				}
			}
		}
	}
	return nil
}

// check checks every user.
func (p *Policy) check(name string) error {
	if len(p.Users) == 0 {
		return fmt.Errorf("%w: %s: no users", ErrPolicy, name)
	}
	seen := map[string]int{}
	for i := range p.Users {
		u := &p.Users[i]
		at := fmt.Sprintf("%s:%d: user %q", name, u.line, u.Name)
		if !identity.IsPublicKey(u.Key) {
			return fmt.Errorf("%w: %s: field key: %q is not a public user nkey (peerbus keygen prints one)", ErrPolicy, at, u.Key)
		}
		if l, dup := seen[u.Key]; dup {
			return fmt.Errorf("%w: %s: field key: also the key of the user at line %d", ErrPolicy, at, l)
		}
		seen[u.Key] = u.line
		switch u.Role {
		case RoleAdmin, RolePeer, RoleObserver:
		case "":
			return fmt.Errorf("%w: %s: field role: missing (admin, peer or observer)", ErrPolicy, at)
		default:
			return fmt.Errorf("%w: %s: field role: %q (want admin, peer or observer)", ErrPolicy, at, u.Role)
		}
		if u.Group != "" {
			if err := names.Token(u.Group); err != nil {
				return fmt.Errorf("%w: %s: field group: %q: %v", ErrPolicy, at, u.Group, err)
			}
		}
		for _, f := range []struct {
			field string
			list  []string
		}{{"serve", u.Serve}, {"call", u.Call}, {"emit", u.Emit}, {"read", u.Read}, {"expose", u.Expose}, {"dial", u.Dial}} {
			for _, s := range f.list {
				if err := names.Tokens(s, true); err != nil {
					return fmt.Errorf("%w: %s: field %s: %q: %v", ErrPolicy, at, f.field, s, err)
				}
			}
			if u.Role == RoleObserver && len(f.list) > 0 && f.field != "read" {
				return fmt.Errorf("%w: %s: field %s: an observer may only read", ErrPolicy, at, f.field)
			}
		}
		if u.Role == RoleObserver && u.LogAdmin {
			return fmt.Errorf("%w: %s: field log_admin: an observer may only read", ErrPolicy, at)
		}
	}
	return nil
}

// Subject layout (docs/PROTOCOL.md); package policy_test checks these
// against packages peer, eventlog and bridge.
const (
	subjCall     = "peerbus.call."
	subjAny      = "peerbus.any."
	subjGroupAny = "peerbus.gany."
	subjAll      = "peerbus.all."
	subjPresence = "peerbus.presence."
	subjQuery    = "peerbus.presence.query"
	subjEvt      = "peerbus.evt."
	subjTevt     = "peerbus.tevt."
	subjBridge   = "peerbus.bridge."
	bridgeOpen   = "bridge.open."
	noGroup      = "_"
	jsAPI        = "$JS.API."
)

// builtinTags are served and callable by every peer.
var builtinTags = []string{"info", "ping"}

// Permissions returns the nats-server permissions of u (nil for an
// admin: everything). A reader may create consumers of the event log
// only in the filtered form ($JS.API.CONSUMER.CREATE.<stream>.<name>.<filter>)
// with a filter within its read grants: package eventlog reads from
// several groups or peers at once through the one subject covering them,
// and a durable filtered by several (the unfiltered form) needs the admin
// role or log_admin.
func (u User) Permissions() *server.Permissions {
	if u.Role == RoleAdmin {
		return nil
	}
	id := u.PeerID()
	g := u.Group
	if g == "" {
		g = noGroup
	}
	var pub, sub []string
	// Reply inboxes: its own to subscribe; every inbox to reply to.
	sub = append(sub, identity.InboxPrefix(id)+".>")
	// Presence: announce its own id, hear every peer, ask.
	sub = append(sub, subjPresence+"*.*", subjPresence+"ans.*.*")
	pub = append(pub, subjQuery)
	// Reading events, live and from the log.
	stream := names.LogStream
	for _, n := range u.Read {
		sub = append(sub, subjEvt+"*.*."+n, subjTevt+"*.*."+n)
	}
	if len(u.Read) > 0 || len(u.Emit) > 0 {
		pub = append(pub, jsAPI+"INFO", jsAPI+"STREAM.INFO."+stream)
	}
	for _, n := range u.Read {
		// Only the filtered create form, its filter within the grant:
		// the server checks that the filter is the consumer's.
		pub = append(pub, jsAPI+"CONSUMER.CREATE."+stream+".*."+subjEvt+"*.*."+n)
	}
	if len(u.Read) > 0 {
		pub = append(pub,
			jsAPI+"CONSUMER.INFO."+stream+".*",
			jsAPI+"CONSUMER.MSG.NEXT."+stream+".*",
			jsAPI+"CONSUMER.DELETE."+stream+".*",
			"$JS.ACK."+stream+".>",
			"$JS.FC."+stream+".>")
	}
	if u.LogAdmin {
		pub = append(pub, jsAPI+">")
	}
	if u.Role == RolePeer {
		// Replies: bound replies only, "<caller's reply subject>.<id>".
		pub = append(pub, identity.InboxRoot+".*.*.*."+id, subjPresence+"*."+id, subjPresence+"ans.*."+id)
		sub = append(sub, subjQuery, subjCall+id+".>")
		// Micro discovery, answered by every serving peer.
		sub = append(sub, "$SRV.*", "$SRV.*.peerbus", "$SRV.*.peerbus."+id)
		serve := append(slices.Clone(builtinTags), u.Serve...)
		for _, s := range u.Expose {
			serve = append(serve, bridgeOpen+s)
		}
		for _, t := range serve {
			sub = append(sub, subjAny+t, subjAll+t)
			if u.Group != "" {
				sub = append(sub, subjGroupAny+u.Group+"."+t)
			}
		}
		call := append(slices.Clone(builtinTags), u.Call...)
		for _, s := range u.Dial {
			call = append(call, bridgeOpen+s)
		}
		for _, t := range call {
			pub = append(pub, subjAny+t, subjAll+t, subjGroupAny+"*."+t, subjCall+"*."+t)
		}
		for _, n := range u.Emit {
			pub = append(pub, subjEvt+g+"."+id+"."+n, subjTevt+g+"."+id+"."+n)
		}
		// Bridge sessions, peerbus.bridge.<dialer>.<exposer>.<session>.…:
		// only those it is a party of.
		if len(u.Dial) > 0 {
			pub = append(pub, subjBridge+id+".*.>")
			sub = append(sub, subjBridge+id+".*.>")
		}
		if len(u.Expose) > 0 {
			pub = append(pub, subjBridge+"*."+id+".>")
			sub = append(sub, subjBridge+"*."+id+".>")
		}
	}
	return &server.Permissions{
		Publish:   &server.SubjectPermission{Allow: dedupe(pub)},
		Subscribe: &server.SubjectPermission{Allow: dedupe(sub)},
	}
}

func dedupe(s []string) []string {
	out := make([]string, 0, len(s))
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// NkeyUsers returns the policy's users as nats-server nkey users with
// their permissions.
func (p *Policy) NkeyUsers() []*server.NkeyUser {
	out := make([]*server.NkeyUser, 0, len(p.Users))
	for _, u := range p.Users {
		out = append(out, &server.NkeyUser{Nkey: strings.TrimSpace(u.Key), Permissions: u.Permissions()})
	}
	return out
}
