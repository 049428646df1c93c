package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/peerbus/peerbus/bus"
	"github.com/peerbus/peerbus/identity"
	"github.com/peerbus/peerbus/policy"
)

// Files of "peerbus node --secure", in its directory.
const (
	secureIdentityFile = "admin.nk"
	securePolicyFile   = "policy.yaml"
)

// secureDir is the directory of --secure: the data directory when one
// is given, else <user config dir>/peerbus.
func secureDir(bo bus.Options) (string, error) {
	if bo.DataDir != "" {
		return bo.DataDir, nil
	}
	d, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("--secure: no directory for the identity and policy (give --data-dir): %w", err)
	}
	return filepath.Join(d, "peerbus"), nil
}

// applySecure makes (or reuses) the admin identity and the policy of
// --secure in dir, sets the policy on bo and says on w how clients use
// them. It returns the policy file, for reloads.
func applySecure(bo *bus.Options, dir string, w io.Writer) (string, error) {
	if bo.Policy != nil {
		return "", errors.New("--secure makes its own policy: give --secure or --authorize, not both")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("--secure: %w", err)
	}
	keyPath, polPath := filepath.Join(dir, secureIdentityFile), filepath.Join(dir, securePolicyFile)
	id, err := identity.Load(keyPath)
	if errors.Is(err, fs.ErrNotExist) {
		if id, err = identity.New(); err == nil {
			err = id.WriteFile(keyPath)
		}
	}
	if err != nil {
		return "", fmt.Errorf("--secure: %w", err)
	}
	if _, err := os.Stat(polPath); errors.Is(err, fs.ErrNotExist) {
		text := "# Made by peerbus node --secure. Add identities (peerbus keygen prints\n" +
			"# their keys) and send the node SIGHUP; see docs/policy.example.yaml.\n" +
			"users:\n  - name: admin\n    key: " + id.PublicKey() + "\n    role: admin\n"
		if err := os.WriteFile(polPath, []byte(text), 0o600); err != nil {
			return "", fmt.Errorf("--secure: %w", err)
		}
	}
	p, err := policy.Load(polPath)
	if err != nil {
		return "", fmt.Errorf("--secure: %w", err)
	}
	bo.Policy = p
	fmt.Fprintf(w, "secure: admin identity %s (public key %s)\n", keyPath, id.PublicKey())
	fmt.Fprintf(w, "secure: policy %s (edit it, then send SIGHUP)\n", polPath)
	fmt.Fprintf(w, "secure: clients connect with --identity %s, or an identity the policy lists\n", keyPath)
	return polPath, nil
}
