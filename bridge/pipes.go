package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/peerbus/peerbus/netcore"
)

// Headers of the messages that link pipes and subjects.
const (
	// HeaderPipeFrom is set by PipeToSubject on every message it
	// publishes: the address the pipe message came from ("ip:port").
	HeaderPipeFrom = "Peerbus-Pipe-From"
	// HeaderPipeTo, on a message SubjectToPipe delivers into a server
	// pipe, names the client ("ip:port") it is sent to; without it the
	// link's SendTo address is used.
	HeaderPipeTo = "Peerbus-Pipe-To"
)

// DefaultLinkSendTimeout bounds each Send of SubjectToPipe.
const DefaultLinkSendTimeout = 5 * time.Second

// LinkStats are a link's counters.
type LinkStats struct {
	// Messages counts messages carried.
	Messages uint64
	// Errors counts messages that could not be carried (too large for
	// the bus, send failures, no destination).
	Errors uint64
}

// Link carries messages between a netcore pipe and a bus subject, made
// by PipeToSubject or SubjectToPipe, until Close or until the pipe
// closes.
type Link struct {
	desc    string
	stop    func()
	once    sync.Once
	closed  chan struct{}
	msgs    atomic.Uint64
	errs    atomic.Uint64
	lastErr atomic.Pointer[error]
	// busy is read-held by a message being carried; Close takes it to
	// wait for those in flight.
	busy    sync.RWMutex
	stopped atomic.Bool
	unhook  atomic.Pointer[func()]
}

func newLink(desc string) *Link { return &Link{desc: desc, closed: make(chan struct{})} }

// String describes the link, e.g. "tcp client ...->... -> demo.in".
func (l *Link) String() string { return l.desc }

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats { return LinkStats{Messages: l.msgs.Load(), Errors: l.errs.Load()} }

// Err returns the last error met carrying a message, or nil.
func (l *Link) Err() error {
	if p := l.lastErr.Load(); p != nil {
		return *p
	}
	return nil
}

// Done is closed once the link has stopped.
func (l *Link) Done() <-chan struct{} { return l.closed }

func (l *Link) fail(err error) {
	l.errs.Add(1)
	l.lastErr.Store(&err)
}

// Close stops the link; it neither closes the pipe nor the connection.
// A second Close returns ErrClosed.
func (l *Link) Close() error {
	err := fmt.Errorf("bridge: close link %s: %w", l.desc, ErrClosed)
	l.once.Do(func() {
		l.stopped.Store(true)
		if f := l.unhook.Load(); f != nil {
			(*f)()
		}
		l.stop()
		l.busy.Lock() // wait for the messages being carried
		close(l.closed)
		l.busy.Unlock()
		err = nil
	})
	return err
}

// PipeToSubject publishes every message pipe receives (for a server pipe:
// from every client) on subject, with header HeaderPipeFrom. Messages
// larger than the bus max payload are counted as errors and dropped.
func PipeToSubject(pipe *netcore.Pipe, nc *nats.Conn, subject string) (*Link, error) {
	if err := validPublishSubject(subject); err != nil {
		return nil, err
	}
	l := newLink(fmt.Sprintf("%s -> %s", pipe, subject))
	remove := pipe.AddHandler(func(m netcore.Message) {
		l.busy.RLock()
		defer l.busy.RUnlock()
		if l.stopped.Load() {
			return
		}
		msg := nats.NewMsg(subject)
		msg.Header.Set(HeaderPipeFrom, m.From.String())
		msg.Data = m.Data
		if err := nc.PublishMsg(msg); err != nil {
			l.fail(fmt.Errorf("bridge: publish to %s: %w", subject, err))
			return
		}
		l.msgs.Add(1)
	})
	l.stop = remove
	l.hookClose(pipe)
	return l, nil
}

// LinkOption configures SubjectToPipe.
type LinkOption func(*linkConfig)

type linkConfig struct {
	to      netip.AddrPort
	timeout time.Duration
	queue   string
}

// SendTo sets the address a server pipe sends messages to when they carry
// no HeaderPipeTo header: a UDP destination or a TCP server's client.
func SendTo(addr netip.AddrPort) LinkOption { return func(c *linkConfig) { c.to = addr } }

// SendTimeout bounds each send into the pipe (default
// DefaultLinkSendTimeout); a send that times out is counted as an error.
func SendTimeout(d time.Duration) LinkOption { return func(c *linkConfig) { c.timeout = d } }

// QueueGroup subscribes in a queue group, so that several links share
// the subject's messages (each message reaches one of them).
func QueueGroup(name string) LinkOption { return func(c *linkConfig) { c.queue = name } }

// SubjectToPipe delivers every bus message on subject (wildcards allowed)
// into pipe: with Send for a client pipe, with SendTo (to HeaderPipeTo,
// or the SendTo option's address) for a server pipe. Sends happen one at
// a time on the subscription's goroutine, so a pipe that blocks makes
// messages wait in the subscription (up to the NATS pending limits, past
// which NATS drops them).
func SubjectToPipe(nc *nats.Conn, subject string, pipe *netcore.Pipe, opts ...LinkOption) (*Link, error) {
	cfg := linkConfig{timeout: DefaultLinkSendTimeout}
	for _, o := range opts {
		o(&cfg)
	}
	l := newLink(fmt.Sprintf("%s -> %s", subject, pipe))
	ctx, cancel := context.WithCancel(context.Background())
	handler := func(m *nats.Msg) {
		l.busy.RLock()
		defer l.busy.RUnlock()
		if l.stopped.Load() {
			return
		}
		sctx, scancel := context.WithTimeout(ctx, cfg.timeout)
		defer scancel()
		var err error
		if pipe.IsServer() {
			to := cfg.to
			if h := m.Header.Get(HeaderPipeTo); h != "" {
				to, err = netip.ParseAddrPort(h)
			}
			switch {
			case err != nil:
				err = fmt.Errorf("bridge: %s header %q: %w", HeaderPipeTo, m.Header.Get(HeaderPipeTo), err)
			case !to.IsValid():
				err = fmt.Errorf("bridge: message on %s for server pipe %s has no %s header: %w", m.Subject, pipe, HeaderPipeTo, netcore.ErrNoPeer)
			default:
				err = pipe.SendTo(sctx, m.Data, to)
			}
		} else {
			err = pipe.Send(sctx, m.Data)
		}
		if err != nil {
			l.fail(err)
			return
		}
		l.msgs.Add(1)
	}
	var sub *nats.Subscription
	var err error
	if cfg.queue != "" {
		sub, err = nc.QueueSubscribe(subject, cfg.queue, handler)
	} else {
		sub, err = nc.Subscribe(subject, handler)
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("bridge: subscribe %s: %w", subject, err)
	}
	l.stop = func() {
		cancel()
		if err := sub.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, nats.ErrBadSubscription) {
			l.fail(err)
		}
	}
	l.hookClose(pipe)
	return l, nil
}

// hookClose stops the link when the pipe closes.
func (l *Link) hookClose(pipe *netcore.Pipe) {
	remove := pipe.OnClose(func(error) {
		l.stopped.Store(true)
		go l.Close()
	})
	l.unhook.Store(&remove)
	if l.stopped.Load() {
		remove()
	}
}

// validPublishSubject checks a subject one can publish to.
func validPublishSubject(s string) error {
	if s == "" || strings.ContainsAny(s, " \t\r\n*>") || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.Contains(s, "..") {
		return fmt.Errorf("%w: subject %q", ErrBadTarget, s)
	}
	return nil
}
