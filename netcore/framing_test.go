package netcore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

// chunkReader returns data in reads of the sizes in sizes (plus one),
// cycling; a size of 255 is a read that fails with a deadline error, as a
// pipe in direct receive mode sees when Recv times out.
type chunkReader struct {
	data     []byte
	sizes    []byte
	i        int
	timedOut bool
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := 1
	if len(c.sizes) > 0 {
		size := c.sizes[c.i%len(c.sizes)]
		c.i++
		if size == 255 && !c.timedOut {
			c.timedOut = true
			return 0, os.ErrDeadlineExceeded
		}
		n = int(size) + 1
	}
	c.timedOut = false
	n = min(n, len(p), len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

// decodeAll reads messages until an error; io.EOF is returned as nil and
// deadline errors are retried.
func decodeAll(d Decoder) ([][]byte, error) {
	var out [][]byte
	for {
		m, err := d.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		}
		if err != nil {
			return out, err
		}
		out = append(out, m)
	}
}

func TestFramingRoundTrip(t *testing.T) {
	msgs := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte("z"), 70000), []byte("a\rb"), []byte("end")}
	for _, f := range []Framing{LengthPrefixed(0), Lines(0)} {
		t.Run(f.String(), func(t *testing.T) {
			var wire []byte
			var err error
			for _, m := range msgs {
				if wire, err = f.AppendFrame(wire, m); err != nil {
					t.Fatal(err)
				}
			}
			for name, r := range map[string]io.Reader{
				"whole":    bytes.NewReader(wire),
				"one byte": iotest.OneByteReader(bytes.NewReader(wire)),
				"chunks":   &chunkReader{data: wire, sizes: []byte{2, 200, 0, 17}},
				"timeouts": &chunkReader{data: wire, sizes: []byte{2, 255, 0, 255, 100}},
			} {
				got, err := decodeAll(f.NewDecoder(r))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if len(got) != len(msgs) {
					t.Fatalf("%s: %d messages, want %d", name, len(got), len(msgs))
				}
				for i := range msgs {
					if !bytes.Equal(got[i], msgs[i]) {
						t.Fatalf("%s: message %d differs", name, i)
					}
				}
			}
		})
	}
}

func TestRawFraming(t *testing.T) {
	data := bytes.Repeat([]byte("raw"), 50000)
	got, err := decodeAll(Raw().NewDecoder(&chunkReader{data: data, sizes: []byte{255, 3}}))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bytes.Join(got, nil), data) {
		t.Fatal("raw stream changed")
	}
	for _, m := range got {
		if len(m) > ReadBufferSize || len(m) == 0 {
			t.Fatalf("chunk of %d bytes", len(m))
		}
	}
	if wire, _ := Raw().AppendFrame([]byte("a"), []byte("b")); string(wire) != "ab" {
		t.Fatalf("raw frame %q", wire)
	}
}

func TestLengthPrefixedErrors(t *testing.T) {
	f := LengthPrefixed(10)
	if _, err := f.AppendFrame(nil, make([]byte, 11)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("encode 11 bytes with max 10: %v", err)
	}
	// A header announcing 4 GiB must be refused before any allocation.
	wire := binary.BigEndian.AppendUint32(nil, 0xffffffff)
	_, err := f.NewDecoder(bytes.NewReader(wire)).Next()
	var tl *MessageTooLargeError
	if !errors.As(err, &tl) || tl.Size != 0xffffffff || tl.Limit != 10 || tl.What != "frame" {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), "4294967295") {
		t.Fatalf("message %q does not give the size", err)
	}
	for _, partial := range [][]byte{{0, 0}, {0, 0, 0, 5, 'a', 'b'}} {
		if _, err := f.NewDecoder(bytes.NewReader(partial)).Next(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("%v: err = %v, want io.ErrUnexpectedEOF", partial, err)
		}
	}
	if LengthPrefixed(-1).String() != "length-prefixed(max=1048576)" {
		t.Fatalf("default max: %s", LengthPrefixed(-1))
	}
}

func TestLinesErrors(t *testing.T) {
	f := Lines(8)
	for _, bad := range []string{"a\nb", "cr\r", "123456789"} {
		if _, err := f.AppendFrame(nil, []byte(bad)); err == nil {
			t.Errorf("encoded %q", bad)
		}
	}
	// Exactly max bytes, with and without "\r".
	got, err := decodeAll(f.NewDecoder(strings.NewReader("12345678\n12345678\r\n")))
	if err != nil || len(got) != 2 || string(got[0]) != "12345678" || string(got[1]) != "12345678" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, in := range []string{"123456789\n", "123456789", strings.Repeat("x", 100)} {
		_, err := decodeAll(f.NewDecoder(iotest.OneByteReader(strings.NewReader(in))))
		if !errors.Is(err, ErrMessageTooLarge) {
			t.Errorf("%q: err = %v", in, err)
		}
	}
}

// checkChunkingIndependent decodes data whole and in chunks and compares.
func checkChunkingIndependent(t *testing.T, f Framing, data, sizes []byte) ([][]byte, error) {
	whole, errWhole := decodeAll(f.NewDecoder(bytes.NewReader(data)))
	chunked, errChunked := decodeAll(f.NewDecoder(&chunkReader{data: data, sizes: sizes}))
	if (errWhole == nil) != (errChunked == nil) || !slices.EqualFunc(whole, chunked, bytes.Equal) {
		t.Fatalf("chunking changed the result: %q/%v vs %q/%v", whole, errWhole, chunked, errChunked)
	}
	return whole, errWhole
}

func FuzzLengthPrefixedDecoder(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x05hello\x00\x00\x00\x00"), uint16(16), []byte{1})
	f.Add([]byte("\xff\xff\xff\xff"), uint16(16), []byte{0})
	f.Add([]byte("\x00\x00\x00\x10short"), uint16(100), []byte{3})
	f.Fuzz(func(t *testing.T, data []byte, max uint16, sizes []byte) {
		fr := LengthPrefixed(int(max))
		limit := int(max)
		if limit == 0 {
			limit = DefaultMaxMessageSize
		}
		msgs, err := checkChunkingIndependent(t, fr, data, sizes)
		var wire []byte
		for _, m := range msgs {
			if len(m) > limit {
				t.Fatalf("message of %d bytes passed limit %d", len(m), limit)
			}
			wire, _ = fr.AppendFrame(wire, m)
		}
		// The decoded messages re-encode to exactly the bytes consumed.
		if !bytes.HasPrefix(data, wire) {
			t.Fatal("re-encoding differs from input")
		}
		if err == nil && len(wire) != len(data) {
			t.Fatalf("clean end after %d of %d bytes", len(wire), len(data))
		}
		if err != nil && !errors.Is(err, ErrMessageTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func FuzzLinesDecoder(f *testing.F) {
	f.Add([]byte("one\ntwo\r\nthree"), uint16(8), []byte{2})
	f.Add([]byte("\r\r\n\n\r"), uint16(1), []byte{0})
	f.Add([]byte("toolongline\n"), uint16(4), []byte{5})
	f.Fuzz(func(t *testing.T, data []byte, max uint16, sizes []byte) {
		fr := Lines(int(max))
		limit := int(max)
		if limit == 0 {
			limit = DefaultMaxMessageSize
		}
		msgs, err := checkChunkingIndependent(t, fr, data, sizes)
		consumed := 0
		for i, m := range msgs {
			if len(m) > limit {
				t.Fatalf("line of %d bytes passed limit %d", len(m), limit)
			}
			if bytes.IndexByte(m, '\n') >= 0 {
				t.Fatalf("line %q contains a newline", m)
			}
			// Each line is the input up to the next "\n", less one "\r".
			rest := data[consumed:]
			end := bytes.IndexByte(rest, '\n')
			if end < 0 {
				if i != len(msgs)-1 || !bytes.Equal(m, rest) {
					t.Fatalf("last line %q, input rest %q", m, rest)
				}
				consumed = len(data)
				continue
			}
			want := bytes.TrimSuffix(rest[:end], []byte("\r"))
			if !bytes.Equal(m, want) {
				t.Fatalf("line %q, want %q", m, want)
			}
			consumed += end + 1
		}
		if err == nil && consumed != len(data) {
			t.Fatalf("clean end after %d of %d bytes", consumed, len(data))
		}
		if err != nil && !errors.Is(err, ErrMessageTooLarge) {
			t.Fatalf("unexpected error %v", err)
		}
	})
}

func FuzzRawDecoder(f *testing.F) {
	f.Add([]byte("any bytes at all"), []byte{0, 5})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		got, err := decodeAll(Raw().NewDecoder(&chunkReader{data: data, sizes: sizes}))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bytes.Join(got, nil), data) {
			t.Fatal("raw stream changed")
		}
	})
}

// FuzzFramingRoundTrip encodes messages cut from the input and decodes them
// in chunks: every framing must give back exactly what was sent.
func FuzzFramingRoundTrip(f *testing.F) {
	f.Add([]byte("a\x00bb\x00\x00ccc"), []byte{1, 7})
	f.Add([]byte("line\r\x00with\nnewline"), []byte{0})
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		msgs := bytes.Split(data, []byte{0})
		for _, fr := range []Framing{LengthPrefixed(64), Lines(64)} {
			var wire []byte
			var sent [][]byte
			for _, m := range msgs {
				w, err := fr.AppendFrame(wire, m)
				if err != nil {
					if !errors.Is(err, ErrMessageTooLarge) && !errors.Is(err, ErrBadMessage) {
						t.Fatalf("%s: unexpected error %v", fr, err)
					}
					if !bytes.Equal(w, wire) {
						t.Fatalf("%s: failed encode changed the buffer", fr)
					}
					continue
				}
				wire = w
				sent = append(sent, m)
			}
			got, err := decodeAll(fr.NewDecoder(&chunkReader{data: wire, sizes: sizes}))
			if err != nil {
				t.Fatalf("%s: %v", fr, err)
			}
			if !slices.EqualFunc(got, sent, bytes.Equal) {
				t.Fatalf("%s: sent %q, got %q", fr, sent, got)
			}
		}
	})
}
