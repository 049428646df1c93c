package bridge

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzDecodeFrame checks that the relay frame decoder never panics and
// that every frame it accepts encodes back to the same bytes (the
// encoding is canonical).
func FuzzDecodeFrame(f *testing.F) {
	for _, fr := range []frame{
		{typ: frameData, value: 0, payload: []byte("hello")},
		{typ: frameData, value: 1 << 40, payload: []byte{0}},
		{typ: frameCredit, value: 4 << 20},
		{typ: frameFin, value: 12345},
		{typ: frameClose, payload: []byte("bridge: relay lost data")},
		{typ: frameClose},
		{typ: framePing, value: 1 << 20, sent: 77, fin: true},
		{typ: frameDgram, value: 3, payload: []byte("datagram")},
		{typ: frameDgram, value: 4},
	} {
		f.Add(appendFrame(nil, fr))
	}
	f.Add([]byte{})
	f.Add([]byte{1, 1, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 'x'})
	f.Add([]byte{1, 5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2})
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := decodeFrame(b)
		if err != nil {
			return
		}
		if out := appendFrame(nil, fr); !bytes.Equal(out, b) {
			t.Fatalf("re-encoded %x, decoded from %x", out, b)
		}
	})
}

// FuzzRelayFrames feeds a sequence of frames (each prefixed by a 2-byte
// length) to a stream relay's receive side and checks its invariants:
// no panic, never more queued than the credit granted, offsets
// consistent.
func FuzzRelayFrames(f *testing.F) {
	seq := func(frames ...frame) []byte {
		var b []byte
		for _, fr := range frames {
			e := appendFrame(nil, fr)
			b = binary.BigEndian.AppendUint16(b, uint16(len(e)))
			b = append(b, e...)
		}
		return b
	}
	f.Add(seq(frame{typ: frameData, payload: []byte("abc")}, frame{typ: frameData, value: 3, payload: []byte("def")}, frame{typ: frameFin, value: 6}))
	f.Add(seq(frame{typ: frameData, payload: []byte("abc")}, frame{typ: frameData, value: 9, payload: []byte("x")}))
	f.Add(seq(frame{typ: framePing, value: 100, sent: 0, fin: true}, frame{typ: frameData, payload: []byte("late")}))
	f.Add(seq(frame{typ: frameCredit, value: 10}, frame{typ: frameClose, payload: []byte("bye")}))
	f.Add(seq(frame{typ: frameDgram, payload: []byte("wrong mode")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &relay{cfg: relayConfig{window: 64, chunk: 16, queue: 4}, granted: 64,
			readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
		for len(b) >= 2 {
			n := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			if n > len(b) {
				n = len(b)
			}
			fr, err := decodeFrame(b[:n])
			b = b[n:]
			if err == nil {
				err = r.handleLocked(fr)
			}
			if err != nil {
				r.failLocked(err)
			}
			if uint64(r.rqBytes) > r.granted || r.recvOff > r.granted || r.readOff+uint64(r.rqBytes) != r.recvOff {
				t.Fatalf("queued %d, received %d, granted %d", r.rqBytes, r.recvOff, r.granted)
			}
			if r.finRecv && r.finAt != r.recvOff {
				t.Fatalf("fin at %d, received %d", r.finAt, r.recvOff)
			}
		}
	})
}

// FuzzParseUDPCtl checks that the raw-path probe parser never panics
// and accepts only the other side's probes and acks of the session.
func FuzzParseUDPCtl(f *testing.F) {
	d, err := newSecret()
	if err != nil {
		f.Fatal(err)
	}
	e, err := exposerSecret(d.idHex())
	if err != nil {
		f.Fatal(err)
	}
	for _, typ := range []byte{udpProbe, udpAck, udpSelect, udpClose} {
		f.Add(e.appendUDPCtl(nil, typ, d.nonce[:]))
		f.Add(d.appendUDPCtl(nil, typ, e.nonce[:]))
	}
	f.Add([]byte{udpData, 1, 2, 3})
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, ok := d.parseUDPCtl(b, e.nonce[:])
		if !ok {
			return
		}
		// Only the exposer's own probes and acks pass on the dialer's side.
		if (typ != udpProbe && typ != udpAck) || !bytes.Equal(e.appendUDPCtl(nil, typ, d.nonce[:]), b) || isDTLS(b) {
			t.Fatalf("accepted a forged packet %x", b)
		}
	})
}

// FuzzOpenSealed feeds arbitrary messages to the opening side of a
// relay's frame seal: nothing but the sealed frames of the other side
// opens, and nothing panics.
func FuzzOpenSealed(f *testing.F) {
	hs, msg1, err := noiseInitiator("s")
	if err != nil {
		f.Fatal(err)
	}
	ek, msg2, err := noiseRespond("s", msg1)
	if err != nil {
		f.Fatal(err)
	}
	dk, err := noiseFinish(hs, msg2)
	if err != nil {
		f.Fatal(err)
	}
	var sealed []byte
	sender := &frameSeal{keys: dk}
	_ = sender.seal(appendFrame(nil, frame{typ: framePing}), func(b []byte) error { sealed = append([]byte(nil), b...); return nil })
	f.Add(sealed)
	f.Add([]byte{})
	f.Add(make([]byte, sealOverhead))
	f.Fuzz(func(t *testing.T, b []byte) {
		recv := &frameSeal{keys: ek}
		in := append([]byte(nil), b...)
		pt, ok := recv.open(in)
		if ok && !bytes.Equal(b, sealed) {
			t.Fatalf("a message not sealed by the peer opened: %x -> %x", b, pt)
		}
	})
}
