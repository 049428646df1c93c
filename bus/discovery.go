package bus

// Zero-config LAN discovery. A discovering node sends a small UDP
// multicast beacon (its cluster name, node name and route address) every
// DiscoveryInterval on one interface, and listens for the beacons of
// others. Before its server starts it listens for DiscoveryWindow and
// starts with routes to every node of its cluster it heard, so nodes
// started together form one cluster (and one JetStream meta group) from
// the start. Nodes heard later are added as routes at run time with a
// configuration reload of the embedded server.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Beacon wire format, version 1 (all integers big endian):
//
//	"pb"            2 bytes magic
//	version         1 byte (1)
//	flags           1 byte (0; decoders of version 1 ignore it)
//	cluster name    1 byte length n (1..64), n bytes
//	node name       1 byte length n (1..64), n bytes
//	route IP        1 byte length 4 or 16, the address bytes
//	route port      2 bytes (1..65535)
//
// Nothing may follow. A beacon is at most 4+65+65+17+2 = 153 bytes.
const (
	beaconMagic   = "pb"
	beaconVersion = 1
	maxBeaconName = 64
	// maxBeaconSize bounds a beacon; larger datagrams are ignored.
	maxBeaconSize = 4 + 1 + maxBeaconName + 1 + maxBeaconName + 1 + 16 + 2
	// maxDiscovered bounds the routes discovery remembers, so that a
	// flood of forged beacons cannot grow the route list without end.
	maxDiscovered = 64
)

// Errors of the beacon decoder.
var (
	// ErrBeacon reports a datagram that is not a valid beacon.
	ErrBeacon = errors.New("bus: malformed discovery beacon")
	// ErrBeaconVersion reports a beacon of a version this node does not
	// speak (it is ignored, so newer nodes can share the group).
	ErrBeaconVersion = errors.New("bus: unsupported discovery beacon version")
)

// Beacon is what a discovering node announces.
type Beacon struct {
	// Cluster is the cluster name; nodes ignore beacons of other
	// clusters.
	Cluster string
	// Name is the node name.
	Name string
	// Route is the address of the node's cluster listener.
	Route netip.AddrPort
}

// MarshalBinary encodes the beacon (version 1).
func (b Beacon) MarshalBinary() ([]byte, error) {
	if err := checkBeaconName(b.Cluster); err != nil {
		return nil, fmt.Errorf("%w: cluster %q: %v", ErrBeacon, b.Cluster, err)
	}
	if err := checkBeaconName(b.Name); err != nil {
		return nil, fmt.Errorf("%w: name %q: %v", ErrBeacon, b.Name, err)
	}
	if err := checkRouteAddr(b.Route); err != nil {
		return nil, fmt.Errorf("%w: route %v: %v", ErrBeacon, b.Route, err)
	}
	out := make([]byte, 0, maxBeaconSize)
	out = append(out, beaconMagic...)
	out = append(out, beaconVersion, 0)
	out = append(out, byte(len(b.Cluster)))
	out = append(out, b.Cluster...)
	out = append(out, byte(len(b.Name)))
	out = append(out, b.Name...)
	ip := b.Route.Addr().Unmap()
	out = append(out, byte(ip.BitLen()/8))
	out = append(out, ip.AsSlice()...)
	return binary.BigEndian.AppendUint16(out, b.Route.Port()), nil
}

// UnmarshalBinary decodes a beacon. It fails with ErrBeaconVersion for
// another version and ErrBeacon for anything malformed.
func (b *Beacon) UnmarshalBinary(data []byte) error {
	if len(data) < 4 || string(data[:2]) != beaconMagic {
		return fmt.Errorf("%w: no magic", ErrBeacon)
	}
	if data[2] != beaconVersion {
		return fmt.Errorf("%w: %d", ErrBeaconVersion, data[2])
	}
	if len(data) > maxBeaconSize {
		return fmt.Errorf("%w: %d bytes", ErrBeacon, len(data))
	}
	rest := data[4:]
	field := func(what string) ([]byte, error) {
		if len(rest) < 1 || int(rest[0]) > len(rest)-1 {
			return nil, fmt.Errorf("%w: truncated %s", ErrBeacon, what)
		}
		n := int(rest[0])
		f := rest[1 : 1+n]
		rest = rest[1+n:]
		return f, nil
	}
	cluster, err := field("cluster")
	if err != nil {
		return err
	}
	name, err := field("name")
	if err != nil {
		return err
	}
	ipb, err := field("address")
	if err != nil {
		return err
	}
	if len(rest) != 2 {
		return fmt.Errorf("%w: %d bytes after the address", ErrBeacon, len(rest))
	}
	ip, ok := netip.AddrFromSlice(ipb)
	if !ok {
		return fmt.Errorf("%w: address of %d bytes", ErrBeacon, len(ipb))
	}
	if ip.Is4In6() {
		// IPv4 travels in 4 bytes; one encoding per beacon.
		return fmt.Errorf("%w: IPv4-mapped address", ErrBeacon)
	}
	nb := Beacon{
		Cluster: string(cluster),
		Name:    string(name),
		Route:   netip.AddrPortFrom(ip, binary.BigEndian.Uint16(rest)),
	}
	if err := checkBeaconName(nb.Cluster); err != nil {
		return fmt.Errorf("%w: cluster: %v", ErrBeacon, err)
	}
	if err := checkBeaconName(nb.Name); err != nil {
		return fmt.Errorf("%w: name: %v", ErrBeacon, err)
	}
	if err := checkRouteAddr(nb.Route); err != nil {
		return fmt.Errorf("%w: route: %v", ErrBeacon, err)
	}
	*b = nb
	return nil
}

// checkBeaconName accepts names NATS accepts as cluster and server names,
// in printable ASCII.
func checkBeaconName(s string) error {
	if s == "" || len(s) > maxBeaconName {
		return errors.New("empty or too long")
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '*' || c == '>' {
			return fmt.Errorf("byte %#x not allowed", c)
		}
	}
	return nil
}

// checkRouteAddr accepts an address another host can dial.
func checkRouteAddr(ap netip.AddrPort) error {
	a := ap.Addr()
	switch {
	case !a.IsValid():
		return errors.New("no address")
	case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return errors.New("not a unicast address other hosts reach")
	case a.Zone() != "":
		return errors.New("zoned address")
	case ap.Port() == 0:
		return errors.New("port 0")
	}
	return nil
}

// parseGroup parses the multicast group:port of discovery beacons.
func parseGroup(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil || !ap.Addr().Is4() || !ap.Addr().IsMulticast() || ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: discovery group %q (want an IPv4 multicast group:port, e.g. %s)",
			ErrInvalidOption, s, DefaultDiscoveryGroup)
	}
	return ap, nil
}

// discoveryInterface picks the interface and IPv4 address of discovery:
// the named interface, or the one holding the cluster listen address
// when that is specific, or the first up, multicast-capable,
// non-loopback interface with an IPv4 address.
func discoveryInterface(name, clusterHost string) (*net.Interface, netip.Addr, error) {
	var want netip.Addr
	if a, err := netip.ParseAddr(clusterHost); err == nil && !a.IsUnspecified() {
		if a.IsLoopback() {
			return nil, netip.Addr{}, fmt.Errorf("%w: discovery needs a cluster listener other hosts reach, not %s", ErrInvalidOption, a)
		}
		want = a.Unmap()
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, netip.Addr{}, fmt.Errorf("bus: discovery: %w", err)
	}
	for i := range ifs {
		ifi := &ifs[i]
		if name != "" && ifi.Name != name {
			continue
		}
		if name == "" && (ifi.Flags&net.FlagUp == 0 || ifi.Flags&net.FlagMulticast == 0 || ifi.Flags&net.FlagLoopback != 0) {
			continue
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pfx, err := netip.ParsePrefix(a.String())
			if err != nil || !pfx.Addr().Is4() {
				continue
			}
			ip := pfx.Addr()
			if want.IsValid() && ip != want {
				continue
			}
			if !want.IsValid() && (ip.IsLoopback() || ip.IsLinkLocalUnicast()) {
				continue
			}
			return ifi, ip, nil
		}
	}
	switch {
	case name != "" && want.IsValid():
		return nil, netip.Addr{}, fmt.Errorf("%w: discovery interface %q does not hold %s", ErrInvalidOption, name, want)
	case name != "":
		return nil, netip.Addr{}, fmt.Errorf("%w: discovery interface %q not found or without IPv4 address", ErrInvalidOption, name)
	case want.IsValid():
		return nil, netip.Addr{}, fmt.Errorf("%w: no multicast interface holds the cluster address %s", ErrInvalidOption, want)
	}
	return nil, netip.Addr{}, fmt.Errorf("%w: no up, multicast-capable interface with an IPv4 address for discovery", ErrInvalidOption)
}

// beaconConn is the network side of discovery (a multicast socket pair
// in normal use; tests use an in-memory one).
type beaconConn interface {
	// Send sends one beacon to the group.
	Send(b []byte) error
	// Receive returns the next datagram; it fails once the conn is
	// closed.
	Receive(buf []byte) (int, error)
	// Close ends Receive and releases the sockets.
	Close() error
}

// udpBeaconConn sends from a socket bound to the interface address and
// receives on the group.
type udpBeaconConn struct {
	send  *net.UDPConn
	recv  *net.UDPConn
	group *net.UDPAddr
}

// listenBeacons opens the sockets of discovery on ifi.
func listenBeacons(ifi *net.Interface, ip netip.Addr, group netip.AddrPort) (*udpBeaconConn, error) {
	gaddr := net.UDPAddrFromAddrPort(group)
	recv, err := net.ListenMulticastUDP("udp4", ifi, gaddr)
	if err != nil {
		return nil, fmt.Errorf("bus: discovery: listen on %s %s: %w", ifi.Name, group, err)
	}
	lc := net.ListenConfig{Control: multicastControl(ifi, ip)}
	pc, err := lc.ListenPacket(context.Background(), "udp4", net.JoinHostPort(ip.String(), "0"))
	if err != nil {
		recv.Close()
		return nil, fmt.Errorf("bus: discovery: sender on %s: %w", ip, err)
	}
	return &udpBeaconConn{send: pc.(*net.UDPConn), recv: recv, group: gaddr}, nil
}

// Send sends a beacon to the group.
func (c *udpBeaconConn) Send(b []byte) error {
	_, err := c.send.WriteToUDP(b, c.group)
	return err
}

// Receive reads the next datagram sent to the group.
func (c *udpBeaconConn) Receive(buf []byte) (int, error) {
	n, _, err := c.recv.ReadFromUDP(buf)
	return n, err
}

// Close closes both sockets.
func (c *udpBeaconConn) Close() error {
	return errors.Join(c.send.Close(), c.recv.Close())
}

// discoverer announces this node and collects the routes of the other
// nodes of its cluster.
type discoverer struct {
	log      *slog.Logger
	conn     beaconConn
	self     Beacon
	beacon   []byte
	interval time.Duration

	mu       sync.Mutex
	routes   map[netip.AddrPort]string // discovered route -> node name
	warned   map[string]bool           // names and clusters already logged
	onNew    func(netip.AddrPort)      // set once the server runs
	changed  chan struct{}             // signalled on every new route
	stop     chan struct{}
	wg       sync.WaitGroup
	closeErr error
	once     sync.Once
}

// newDiscoverer starts sending self's beacon on conn and listening.
func newDiscoverer(conn beaconConn, self Beacon, interval time.Duration, log *slog.Logger) (*discoverer, error) {
	b, err := self.MarshalBinary()
	if err != nil {
		return nil, err
	}
	d := &discoverer{
		log: log, conn: conn, self: self, beacon: b, interval: interval,
		routes: map[netip.AddrPort]string{}, warned: map[string]bool{},
		changed: make(chan struct{}, 1), stop: make(chan struct{}),
	}
	d.wg.Add(2)
	go d.sendLoop()
	go d.receiveLoop()
	return d, nil
}

// sendLoop sends the node's beacon until Close: three quick ones, then
// one every interval.
func (d *discoverer) sendLoop() {
	defer d.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for i := 0; ; i++ {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		if err := d.conn.Send(d.beacon); err != nil {
			d.warnOnce("send:"+err.Error(), "discovery beacon not sent", "err", err)
		}
		// A few quick beacons first, so that nodes started together
		// hear each other well within their window even if a datagram
		// is lost.
		next := d.interval
		if i < 3 {
			next = d.interval / 4
		}
		t.Reset(next)
	}
}

// receiveLoop reads beacons and hands them to handle until Close.
func (d *discoverer) receiveLoop() {
	defer d.wg.Done()
	buf := make([]byte, 2048)
	for {
		n, err := d.conn.Receive(buf)
		if err != nil {
			select {
			case <-d.stop:
				return
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			d.warnOnce("recv:"+err.Error(), "discovery receive failed", "err", err)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		d.handle(buf[:n])
	}
}

// handle processes one datagram.
func (d *discoverer) handle(data []byte) {
	var b Beacon
	if err := b.UnmarshalBinary(data); err != nil {
		d.log.Debug("discovery: ignored datagram", "err", err, "bytes", len(data))
		return
	}
	if b.Cluster != d.self.Cluster {
		d.infoOnce("cluster:"+b.Cluster, "discovery: ignoring a node of another cluster", "cluster", b.Cluster, "node", b.Name)
		return
	}
	if b.Route == d.self.Route {
		return // our own beacon
	}
	if b.Name == d.self.Name {
		d.warnOnce("dup:"+b.Route.String(), "discovery: another node uses this node's name; names must be unique in a cluster",
			"name", b.Name, "route", b.Route)
		return
	}
	d.mu.Lock()
	if _, ok := d.routes[b.Route]; ok || len(d.routes) >= maxDiscovered {
		d.mu.Unlock()
		return
	}
	d.routes[b.Route] = b.Name
	onNew := d.onNew
	d.mu.Unlock()
	d.log.Info("discovery: found node", "node", b.Name, "route", b.Route)
	select {
	case d.changed <- struct{}{}:
	default:
	}
	if onNew != nil {
		onNew(b.Route)
	}
}

// Routes returns the discovered routes, sorted.
func (d *discoverer) Routes() []netip.AddrPort {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := make([]netip.AddrPort, 0, len(d.routes))
	for r := range d.routes {
		out = append(out, r)
	}
	sortAddrPorts(out)
	return out
}

// Wait listens for window (or until ctx ends) and returns the routes
// heard so far.
func (d *discoverer) Wait(ctx context.Context, window time.Duration) []netip.AddrPort {
	t := time.NewTimer(window)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	return d.Routes()
}

// OnNew sets the function called (on the receive goroutine) for every
// route discovered from now on.
func (d *discoverer) OnNew(f func(netip.AddrPort)) {
	d.mu.Lock()
	d.onNew = f
	d.mu.Unlock()
}

// Close stops the beacons and waits for the goroutines.
func (d *discoverer) Close() error {
	d.once.Do(func() {
		close(d.stop)
		d.closeErr = d.conn.Close()
		d.wg.Wait()
	})
	return d.closeErr
}

// warnOnce logs a warning the first time key is seen.
func (d *discoverer) warnOnce(key, msg string, args ...any) {
	if d.firstTime(key) {
		d.log.Warn(msg, args...)
	}
}

// infoOnce logs an info line the first time key is seen.
func (d *discoverer) infoOnce(key, msg string, args ...any) {
	if d.firstTime(key) {
		d.log.Info(msg, args...)
	}
}

// firstTime reports whether key is seen for the first time.
func (d *discoverer) firstTime(key string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.warned[key] || len(d.warned) > 256 {
		return false
	}
	d.warned[key] = true
	return true
}

// sortAddrPorts sorts a in address, then port order.
func sortAddrPorts(a []netip.AddrPort) {
	slices.SortFunc(a, func(x, y netip.AddrPort) int { return x.Compare(y) })
}

// routeString is the route URL of a discovered address.
func routeString(ap netip.AddrPort) string {
	return "nats-route://" + net.JoinHostPort(ap.Addr().String(), strconv.Itoa(int(ap.Port())))
}

// nameSafe makes s usable in a node name.
func nameSafe(s string) string {
	return strings.NewReplacer(".", "-", ":", "-", " ", "-", "*", "-", ">", "-", "%", "-").Replace(s)
}
