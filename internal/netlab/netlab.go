// Package netlab builds throwaway network labs out of Linux network
// namespaces for tests: a public "internet" segment, public hosts (with
// one or more addresses) attached to it, NAT routers of several kinds each
// with its own private LAN, and hosts behind those routers. It runs
// commands, background processes, helper modes of the test binary, or Go
// functions inside any namespace, and tears everything down in t.Cleanup,
// also when the test fails.
//
// Topology and addresses (they exist only inside the lab's namespaces):
//
//	public host(s) 203.0.113.1...     routers' WAN 203.0.113.101...
//	        \                            /
//	         hub namespace: bridge br0, 203.0.113.254 (default gateway),
//	         routes to the LANs of routers that do not translate
//	                                     |
//	      router k: wan0 (WAN) --- NAT --- lan0 bridge 10.k.0.1/24
//	                                     |
//	                           hosts 10.k.0.2, 10.k.0.3, ...
//
// Namespace names are "nl" + a random lab ID + "-" + the given name, so
// labs of concurrent tests never collide; interface names are short and
// local to each namespace. Labs need root, iproute2 ("ip netns") and, for
// NAT routers, iptables (the nf_tables and the legacy variants both work
// in namespaces; set NETLAB_IPTABLES to pick the binary). Use Require to
// skip tests where that is missing (or fail them when CI=true).
package netlab

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Addresses of the public segment.
var (
	// PublicPrefix is the public segment's prefix.
	PublicPrefix = netip.MustParsePrefix("203.0.113.0/24")
	// Gateway is the hub's address on the public segment, the default
	// route of public hosts and routers.
	Gateway = netip.MustParseAddr("203.0.113.254")
)

// HelperEnv is the environment variable that selects a helper mode of a
// test binary started by HelperCommand (see RunHelpers).
const HelperEnv = "NETLAB_HELPER"

// cmdTimeout bounds each setup command.
const cmdTimeout = 30 * time.Second

// NAT is the behaviour of a lab router.
type NAT string

// Router kinds.
const (
	// NoNAT routes the LAN unchanged: hosts have "public" addresses and
	// nothing is filtered (RFC 3489: open internet).
	NoNAT NAT = "none"
	// Firewall routes the LAN unchanged but drops unsolicited inbound
	// traffic with conntrack (symmetric UDP firewall).
	Firewall NAT = "firewall"
	// Masquerade is iptables MASQUERADE: endpoint-independent, port-
	// preserving mapping and address-and-port-dependent filtering by
	// conntrack (port-restricted cone).
	Masquerade NAT = "masquerade"
	// Symmetric is MASQUERADE --random-fully: a random port for every new
	// destination (address-and-port-dependent mapping: symmetric).
	Symmetric NAT = "symmetric"
	// FullCone maps the router's WAN address one to one to the first host
	// of its LAN (SNAT out, DNAT in): endpoint-independent mapping and
	// filtering. Later hosts on the same router are masqueraded.
	FullCone NAT = "full-cone"
)

// Lab is one network lab. Create it with New; it is removed when the test
// ends.
type Lab struct {
	t        testing.TB
	id       string
	iptables string
	hub      *Namespace

	mu         sync.Mutex
	namespaces []*Namespace
	hubPorts   int
	nextPublic int
	nextWAN    int
	nextLAN    int
}

// Namespace is a network namespace of a lab.
type Namespace struct {
	// Name is the namespace name, as in "ip netns exec Name".
	Name string
	lab  *Lab
}

// Host is a namespace with an address: a public host or a host behind a
// router.
type Host struct {
	*Namespace
	// Addrs are the host's addresses; the first is its primary one.
	Addrs []netip.Addr
	// Router is the router the host is behind; nil for public hosts.
	Router *Router
}

// Addr is the host's primary address.
func (h *Host) Addr() netip.Addr { return h.Addrs[0] }

// Router is a lab router: its WAN side is on the public segment, its LAN
// is a bridge with the router at .1.
type Router struct {
	*Namespace
	// Kind is what the router does to LAN traffic.
	Kind NAT
	// WAN is the router's public address.
	WAN netip.Addr
	// LAN is the router's private prefix; the router is its .1.
	LAN netip.Prefix

	hosts int
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,19}$`)

// New creates a lab with its hub namespace and registers its teardown
// with t.Cleanup. Call Require first.
func New(t testing.TB) *Lab {
	t.Helper()
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("netlab: random id: %v", err)
	}
	l := &Lab{t: t, id: hex.EncodeToString(b[:]), iptables: iptablesBinary(), nextLAN: 1}
	t.Cleanup(l.teardown)
	l.hub = l.newNamespace("hub")
	// A bridge without a fixed MAC takes the lowest of its ports' MACs,
	// so it would change as ports join and break neighbours' ARP caches.
	l.hub.MustRun("ip", "link", "add", "br0", "address", randomMAC(), "type", "bridge")
	l.hub.MustRun("ip", "addr", "add", prefixOf(Gateway), "dev", "br0")
	l.hub.MustRun("ip", "link", "set", "br0", "up")
	l.hub.Sysctl("net.ipv4.ip_forward", "1")
	l.hub.Sysctl("net.ipv4.conf.all.send_redirects", "0")
	l.hub.Sysctl("net.ipv4.conf.br0.send_redirects", "0")
	return l
}

// ID is the lab's random ID, part of every namespace name.
func (l *Lab) ID() string { return l.id }

// Hub is the namespace of the public segment's bridge and gateway.
func (l *Lab) Hub() *Namespace { return l.hub }

// Namespaces are all namespaces of the lab, in creation order.
func (l *Lab) Namespaces() []*Namespace {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Namespace(nil), l.namespaces...)
}

// randomMAC returns a random locally administered unicast MAC address.
func randomMAC() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	b[0] = b[0]&0xfc | 0x02
	return net.HardwareAddr(b[:]).String()
}

func prefixOf(a netip.Addr) string {
	return netip.PrefixFrom(a, PublicPrefix.Bits()).String()
}

func iptablesBinary() string {
	if b := os.Getenv("NETLAB_IPTABLES"); b != "" {
		return b
	}
	return "iptables"
}

// newNamespace creates a namespace with lo up and IPv6 off.
func (l *Lab) newNamespace(name string) *Namespace {
	l.t.Helper()
	if !nameRE.MatchString(name) {
		l.t.Fatalf("netlab: bad namespace name %q (want [a-z0-9-], at most 20)", name)
	}
	n := &Namespace{Name: "nl" + l.id + "-" + name, lab: l}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", n.Name).CombinedOutput(); err != nil {
		l.t.Fatalf("netlab: ip netns add %s: %v: %s", n.Name, err, out)
	}
	l.mu.Lock()
	l.namespaces = append(l.namespaces, n)
	l.mu.Unlock()
	n.MustRun("ip", "link", "set", "lo", "up")
	// Keep the lab IPv4 only and quiet; kernels without IPv6 lack the key.
	_ = n.trySysctl("net.ipv6.conf.all.disable_ipv6", "1")
	_ = n.trySysctl("net.ipv6.conf.default.disable_ipv6", "1")
	// With br_netfilter loaded, bridged frames would also pass the
	// namespace's iptables; the lab's rules assume they do not.
	for _, f := range []string{"iptables", "ip6tables", "arptables"} {
		_ = n.trySysctl("net.bridge.bridge-nf-call-"+f, "0")
	}
	return n
}

// attach links namespace n to the hub's bridge with a veth pair whose end
// in n is called ifname.
func (l *Lab) attach(n *Namespace, ifname string) {
	l.t.Helper()
	l.mu.Lock()
	l.hubPorts++
	port := fmt.Sprintf("p%d", l.hubPorts)
	l.mu.Unlock()
	l.hub.MustRun("ip", "link", "add", port, "type", "veth", "peer", "name", ifname, "netns", n.Name)
	l.hub.MustRun("ip", "link", "set", port, "master", "br0", "up")
	n.MustRun("ip", "link", "set", ifname, "up")
}

func (l *Lab) nextAddr(counter *int, base int) netip.Addr {
	l.mu.Lock()
	defer l.mu.Unlock()
	*counter++
	last := base + *counter
	if last >= 254 {
		l.t.Fatalf("netlab: public segment full")
	}
	b := PublicPrefix.Addr().As4()
	b[3] = byte(last)
	return netip.AddrFrom4(b)
}

// AddPublicHost adds a host on the public segment with naddrs addresses
// (at least one), e.g. two for an RFC 5780 STUN server.
func (l *Lab) AddPublicHost(name string, naddrs int) *Host {
	l.t.Helper()
	naddrs = max(naddrs, 1)
	n := l.newNamespace(name)
	l.attach(n, "eth0")
	h := &Host{Namespace: n}
	for range naddrs {
		a := l.nextAddr(&l.nextPublic, 0)
		n.MustRun("ip", "addr", "add", prefixOf(a), "dev", "eth0")
		h.Addrs = append(h.Addrs, a)
	}
	n.MustRun("ip", "route", "add", "default", "via", Gateway.String())
	return h
}

// AddRouter adds a router of the given kind with a fresh LAN.
func (l *Lab) AddRouter(name string, kind NAT) *Router {
	l.t.Helper()
	switch kind {
	case NoNAT, Firewall, Masquerade, Symmetric, FullCone:
	default:
		l.t.Fatalf("netlab: unknown router kind %q", kind)
	}
	n := l.newNamespace(name)
	l.attach(n, "wan0")
	l.mu.Lock()
	k := l.nextLAN
	l.nextLAN++
	l.mu.Unlock()
	r := &Router{
		Namespace: n,
		Kind:      kind,
		WAN:       l.nextAddr(&l.nextWAN, 100),
		LAN:       netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(k), 0, 0}), 24),
	}
	n.MustRun("ip", "addr", "add", prefixOf(r.WAN), "dev", "wan0")
	n.MustRun("ip", "route", "add", "default", "via", Gateway.String())
	n.MustRun("ip", "link", "add", "lan0", "address", randomMAC(), "type", "bridge")
	n.MustRun("ip", "addr", "add", netip.PrefixFrom(r.LAN.Addr().Next(), 24).String(), "dev", "lan0")
	n.MustRun("ip", "link", "set", "lan0", "up")
	n.Sysctl("net.ipv4.ip_forward", "1")
	n.Sysctl("net.ipv4.conf.all.rp_filter", "0")
	n.Sysctl("net.ipv4.conf.default.rp_filter", "0")
	ipt := l.iptables
	switch kind {
	case NoNAT:
		l.hub.MustRun("ip", "route", "add", r.LAN.String(), "via", r.WAN.String())
	case Firewall:
		l.hub.MustRun("ip", "route", "add", r.LAN.String(), "via", r.WAN.String())
		n.MustRun(ipt, "-A", "FORWARD", "-i", "wan0", "-m", "conntrack",
			"--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT")
		n.MustRun(ipt, "-A", "FORWARD", "-i", "wan0", "-j", "DROP")
	case Masquerade, FullCone:
		n.MustRun(ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE")
	case Symmetric:
		n.MustRun(ipt, "-t", "nat", "-A", "POSTROUTING", "-o", "wan0", "-j", "MASQUERADE", "--random-fully")
	}
	return r
}

// AddHost adds a host to the router's LAN, with the router as its default
// gateway.
func (r *Router) AddHost(name string) *Host {
	l := r.lab
	l.t.Helper()
	n := l.newNamespace(name)
	l.mu.Lock()
	r.hosts++
	i := r.hosts
	l.mu.Unlock()
	if i > 250 {
		l.t.Fatalf("netlab: LAN %s full", r.LAN)
	}
	port := fmt.Sprintf("l%d", i)
	r.MustRun("ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", n.Name)
	r.MustRun("ip", "link", "set", port, "master", "lan0", "up")
	b := r.LAN.Addr().As4()
	b[3] = byte(1 + i)
	addr := netip.AddrFrom4(b)
	n.MustRun("ip", "addr", "add", netip.PrefixFrom(addr, 24).String(), "dev", "eth0")
	n.MustRun("ip", "link", "set", "eth0", "up")
	n.MustRun("ip", "route", "add", "default", "via", r.LAN.Addr().Next().String())
	if r.Kind == FullCone && i == 1 {
		// Inserted before MASQUERADE: this host owns the WAN address.
		r.MustRun(l.iptables, "-t", "nat", "-I", "POSTROUTING", "1", "-o", "wan0", "-s", addr.String(),
			"-j", "SNAT", "--to-source", r.WAN.String())
		r.MustRun(l.iptables, "-t", "nat", "-A", "PREROUTING", "-i", "wan0", "-d", r.WAN.String(),
			"-j", "DNAT", "--to-destination", addr.String())
	}
	return &Host{Namespace: n, Addrs: []netip.Addr{addr}, Router: r}
}

// teardown stops what still runs in the lab's namespaces and deletes
// them, newest first.
func (l *Lab) teardown() {
	l.mu.Lock()
	nss := l.namespaces
	l.namespaces = nil
	l.mu.Unlock()
	for i := len(nss) - 1; i >= 0; i-- {
		n := nss[i]
		// Anything still inside was started by this lab (the name is
		// unique to it); a live process would keep the namespace alive.
		// This process itself can show up: if Do ran on the main thread,
		// the runtime parks that thread in the namespace for good.
		if out, err := exec.Command("ip", "netns", "pids", n.Name).Output(); err == nil {
			for _, f := range strings.Fields(string(out)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 1 && pid != os.Getpid() {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
		}
		if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
			l.t.Errorf("netlab: ip netns del %s: %v: %s", n.Name, err, out)
		}
	}
}

// Dump describes the lab (addresses, routes, iptables rules of every
// namespace), for test failure logs.
func (l *Lab) Dump() string {
	var b strings.Builder
	for _, n := range l.Namespaces() {
		fmt.Fprintf(&b, "== %s\n", n.Name)
		for _, args := range [][]string{
			{"ip", "-br", "addr"}, {"ip", "route"},
			{l.iptables, "-S"}, {l.iptables, "-t", "nat", "-S"},
		} {
			out, _ := n.Run(context.Background(), args[0], args[1:]...)
			b.WriteString(out)
		}
	}
	return b.String()
}

// Command returns an exec.Cmd running name with args inside the
// namespace (via "ip netns exec", which execs the command directly).
func (n *Namespace) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
	cmd.WaitDelay = 2 * time.Second
	return cmd
}

// Run runs a command inside the namespace and returns its combined
// output; the error includes the output.
func (n *Namespace) Run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.Command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netlab: %s: %s %s: %w: %s",
			n.Name, name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// MustRun is Run with a timeout that fails the test on error.
func (n *Namespace) MustRun(name string, args ...string) string {
	n.lab.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := n.Run(ctx, name, args...)
	if err != nil {
		n.lab.t.Fatal(err)
	}
	return out
}

// Sysctl sets a sysctl inside the namespace, failing the test on error.
func (n *Namespace) Sysctl(key, value string) {
	n.lab.t.Helper()
	if err := n.trySysctl(key, value); err != nil {
		n.lab.t.Fatal(err)
	}
}

func (n *Namespace) trySysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	return n.Do(func() error {
		if err := os.WriteFile(path, []byte(value), 0o644); err != nil {
			return fmt.Errorf("netlab: %s: sysctl %s=%s: %w", n.Name, key, value, err)
		}
		return nil
	})
}

// HelperCommand returns a command running this test binary inside the
// namespace in helper mode: the binary's TestMain must call RunHelpers,
// which runs helper with args instead of the tests.
func (n *Namespace) HelperCommand(ctx context.Context, helper string, args ...string) *exec.Cmd {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	cmd := n.Command(ctx, exe, args...)
	cmd.Env = append(os.Environ(), HelperEnv+"="+helper)
	return cmd
}

// Start starts a background command inside the namespace. It is stopped
// (SIGTERM, then SIGKILL) when the test ends, if still running.
func (n *Namespace) Start(name string, args ...string) *Process {
	n.lab.t.Helper()
	return n.lab.start(exec.Command("ip", append([]string{"netns", "exec", n.Name, name}, args...)...))
}

// StartHelper starts this test binary in helper mode inside the namespace
// (see HelperCommand), in the background like Start.
func (n *Namespace) StartHelper(helper string, args ...string) *Process {
	n.lab.t.Helper()
	cmd := n.HelperCommand(context.Background(), helper, args...)
	return n.lab.start(cmd)
}

func (l *Lab) start(cmd *exec.Cmd) *Process {
	l.t.Helper()
	p := &Process{Cmd: cmd, done: make(chan struct{})}
	cmd.Stdout = &p.out
	cmd.Stderr = &p.out
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		l.t.Fatalf("netlab: start %v: %v", cmd.Args, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	l.t.Cleanup(func() { _ = p.Stop() })
	return p
}

// Process is a background command started by Start or StartHelper.
type Process struct {
	// Cmd is the running command.
	Cmd  *exec.Cmd
	out  syncBuffer
	done chan struct{}
	err  error
}

// Output is everything the process wrote to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitOutput waits until the process's output contains s. It fails if the
// process exits first or ctx ends.
func (p *Process) WaitOutput(ctx context.Context, s string) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if strings.Contains(p.Output(), s) {
			return nil
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), s) {
				return nil
			}
			return fmt.Errorf("netlab: %v exited (%v) before printing %q: %s", p.Cmd.Args, p.err, s, p.Output())
		case <-ctx.Done():
			return fmt.Errorf("netlab: waiting for %q from %v: %w; output so far: %s", s, p.Cmd.Args, ctx.Err(), p.Output())
		case <-tick.C:
		}
	}
}

// Stop ends the process: SIGTERM, and SIGKILL after two seconds. It
// returns the process's exit error; stopping an exited process is a no-op.
func (p *Process) Stop() error {
	select {
	case <-p.done:
		return p.err
	default:
	}
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(2 * time.Second):
		_ = p.Cmd.Process.Kill()
		<-p.done
	}
	return p.err
}

// syncBuffer is a bytes.Buffer safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Helper is a helper mode of a test binary: it gets the command line
// arguments and returns the exit code.
type Helper func(args []string) int

// RunHelpers runs the helper named by the NETLAB_HELPER environment
// variable, if any, and exits with its code; otherwise it returns. Call it
// first thing in TestMain.
func RunHelpers(helpers map[string]Helper) {
	name := os.Getenv(HelperEnv)
	if name == "" {
		return
	}
	h, ok := helpers[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "netlab: unknown helper %q\n", name)
		os.Exit(2)
	}
	os.Exit(h(os.Args[1:]))
}

var (
	checkOnce sync.Once
	checkErr  error
)

// Available reports why labs cannot run here, or nil if they can: it
// needs root, "ip" with working "ip netns", and a working iptables inside
// a namespace.
func Available() error {
	checkOnce.Do(func() { checkErr = check() })
	return checkErr
}

func check() error {
	if os.Geteuid() != 0 {
		return errors.New("not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return errors.New("no ip command (iproute2)")
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	name := "nlchk" + hex.EncodeToString(b[:])
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "add", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add does not work: %v: %s", err, bytes.TrimSpace(out))
	}
	defer exec.Command("ip", "netns", "del", name).Run()
	ipt := iptablesBinary()
	if out, err := exec.CommandContext(ctx, "ip", "netns", "exec", name, ipt, "-t", "nat", "-S").CombinedOutput(); err != nil {
		return fmt.Errorf("%s does not work in a namespace: %v: %s", ipt, err, bytes.TrimSpace(out))
	}
	return nil
}

// Require skips the test unless labs can run here and the given extra
// commands are installed. When the environment has CI=true it fails the
// test instead: CI must run the labs.
func Require(t testing.TB, commands ...string) {
	t.Helper()
	err := Available()
	if err == nil {
		for _, c := range commands {
			if _, lerr := exec.LookPath(c); lerr != nil {
				err = fmt.Errorf("command %s not installed", c)
				break
			}
		}
	}
	if err == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("netlab: network lab cannot run: %v (CI=true, so this fails instead of skipping)", err)
	}
	t.Skipf("netlab: network lab skipped: %v (needs root, iproute2, iptables%s)", err, extra(commands))
}

func extra(commands []string) string {
	if len(commands) == 0 {
		return ""
	}
	return ", " + strings.Join(commands, ", ")
}
