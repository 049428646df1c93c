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
	// *MessageTooLargeError when a message exceeds the framing's limit;
	// after those the decoder must not be used again. Any other error of
	// the reader (such as a read deadline) is returned as is, and a later
	// Next resumes where the failed one stopped: pipes in direct receive
	// mode (WithDirectRecv) rely on this.
	Next() ([]byte, error)
}

// fill reads from r into buf[*got:] until buf is full. Progress is kept in
// *got, so a call that failed can be repeated.
func fill(r io.Reader, buf []byte, got *int) error {
	for *got < len(buf) {
		n, err := r.Read(buf[*got:])
		*got += n
		if err != nil && *got < len(buf) {
			return err
		}
	}
	return nil
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
	r       io.Reader
	buf     []byte
	pending error // an error that came with data, returned next
}

func (d *rawDecoder) Next() ([]byte, error) {
	if err := d.pending; err != nil {
		d.pending = nil
		return nil, err
	}
	for {
		n, err := d.r.Read(d.buf)
		if n > 0 {
			d.pending = err
			return bytes.Clone(d.buf[:n]), nil
		}
		if err != nil {
			return nil, err
		}
	}
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

	// Progress, kept across failed calls.
	hdr     [4]byte
	hdrGot  int
	inFrame bool
	size    int
	msg     []byte
	got     int
}

func (d *lengthDecoder) Next() ([]byte, error) {
	if !d.inFrame {
		if err := fill(d.br, d.hdr[:], &d.hdrGot); err != nil {
			if errors.Is(err, io.EOF) && d.hdrGot > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		d.hdrGot = 0
		n := int64(binary.BigEndian.Uint32(d.hdr[:]))
		if n > int64(d.max) {
			return nil, &MessageTooLargeError{What: "frame", Size: n, Limit: d.max}
		}
		// Grow the message as its bytes arrive, so a header announcing a
		// large frame costs nothing until the bytes are really sent.
		d.inFrame, d.size, d.got = true, int(n), 0
		d.msg = make([]byte, min(d.size, ReadBufferSize))
	}
	for {
		if err := fill(d.br, d.msg, &d.got); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if d.got == d.size {
			msg := d.msg
			d.inFrame, d.msg = false, nil
			return msg, nil
		}
		d.msg = append(d.msg, make([]byte, min(d.size, 2*len(d.msg))-len(d.msg))...)
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
	acc []byte // the current line so far, kept across failed calls
}

func (d *lineDecoder) Next() ([]byte, error) {
	for {
		chunk, err := d.br.ReadSlice('\n')
		if err == nil {
			line := append(d.acc, chunk[:len(chunk)-1]...)
			d.acc = line[:0]
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			if len(line) > d.max {
				return nil, &MessageTooLargeError{What: "line", Size: int64(len(line)), Limit: d.max}
			}
			return bytes.Clone(line), nil
		}
		d.acc = append(d.acc, chunk...)
		// One byte of slack: a "\r" that the next chunk's "\n" will end.
		if len(d.acc) > d.max+1 {
			return nil, &MessageTooLargeError{What: "line", Size: -1, Limit: d.max}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
		case errors.Is(err, io.EOF):
			if len(d.acc) == 0 {
				return nil, io.EOF
			}
			if len(d.acc) > d.max {
				return nil, &MessageTooLargeError{What: "line", Size: int64(len(d.acc)), Limit: d.max}
			}
			line := bytes.Clone(d.acc)
			d.acc = d.acc[:0]
			return line, nil
		default:
			return nil, err
		}
	}
}
