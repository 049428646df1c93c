package bridge

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/internal/netlab"
	"github.com/peerbus/peerbus/netcore/nat"
	"github.com/peerbus/peerbus/peer"
)

func init() {
	labHelpers["rendezvous"] = helperRendezvous
	labHelpers["expose"] = helperExpose
	labHelpers["dial"] = helperDial
}

// helperRendezvous runs a bus node on 0.0.0.0:4222 and an RFC 5780 STUN
// server on the two given IPs, until SIGTERM.
func helperRendezvous(args []string) int {
	fs := flag.NewFlagSet("rendezvous", flag.ContinueOnError)
	ip := fs.String("ip", "", "primary IP")
	alt := fs.String("alt", "", "second IP")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	node, err := bus.Start(ctx, bus.WithListen("0.0.0.0:4222"), bus.WithoutJetStream(), bus.WithName("rendezvous"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer node.Close()
	srv, err := nat.ListenServer(ctx, nat.ServerConfig{Listen: netip.AddrPortFrom(netip.MustParseAddr(*ip), 3478), AltIP: netip.MustParseAddr(*alt)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer srv.Close()
	fmt.Println("READY")
	<-ctx.Done()
	return 0
}

// helperExpose exposes an echo service (tcp or udp) on a peer connected
// to the rendezvous node; it prints "PEER <id>", then "READY", then
// "PATH <path>" for each session.
func helperExpose(args []string) int {
	fs := flag.NewFlagSet("expose", flag.ContinueOnError)
	server := fs.String("server", "", "NATS URL")
	stun := fs.String("stun", "", "STUN server")
	proto := fs.String("proto", "tcp", "tcp or udp")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(*server)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer nc.Close()
	p, err := peer.New(nc)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer p.Close()
	var target string
	if *proto == "tcp" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer l.Close()
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go func() {
					_, _ = io.Copy(c, c)
					_ = c.Close()
				}()
			}
		}()
		target = "tcp://" + l.Addr().String()
	} else {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer u.Close()
		go func() {
			buf := make([]byte, 65536)
			for {
				n, from, err := u.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				_, _ = u.WriteToUDPAddrPort(buf[:n], from)
			}
		}()
		target = "udp://" + u.LocalAddr().String()
	}
	svc, err := Expose(ctx, p, "echo", target, WithSTUN(*stun), WithLogger(debugLogger()), OnSession(func(si SessionInfo) {
		fmt.Printf("PATH %s %s\n", si.Path, si.Remote)
	}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer svc.Close()
	fmt.Printf("PEER %s\nREADY\n", p.ID())
	<-ctx.Done()
	return 0
}

// labResult is what the dial helper prints (one JSON line after "RESULT ").
type labResult struct {
	Path      Strategy `json:"path"`
	Attempts  []string `json:"attempts"`
	LocalNAT  *NATInfo `json:"local_nat"`
	RemoteNAT *NATInfo `json:"remote_nat"`
	Bytes     int64    `json:"bytes"`
	Setup     string   `json:"setup"`
	// PathUp is Setup - Offered: from the offer to the path, in ns.
	PathUp time.Duration `json:"path_up"`
	Local  []Candidate   `json:"local"`
	Remote []Candidate   `json:"remote"`
}

// helperDial dials the echo service of a peer, checks an exchange and
// prints the result.
func helperDial(args []string) int {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	server := fs.String("server", "", "NATS URL")
	stun := fs.String("stun", "", "STUN server")
	proto := fs.String("proto", "tcp", "tcp or udp")
	peerID := fs.String("peer", "", "peer id")
	size := fs.Int64("size", 1<<20, "bytes to echo (tcp)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "FAIL", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	nc, err := nats.Connect(*server)
	if err != nil {
		return fail(err)
	}
	defer nc.Close()
	p, err := peer.New(nc, peer.AsClient())
	if err != nil {
		return fail(err)
	}
	defer p.Close()
	var res DialResult
	var n int64
	if *proto == "tcp" {
		c, err := Dial(ctx, p, *peerID, "echo", WithSTUN(*stun), WithLogger(debugLogger()))
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		res = c.Result()
		h1, h2 := sha256.New(), sha256.New()
		go func() {
			src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{7}), *size), h1)
			_, _ = io.Copy(c, src)
			_ = c.CloseWrite()
		}()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err = io.Copy(h2, c); err != nil {
			return fail(err)
		}
		if n != *size || string(h1.Sum(nil)) != string(h2.Sum(nil)) {
			return fail(fmt.Errorf("echoed %d of %d bytes, or corrupted", n, *size))
		}
	} else {
		c, err := DialPacket(ctx, p, *peerID, "echo", WithSTUN(*stun), WithLogger(debugLogger()))
		if err != nil {
			return fail(err)
		}
		defer c.Close()
		res = c.Result()
		buf := make([]byte, 2048)
		for i := range 20 {
			msg := fmt.Appendf(nil, "datagram %d", i)
			_, _ = c.Write(msg)
			_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
			k, err := c.Read(buf)
			if err != nil {
				continue // lost: UDP
			}
			if string(buf[:k]) != string(msg) {
				return fail(fmt.Errorf("got %q, want %q", buf[:k], msg))
			}
			n += int64(k)
		}
		if n == 0 {
			return fail(errors.New("no datagram came back"))
		}
	}
	out := labResult{Path: res.Path, LocalNAT: res.LocalNAT, RemoteNAT: res.RemoteNAT, Bytes: n, Setup: res.Setup.String(), PathUp: res.Setup - res.Offered,
		Local: res.LocalCandidates, Remote: res.RemoteCandidates}
	for _, a := range res.Attempts {
		out.Attempts = append(out.Attempts, a.String())
	}
	b, _ := json.Marshal(out)
	fmt.Printf("RESULT %s\n", b)
	return 0
}

// TestNATLab connects two peers behind their own NAT routers, with a
// public rendezvous node that also runs the STUN server. Behind
// endpoint-independent NATs (MASQUERADE) the path must be hole-punched,
// not relayed; behind symmetric NATs (MASQUERADE --random-fully) it must
// fall back to the relay, and still work.
//
// Lab routers are neighbours on the public segment. Between two such
// Linux NATs UDP hole punching only works when both sides' first probes
// cross in flight (the first probe to arrive leaves conntrack state that
// makes the other NAT remap), so a UDP service may end up on punched TCP
// there. With each NAT behind a transit hop, as on the internet, the
// low-TTL opening probes make UDP hole punching work, and the UDP service
// must get a punched UDP path.
func TestNATLab(t *testing.T) {
	netlab.Require(t)
	for _, tc := range []struct {
		name    string
		kind    netlab.NAT
		transit bool
		proto   string
		want    []Strategy
	}{
		{"masquerade-tcp", netlab.Masquerade, false, "tcp", []Strategy{PunchTCP}},
		{"masquerade-udp", netlab.Masquerade, false, "udp", []Strategy{PunchUDP, PunchTCP}},
		{"masquerade-transit-udp", netlab.Masquerade, true, "udp", []Strategy{PunchUDP}},
		{"masquerade-transit-tcp", netlab.Masquerade, true, "tcp", []Strategy{PunchTCP}},
		{"symmetric-tcp", netlab.Symmetric, false, "tcp", []Strategy{Relay}},
		{"symmetric-udp", netlab.Symmetric, false, "udp", []Strategy{Relay}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			runNATLab(t, tc.kind, tc.transit, tc.proto, tc.want)
		})
	}
}

func runNATLab(t *testing.T, kind netlab.NAT, transit bool, proto string, want []Strategy) {
	lab := netlab.New(t)
	pub := lab.AddPublicHost("rdv", 2)
	addRouter := lab.AddRouter
	if transit {
		addRouter = lab.AddRouterBehindTransit
	}
	ra, rb := addRouter("ra", kind), addRouter("rb", kind)
	ha, hb := ra.AddHost("a"), rb.AddHost("b")
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	rdv := pub.StartHelper("rendezvous", "-ip", pub.Addrs[0].String(), "-alt", pub.Addrs[1].String())
	if err := rdv.WaitOutput(ctx, "READY"); err != nil {
		t.Fatal(err)
	}
	server := "nats://" + pub.Addr().String() + ":4222"
	stun := pub.Addr().String() + ":3478"
	ex := ha.StartHelper("expose", "-server", server, "-stun", stun, "-proto", proto)
	if err := ex.WaitOutput(ctx, "READY"); err != nil {
		t.Fatal(err)
	}
	var id string
	for _, l := range strings.Split(ex.Output(), "\n") {
		if v, ok := strings.CutPrefix(l, "PEER "); ok {
			id = v
		}
	}
	cmd := hb.HelperCommand(ctx, "dial", "-server", server, "-stun", stun, "-proto", proto, "-peer", id, "-size", fmt.Sprint(20<<20))
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dial: %v\n%s\nexposer:\n%s", err, b, ex.Output())
	}
	var res labResult
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "RESULT "); ok {
			if err := json.Unmarshal([]byte(v), &res); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%s transit=%v %s: path %s in %s; attempts:\n  %s\nlocal NAT %+v %v\nremote NAT %+v %v", kind, transit, proto, res.Path, res.Setup,
		strings.Join(res.Attempts, "\n  "), res.LocalNAT, res.Local, res.RemoteNAT, res.Remote)

	ok := false
	for _, w := range want {
		ok = ok || res.Path == w
	}
	if os.Getenv("BRIDGE_LAB_VERBOSE") != "" {
		t.Logf("dialer output:\n%s\nexposer output:\n%s", b, ex.Output())
		for _, r := range []*netlab.Router{ra, rb} {
			out, _ := r.Run(context.Background(), "cat", "/proc/net/nf_conntrack")
			t.Logf("conntrack of %s:\n%s", r.Name, out)
		}
	}
	if !ok {
		t.Logf("dialer output:\n%s", b)
		for _, r := range []*netlab.Router{ra, rb} {
			out, _ := r.Run(context.Background(), "cat", "/proc/net/nf_conntrack")
			t.Logf("conntrack of %s:\n%s", r.Name, out)
		}
		t.Fatalf("path %q, want one of %v\nexposer:\n%s", res.Path, want, ex.Output())
	}
	if !strings.Contains(ex.Output(), "PATH "+string(res.Path)) {
		t.Errorf("the exposer did not report path %s:\n%s", res.Path, ex.Output())
	}
}

// debugLogger logs at debug level on stderr.
func debugLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
