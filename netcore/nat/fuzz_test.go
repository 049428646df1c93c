package nat

import (
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"
)

// handlerOnly is a Server with addresses but no sockets, enough for
// handle.
func handlerOnly(rfc5780 bool) *Server {
	s := &Server{
		software: DefaultSoftware,
		log:      slog.New(slog.NewTextHandler(io.Discard, nil)),
		addrs: []netip.AddrPort{
			netip.MustParseAddrPort("192.0.2.1:3478"),
			netip.MustParseAddrPort("192.0.2.1:3479"),
			netip.MustParseAddrPort("192.0.2.2:3478"),
			netip.MustParseAddrPort("192.0.2.2:3479"),
		},
	}
	if !rfc5780 {
		s.addrs = s.addrs[:1]
	}
	s.socks = make([]net.PacketConn, len(s.addrs))
	return s
}

// FuzzServerHandle feeds arbitrary datagrams to the request handler. It
// must never panic; it must answer every well-formed Binding request
// (with a success or an error) and only those; every answer must be a
// valid STUN response for the request's transaction, sent to the
// requester's IP from one of the server's sockets, and never much larger
// than the request.
func FuzzServerHandle(f *testing.F) {
	seed := func(setters ...stun.Setter) {
		m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)...)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(m.Raw, uint8(0), true)
	}
	seed()
	seed(stun.Fingerprint)
	seed(changeRequest(changeIPFlag|changePortFlag), stun.Fingerprint)
	seed(changeRequest(changePortFlag))
	seed(rawAttr{stun.AttrResponsePort, []byte{0x30, 0x39, 0, 0}})
	seed(rawAttr{stun.AttrPadding, make([]byte, 64)})
	seed(rawAttr{0x0042, []byte{1}})
	seed(stun.NewUsername("user"), stun.NewSoftware("x"))
	f.Add([]byte("not stun at all"), uint8(1), false)
	f.Add([]byte{}, uint8(2), true)
	f.Add(stun.MustBuild(stun.TransactionID, stun.BindingSuccess).Raw, uint8(3), true)

	servers := map[bool]*Server{true: handlerOnly(true), false: handlerOnly(false)}
	src := netip.MustParseAddrPort("198.51.100.7:40000")
	f.Fuzz(func(t *testing.T, pkt []byte, on uint8, rfc5780 bool) {
		s := servers[rfc5780]
		idx := int(on) % len(s.addrs)
		resp, via, to, ok := s.handle(pkt, src, idx)

		req := &stun.Message{Raw: append([]byte(nil), pkt...)}
		wellFormed := stun.IsMessage(pkt) && req.Decode() == nil && req.Type == stun.BindingRequest &&
			(!req.Contains(stun.AttrFingerprint) || stun.Fingerprint.Check(req) == nil)
		if ok != wellFormed {
			t.Fatalf("answered=%v for a request that is well-formed=%v", ok, wellFormed)
		}
		if !ok {
			return
		}
		if via < 0 || via >= len(s.addrs) {
			t.Fatalf("via socket %d of %d", via, len(s.addrs))
		}
		if to.Addr() != src.Addr() || to.Port() == 0 {
			t.Fatalf("answer to %v, want %v's IP", to, src)
		}
		if len(resp) > len(pkt)+200 {
			t.Fatalf("%d-byte answer to a %d-byte request", len(resp), len(pkt))
		}
		m := &stun.Message{Raw: resp}
		if err := m.Decode(); err != nil {
			t.Fatalf("undecodable answer: %v", err)
		}
		if m.TransactionID != req.TransactionID {
			t.Fatal("answer for another transaction")
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			t.Fatalf("answer fingerprint: %v", err)
		}
		switch m.Type {
		case stun.BindingSuccess:
			var xor stun.XORMappedAddress
			if err := xor.GetFrom(m); err != nil || toAddrPort(xor.IP, xor.Port) != src {
				t.Fatalf("XOR-MAPPED-ADDRESS %v (%v), want %v", xor, err, src)
			}
		case stun.BindingError:
			if via != idx || to != src {
				t.Fatal("error answered from another socket or to another port")
			}
			var ec stun.ErrorCodeAttribute
			if err := ec.GetFrom(m); err != nil {
				t.Fatalf("error answer without ERROR-CODE: %v", err)
			}
		default:
			t.Fatalf("answer of type %v", m.Type)
		}
	})
}
