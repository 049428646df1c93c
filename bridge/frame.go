package bridge

import (
	"encoding/binary"
	"fmt"
	"unicode/utf8"
)

// Relay frames. Every message on a relay subject is one frame:
//
//	byte 0     version (frameVersion)
//	byte 1     type
//	bytes 2-9  value, unsigned 64-bit big-endian (meaning per type)
//	bytes 10-  payload (per type)
//
// See docs/PROTOCOL.md, "Bridge relay frames".
const (
	frameVersion    = 1
	frameHeaderSize = 10
	// maxCloseReason bounds the reason text of a close frame.
	maxCloseReason = 256
	// pingPayloadSize is the payload of a ping: sent offset and flags.
	pingPayloadSize = 9
)

// frameType is the type byte of a relay frame.
type frameType uint8

// Relay frame types.
const (
	// frameData carries stream bytes; value is the stream offset of the
	// first payload byte. The payload is never empty.
	frameData frameType = 1
	// frameCredit grants credit: value is the stream offset up to which
	// (exclusive) the receiver of the frame may send. Grants only grow.
	frameCredit frameType = 2
	// frameFin ends the sender's stream (half-close); value is the
	// stream's length. No payload.
	frameFin frameType = 3
	// frameClose says the sender closed the connection: it neither reads
	// nor writes any more. Value 0; the payload is an optional UTF-8
	// reason of at most 256 bytes.
	frameClose frameType = 4
	// framePing is a keepalive that also repeats state: value is the
	// sender's current credit grant; the 9-byte payload is the number of
	// stream bytes the sender has published (8 bytes big-endian) and a
	// flags byte (bit 0: fin sent; other bits zero).
	framePing frameType = 5
	// frameDgram carries one datagram of a relayed UDP service; value is
	// the datagram's sequence number (starting at 0), the payload is the
	// datagram (possibly empty).
	frameDgram frameType = 6
)

func (t frameType) String() string {
	switch t {
	case frameData:
		return "data"
	case frameCredit:
		return "credit"
	case frameFin:
		return "fin"
	case frameClose:
		return "close"
	case framePing:
		return "ping"
	case frameDgram:
		return "dgram"
	}
	return fmt.Sprintf("type-%d", uint8(t))
}

// frame is a decoded relay frame.
type frame struct {
	typ   frameType
	value uint64
	// payload: data bytes, datagram, or close reason. It aliases the
	// decoded message.
	payload []byte
	// sent and fin are the ping's payload.
	sent uint64
	fin  bool
}

// appendFrame encodes f after b and returns the extended slice.
func appendFrame(b []byte, f frame) []byte {
	b = append(b, frameVersion, byte(f.typ))
	b = binary.BigEndian.AppendUint64(b, f.value)
	switch f.typ {
	case framePing:
		b = binary.BigEndian.AppendUint64(b, f.sent)
		var flags byte
		if f.fin {
			flags |= 1
		}
		b = append(b, flags)
	default:
		b = append(b, f.payload...)
	}
	return b
}

// decodeFrame parses one relay frame. It checks everything a frame can
// be checked for on its own; the stream state checks (offsets, credit)
// are the connection's. The payload aliases b.
func decodeFrame(b []byte) (frame, error) {
	if len(b) < frameHeaderSize {
		return frame{}, fmt.Errorf("%w: frame of %d bytes, shorter than its header", ErrProtocol, len(b))
	}
	if b[0] != frameVersion {
		return frame{}, fmt.Errorf("%w: frame version %d, want %d", ErrProtocol, b[0], frameVersion)
	}
	f := frame{typ: frameType(b[1]), value: binary.BigEndian.Uint64(b[2:10])}
	p := b[frameHeaderSize:]
	switch f.typ {
	case frameData:
		if len(p) == 0 {
			return frame{}, fmt.Errorf("%w: empty data frame", ErrProtocol)
		}
		if f.value+uint64(len(p)) < f.value {
			return frame{}, fmt.Errorf("%w: data frame offset overflows", ErrProtocol)
		}
		f.payload = p
	case frameCredit, frameFin:
		if len(p) != 0 {
			return frame{}, fmt.Errorf("%w: %s frame with %d payload bytes", ErrProtocol, f.typ, len(p))
		}
	case frameClose:
		if f.value != 0 {
			return frame{}, fmt.Errorf("%w: close frame value %d, want 0", ErrProtocol, f.value)
		}
		if len(p) > maxCloseReason || !utf8.Valid(p) {
			return frame{}, fmt.Errorf("%w: close reason of %d bytes is too long or not UTF-8", ErrProtocol, len(p))
		}
		f.payload = p
	case framePing:
		if len(p) != pingPayloadSize {
			return frame{}, fmt.Errorf("%w: ping payload of %d bytes, want %d", ErrProtocol, len(p), pingPayloadSize)
		}
		if p[8]&^1 != 0 {
			return frame{}, fmt.Errorf("%w: ping flags %#x", ErrProtocol, p[8])
		}
		f.sent = binary.BigEndian.Uint64(p[:8])
		f.fin = p[8]&1 != 0
	case frameDgram:
		f.payload = p
	default:
		return frame{}, fmt.Errorf("%w: unknown frame type %d", ErrProtocol, b[1])
	}
	return f, nil
}
