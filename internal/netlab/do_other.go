//go:build !linux

package netlab

import "errors"

// Do runs fn inside the namespace; network namespaces exist only on
// Linux, so elsewhere it fails.
func (n *Namespace) Do(fn func() error) error {
	return errors.New("netlab: network namespaces need Linux")
}
