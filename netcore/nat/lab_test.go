package nat

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerbus/peerbus/internal/netlab"
)

// Ports in the lab: coturn on 3478/3479, our server on 3480/3481, both
// on the STUN host's two addresses.
const (
	coturnPort    = 3478
	coturnAltPort = 3479
	oursPort      = 3480
	oursAltPort   = 3481
)

// coturnVerdict is what turnutils_natdiscovery concluded.
type coturnVerdict struct {
	NoNAT     bool
	Mapping   Behavior
	Filtering Behavior
}

var coturnBehavior = map[string]Behavior{
	"Endpoint Independent":       EndpointIndependent,
	"Address Dependent":          AddressDependent,
	"Address and Port Dependent": AddressAndPortDependent,
}

var (
	coturnMappingRE   = regexp.MustCompile(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Mapping!`)
	coturnFilteringRE = regexp.MustCompile(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Filtering!`)
)

// parseNATDiscovery reads the output of "turnutils_natdiscovery -m -f".
func parseNATDiscovery(out string) (coturnVerdict, error) {
	v := coturnVerdict{Mapping: BehaviorUnknown, Filtering: BehaviorUnknown}
	mapIdx := strings.Index(out, "-= Mapping Behavior Discovery =-")
	filtIdx := strings.Index(out, "-= Filtering Behavior Discovery =-")
	if mapIdx < 0 || filtIdx < mapIdx {
		return v, fmt.Errorf("unexpected natdiscovery output: %s", out)
	}
	mapping, filtering := out[mapIdx:filtIdx], out[filtIdx:]
	v.NoNAT = strings.Contains(mapping, "No NAT!")
	if m := coturnMappingRE.FindStringSubmatch(mapping); m != nil {
		v.Mapping = coturnBehavior[m[1]]
	}
	if m := coturnFilteringRE.FindStringSubmatch(filtering); m != nil {
		v.Filtering = coturnBehavior[m[1]]
	}
	return v, nil
}

func TestParseNATDiscovery(t *testing.T) {
	out := `
-= Mapping Behavior Discovery =-
========================================
No NAT! (Endpoint Independent Mapping)
========================================
NAT with Endpoint Independent Mapping!
-= Filtering Behavior Discovery =-
No NAT! (Endpoint Independent Mapping)
STUN receive timeout..
STUN receive timeout..
NAT with Address and Port Dependent Filtering!
`
	v, err := parseNATDiscovery(out)
	if err != nil || !v.NoNAT || v.Mapping != EndpointIndependent || v.Filtering != AddressAndPortDependent {
		t.Errorf("got %+v, %v", v, err)
	}
}

// startCoturn runs coturn as an RFC 5780 STUN-only server on both of
// host's addresses.
func startCoturn(t *testing.T, host *netlab.Host) *netlab.Process {
	t.Helper()
	dir := t.TempDir()
	p := host.Start("turnserver",
		"-n", // no configuration file
		"--no-auth", "--stun-only", "--no-cli", "--no-tls", "--no-dtls",
		"-L", host.Addrs[0].String(), "-L", host.Addrs[1].String(),
		"-p", strconv.Itoa(coturnPort), "--alt-listening-port", strconv.Itoa(coturnAltPort),
		"--log-file", filepath.Join(dir, "turn.log"), "--simple-log", "--no-stdout-log",
		"--pidfile", filepath.Join(dir, "turn.pid"),
		"--userdb", filepath.Join(dir, "turndb"),
	)
	t.Cleanup(func() {
		if t.Failed() {
			if b, err := os.ReadFile(filepath.Join(dir, "turn.log")); err == nil {
				t.Logf("coturn log:\n%s", b)
			}
		}
	})
	return p
}

// waitSTUN waits until a STUN server answers at addr, asking from inside
// ns with an in-process socket.
func waitSTUN(t testing.TB, ns *netlab.Namespace, addr netip.AddrPort) {
	t.Helper()
	lc := &net.ListenConfig{}
	cfg := Config{
		Servers: []string{addr.String()},
		Timeout: 200 * time.Millisecond,
		ListenPacket: func(ctx context.Context, network, address string) (net.PacketConn, error) {
			var c net.PacketConn
			err := ns.Do(func() (err error) {
				c, err = lc.ListenPacket(ctx, network, address)
				return err
			})
			return c, err
		},
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		_, err := ExternalAddress(context.Background(), cfg)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("STUN server %v never answered: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type labCase struct {
	kind      netlab.NAT
	nat       bool
	mapping   Behavior
	filtering Behavior
	classic   Classic
	ports     PortAllocation
}

var labCases = []labCase{
	{netlab.NoNAT, false, EndpointIndependent, EndpointIndependent, OpenInternet, PortPreserving},
	{netlab.Firewall, false, EndpointIndependent, AddressAndPortDependent, SymmetricUDPFirewall, PortPreserving},
	{netlab.Masquerade, true, EndpointIndependent, AddressAndPortDependent, PortRestrictedCone, PortPreserving},
	{netlab.Symmetric, true, AddressAndPortDependent, AddressAndPortDependent, Symmetric, PortRandom},
	{netlab.FullCone, true, EndpointIndependent, EndpointIndependent, FullCone, PortPreserving},
}

// TestNATLab builds, for each router kind, a lab with a STUN host running
// coturn and our server, a router and a client behind it. Inside the
// client namespace it runs coturn's turnutils_natdiscovery and our
// classifier against coturn and against our server; all four must agree
// with each other and with what the router does.
func TestNATLab(t *testing.T) {
	netlab.Require(t, "turnserver", "turnutils_natdiscovery")
	for _, tc := range labCases {
		t.Run(string(tc.kind), func(t *testing.T) {
			t.Parallel()
			runLabCase(t, tc)
		})
	}
}

func runLabCase(t *testing.T, tc labCase) {
	lab := netlab.New(t)
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(lab.Dump())
		}
	})
	stunHost := lab.AddPublicHost("stun", 2)
	router := lab.AddRouter("router", tc.kind)
	client := router.AddHost("client")
	ip1, ip2 := stunHost.Addrs[0], stunHost.Addrs[1]
	coturnAddr := netip.AddrPortFrom(ip1, coturnPort)
	oursAddr := netip.AddrPortFrom(ip1, oursPort)

	startCoturn(t, stunHost)
	srv := stunHost.StartHelper("stun-server",
		"-listen", oursAddr.String(), "-alt-ip", ip2.String(), "-alt-port", strconv.Itoa(oursAltPort))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := srv.WaitOutput(ctx, "READY"); err != nil {
		t.Fatal(err)
	}
	waitSTUN(t, stunHost.Namespace, coturnAddr)
	waitSTUN(t, stunHost.Namespace, oursAddr)

	// Everything below runs concurrently inside the client namespace;
	// each run uses its own sockets, so they do not disturb each other.
	var (
		wg                           sync.WaitGroup
		coturnVsCoturn, coturnVsOurs coturnVerdict
		oursVsCoturn, oursVsOurs     *Result
	)
	natdiscovery := func(port int, into *coturnVerdict) {
		defer wg.Done()
		out, err := client.Run(ctx, "turnutils_natdiscovery", "-m", "-f",
			"-L", client.Addr().String(), "-p", strconv.Itoa(port), ip1.String())
		if err != nil {
			t.Errorf("natdiscovery against port %d: %v", port, err)
			return
		}
		v, err := parseNATDiscovery(out)
		if err != nil {
			t.Error(err)
			return
		}
		*into = v
	}
	classify := func(servers []string, into **Result) {
		defer wg.Done()
		out, err := client.HelperCommand(ctx, "classify", "-stun", strings.Join(servers, ",")).Output()
		if err != nil {
			t.Errorf("classify %v: %v: %s", servers, err, out)
			return
		}
		var ho helperOutput
		if err := json.Unmarshal(out, &ho); err != nil {
			t.Errorf("classify output %q: %v", out, err)
			return
		}
		if ho.Error != "" || ho.Result == nil {
			t.Errorf("classify %v: %q, result %v", servers, ho.Error, ho.Result)
			return
		}
		*into = ho.Result
	}
	wg.Add(4)
	go natdiscovery(coturnPort, &coturnVsCoturn)
	go natdiscovery(oursPort, &coturnVsOurs)
	go classify([]string{coturnAddr.String(), oursAddr.String()}, &oursVsCoturn)
	go classify([]string{oursAddr.String()}, &oursVsOurs)
	wg.Wait()
	if t.Failed() {
		return
	}

	want := coturnVerdict{NoNAT: !tc.nat, Mapping: tc.mapping, Filtering: tc.filtering}
	for name, v := range map[string]coturnVerdict{
		"natdiscovery vs coturn": coturnVsCoturn, "natdiscovery vs ours": coturnVsOurs,
	} {
		if v != want {
			t.Errorf("%s: %+v, want %+v", name, v, want)
		}
	}
	for name, r := range map[string]*Result{"ours vs coturn+ours": oursVsCoturn, "ours vs ours": oursVsOurs} {
		got := coturnVerdict{NoNAT: !r.NAT, Mapping: r.Mapping, Filtering: r.Filtering}
		if got != want || r.Classic != tc.classic || r.PortAllocation != tc.ports {
			t.Errorf("%s: nat=%v mapping=%s filtering=%s classic=%s ports=%s (samples %v); want nat=%v %s %s %s %s",
				name, r.NAT, r.Mapping, r.Filtering, r.Classic, r.PortAllocation, r.PortSamples,
				tc.nat, tc.mapping, tc.filtering, tc.classic, tc.ports)
		}
		wantMapped := client.Addr()
		if tc.nat {
			wantMapped = router.WAN
		}
		if r.MappedAddress.Addr() != wantMapped || r.LocalAddress.Addr() != client.Addr() {
			t.Errorf("%s: mapped %v local %v, want mapped IP %v local IP %v",
				name, r.MappedAddress, r.LocalAddress, wantMapped, client.Addr())
		}
		if r.Agreeing != r.Servers {
			t.Errorf("%s: %d of %d servers agree", name, r.Agreeing, r.Servers)
		}
		// Duration is not in the JSON; duration_ms is.
		took := time.Duration(r.DurationMillis * float64(time.Millisecond))
		if took > 2*time.Second {
			t.Errorf("%s: classification took %v", name, took)
		}
		t.Logf("%s: %s (mapping %s, filtering %s, ports %s %v) in %v",
			name, r.Classic, r.Mapping, r.Filtering, r.PortAllocation, r.PortSamples, took.Round(time.Millisecond))
	}
	t.Logf("natdiscovery vs coturn: %+v; vs ours: %+v", coturnVsCoturn, coturnVsOurs)
}

// BenchmarkClassifyLab times Classify in each lab mode, run in-process
// with its sockets in the client's namespace, against our server on the
// STUN host's two addresses. It reports the median and the slowest
// classification of the b.N runs besides the mean (ns/op):
//
//	go test -run '^$' -bench ClassifyLab -benchtime 10x ./netcore/nat/
func BenchmarkClassifyLab(b *testing.B) {
	netlab.Require(b)
	for _, tc := range labCases {
		b.Run(string(tc.kind), func(b *testing.B) {
			lab := netlab.New(b)
			stunHost := lab.AddPublicHost("stun", 2)
			client := lab.AddRouter("router", tc.kind).AddHost("client")
			oursAddr := netip.AddrPortFrom(stunHost.Addrs[0], oursPort)
			srv := stunHost.StartHelper("stun-server", "-listen", oursAddr.String(),
				"-alt-ip", stunHost.Addrs[1].String(), "-alt-port", strconv.Itoa(oursAltPort))
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			if err := srv.WaitOutput(ctx, "READY"); err != nil {
				b.Fatal(err)
			}
			waitSTUN(b, stunHost.Namespace, oursAddr)
			lc := &net.ListenConfig{}
			cfg := Config{
				Servers: []string{oursAddr.String()},
				Local:   netip.AddrPortFrom(client.Addr(), 0),
				ListenPacket: func(ctx context.Context, network, address string) (net.PacketConn, error) {
					var c net.PacketConn
					err := client.Do(func() (err error) {
						c, err = lc.ListenPacket(ctx, network, address)
						return err
					})
					return c, err
				},
			}
			var took []time.Duration
			for b.Loop() {
				r, err := Classify(ctx, cfg)
				if err != nil {
					b.Fatal(err)
				}
				if r.Classic != tc.classic {
					b.Fatalf("classified %s, want %s", r.Classic, tc.classic)
				}
				took = append(took, r.Duration)
			}
			slices.Sort(took)
			b.ReportMetric(float64(took[len(took)/2])/float64(time.Millisecond), "ms-median")
			b.ReportMetric(float64(took[len(took)-1])/float64(time.Millisecond), "ms-max")
		})
	}
}
