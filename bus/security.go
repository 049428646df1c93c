package bus

// Credentials and TLS: what the client port and the routes require,
// what the node's own connections present (the in-process connection,
// the external connection, the leafnode connection).

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// ErrAuth reports credentials or TLS material that cannot be used: an
// unreadable file, a malformed key or certificate.
var ErrAuth = errors.New("bus: bad credentials")

// validateSecurity checks the credential and TLS options of an embedded
// node.
func (o *Options) validateSecurity() error {
	if o.Token != "" && (o.User != "" || len(o.NKeys) > 0 || o.NKeysFile != "" || o.Policy != nil) {
		return fmt.Errorf("%w: a token excludes users and nkeys (NATS accepts one or the other)", ErrInvalidOption)
	}
	if (o.User == "") != (o.Password == "") {
		return fmt.Errorf("%w: user and password go together", ErrInvalidOption)
	}
	if (o.ClusterUser == "") != (o.ClusterPassword == "") {
		return fmt.Errorf("%w: cluster user and cluster password go together", ErrInvalidOption)
	}
	if err := checkNKeys(o.NKeys); err != nil {
		return err
	}
	if o.TLSVerify && (o.TLSCA == "" || o.TLSCert == "") {
		return fmt.Errorf("%w: verifying client certificates needs a TLS certificate, key and CA", ErrInvalidOption)
	}
	c := o.ClusterTLSCert != "" || o.ClusterTLSKey != "" || o.ClusterTLSCA != ""
	if c && (o.ClusterTLSCert == "" || o.ClusterTLSKey == "" || o.ClusterTLSCA == "") {
		return fmt.Errorf("%w: route TLS needs a certificate, a key and a CA", ErrInvalidOption)
	}
	return o.validateClientCreds()
}

// validateClientCreds checks the credentials the node connects with.
func (o *Options) validateClientCreds() error {
	if o.NKeySeed != "" && o.CredsFile != "" {
		return fmt.Errorf("%w: an nkey seed and a credentials file exclude each other", ErrInvalidOption)
	}
	if o.Identity != nil && (o.NKeySeed != "" || o.CredsFile != "") {
		return fmt.Errorf("%w: an identity excludes an nkey seed and a credentials file (it is the key the node connects with)", ErrInvalidOption)
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		return fmt.Errorf("%w: TLS certificate and key go together", ErrInvalidOption)
	}
	return nil
}

// secureServer sets the authentication and TLS options of the embedded
// server and returns the options the node's in-process connections use
// to authenticate.
func (o *Options) secureServer(s *server.Options) ([]nats.Option, error) {
	var inproc []nats.Option
	switch {
	case o.Token != "":
		s.Authorization = o.Token
		inproc = append(inproc, nats.Token(o.Token))
	case o.User != "" || len(o.NKeys) > 0 || o.NKeysFile != "" || o.Policy != nil:
		if o.User != "" {
			s.Users = append(s.Users, &server.User{Username: o.User, Password: o.Password})
			inproc = append(inproc, nats.UserInfo(o.User, o.Password))
		}
		keys := append([]string(nil), o.NKeys...)
		if o.NKeysFile != "" {
			more, err := readNKeysFile(o.NKeysFile)
			if err != nil {
				return nil, err
			}
			keys = append(keys, more...)
		}
		for _, k := range keys {
			s.Nkeys = append(s.Nkeys, &server.NkeyUser{Nkey: k})
		}
		if o.Policy != nil {
			// The policy's identities, each with its permissions; the
			// in-process connection below (the node itself) has all.
			s.Nkeys = append(s.Nkeys, o.Policy.NkeyUsers()...)
		}
		if o.User == "" {
			// Only nkeys are allowed: the in-process connection gets a
			// key of its own, made for this run.
			kp, err := nkeys.CreateUser()
			if err != nil {
				return nil, fmt.Errorf("%w: %v", ErrAuth, err)
			}
			pub, _ := kp.PublicKey()
			s.Nkeys = append(s.Nkeys, &server.NkeyUser{Nkey: pub})
			inproc = append(inproc, nats.Nkey(pub, kp.Sign))
		}
	}
	if o.TLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: o.TLSCert, KeyFile: o.TLSKey, CaFile: o.TLSCA, Verify: o.TLSVerify,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: client TLS: %v", ErrAuth, err)
		}
		s.TLSConfig, s.TLS, s.TLSVerify = tc, true, o.TLSVerify
		s.TLSTimeout = 5
	}
	if o.Identity != nil {
		inproc = append(inproc, nats.CustomInboxPrefix(o.Identity.InboxPrefix()))
	}
	if o.ClusterUser != "" {
		s.Cluster.Username, s.Cluster.Password = o.ClusterUser, o.ClusterPassword
	}
	if o.ClusterTLSCert != "" {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{
			CertFile: o.ClusterTLSCert, KeyFile: o.ClusterTLSKey, CaFile: o.ClusterTLSCA, Verify: true,
		})
		if err != nil {
			return nil, fmt.Errorf("%w: route TLS: %v", ErrAuth, err)
		}
		// A node is the client of the routes it opens: it verifies the
		// other side against the same CA (as nats-server's own
		// configuration file parser does for cluster TLS).
		tc.RootCAs = tc.ClientCAs
		s.Cluster.TLSConfig = tc
		s.Cluster.TLSTimeout = 5
	}
	return inproc, nil
}

// withRouteCreds returns u with the cluster credentials as its user
// info, unless it has some already.
func (o *Options) withRouteCreds(u *url.URL) *url.URL {
	if o.ClusterUser == "" || u.User != nil {
		return u
	}
	c := *u
	c.User = url.UserPassword(o.ClusterUser, o.ClusterPassword)
	return &c
}

// ConnectOptions returns the NATS client options that present o's
// credentials (Token, User and Password, NKeySeed, CredsFile), trust
// TLSCA and present the TLSCert client certificate: what a node in
// external mode connects with, and what a client of a node secured with
// the same options needs.
func (o Options) ConnectOptions() ([]nats.Option, error) {
	if err := o.validateClientCreds(); err != nil {
		return nil, err
	}
	return o.clientCreds()
}

// clientCreds returns the options the node's connection to an external
// NATS presents (see ConnectOptions).
func (o *Options) clientCreds() ([]nats.Option, error) {
	var opts []nats.Option
	if o.Token != "" {
		opts = append(opts, nats.Token(o.Token))
	}
	if o.User != "" {
		opts = append(opts, nats.UserInfo(o.User, o.Password))
	}
	if o.NKeySeed != "" {
		kp, err := loadSeed(o.NKeySeed)
		if err != nil {
			return nil, err
		}
		pub, _ := kp.PublicKey()
		opts = append(opts, nats.Nkey(pub, kp.Sign))
	}
	if o.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(o.CredsFile))
	}
	if o.Identity != nil {
		opts = append(opts, o.Identity.ConnectOptions()...)
	}
	if o.TLSCA != "" {
		opts = append(opts, nats.RootCAs(o.TLSCA))
	}
	if o.TLSCert != "" {
		opts = append(opts, nats.ClientCert(o.TLSCert, o.TLSKey))
	}
	return opts, nil
}

// leafRemote returns the leafnode remote configuration for urls.
func (o *Options) leafRemote(urls []*url.URL) (*server.RemoteLeafOpts, error) {
	r := &server.RemoteLeafOpts{URLs: urls, Credentials: o.CredsFile}
	if o.NKeySeed != "" {
		kp, err := loadSeed(o.NKeySeed)
		if err != nil {
			return nil, err
		}
		seed, _ := kp.Seed()
		r.Nkey = string(seed)
	}
	if o.Identity != nil {
		seed, err := o.Identity.Seed()
		if err != nil {
			return nil, fmt.Errorf("%w: identity: %v", ErrAuth, err)
		}
		r.Nkey = string(seed)
	}
	tlsWanted := o.TLSCA != ""
	for _, u := range urls {
		if u.Scheme == "tls" {
			tlsWanted = true
		}
	}
	if tlsWanted {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if o.TLSCA != "" {
			pool, err := loadCAs(o.TLSCA)
			if err != nil {
				return nil, err
			}
			tc.RootCAs = pool
		}
		if o.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("%w: leafnode client certificate: %v", ErrAuth, err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		r.TLS, r.TLSConfig, r.TLSTimeout = true, tc, 5
	}
	return r, nil
}

// leafURLs parses leafnode remote URLs; a URL without a scheme gets
// nats-leaf://.
func leafURLs(list []string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range list {
		for _, p := range SplitList(s) {
			if !strings.Contains(p, "://") {
				p = "nats-leaf://" + p
			}
			u, err := url.Parse(p)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("%w: leafnode URL %q", ErrInvalidOption, p)
			}
			switch u.Scheme {
			case "nats-leaf", "nats", "tls", "ws", "wss":
			default:
				return nil, fmt.Errorf("%w: leafnode URL %q: scheme %q (want nats-leaf, nats, tls, ws or wss)", ErrInvalidOption, p, u.Scheme)
			}
			out = append(out, u)
		}
	}
	return out, nil
}

// loadSeed reads an nkey seed given literally ("SU...") or as a file
// holding one (a bare seed or a decorated credentials file).
func loadSeed(s string) (nkeys.KeyPair, error) {
	data := []byte(strings.TrimSpace(s))
	if !bytes.HasPrefix(data, []byte("SU")) {
		b, err := os.ReadFile(s)
		if err != nil {
			return nil, fmt.Errorf("%w: nkey seed: %v", ErrAuth, err)
		}
		data = b
	}
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return nil, fmt.Errorf("%w: nkey seed: %v", ErrAuth, err)
	}
	if _, err := kp.Seed(); err != nil {
		return nil, fmt.Errorf("%w: nkey seed: not a seed", ErrAuth)
	}
	return kp, nil
}

// readNKeysFile reads public user nkeys, one per line; blank lines and
// lines starting with # are skipped.
func readNKeysFile(path string) ([]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: nkeys file: %v", ErrAuth, err)
	}
	var keys []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		k := strings.TrimSpace(sc.Text())
		if k == "" || strings.HasPrefix(k, "#") {
			continue
		}
		if !nkeys.IsValidPublicUserKey(k) {
			return nil, fmt.Errorf("%w: %s:%d: not a public user nkey", ErrAuth, path, line)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w: %s holds no nkey", ErrAuth, path)
	}
	return keys, nil
}

// loadCAs reads a PEM file of CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: CA: %v", ErrAuth, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrAuth, path)
	}
	return pool, nil
}
