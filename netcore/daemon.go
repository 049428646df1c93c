package netcore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
)

// Daemon is a set of server pipes, on any number of ports, protocols and
// families, that hands every message to one handler and closes at once.
type Daemon struct {
	handler Handler
	opts    []Option

	mu     sync.Mutex
	pipes  []*Pipe
	closed bool
}

// NewDaemon returns a daemon that calls h for every message any of its
// servers receives; opts apply to every server it opens. It listens on
// nothing until Listen or ListenAll.
func NewDaemon(h Handler, opts ...Option) *Daemon {
	return &Daemon{handler: h, opts: slices.Clone(opts)}
}

// Listen opens one server pipe (see the package-level Listen) and adds it
// to the daemon.
func (d *Daemon) Listen(ctx context.Context, proto Protocol, route Route, port uint16) (*Pipe, error) {
	d.mu.Lock()
	closed := d.closed
	d.mu.Unlock()
	if closed {
		return nil, fmt.Errorf("netcore: daemon listen: %w", ErrClosed)
	}
	p, err := Listen(ctx, proto, route, port, d.opts...)
	if err != nil {
		return nil, err
	}
	p.AddHandler(d.handler)
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		p.Close()
		return nil, fmt.Errorf("netcore: daemon listen: %w", ErrClosed)
	}
	d.pipes = append(d.pipes, p)
	return p, nil
}

// ListenSpec is a set of listeners: every port in TCP and UDP, on every
// family.
type ListenSpec struct {
	// TCP and UDP are the ports to listen on; port 0 picks a free port,
	// separately for every family.
	TCP, UDP []uint16
	// Families defaults to IPv4 and IPv6.
	Families []Family
	// AllAddresses listens on all addresses (0.0.0.0, ::) instead of
	// loopback only (127.0.0.1, ::1).
	AllAddresses bool
}

// ListenAll opens every listener of spec and returns the new pipes, in the
// order family, protocol (TCP first), port. If one fails, those it opened
// are closed and the error is returned.
func (d *Daemon) ListenAll(ctx context.Context, spec ListenSpec) ([]*Pipe, error) {
	fams := spec.Families
	if len(fams) == 0 {
		fams = []Family{IPv4, IPv6}
	}
	var opened []*Pipe
	fail := func(err error) ([]*Pipe, error) {
		d.mu.Lock()
		d.pipes = slices.DeleteFunc(d.pipes, func(p *Pipe) bool { return slices.Contains(opened, p) })
		d.mu.Unlock()
		for _, p := range opened {
			p.Close()
		}
		return nil, err
	}
	for _, f := range fams {
		route := LoopbackRoute(f)
		if spec.AllAddresses {
			route = AnyRoute(f)
		}
		for _, pp := range []struct {
			proto Protocol
			ports []uint16
		}{{TCP, spec.TCP}, {UDP, spec.UDP}} {
			for _, port := range pp.ports {
				p, err := d.Listen(ctx, pp.proto, route, port)
				if err != nil {
					return fail(err)
				}
				opened = append(opened, p)
			}
		}
	}
	return opened, nil
}

// Pipes returns the daemon's server pipes in the order they were opened.
func (d *Daemon) Pipes() []*Pipe {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.pipes)
}

// Close closes every server pipe of the daemon and their clients, and
// waits for their goroutines (see Pipe.Close). A second Close returns an
// error matching ErrClosed and net.ErrClosed.
func (d *Daemon) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("netcore: daemon close: %w", ErrClosed)
	}
	d.closed = true
	pipes := d.pipes
	d.pipes = nil
	d.mu.Unlock()
	var errs []error
	for _, p := range pipes {
		if err := p.Close(); err != nil && !errors.Is(err, ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
