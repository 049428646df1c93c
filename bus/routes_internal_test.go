package bus

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordHandler keeps every record's message and attributes as text.
type recordHandler struct {
	mu    sync.Mutex
	lines []string
}

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool { b.WriteString(" " + a.String()); return true })
	h.mu.Lock()
	h.lines = append(h.lines, b.String())
	h.mu.Unlock()
	return nil
}

func (h *recordHandler) find(s string) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range h.lines {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

// TestAloneWithWrongRouteCredentials starts a node without JetStream
// whose route credentials the seed refuses: it is ready (nothing waits
// for a quorum), and then warns that no route connected, naming the
// server's route error.
func TestAloneWithWrongRouteCredentials(t *testing.T) {
	routeWarnAfter = 300 * time.Millisecond
	defer func() { routeWarnAfter = 5 * time.Second }()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	seed, err := Start(ctx, WithListen("127.0.0.1:-1"), WithoutJetStream(), WithCluster("127.0.0.1:-1"),
		WithClusterAuth("route", "good"))
	if err != nil {
		t.Fatal(err)
	}
	defer seed.Close()
	rec := &recordHandler{}
	wrong, err := Start(ctx, WithListen("127.0.0.1:-1"), WithoutJetStream(), WithCluster("127.0.0.1:-1"),
		WithRoutes(seed.ClusterURL()), WithClusterAuth("route", "bad"), WithLogger(slog.New(rec)))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	for {
		if l := rec.find("no route to another node has connected"); l != "" {
			if !strings.Contains(l, "WARN") || !strings.Contains(l, "Authorization Violation") {
				t.Fatalf("warning without the route error: %s", l)
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatal("no warning that the node is alone")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
