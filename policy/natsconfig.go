package policy

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
)

// NATSConfig returns the nats-server configuration block that grants
// the policy's users the permissions a node enforcing it would: an
// "authorization { users = [...] }" block for a deployment that runs
// its own NATS servers (peerbus node --nats-url, or a leafnode hub).
// Every server the peers connect to needs it. The block has no user for
// a node's in-process connection: give the peerbus nodes of such a
// deployment an identity with the admin role.
func (p *Policy) NATSConfig() string {
	var b strings.Builder
	b.WriteString("# peerbus policy as nats-server authorization (peerbus policy nats-config)\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, u := range p.Users {
		fmt.Fprintf(&b, "    # %s (%s, peer id %s)\n", u.Name, u.Role, u.PeerID())
		fmt.Fprintf(&b, "    { nkey: %s", strconv.Quote(strings.TrimSpace(u.Key)))
		if perms := u.Permissions(); perms != nil {
			b.WriteString(", permissions: {\n")
			writeSubjects(&b, "publish", perms.Publish)
			writeSubjects(&b, "subscribe", perms.Subscribe)
			b.WriteString("    }")
		}
		b.WriteString(" }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func writeSubjects(b *strings.Builder, what string, sp *server.SubjectPermission) {
	fmt.Fprintf(b, "      %s: { allow: [", what)
	for i, s := range sp.Allow {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(s))
	}
	b.WriteString("] }\n")
}
