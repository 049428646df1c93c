package netcore

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// Size limits.
const (
	// ReadBufferSize is the size of the buffer pipes read into: 64 KiB, the
	// largest UDP datagram, so no datagram is ever truncated.
	ReadBufferSize = 64 << 10

	// DefaultMaxMessageSize is the message size limit of LengthPrefixed and
	// Lines framing when none is given: 1 MiB.
	DefaultMaxMessageSize = 1 << 20

	// MaxDatagramIPv4 and MaxDatagramIPv6 are the largest UDP payloads that
	// fit in one IPv4 or IPv6 packet (without jumbograms).
	MaxDatagramIPv4 = 65535 - 20 - 8
	MaxDatagramIPv6 = 65535 - 8
)

// Framing turns a TCP byte stream into messages and messages into bytes. A
// pipe's framing is fixed when the pipe is opened (WithFraming); UDP pipes
// ignore it, as every datagram is one message.
//
// Implementations must be safe for concurrent use; a Decoder is used by
// one goroutine.
type Framing interface {
	// NewDecoder returns a decoder that reads messages from r.
	NewDecoder(r io.Reader) Decoder
	// AppendFrame appends the wire form of msg to dst and returns the
	// extended slice. It fails with *MessageTooLargeError or
	// ErrBadMessage when msg cannot be framed.
	AppendFrame(dst, msg []byte) ([]byte, error)
	// String names the framing, e.g. "length-prefixed(max=1048576)".
	String() string
}

// Decoder reads messages from a byte stream.
type Decoder interface {
	// Next returns the next message; the slice belongs to the caller. It
	// returns io.EOF when the stream ends between messages,
	// io.ErrUnexpectedEOF when it ends inside one, and
	// *MessageTooLargeError when a message exceeds the framing's limit.
	// After an error the decoder must not be used again.
	Next() ([]byte, error)
}

// Raw returns the framing that delivers the stream in chunks as read (up
// to ReadBufferSize bytes each) and writes messages unchanged. Message
// boundaries are not preserved: one Send may arrive as several messages
// and several as one. Empty messages are not sent.
func Raw() Framing { return rawFraming{} }

type rawFraming struct{}

func (rawFraming) String() string { return "raw" }

func (rawFraming) NewDecoder(r io.Reader) Decoder {
	return &rawDecoder{r: r, buf: make([]byte, ReadBufferSize)}
}

func (rawFraming) AppendFrame(dst, msg []byte) ([]byte, error) { return append(dst, msg...), nil }

type rawDecoder struct {
	r   io.Reader
	buf []byte
	err error
}

func (d *rawDecoder) Next() ([]byte, error) {
	for d.err == nil {
		n, err := d.r.Read(d.buf)
		d.err = err
		if n > 0 {
			return bytes.Clone(d.buf[:n]), nil
		}
	}
	return nil, d.err
}

// LengthPrefixed returns the framing in which every message is preceded by
// its length as a 4-byte big-endian unsigned integer. Messages longer than
// max bytes are refused with *MessageTooLargeError, on send and on
// receive; max <= 0 means DefaultMaxMessageSize. A receiver never
// allocates more than it has read plus 64 KiB, whatever a header claims.
func LengthPrefixed(max int) Framing {
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	if uint64(max) > math.MaxUint32 {
		max = math.MaxUint32
	}
	return lengthPrefixed{max: max}
}

type lengthPrefixed struct{ max int }

func (f lengthPrefixed) String() string { return fmt.Sprintf("length-prefixed(max=%d)", f.max) }

func (f lengthPrefixed) NewDecoder(r io.Reader) Decoder {
	return &lengthDecoder{br: bufio.NewReaderSize(r, ReadBufferSize), max: f.max}
}

func (f lengthPrefixed) AppendFrame(dst, msg []byte) ([]byte, error) {
	if len(msg) > f.max {
		return dst, &MessageTooLargeError{What: "frame", Size: int64(len(msg)), Limit: f.max}
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(msg)))
	return append(dst, msg...), nil
}

type lengthDecoder struct {
	br  *bufio.Reader
	max int
	hdr [4]byte
}

func (d *lengthDecoder) Next() ([]byte, error) {
	if _, err := io.ReadFull(d.br, d.hdr[:]); err != nil {
		return nil, err // io.EOF between frames, io.ErrUnexpectedEOF inside
	}
	n := int64(binary.BigEndian.Uint32(d.hdr[:]))
	if n > int64(d.max) {
		return nil, &MessageTooLargeError{What: "frame", Size: n, Limit: d.max}
	}
	// Grow the message as its bytes arrive, so a header announcing a large
	// frame costs nothing until the bytes are really sent.
	msg := make([]byte, min(int(n), ReadBufferSize))
	got := 0
	for {
		k, err := io.ReadFull(d.br, msg[got:])
		got += k
		if err != nil {
			return nil, io.ErrUnexpectedEOF
		}
		if int64(got) == n {
			return msg, nil
		}
		next := min(int(n), 2*len(msg))
		msg = append(msg, make([]byte, next-len(msg))...)
	}
}

// Lines returns the framing in which every message is a line ended by
// "\n"; a "\r" before the "\n" is removed too, and a last line without
// "\n" at the end of the stream is still delivered. Lines longer than max
// bytes (max <= 0 means DefaultMaxMessageSize) are refused with
// *MessageTooLargeError. Messages containing "\n" or ending in "\r" cannot
// be sent (ErrBadMessage).
func Lines(max int) Framing {
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	return lineFraming{max: max}
}

type lineFraming struct{ max int }

func (f lineFraming) String() string { return fmt.Sprintf("lines(max=%d)", f.max) }

func (f lineFraming) NewDecoder(r io.Reader) Decoder {
	return &lineDecoder{br: bufio.NewReaderSize(r, min(ReadBufferSize, f.max+2)), max: f.max}
}

func (f lineFraming) AppendFrame(dst, msg []byte) ([]byte, error) {
	if len(msg) > f.max {
		return dst, &MessageTooLargeError{What: "line", Size: int64(len(msg)), Limit: f.max}
	}
	if bytes.IndexByte(msg, '\n') >= 0 {
		return dst, fmt.Errorf("%w: line contains a newline", ErrBadMessage)
	}
	if len(msg) > 0 && msg[len(msg)-1] == '\r' {
		return dst, fmt.Errorf("%w: line ends in a carriage return", ErrBadMessage)
	}
	dst = append(dst, msg...)
	return append(dst, '\n'), nil
}

type lineDecoder struct {
	br  *bufio.Reader
	max int
	acc []byte
}

func (d *lineDecoder) Next() ([]byte, error) {
	d.acc = d.acc[:0]
	for {
		chunk, err := d.br.ReadSlice('\n')
		// content is the line so far without its terminator; a "\r" may
		// still be followed by "\n" in the next chunk, so it counts as one
		// byte of slack.
		content := len(d.acc) + len(chunk)
		if err == nil {
			content-- // the '\n'
		}
		if content > d.max+1 || (err == nil && trimCR(d.acc, chunk[:len(chunk)-1]) > d.max) {
			return nil, &MessageTooLargeError{What: "line", Size: -1, Limit: d.max}
		}
		switch {
		case err == nil:
			line := append(d.acc, chunk[:len(chunk)-1]...)
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return bytes.Clone(line), nil
		case errors.Is(err, bufio.ErrBufferFull):
			d.acc = append(d.acc, chunk...)
		case errors.Is(err, io.EOF):
			line := append(d.acc, chunk...)
			if len(line) == 0 {
				return nil, io.EOF
			}
			if len(line) > d.max {
				return nil, &MessageTooLargeError{What: "line", Size: int64(len(line)), Limit: d.max}
			}
			return bytes.Clone(line), nil
		default:
			return nil, err
		}
	}
}

// trimCR returns the length of acc+tail without one trailing '\r'.
func trimCR(acc, tail []byte) int {
	n := len(acc) + len(tail)
	last := byte(0)
	switch {
	case len(tail) > 0:
		last = tail[len(tail)-1]
	case len(acc) > 0:
		last = acc[len(acc)-1]
	}
	if last == '\r' {
		n--
	}
	return n
}
