package bridge

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/netlab"
)

// BenchmarkNATLabPathUp measures, in the NAT lab of TestNATLab, how long
// a dial takes from its offer to its path (DialResult.Setup - Offered:
// the exposer's preparation and answer, then the race of the
// strategies), one connect per iteration, a fresh dialer process each.
// It reports the median and the slowest connect in ms and how many
// connects ended on the mode's expected path (want/op, 1 = all). Run
// with -benchtime=10x for the median of 10 connects per mode:
//
//	go test -run '^$' -bench NATLabPathUp -benchtime=10x ./bridge
//
// It needs root and network namespaces and is skipped without them.
func BenchmarkNATLabPathUp(b *testing.B) {
	netlab.Require(b)
	for _, tc := range []struct {
		name    string
		kind    netlab.NAT
		transit bool
		proto   string
		want    Strategy
	}{
		{"masquerade-tcp", netlab.Masquerade, false, "tcp", PunchTCP},
		{"masquerade-udp", netlab.Masquerade, false, "udp", PunchUDP},
		{"masquerade-transit-udp", netlab.Masquerade, true, "udp", PunchUDP},
		{"masquerade-transit-tcp", netlab.Masquerade, true, "tcp", PunchTCP},
		{"symmetric-tcp", netlab.Symmetric, false, "tcp", Relay},
		{"symmetric-udp", netlab.Symmetric, false, "udp", Relay},
	} {
		b.Run(tc.name, func(b *testing.B) {
			lab := netlab.New(b)
			pub := lab.AddPublicHost("rdv", 2)
			addRouter := lab.AddRouter
			if tc.transit {
				addRouter = lab.AddRouterBehindTransit
			}
			ra, rb := addRouter("ra", tc.kind), addRouter("rb", tc.kind)
			ha, hb := ra.AddHost("a"), rb.AddHost("b")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			rdv := pub.StartHelper("rendezvous", "-ip", pub.Addrs[0].String(), "-alt", pub.Addrs[1].String())
			if err := rdv.WaitOutput(ctx, "READY"); err != nil {
				b.Fatal(err)
			}
			server := "nats://" + pub.Addr().String() + ":4222"
			stun := pub.Addr().String() + ":3478"
			ex := ha.StartHelper("expose", "-server", server, "-stun", stun, "-proto", tc.proto)
			if err := ex.WaitOutput(ctx, "READY"); err != nil {
				b.Fatal(err)
			}
			var id string
			for _, l := range strings.Split(ex.Output(), "\n") {
				if v, ok := strings.CutPrefix(l, "PEER "); ok {
					id = v
				}
			}
			var ups []time.Duration
			paths := map[Strategy]int{}
			for b.Loop() {
				cmd := hb.HelperCommand(ctx, "dial", "-server", server, "-stun", stun, "-proto", tc.proto, "-peer", id, "-size", fmt.Sprint(64<<10))
				out, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("dial: %v\n%s", err, out)
				}
				var res labResult
				for _, l := range strings.Split(string(out), "\n") {
					if v, ok := strings.CutPrefix(l, "RESULT "); ok {
						if err := json.Unmarshal([]byte(v), &res); err != nil {
							b.Fatal(err)
						}
					}
				}
				if res.Path == "" {
					b.Fatalf("no result:\n%s", out)
				}
				ups = append(ups, res.PathUp)
				paths[res.Path]++
			}
			slices.Sort(ups)
			b.ReportMetric(float64(ups[len(ups)/2])/1e6, "ms-median")
			b.ReportMetric(float64(ups[len(ups)-1])/1e6, "ms-max")
			b.ReportMetric(float64(paths[tc.want])/float64(len(ups)), "want/op")
			b.Logf("%s: %d connects, offer to path median %v, max %v, paths %v", tc.name, len(ups), ups[len(ups)/2].Round(time.Millisecond), ups[len(ups)-1].Round(time.Millisecond), paths)
		})
	}
}
