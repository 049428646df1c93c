package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/peerbus/peerbus/eventlog"
	"github.com/peerbus/peerbus/peer"
)

// TestEmitSizeCountsHeaders checks that the size limit of an event is
// what is really sent, headers included: the largest payload the error
// names is stored, one byte more is refused before it is sent.
func TestEmitSizeCountsHeaders(t *testing.T) {
	n := jsNode(t, t.TempDir(), "size")
	p := newPeer(t, n)
	ctx := context.Background()
	max := int(n.Conn().MaxPayload())
	payload := func(size int) string { return strings.Repeat("x", size-2) } // a JSON string of size bytes
	for _, transient := range []bool{false, true} {
		emit := func(size int) error {
			if transient {
				_, err := p.EmitTransient(ctx, "big.one", payload(size), eventlog.WithEventID("size-1"))
				return err
			}
			_, err := p.Emit(ctx, "big.one", payload(size), eventlog.WithEventID(fmt.Sprintf("size-%d", size)))
			return err
		}
		err := emit(max)
		if !errors.Is(err, peer.ErrPayloadTooLarge) {
			t.Fatalf("transient %v: payload of the max payload: %v", transient, err)
		}
		m := regexp.MustCompile(`message of (\d+) bytes \(payload (\d+), headers or envelope (\d+)\) exceeds the bus max payload of (\d+) bytes; the payload may be at most (\d+) bytes`).FindStringSubmatch(err.Error())
		if m == nil {
			t.Fatalf("transient %v: error %q does not say the sizes", transient, err)
		}
		size, _ := strconv.Atoi(m[1])
		overhead, _ := strconv.Atoi(m[3])
		most, _ := strconv.Atoi(m[5])
		if m[2] != strconv.Itoa(max) || size != max+overhead || overhead <= 0 || m[4] != strconv.Itoa(max) || most != max-overhead {
			t.Fatalf("transient %v: sizes in %q", transient, err)
		}
		// The emit time's text is 20 to 30 bytes long (trailing zeros of
		// the fraction are cut), so the overhead of the next emit may be
		// up to 10 bytes shorter or longer.
		const timeSlack = 10
		if err := emit(most - timeSlack); err != nil {
			t.Fatalf("transient %v: the largest payload (%d bytes, less %d): %v", transient, most, timeSlack, err)
		}
		if err := emit(most + timeSlack + 1); !errors.Is(err, peer.ErrPayloadTooLarge) {
			t.Fatalf("transient %v: more than the largest payload: %v", transient, err)
		}
	}
}
