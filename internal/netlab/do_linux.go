package netlab

import (
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread switched into the namespace and returns its
// error. Sockets fn opens stay in the namespace after Do returns, so a
// test can open sockets in several namespaces of one lab and drive them
// all from ordinary goroutines. Everything else fn does in the
// namespace (dialing names, reading /proc/sys/net) must happen inside fn.
// The thread is discarded afterwards, never reused.
func (n *Namespace) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: when this goroutine returns the runtime ends
		// the thread instead of reusing it in the wrong namespace.
		runtime.LockOSThread()
		f, err := os.Open("/run/netns/" + n.Name)
		if err != nil {
			errc <- fmt.Errorf("netlab: open namespace %s: %w", n.Name, err)
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("netlab: setns %s: %w", n.Name, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}
