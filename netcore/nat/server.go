package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/pion/stun/v3"
)

// DefaultSoftware is the SOFTWARE attribute the server sends by default.
const DefaultSoftware = "peerbus"

// maxPadding caps the PADDING echoed back, so a response is never much
// larger than the request that caused it.
const maxPadding = 1500

// ServerConfig configures a Server. Only Listen is required.
type ServerConfig struct {
	// Listen is the primary address. Its IP must be concrete (not
	// unspecified) when AltIP is set; port 0 picks a free port.
	Listen netip.AddrPort

	// AltIP is the second IP address. Setting it enables RFC 5780: the
	// server then listens on Listen's IP and AltIP, each on the primary
	// and the alternate port (four sockets), answers CHANGE-REQUEST from
	// the other IP and/or port, and adds OTHER-ADDRESS. Without it the
	// server is a plain RFC 5389 binding server and answers a
	// CHANGE-REQUEST with error 420.
	AltIP netip.Addr

	// AltPort is the alternate port. Zero means the primary port plus
	// one, or a free port when the primary port is 0. Ignored without
	// AltIP.
	AltPort uint16

	// Software is the SOFTWARE attribute. Empty means DefaultSoftware;
	// "-" omits it.
	Software string

	// Logger receives the server's records (start, socket errors, and at
	// debug level every request). Nil discards.
	Logger *slog.Logger

	// ListenPacket opens the sockets. Nil means
	// (&net.ListenConfig{}).ListenPacket.
	ListenPacket ListenPacketFunc
}

// Socket indexes: bit 0 selects the alternate port, bit 1 the alternate
// IP, so a CHANGE-REQUEST is an XOR on the receiving socket's index.
const (
	sockPrimary = 0 // primary IP, primary port
	sockAltPort = 1 // primary IP, alternate port
	sockAltIP   = 2 // alternate IP, primary port
	sockAltBoth = 3 // alternate IP, alternate port
)

// Server is a STUN server answering Binding requests with
// XOR-MAPPED-ADDRESS and MAPPED-ADDRESS and, when configured with two
// addresses, the RFC 5780 NAT behaviour discovery attributes
// (CHANGE-REQUEST, RESPONSE-PORT, PADDING, OTHER-ADDRESS,
// RESPONSE-ORIGIN). It ignores everything that is not a well-formed STUN
// Binding request, authenticates nobody, keeps no state per client and
// never answers with more than the request asked for.
//
// Create one with ListenServer; stop it with Close.
type Server struct {
	socks    []net.PacketConn // 1 or 4, indexed as sockPrimary...
	addrs    []netip.AddrPort
	software string
	log      *slog.Logger

	closeOnce sync.Once
	wg        sync.WaitGroup
}

// ListenServer opens the server's sockets and starts serving. ctx only
// bounds the opening of the sockets; the server runs until Close.
func ListenServer(ctx context.Context, cfg ServerConfig) (*Server, error) {
	if !cfg.Listen.Addr().IsValid() {
		return nil, fmt.Errorf("%w: server needs a listen address", ErrInvalidOption)
	}
	primaryIP := cfg.Listen.Addr().Unmap()
	rfc5780 := cfg.AltIP.IsValid()
	if rfc5780 {
		alt := cfg.AltIP.Unmap()
		switch {
		case primaryIP.IsUnspecified() || alt.IsUnspecified():
			return nil, fmt.Errorf("%w: RFC 5780 needs two concrete IP addresses", ErrInvalidOption)
		case alt == primaryIP:
			return nil, fmt.Errorf("%w: alternate IP equals the primary IP", ErrInvalidOption)
		case alt.Is4() != primaryIP.Is4():
			return nil, fmt.Errorf("%w: primary and alternate IP differ in family", ErrInvalidOption)
		case cfg.AltPort != 0 && cfg.AltPort == cfg.Listen.Port():
			return nil, fmt.Errorf("%w: alternate port equals the primary port", ErrInvalidOption)
		}
	}
	s := &Server{software: cfg.Software, log: cfg.Logger}
	if s.software == "" {
		s.software = DefaultSoftware
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	listen := cfg.ListenPacket
	if listen == nil {
		listen = (&net.ListenConfig{}).ListenPacket
	}
	network := "udp4"
	if primaryIP.Is6() {
		network = "udp6"
	}
	open := func(ap netip.AddrPort) (net.PacketConn, netip.AddrPort, error) {
		c, err := listen(ctx, network, ap.String())
		if err != nil {
			return nil, netip.AddrPort{}, fmt.Errorf("nat: stun server listen %s: %w", ap, err)
		}
		got := netAddrPort(c.LocalAddr())
		return c, netip.AddrPortFrom(ap.Addr(), got.Port()), nil
	}
	closeAll := func() {
		for _, c := range s.socks {
			_ = c.Close()
		}
		s.socks, s.addrs = nil, nil
	}

	if !rfc5780 {
		c, a, err := open(netip.AddrPortFrom(primaryIP, cfg.Listen.Port()))
		if err != nil {
			return nil, err
		}
		s.socks, s.addrs = []net.PacketConn{c}, []netip.AddrPort{a}
	} else {
		// With ephemeral ports the chosen port may be taken on the other
		// IP; retry a few times.
		var err error
		for range 8 {
			err = s.openRFC5780(open, primaryIP, cfg.AltIP.Unmap(), cfg.Listen.Port(), cfg.AltPort)
			if err == nil {
				break
			}
			closeAll()
			if cfg.Listen.Port() != 0 && cfg.AltPort != 0 {
				break
			}
		}
		if err != nil {
			return nil, err
		}
	}
	for i, c := range s.socks {
		s.wg.Add(1)
		go s.serve(i, c)
	}
	s.log.Info("stun server listening", "addr", s.addrs[0], "other", s.OtherAddr())
	return s, nil
}

// openRFC5780 opens the four sockets of an RFC 5780 server. Port 0 (or
// altPort 0 with port 0) picks free ports.
func (s *Server) openRFC5780(open func(netip.AddrPort) (net.PacketConn, netip.AddrPort, error),
	primaryIP, altIP netip.Addr, port, altPort uint16) error {
	pp, ppAddr, err := open(netip.AddrPortFrom(primaryIP, port))
	if err != nil {
		return err
	}
	s.socks, s.addrs = append(s.socks, pp), append(s.addrs, ppAddr)
	if altPort == 0 && port != 0 {
		altPort = port + 1 // a fixed primary port: the next one
	}
	port = ppAddr.Port()
	pa, paAddr, err := open(netip.AddrPortFrom(primaryIP, altPort))
	if err != nil {
		return err
	}
	s.socks, s.addrs = append(s.socks, pa), append(s.addrs, paAddr)
	altPort = paAddr.Port()
	for _, ap := range []netip.AddrPort{netip.AddrPortFrom(altIP, port), netip.AddrPortFrom(altIP, altPort)} {
		c, a, err := open(ap)
		if err != nil {
			return err
		}
		s.socks, s.addrs = append(s.socks, c), append(s.addrs, a)
	}
	return nil
}

// Addr is the primary address.
func (s *Server) Addr() netip.AddrPort {
	return s.addrs[0]
}

// OtherAddr is the alternate address (alternate IP and port) that
// OTHER-ADDRESS names for requests to the primary address, or the zero
// value for a plain server.
func (s *Server) OtherAddr() netip.AddrPort {
	if len(s.addrs) < 4 {
		return netip.AddrPort{}
	}
	return s.addrs[sockAltBoth]
}

// Addrs are all addresses the server listens on: the primary one, then
// (RFC 5780) primary IP with alternate port, alternate IP with primary
// port, and alternate IP and port.
func (s *Server) Addrs() []netip.AddrPort {
	return append([]netip.AddrPort(nil), s.addrs...)
}

// Close stops the server and waits for its goroutines, which end as
// their sockets close. It is safe to call more than once and
// concurrently: one call closes the server, the others wait for it and
// return an error wrapping ErrClosed (and net.ErrClosed).
func (s *Server) Close() error {
	var err error
	first := false
	s.closeOnce.Do(func() {
		first = true
		for _, c := range s.socks {
			if cerr := c.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
				err = errors.Join(err, cerr)
			}
		}
		s.wg.Wait()
		s.log.Info("stun server closed", "addr", s.addrs[0])
	})
	if !first {
		return fmt.Errorf("nat: stun server close: %w", ErrClosed)
	}
	if err != nil {
		return fmt.Errorf("nat: stun server close: %w", err)
	}
	return nil
}

// serve reads requests on socket i until it is closed.
func (s *Server) serve(i int, c net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, 4096)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			s.log.Warn("stun server read", "addr", s.addrs[i], "err", err)
			time.Sleep(10 * time.Millisecond) // do not spin on a broken socket
			continue
		}
		src := netAddrPort(from)
		resp, via, to, ok := s.handle(buf[:n], src, i)
		if !ok {
			continue
		}
		if _, err := s.socks[via].WriteTo(resp, net.UDPAddrFromAddrPort(to)); err != nil {
			s.log.Debug("stun server write", "to", to, "err", err)
		}
	}
}

// Comprehension-required request attributes the server understands (or
// knowingly ignores, like ICE and authentication attributes: it
// authenticates nobody). Any other attribute below 0x8000 gets error 420.
var knownAttrs = map[stun.AttrType]bool{
	stun.AttrChangeRequest:          true,
	stun.AttrPadding:                true,
	stun.AttrResponsePort:           true,
	stun.AttrUsername:               true,
	stun.AttrMessageIntegrity:       true,
	stun.AttrMessageIntegritySHA256: true,
	stun.AttrRealm:                  true,
	stun.AttrNonce:                  true,
	stun.AttrUserhash:               true,
	stun.AttrPriority:               true,
	stun.AttrUseCandidate:           true,
}

// handle turns one datagram received on socket on from src into a
// response, the socket to send it from and its destination. ok is false
// when nothing must be sent (not STUN, not a Binding request, bad
// FINGERPRINT). It never panics on any input.
func (s *Server) handle(pkt []byte, src netip.AddrPort, on int) (resp []byte, via int, to netip.AddrPort, ok bool) {
	if !src.IsValid() || src.Port() == 0 || !stun.IsMessage(pkt) {
		return nil, 0, to, false
	}
	req := &stun.Message{Raw: append([]byte(nil), pkt...)}
	if err := req.Decode(); err != nil {
		return nil, 0, to, false
	}
	if req.Type != stun.BindingRequest {
		return nil, 0, to, false // responses, indications, other methods
	}
	if req.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(req); err != nil {
			return nil, 0, to, false
		}
	}
	via, to = on, src
	s.log.Debug("stun request", "from", src, "on", s.addrs[on])

	var unknown stun.UnknownAttributes
	for _, a := range req.Attributes {
		if a.Type.Required() && !knownAttrs[a.Type] {
			unknown = append(unknown, a.Type)
		}
	}
	if len(unknown) > 0 {
		return s.errorResponse(req, stun.CodeUnknownAttribute, unknown), via, to, true
	}

	if v, err := req.Get(stun.AttrChangeRequest); err == nil {
		if len(v) != 4 {
			return s.errorResponse(req, stun.CodeBadRequest, nil), via, to, true
		}
		flags := binary.BigEndian.Uint32(v)
		if flags&(changeIPFlag|changePortFlag) != 0 && len(s.socks) < 4 {
			// RFC 5780 section 6.1: no alternate address, error 420.
			return s.errorResponse(req, stun.CodeUnknownAttribute,
				stun.UnknownAttributes{stun.AttrChangeRequest}), via, to, true
		}
		if flags&changeIPFlag != 0 {
			via ^= sockAltIP
		}
		if flags&changePortFlag != 0 {
			via ^= sockAltPort
		}
	}
	if v, err := req.Get(stun.AttrResponsePort); err == nil {
		if len(v) != 4 || binary.BigEndian.Uint16(v) == 0 {
			return s.errorResponse(req, stun.CodeBadRequest, nil), on, src, true
		}
		to = netip.AddrPortFrom(src.Addr(), binary.BigEndian.Uint16(v))
	}

	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
		&stun.MappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())},
	}
	if origin := s.addrs[via]; !origin.Addr().IsUnspecified() {
		setters = append(setters, &stun.ResponseOrigin{IP: origin.Addr().AsSlice(), Port: int(origin.Port())})
	}
	if len(s.socks) == 4 {
		other := s.addrs[on^(sockAltIP|sockAltPort)]
		setters = append(setters, &stun.OtherAddress{IP: other.Addr().AsSlice(), Port: int(other.Port())})
	}
	if s.software != "-" {
		setters = append(setters, stun.NewSoftware(s.software))
	}
	if v, err := req.Get(stun.AttrPadding); err == nil && len(v) > 0 {
		setters = append(setters, padding(min(len(v), maxPadding)))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil, 0, to, false
	}
	return m.Raw, via, to, true
}

// padding is a PADDING attribute of n zero bytes (RFC 5780 section 7.6).
type padding int

// AddTo adds PADDING to m.
func (p padding) AddTo(m *stun.Message) error {
	m.Add(stun.AttrPadding, make([]byte, int(p)))
	return nil
}

// errorResponse builds a Binding error response to req.
func (s *Server) errorResponse(req *stun.Message, code stun.ErrorCode, unknown stun.UnknownAttributes) []byte {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingError,
		code,
	}
	if len(unknown) > 0 {
		setters = append(setters, unknown)
	}
	if s.software != "-" {
		setters = append(setters, stun.NewSoftware(s.software))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	return m.Raw
}
