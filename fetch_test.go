package dcr

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func TestClassifyAddress(t *testing.T) {
	tests := []struct {
		addr   string
		public bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"2606:4700::1", true},
		{"2001:4860:4860::8888", true},
		{"::ffff:8.8.8.8", true},

		// Just outside the non-public ranges.
		{"9.255.255.255", true},
		{"11.0.0.0", true},
		{"100.63.255.255", true},
		{"100.128.0.0", true},
		{"172.15.255.255", true},
		{"172.32.0.0", true},
		{"192.0.1.1", true},
		{"198.17.255.255", true},
		{"198.20.0.0", true},
		{"223.255.255.255", true},

		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"10.0.0.1", false},
		{"100.64.0.1", false},
		{"100.127.255.255", false},
		{"127.0.0.1", false},
		{"127.255.255.254", false},
		{"169.254.169.254", false},
		{"172.16.0.1", false},
		{"172.31.255.255", false},
		{"192.0.0.1", false},
		{"192.0.2.1", false},
		{"192.168.1.1", false},
		{"198.18.0.1", false},
		{"198.19.255.255", false},
		{"198.51.100.1", false},
		{"203.0.113.1", false},
		{"224.0.0.1", false},
		{"239.255.255.250", false},
		{"240.0.0.1", false},
		{"255.255.255.255", false},
		{"::", false},
		{"::1", false},
		{"::127.0.0.1", false},
		{"fc00::1", false},
		{"fd12:3456::1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"ff02::1", false},
		{"ff05::1:3", false},
		{"64:ff9b::a00:1", false},     // NAT64 of 10.0.0.1
		{"64:ff9b::808:808", false},   // NAT64 of a public address
		{"64:ff9b:1::1", false},       // local-use NAT64
		{"2002:a00:1::1", false},      // 6to4 of 10.0.0.1
		{"2002:808:808::1", false},    // 6to4 of a public address
		{"2001:db8::1", false},        // documentation
		{"100::1", false},             // discard-only
		{"::ffff:10.0.0.1", false},    // IPv4-mapped private
		{"::ffff:127.0.0.1", false},   // IPv4-mapped loopback
		{"::ffff:169.254.1.1", false}, // IPv4-mapped link-local
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			addr := netip.MustParseAddr(tc.addr)
			if got := publicAddr(addr); got != tc.public {
				t.Errorf("publicAddr(%s) = %v, want %v",
					addr, got, tc.public)
			}
		})
	}

	t.Run("zero address", func(t *testing.T) {
		if publicAddr(netip.Addr{}) {
			t.Error("the zero netip.Addr is public")
		}
	})

	// Every listed range must be refused at both ends, so that a typo in
	// the list cannot go unnoticed.
	for _, p := range nonPublicNetworks {
		t.Run(p.String(), func(t *testing.T) {
			if publicAddr(p.Addr()) {
				t.Errorf("first address %s is public", p.Addr())
			}
			if last := lastAddr(p); publicAddr(last) {
				t.Errorf("last address %s is public", last)
			}
		})
	}
}

// lastAddr returns the highest address in p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestClassifyAllowNetworks(t *testing.T) {
	f, err := (&FetchConfig{AllowNetworks: []string{
		"10.1.0.0/16",
		"::1/128",
		"::ffff:192.168.1.0/120", // IPv4-mapped form of 192.168.1.0/24
		"172.16.5.9/16",          // host bits are ignored
	}}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		addr    string
		allowed bool
	}{
		{"8.8.8.8", true},
		{"10.1.2.3", true},
		{"::ffff:10.1.2.3", true},
		{"10.2.0.1", false},
		{"::1", true},
		{"127.0.0.1", false},
		{"192.168.1.7", true},
		{"192.168.2.1", false},
		{"172.16.200.1", true},
		{"172.17.0.1", false},
		{"fe80::1%lo", false},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			addr := netip.MustParseAddr(tc.addr)
			if got := f.allowed(addr); got != tc.allowed {
				t.Errorf("allowed(%s) = %v, want %v",
					addr, got, tc.allowed)
			}
		})
	}
}

func TestFetcherCheckDial(t *testing.T) {
	f, err := (&FetchConfig{
		AllowNetworks: []string{"127.0.0.1/32"},
	}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		network, address string
		refused          bool
	}{
		{"tcp4", "8.8.8.8:443", false},
		{"tcp4", "127.0.0.1:80", false},
		{"tcp6", "[::ffff:127.0.0.1]:80", false},
		{"tcp4", "127.0.0.2:80", true},
		{"tcp4", "10.0.0.1:80", true},
		{"tcp6", "[::1]:80", true},
		{"tcp6", "[::ffff:10.0.0.1]:80", true},
		{"tcp6", "[fe80::1%eth0]:80", true},
		{"tcp", "not-an-address", true},
	}
	for _, tc := range tests {
		t.Run(tc.address, func(t *testing.T) {
			err := f.checkDial(tc.network, tc.address, nil)
			if refused := err != nil; refused != tc.refused {
				t.Errorf("checkDial(%s) = %v, want refused %v",
					tc.address, err, tc.refused)
			}
		})
	}
}

func TestNewFetcherValidation(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	missing := filepath.Join(dir, "missing.pem")
	writeFile(t, empty, "")
	writeFile(t, garbage, "-----BEGIN NOTHING-----\nxx\n")

	tests := []struct {
		name    string
		cfg     FetchConfig
		wantErr string
	}{
		{
			name:    "bad cidr",
			cfg:     FetchConfig{AllowNetworks: []string{"x"}},
			wantErr: `fetch allow_networks "x": `,
		},
		{
			name: "address without prefix length",
			cfg: FetchConfig{AllowNetworks: []string{
				"10.0.0.0/8", "127.0.0.1",
			}},
			wantErr: `fetch allow_networks "127.0.0.1": `,
		},
		{
			name:    "negative timeout",
			cfg:     FetchConfig{Timeout: caddy.Duration(-time.Second)},
			wantErr: `fetch timeout "-1s": must not be negative`,
		},
		{
			name:    "negative max size",
			cfg:     FetchConfig{MaxSize: -1},
			wantErr: "fetch max_size -1: ",
		},
		{
			name:    "max size over 1 MiB",
			cfg:     FetchConfig{MaxSize: 1<<20 + 1},
			wantErr: "fetch max_size 1048577: ",
		},
		{
			name:    "missing pem file",
			cfg:     FetchConfig{TrustedRoots: []string{missing}},
			wantErr: `fetch trusted_roots "` + missing + `": `,
		},
		{
			name:    "empty pem file",
			cfg:     FetchConfig{TrustedRoots: []string{empty}},
			wantErr: `fetch trusted_roots "` + empty + `": no PEM`,
		},
		{
			name:    "pem file without certificate",
			cfg:     FetchConfig{TrustedRoots: []string{garbage}},
			wantErr: `fetch trusted_roots "` + garbage + `": no PEM`,
		},
		{
			name: "max size of 1 MiB",
			cfg:  FetchConfig{MaxSize: 1 << 20},
		},
		{
			name: "all set",
			cfg: FetchConfig{
				AllowNetworks: []string{"10.0.0.0/8", "fd00::/8"},
				Timeout:       caddy.Duration(time.Second),
				MaxSize:       1000,
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.cfg.newFetcher()
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("newFetcher: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("newFetcher succeeded, want %q", tc.wantErr)
			}
			if f != nil {
				t.Error("newFetcher returned a fetcher with its error")
			}
			if !strings.HasPrefix(err.Error(), tc.wantErr) {
				t.Errorf("error %q, want prefix %q", err, tc.wantErr)
			}
		})
	}

	t.Run("missing file keeps the cause", func(t *testing.T) {
		cfg := FetchConfig{TrustedRoots: []string{missing}}
		_, err := cfg.newFetcher()
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error %v does not wrap fs.ErrNotExist", err)
		}
	})
}

func TestNewFetcherDefaults(t *testing.T) {
	tests := []struct {
		name string
		cfg  *FetchConfig
	}{
		{"nil config", nil},
		{"zero config", &FetchConfig{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, err := tc.cfg.newFetcher()
			if err != nil {
				t.Fatal(err)
			}
			if f.timeout != 5*time.Second {
				t.Errorf("timeout %v, want 5s", f.timeout)
			}
			if f.maxSize != 64<<10 {
				t.Errorf("max size %d, want 65536", f.maxSize)
			}
			if len(f.allow) != 0 {
				t.Errorf("allow %v, want none", f.allow)
			}

			tr, ok := f.client.Transport.(*http.Transport)
			if !ok {
				t.Fatalf("transport is %T", f.client.Transport)
			}
			if tr.Proxy != nil {
				t.Error("transport uses a proxy")
			}
			if v := tr.TLSClientConfig.MinVersion; v != tls.VersionTLS12 {
				t.Errorf("minimum TLS version %x, want 1.2", v)
			}
			if tr.TLSClientConfig.RootCAs != nil {
				t.Error("root CAs replaced without trusted_roots")
			}
		})
	}
}

// fetchServers are the local servers a fetch test talks to. All share
// one handler; see fetchHandler for its paths.
type fetchServers struct {
	plain  *httptest.Server // http on 127.0.0.1
	secure *httptest.Server // https on 127.0.0.1
	old    *httptest.Server // https on 127.0.0.1, TLS 1.0 and 1.1 only
	other  *httptest.Server // http on 127.0.0.2, nil if unavailable
	v6     *httptest.Server // http on [::1], nil if unavailable

	rootsPEM string // PEM file of the https servers' certificate
	closed   string // URL of a loopback port nobody listens on
}

func startFetchServers(t *testing.T) *fetchServers {
	t.Helper()
	s := &fetchServers{}
	quiet := log.New(io.Discard, "", 0)

	start := func(addr string, secure bool,
		tlsConfig *tls.Config) *httptest.Server {
		srv := httptest.NewUnstartedServer(fetchHandler())
		// Refused handshakes are expected; keep them out of the output.
		srv.Config.ErrorLog = quiet
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("cannot listen on %s: %v", addr, err)
			return nil
		}
		srv.Listener.Close()
		srv.Listener = l
		if secure {
			srv.TLS = tlsConfig
			srv.StartTLS()
		} else {
			srv.Start()
		}
		t.Cleanup(srv.Close)
		return srv
	}
	s.plain = start("127.0.0.1:0", false, nil)
	s.secure = start("127.0.0.1:0", true, nil)
	s.old = start("127.0.0.1:0", true, &tls.Config{
		MinVersion: tls.VersionTLS10,
		MaxVersion: tls.VersionTLS11,
	})
	s.other = start("127.0.0.2:0", false, nil)
	s.v6 = start("[::1]:0", false, nil)
	if s.plain == nil || s.secure == nil || s.old == nil {
		t.Fatal("cannot listen on 127.0.0.1")
	}

	block := &pem.Block{Type: "CERTIFICATE",
		Bytes: s.secure.Certificate().Raw}
	s.rootsPEM = filepath.Join(t.TempDir(), "roots.pem")
	writeFile(t, s.rootsPEM, string(pem.EncodeToMemory(block)))

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.closed = "http://" + l.Addr().String() + "/ok"
	l.Close()

	// The chunked cases rely on the server sending no Content-Length.
	resp, err := http.Get(s.plain.URL + "/chunked?n=10")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ContentLength != -1 {
		t.Fatalf("/chunked sent Content-Length %d", resp.ContentLength)
	}
	return s
}

// fetchHandler serves:
//
//	/ok            a small JSON document
//	/echo          the request's Accept and User-Agent headers
//	/size?n=N      N bytes with a Content-Length
//	/chunked?n=N   N bytes without a Content-Length
//	/endless       a chunked body that never ends
//	/status?code=C an empty response with status C
//	/redirect?to=U a 302 redirect to U
//	/chain?n=N     N redirects in a row, then /ok
//	/slow          no response until the client gives up
//	/slowbody      the headers and part of the body, then nothing
func fetchHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"ok":true}`)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Header.Get("Accept")+"|"+
			r.Header.Get("User-Agent"))
	})
	mux.HandleFunc("/size", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.FormValue("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		io.WriteString(w, strings.Repeat("x", n))
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.FormValue("n"))
		// Flushing before the body is complete forces chunked encoding.
		io.WriteString(w, "x")
		w.(http.Flusher).Flush()
		io.WriteString(w, strings.Repeat("x", n-1))
	})
	mux.HandleFunc("/endless", func(w http.ResponseWriter, r *http.Request) {
		chunk := strings.Repeat("x", 512)
		for r.Context().Err() == nil {
			if _, err := io.WriteString(w, chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(r.FormValue("code"))
		w.WriteHeader(code)
	})
	mux.HandleFunc("/redirect", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, r.FormValue("to"), http.StatusFound)
	})
	mux.HandleFunc("/chain", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.FormValue("n"))
		if n <= 0 {
			http.Redirect(w, r, "/ok", http.StatusFound)
			return
		}
		http.Redirect(w, r, "/chain?n="+strconv.Itoa(n-1),
			http.StatusFound)
	})
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		waitForClient(r)
	})
	mux.HandleFunc("/slowbody", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		waitForClient(r)
	})
	return mux
}

// waitForClient blocks until the client goes away, or long after any
// fetch timeout in these tests.
func waitForClient(r *http.Request) {
	select {
	case <-r.Context().Done():
	case <-time.After(10 * time.Second):
	}
}

func TestFetch(t *testing.T) {
	s := startFetchServers(t)
	loopback := []string{"127.0.0.1/32"}
	plainHostPort := strings.TrimPrefix(s.plain.URL, "http://")

	// A case whose url is empty needs a server that could not listen,
	// and is skipped.
	tests := []struct {
		name         string
		cfg          *FetchConfig
		url          string
		requireHTTPS bool
		wantReason   string // a prefix; empty for success
		wantBody     string // checked when not empty
		wantSize     int    // body length, checked when not zero
		wantURL      string // final URL, checked when not empty
	}{
		{
			name:       "loopback address refused by default",
			url:        s.plain.URL + "/ok",
			wantReason: "the address is not public",
		},
		{
			name:       "localhost refused by default",
			url:        "http://localhost:" + portOf(s.plain) + "/ok",
			wantReason: "the address is not public",
		},
		{
			name:       "ipv6 loopback refused by default",
			url:        urlOf(s.v6, "/ok"),
			wantReason: "the address is not public",
		},
		{
			name:     "loopback allowed by allow_networks",
			cfg:      &FetchConfig{AllowNetworks: loopback},
			url:      s.plain.URL + "/ok",
			wantBody: `{"ok":true}`,
			wantURL:  s.plain.URL + "/ok",
		},
		{
			name: "ipv6 loopback allowed by allow_networks",
			cfg: &FetchConfig{
				AllowNetworks: []string{"::1/128"},
			},
			url:      urlOf(s.v6, "/ok"),
			wantBody: `{"ok":true}`,
		},
		{
			name:     "sends accept and user agent",
			cfg:      &FetchConfig{AllowNetworks: loopback},
			url:      s.plain.URL + "/echo",
			wantBody: "application/json|caddy-dcr",
		},
		{
			name:         "http refused when https is required",
			cfg:          &FetchConfig{AllowNetworks: loopback},
			url:          s.plain.URL + "/ok",
			requireHTTPS: true,
			wantReason:   "the URL must use https",
		},
		{
			name: "https with a trusted root",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				TrustedRoots:  []string{s.rootsPEM},
			},
			url:          s.secure.URL + "/ok",
			requireHTTPS: true,
			wantBody:     `{"ok":true}`,
		},
		{
			name:         "https with an untrusted certificate",
			cfg:          &FetchConfig{AllowNetworks: loopback},
			url:          s.secure.URL + "/ok",
			requireHTTPS: true,
			wantReason:   "the TLS certificate is not trusted",
		},
		{
			name: "tls below 1.2 refused",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				TrustedRoots:  []string{s.rootsPEM},
			},
			url:          s.old.URL + "/ok",
			requireHTTPS: true,
			wantReason:   "TLS handshake failed",
		},
		{
			name: "body of exactly max_size",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				MaxSize:       1024,
			},
			url:      s.plain.URL + "/size?n=1024",
			wantSize: 1024,
		},
		{
			name: "body over max_size with content length",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				MaxSize:       1024,
			},
			url:        s.plain.URL + "/size?n=1025",
			wantReason: "response is larger than 1024 bytes",
		},
		{
			name: "chunked body of exactly max_size",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				MaxSize:       1024,
			},
			url:      s.plain.URL + "/chunked?n=1024",
			wantSize: 1024,
		},
		{
			name: "chunked body over max_size",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				MaxSize:       1024,
			},
			url:        s.plain.URL + "/chunked?n=1025",
			wantReason: "response is larger than 1024 bytes",
		},
		{
			// Reading must stop at the limit, not at the timeout.
			name: "endless body",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				MaxSize:       1024,
				Timeout:       caddy.Duration(10 * time.Second),
			},
			url:        s.plain.URL + "/endless",
			wantReason: "response is larger than 1024 bytes",
		},
		{
			name:       "default max_size",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        s.plain.URL + "/chunked?n=65537",
			wantReason: "response is larger than 65536 bytes",
		},
		{
			name:       "status 404",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        s.plain.URL + "/status?code=404",
			wantReason: "status 404",
		},
		{
			name:       "status 204",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        s.plain.URL + "/status?code=204",
			wantReason: "status 204",
		},
		{
			name:       "redirect without location",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        s.plain.URL + "/status?code=302",
			wantReason: "status 302",
		},
		{
			name: "redirect to another allowed server",
			cfg: &FetchConfig{AllowNetworks: []string{
				"127.0.0.1/32", "127.0.0.2/32",
			}},
			url:      redirectURL(s.plain, urlOf(s.other, "/ok")),
			wantBody: `{"ok":true}`,
			wantURL:  urlOf(s.other, "/ok"),
		},
		{
			name:     "three redirects followed",
			cfg:      &FetchConfig{AllowNetworks: loopback},
			url:      s.plain.URL + "/chain?n=2",
			wantBody: `{"ok":true}`,
			wantURL:  s.plain.URL + "/ok",
		},
		{
			name:       "four redirects refused",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        s.plain.URL + "/chain?n=3",
			wantReason: "too many redirects",
		},
		{
			name: "redirect from https to http refused",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				TrustedRoots:  []string{s.rootsPEM},
			},
			url:          redirectURL(s.secure, s.plain.URL+"/ok"),
			requireHTTPS: true,
			wantReason:   "redirect to a non-https URL refused",
		},
		{
			name: "redirect from https to http without require https",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				TrustedRoots:  []string{s.rootsPEM},
			},
			url:      redirectURL(s.secure, s.plain.URL+"/ok"),
			wantBody: `{"ok":true}`,
			wantURL:  s.plain.URL + "/ok",
		},
		{
			name:       "redirect to a loopback address not allowed",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        redirectURL(s.plain, urlOf(s.other, "/ok")),
			wantReason: "the address is not public",
		},
		{
			name:       "redirect to ipv6 loopback not allowed",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        redirectURL(s.plain, urlOf(s.v6, "/ok")),
			wantReason: "the address is not public",
		},
		{
			name: "redirect to a url with user info",
			cfg:  &FetchConfig{AllowNetworks: loopback},
			url: redirectURL(s.plain,
				"http://user:pw@"+plainHostPort+"/ok"),
			wantReason: "redirect refused: the URL must not contain user",
		},
		{
			name: "no response within the timeout",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				Timeout:       caddy.Duration(300 * time.Millisecond),
			},
			url:        s.plain.URL + "/slow",
			wantReason: "timed out after 300ms",
		},
		{
			name: "body not complete within the timeout",
			cfg: &FetchConfig{
				AllowNetworks: loopback,
				Timeout:       caddy.Duration(300 * time.Millisecond),
			},
			url:        s.plain.URL + "/slowbody",
			wantReason: "timed out after 300ms",
		},
		{
			name:       "connection refused",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        s.closed,
			wantReason: "the connection failed",
		},
		{
			name:       "user info refused",
			cfg:        &FetchConfig{AllowNetworks: loopback},
			url:        "http://user:pw@" + plainHostPort + "/ok",
			wantReason: "the URL must not contain user information",
		},
		{
			name:       "relative url refused",
			url:        "/ok",
			wantReason: "the URL must use http or https",
		},
		{
			name:       "other scheme refused",
			url:        "ftp://" + plainHostPort + "/ok",
			wantReason: "the URL must use http or https",
		},
		{
			name:       "url without host refused",
			url:        "http:///ok",
			wantReason: "the URL has no host",
		},
		{
			name:       "port without host refused",
			url:        "http://:8080/ok",
			wantReason: "the URL has no host",
		},
		{
			name:       "malformed url refused",
			url:        "http://[::1/ok",
			wantReason: "the URL is not valid",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.url == "" {
				// A server the case needs could not listen.
				t.Skip("server not available")
			}
			f, err := tc.cfg.newFetcher()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(f.client.CloseIdleConnections)

			got, err := f.get(context.Background(), tc.url,
				tc.requireHTTPS)
			if tc.wantReason != "" {
				checkFetchError(t, s, tc.url, err, tc.wantReason)
				return
			}
			if err != nil {
				t.Fatalf("get: %v", err)
			}
			if tc.wantBody != "" && string(got.body) != tc.wantBody {
				t.Errorf("body %q, want %q", got.body, tc.wantBody)
			}
			if tc.wantSize != 0 && len(got.body) != tc.wantSize {
				t.Errorf("body of %d bytes, want %d",
					len(got.body), tc.wantSize)
			}
			if tc.wantURL != "" && got.url != tc.wantURL {
				t.Errorf("final URL %q, want %q", got.url, tc.wantURL)
			}
			if got.header == nil {
				t.Error("no response header")
			}
		})
	}
}

// checkFetchError checks that err is a *fetchError whose reason starts
// with wantReason and reveals no address or port of the test servers.
func checkFetchError(t *testing.T, s *fetchServers, rawURL string,
	err error, wantReason string) {
	t.Helper()
	var fe *fetchError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T), want *fetchError", err, err)
	}
	reason := fe.Reason()
	if !strings.HasPrefix(reason, wantReason) {
		t.Errorf("reason %q, want prefix %q", reason, wantReason)
	}
	for _, leak := range s.secrets() {
		if strings.Contains(reason, leak) {
			t.Errorf("reason %q reveals %q", reason, leak)
		}
	}
	// The log sees the URL with any password redacted.
	logURL := rawURL
	if u, err := url.Parse(rawURL); err == nil {
		logURL = u.Redacted()
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "fetching "+logURL+": "+reason) {
		t.Errorf("Error() = %q, want it to start with the URL and "+
			"reason", msg)
	}
	if strings.Contains(msg, ":pw@") {
		t.Errorf("Error() = %q reveals a password", msg)
	}
}

// secrets returns what a reason must not reveal: the addresses and ports
// the servers listen on.
func (s *fetchServers) secrets() []string {
	leaks := []string{"127.0.0.", "::1", "localhost"}
	for _, srv := range []*httptest.Server{
		s.plain, s.secure, s.old, s.other, s.v6,
	} {
		if srv != nil {
			leaks = append(leaks, portOf(srv))
		}
	}
	u, _ := url.Parse(s.closed)
	return append(leaks, u.Port())
}

// portOf returns the port srv listens on.
func portOf(srv *httptest.Server) string {
	return strconv.Itoa(srv.Listener.Addr().(*net.TCPAddr).Port)
}

// urlOf returns the URL of path on srv, or "" if srv is nil.
func urlOf(srv *httptest.Server, path string) string {
	if srv == nil {
		return ""
	}
	return srv.URL + path
}

// redirectURL returns a URL on srv that redirects to target, or "" if
// target is empty.
func redirectURL(srv *httptest.Server, target string) string {
	if target == "" {
		return ""
	}
	return srv.URL + "/redirect?to=" + url.QueryEscape(target)
}

func TestFetchCanceled(t *testing.T) {
	s := startFetchServers(t)
	f, err := (&FetchConfig{
		AllowNetworks: []string{"127.0.0.1/32"},
	}).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.client.CloseIdleConnections)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = f.get(ctx, s.plain.URL+"/ok", false)
	checkFetchError(t, s, s.plain.URL+"/ok", err, "the fetch was canceled")
}

// TestFetchFailedReasons covers errors the local servers cannot provoke:
// each reason must hide the detail that its cause keeps for the log.
func TestFetchFailedReasons(t *testing.T) {
	f, err := (*FetchConfig)(nil).newFetcher()
	if err != nil {
		t.Fatal(err)
	}
	wrap := func(err error) error {
		return &url.Error{Op: "Get", URL: "https://x.example/", Err: err}
	}

	tests := []struct {
		name       string
		err        error
		wantReason string
		hidden     string // in Error() but not in Reason()
	}{
		{
			name: "unresolvable name",
			err: wrap(&net.OpError{Op: "dial", Net: "tcp",
				Err: &net.DNSError{Err: "no such host",
					Name: "db.internal", IsNotFound: true}}),
			wantReason: "the host name could not be resolved",
			hidden:     "db.internal",
		},
		{
			name: "address not public",
			err: wrap(&net.OpError{Op: "dial", Net: "tcp",
				Err: &addressError{
					addr: netip.MustParseAddr("10.9.8.7"),
				}}),
			wantReason: "the address is not public",
			hidden:     "10.9.8.7",
		},
		{
			name:       "deadline",
			err:        wrap(context.DeadlineExceeded),
			wantReason: "timed out after 5s",
			hidden:     "deadline exceeded",
		},
		{
			name: "unknown authority",
			err: wrap(&tls.CertificateVerificationError{
				Err: x509.UnknownAuthorityError{},
			}),
			wantReason: "the TLS certificate is not trusted",
			hidden:     "unknown authority",
		},
		{
			name: "not tls",
			err: wrap(tls.RecordHeaderError{
				Msg: "first record does not look like a TLS handshake",
			}),
			wantReason: "TLS handshake failed",
			hidden:     "first record",
		},
		{
			name:       "anything else",
			err:        wrap(errors.New("internal detail")),
			wantReason: "the fetch failed",
			hidden:     "internal detail",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fe := f.failed("https://x.example/", tc.err)
			if fe.Reason() != tc.wantReason {
				t.Errorf("reason %q, want %q", fe.Reason(), tc.wantReason)
			}
			if strings.Contains(fe.Reason(), tc.hidden) {
				t.Errorf("reason %q reveals %q", fe.Reason(), tc.hidden)
			}
			if !strings.Contains(fe.Error(), tc.hidden) {
				t.Errorf("Error() = %q lacks the cause %q",
					fe.Error(), tc.hidden)
			}
			if strings.Count(fe.Error(), "https://x.example/") != 1 {
				t.Errorf("Error() = %q, want the URL once", fe.Error())
			}
			if errors.Unwrap(fe) == nil {
				t.Error("Unwrap returned nil")
			}
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
