package policy_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/peer"
	"github.com/peerbus/peerbus/policy"
)

// BenchmarkCall compares a call between two peers on their own TCP
// connections, with and without a policy in force: the cost of the
// server's permission checks.
func BenchmarkCall(b *testing.B) {
	for _, secured := range []bool{false, true} {
		b.Run(fmt.Sprintf("policy=%v", secured), func(b *testing.B) {
			srvID, cliID := mustID(b), mustID(b)
			opts := []bus.Option{bus.WithListen("127.0.0.1:-1"), bus.WithoutJetStream()}
			if secured {
				pol, err := policy.Parse([]byte(fmt.Sprintf("users:\n  - {name: s, key: %s, role: peer, serve: [echo]}\n  - {name: c, key: %s, role: peer, call: [echo]}\n",
					srvID.PublicKey(), cliID.PublicKey())), "b.yaml")
				if err != nil {
					b.Fatal(err)
				}
				opts = append(opts, bus.WithPolicy(pol))
			}
			n, err := bus.Start(context.Background(), opts...)
			if err != nil {
				b.Fatal(err)
			}
			defer n.Close()
			dial := func(id *identity.Identity) *nats.Conn {
				var o []nats.Option
				if secured {
					o = id.ConnectOptions()
				} else {
					o = []nats.Option{nats.CustomInboxPrefix(id.InboxPrefix())}
				}
				nc, err := nats.Connect(n.ClientURL(), o...)
				if err != nil {
					b.Fatal(err)
				}
				return nc
			}
			snc, cnc := dial(srvID), dial(cliID)
			defer snc.Close()
			defer cnc.Close()
			sp, err := peer.New(snc, peer.WithIdentity(srvID))
			if err != nil {
				b.Fatal(err)
			}
			defer sp.Close()
			if err := peer.RegisterRaw(sp, "echo", func(_ context.Context, in []byte) ([]byte, error) { return in, nil }); err != nil {
				b.Fatal(err)
			}
			cp, err := peer.New(cnc, peer.WithIdentity(cliID), peer.AsClient())
			if err != nil {
				b.Fatal(err)
			}
			defer cp.Close()
			ctx := context.Background()
			arg := []byte(`"x"`)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := cp.Call(ctx, "echo", arg, peer.OnAny()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func mustID(b *testing.B) *identity.Identity {
	id, err := identity.New()
	if err != nil {
		b.Fatal(err)
	}
	return id
}
