package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// loopback addresses of the RFC 5780 test server; both are on lo.
var (
	loIP    = netip.MustParseAddr("127.0.0.1")
	loAltIP = netip.MustParseAddr("127.0.0.2")
)

func startServer(t testing.TB, cfg ServerConfig) *Server {
	t.Helper()
	if !cfg.Listen.IsValid() {
		cfg.Listen = netip.AddrPortFrom(loIP, 0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := ListenServer(ctx, cfg)
	if err != nil {
		t.Fatalf("ListenServer: %v", err)
	}
	t.Cleanup(func() {
		// A test may have closed it already.
		if err := s.Close(); err != nil && !errors.Is(err, ErrClosed) {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// client is a bare UDP socket that exchanges single STUN messages.
type client struct {
	t    testing.TB
	conn *net.UDPConn
}

func newClient(t testing.TB, ip netip.Addr) *client {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &client{t: t, conn: conn}
}

func (c *client) addr() netip.AddrPort { return netAddrPort(c.conn.LocalAddr()) }

func (c *client) send(to netip.AddrPort, b []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDPAddrPort(b, to); err != nil {
		c.t.Fatal(err)
	}
}

// recv returns the next STUN message and its source, or nil on timeout.
func (c *client) recv(timeout time.Duration) (*stun.Message, netip.AddrPort) {
	c.t.Helper()
	buf := make([]byte, 4096)
	_ = c.conn.SetReadDeadline(time.Now().Add(timeout))
	n, from, err := c.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, netip.AddrPort{}
	}
	m := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
	if err := m.Decode(); err != nil {
		c.t.Fatalf("undecodable response: %v", err)
	}
	return m, netip.AddrPortFrom(from.Addr().Unmap(), from.Port())
}

func bindingRequest(t testing.TB, extra ...stun.Setter) *stun.Message {
	t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, extra...)
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestServerBinding(t *testing.T) {
	s := startServer(t, ServerConfig{})
	c := newClient(t, loIP)
	req := bindingRequest(t)
	c.send(s.Addr(), req.Raw)
	resp, from := c.recv(2 * time.Second)
	if resp == nil {
		t.Fatal("no response")
	}
	if from != s.Addr() {
		t.Errorf("response from %v, want %v", from, s.Addr())
	}
	if resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
		t.Fatalf("got %v, want binding success for the request's transaction", resp)
	}
	if err := stun.Fingerprint.Check(resp); err != nil {
		t.Errorf("fingerprint: %v", err)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(resp); err != nil {
		t.Fatal(err)
	}
	if got := toAddrPort(xor.IP, xor.Port); got != c.addr() {
		t.Errorf("XOR-MAPPED-ADDRESS %v, want %v", got, c.addr())
	}
	var mapped stun.MappedAddress
	if err := mapped.GetFrom(resp); err != nil {
		t.Fatal(err)
	}
	if got := toAddrPort(mapped.IP, mapped.Port); got != c.addr() {
		t.Errorf("MAPPED-ADDRESS %v, want %v", got, c.addr())
	}
	var origin stun.ResponseOrigin
	if err := origin.GetFrom(resp); err != nil || toAddrPort(origin.IP, origin.Port) != s.Addr() {
		t.Errorf("RESPONSE-ORIGIN %v (%v), want %v", origin, err, s.Addr())
	}
	if resp.Contains(stun.AttrOtherAddress) {
		t.Error("plain server sent OTHER-ADDRESS")
	}
	var sw stun.Software
	if err := sw.GetFrom(resp); err != nil || sw.String() != DefaultSoftware {
		t.Errorf("SOFTWARE %q (%v)", sw, err)
	}
}

func TestServerRFC5780(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	addrs := s.Addrs()
	if len(addrs) != 4 {
		t.Fatalf("Addrs %v, want 4", addrs)
	}
	pp, pa, ap, aa := addrs[0], addrs[1], addrs[2], addrs[3]
	if pp.Addr() != loIP || pa.Addr() != loIP || ap.Addr() != loAltIP || aa.Addr() != loAltIP ||
		pp.Port() != ap.Port() || pa.Port() != aa.Port() || pp.Port() == pa.Port() {
		t.Fatalf("bad address set %v", addrs)
	}
	if s.OtherAddr() != aa {
		t.Errorf("OtherAddr %v, want %v", s.OtherAddr(), aa)
	}
	c := newClient(t, netip.IPv4Unspecified())
	cases := []struct {
		name   string
		to     netip.AddrPort
		change uint32
		from   netip.AddrPort
		other  netip.AddrPort
	}{
		{"plain", pp, 0, pp, aa},
		{"change port", pp, changePortFlag, pa, aa},
		{"change ip", pp, changeIPFlag, ap, aa},
		{"change ip and port", pp, changeIPFlag | changePortFlag, aa, aa},
		{"to alt ip", ap, 0, ap, pa},
		{"to alt ip, change both", ap, changeIPFlag | changePortFlag, pa, pa},
		{"to alt port, change port", pa, changePortFlag, pp, ap},
		{"to alt both, change ip", aa, changeIPFlag, pa, pp},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var extra []stun.Setter
			if tc.change != 0 {
				extra = append(extra, changeRequest(tc.change))
			}
			req := bindingRequest(t, extra...)
			c.send(tc.to, req.Raw)
			resp, from := c.recv(2 * time.Second)
			if resp == nil {
				t.Fatal("no response")
			}
			if resp.Type != stun.BindingSuccess {
				t.Fatalf("got %v", resp)
			}
			if from != tc.from {
				t.Errorf("answered from %v, want %v", from, tc.from)
			}
			var origin stun.ResponseOrigin
			if err := origin.GetFrom(resp); err != nil || toAddrPort(origin.IP, origin.Port) != tc.from {
				t.Errorf("RESPONSE-ORIGIN %v (%v), want %v", origin, err, tc.from)
			}
			var other stun.OtherAddress
			if err := other.GetFrom(resp); err != nil || toAddrPort(other.IP, other.Port) != tc.other {
				t.Errorf("OTHER-ADDRESS %v (%v), want %v", other, err, tc.other)
			}
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(resp); err != nil {
				t.Fatal(err)
			}
			if got := toAddrPort(xor.IP, xor.Port); got.Port() != c.addr().Port() {
				t.Errorf("XOR-MAPPED-ADDRESS %v, want port %d", got, c.addr().Port())
			}
		})
	}
}

func TestServerFixedPorts(t *testing.T) {
	// Pick a free port pair by letting the kernel choose, then reuse it.
	probe := startServer(t, ServerConfig{AltIP: loAltIP})
	port := probe.Addr().Port()
	if err := probe.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := ListenServer(context.Background(), ServerConfig{
		Listen: netip.AddrPortFrom(loIP, port), AltIP: loAltIP,
	})
	if err != nil {
		t.Skipf("port %d taken meanwhile: %v", port, err)
	}
	defer s.Close()
	if s.OtherAddr() != netip.AddrPortFrom(loAltIP, port+1) && port != 65535 {
		t.Errorf("OtherAddr %v, want alternate port %d", s.OtherAddr(), port+1)
	}
}

func errorCode(t *testing.T, m *stun.Message) stun.ErrorCode {
	t.Helper()
	if m.Type != stun.BindingError {
		t.Fatalf("got %v, want binding error", m.Type)
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	return ec.Code
}

func TestServerChangeRequestWithoutAltAddress(t *testing.T) {
	s := startServer(t, ServerConfig{})
	c := newClient(t, loIP)
	c.send(s.Addr(), bindingRequest(t, changeRequest(changeIPFlag|changePortFlag)).Raw)
	resp, _ := c.recv(2 * time.Second)
	if resp == nil {
		t.Fatal("no response")
	}
	if code := errorCode(t, resp); code != stun.CodeUnknownAttribute {
		t.Errorf("code %d, want 420", code)
	}
	var ua stun.UnknownAttributes
	if err := ua.GetFrom(resp); err != nil || len(ua) != 1 || ua[0] != stun.AttrChangeRequest {
		t.Errorf("UNKNOWN-ATTRIBUTES %v (%v)", ua, err)
	}
	// A CHANGE-REQUEST without flags is fine.
	c.send(s.Addr(), bindingRequest(t, changeRequest(0)).Raw)
	if resp, _ := c.recv(2 * time.Second); resp == nil || resp.Type != stun.BindingSuccess {
		t.Errorf("zero CHANGE-REQUEST: got %v", resp)
	}
}

type rawAttr struct {
	typ stun.AttrType
	val []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.typ, a.val)
	return nil
}

func TestServerUnknownAndMalformedAttributes(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	c := newClient(t, loIP)

	c.send(s.Addr(), bindingRequest(t, rawAttr{0x0042, []byte{1, 2, 3, 4}}).Raw)
	resp, _ := c.recv(2 * time.Second)
	if resp == nil || errorCode(t, resp) != stun.CodeUnknownAttribute {
		t.Errorf("unknown required attribute: got %v", resp)
	}
	// Unknown comprehension-optional attributes are ignored.
	c.send(s.Addr(), bindingRequest(t, rawAttr{0x8042, []byte{1}}).Raw)
	if resp, _ := c.recv(2 * time.Second); resp == nil || resp.Type != stun.BindingSuccess {
		t.Errorf("unknown optional attribute: got %v", resp)
	}
	c.send(s.Addr(), bindingRequest(t, rawAttr{stun.AttrChangeRequest, []byte{0, 6}}).Raw)
	if resp, _ := c.recv(2 * time.Second); resp == nil || errorCode(t, resp) != stun.CodeBadRequest {
		t.Errorf("short CHANGE-REQUEST: got %v", resp)
	}
	c.send(s.Addr(), bindingRequest(t, rawAttr{stun.AttrResponsePort, []byte{0, 0, 0, 0}}).Raw)
	if resp, _ := c.recv(2 * time.Second); resp == nil || errorCode(t, resp) != stun.CodeBadRequest {
		t.Errorf("zero RESPONSE-PORT: got %v", resp)
	}
}

func TestServerResponsePortAndPadding(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	c := newClient(t, loIP)
	other := newClient(t, loIP)
	var rp [4]byte
	binary.BigEndian.PutUint16(rp[:], other.addr().Port())
	req := bindingRequest(t, rawAttr{stun.AttrResponsePort, rp[:]}, rawAttr{stun.AttrPadding, make([]byte, 100)})
	c.send(s.Addr(), req.Raw)
	resp, _ := other.recv(2 * time.Second)
	if resp == nil {
		t.Fatal("no response on the RESPONSE-PORT socket")
	}
	if resp.TransactionID != req.TransactionID {
		t.Error("wrong transaction")
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(resp); err != nil || toAddrPort(xor.IP, xor.Port) != c.addr() {
		t.Errorf("XOR-MAPPED-ADDRESS %v (%v), want the sender %v", xor, err, c.addr())
	}
	if v, err := resp.Get(stun.AttrPadding); err != nil || len(v) != 100 {
		t.Errorf("PADDING %d bytes (%v), want 100", len(v), err)
	}
}

func TestServerIgnoresGarbage(t *testing.T) {
	s := startServer(t, ServerConfig{AltIP: loAltIP})
	c := newClient(t, loIP)
	resp := stun.MustBuild(stun.TransactionID, stun.BindingSuccess)
	indication := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication))
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest))
	badFP := bindingRequest(t)
	badFP.Raw[len(badFP.Raw)-1] ^= 0xff
	truncated := bindingRequest(t).Raw[:30]
	junk := [][]byte{
		{}, {0}, []byte("hello, world"), make([]byte, 1500), resp.Raw, indication.Raw,
		allocate.Raw, badFP.Raw, truncated,
		{0x00, 0x01, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
	}
	for _, j := range junk {
		c.send(s.Addr(), j)
	}
	if m, _ := c.recv(200 * time.Millisecond); m != nil {
		t.Errorf("answered garbage with %v", m)
	}
	req := bindingRequest(t)
	c.send(s.Addr(), req.Raw)
	if m, _ := c.recv(2 * time.Second); m == nil || m.TransactionID != req.TransactionID {
		t.Errorf("no answer to a valid request after garbage: %v", m)
	}
}

func TestServerCloseIdempotent(t *testing.T) {
	s, err := ListenServer(context.Background(), ServerConfig{Listen: netip.AddrPortFrom(loIP, 0), AltIP: loAltIP})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var closed atomic.Int32
	for range 4 {
		wg.Go(func() {
			err := s.Close()
			switch {
			case err == nil:
				closed.Add(1)
			case !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed):
				t.Errorf("Close: %v, want nil or ErrClosed", err)
			}
		})
	}
	wg.Wait()
	if n := closed.Load(); n != 1 {
		t.Errorf("%d of 4 concurrent Close calls closed the server, want 1", n)
	}
	if err := s.Close(); !errors.Is(err, ErrClosed) || !errors.Is(err, net.ErrClosed) {
		t.Errorf("Close again: %v, want ErrClosed", err)
	}
}

func TestListenServerBadConfig(t *testing.T) {
	cases := []ServerConfig{
		{},
		{Listen: netip.MustParseAddrPort("0.0.0.0:0"), AltIP: loAltIP},
		{Listen: netip.AddrPortFrom(loIP, 0), AltIP: loIP},
		{Listen: netip.AddrPortFrom(loIP, 0), AltIP: netip.MustParseAddr("::1")},
		{Listen: netip.AddrPortFrom(loIP, 4000), AltIP: loAltIP, AltPort: 4000},
	}
	for _, cfg := range cases {
		s, err := ListenServer(context.Background(), cfg)
		if !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: err %v, want ErrBadConfig", cfg, err)
		}
		if s != nil {
			s.Close()
		}
	}
}
