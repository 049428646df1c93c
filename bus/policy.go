package bus

import (
	"fmt"
	"net"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/peerbus/peerbus/policy"
)

// ReloadPolicy makes the embedded server enforce p instead of the
// node's current policy, with the server's configuration reload:
// connections of identities that stay listed are kept, with their new
// permissions (a subscription a revoked grant allowed is removed by the
// server); identities no longer listed are disconnected. The node must
// have been started with a policy (Options.Policy), on an embedded
// server. Every node of a cluster reloads its own policy.
func (n *Node) ReloadPolicy(p *policy.Policy) error {
	if p == nil {
		return fmt.Errorf("%w: nil policy", ErrInvalidOption)
	}
	n.mu.Lock()
	srv, started, closed, old := n.srv, n.started, n.closed, n.opts.Policy
	n.mu.Unlock()
	switch {
	case closed:
		return ErrClosed
	case !started:
		return ErrNotStarted
	case srv == nil:
		return fmt.Errorf("%w: an external NATS enforces its own authorization (see peerbus policy nats-config)", ErrInvalidOption)
	case old == nil:
		return fmt.Errorf("%w: the node was started without a policy", ErrInvalidOption)
	}
	n.routesMu.Lock()
	defer n.routesMu.Unlock()
	listed := map[string]bool{}
	for _, u := range old.Users {
		listed[u.Key] = true
	}
	nopts := n.sbase.Clone()
	nopts.Routes = n.routes
	keys := make([]*server.NkeyUser, 0, len(nopts.Nkeys)+len(p.Users))
	for _, u := range nopts.Nkeys {
		if !listed[u.Nkey] {
			keys = append(keys, u) // the in-process key and Options.NKeys
		}
	}
	nopts.Nkeys = append(keys, p.NkeyUsers()...)
	if err := srv.ReloadOptions(nopts); err != nil {
		return fmt.Errorf("%w: reload: %v", ErrInvalidOption, err)
	}
	n.sbase.Nkeys = nopts.Nkeys
	n.mu.Lock()
	n.opts.Policy = p
	n.mu.Unlock()
	n.log.Info("policy reloaded", "users", len(p.Users))
	return nil
}

// exposure says what of an embedded node listens beyond loopback with no
// authentication ("" for nothing): the client port with no token, user,
// nkeys or policy; the cluster port with no route credentials or TLS.
func (o *Options) exposure(p *startPlan) string {
	var what []string
	clientAuth := o.Token != "" || o.User != "" || len(o.NKeys) > 0 || o.NKeysFile != "" || o.Policy != nil
	if !isLoopbackHost(p.host) && !clientAuth {
		what = append(what, fmt.Sprintf("the client port %s:%d (anyone reaching it can call, serve, read every call and event, and purge the event log; "+
			"secure it with --authorize and identities, or --auth-token)", p.host, p.port))
	}
	if p.clustered && !isLoopbackHost(p.chost) && o.ClusterUser == "" && o.ClusterTLSCert == "" {
		what = append(what, fmt.Sprintf("the cluster port %s:%d (anyone reaching it can join the cluster as a node; "+
			"secure it with --cluster-tls-cert/--cluster-tls-key/--cluster-tls-ca or --cluster-user)", p.chost, p.cport))
	}
	return strings.Join(what, "; and ")
}

// isLoopbackHost reports whether a listen host is a loopback address.
func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
