package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"sync/atomic"
	"syscall"
	"time"
)

// ProxyPort is where a sandboxed job finds the egress proxy, and the
// variables that point its tools at it.
const ProxyPort = 3128

// ProxyEnv returns the environment that sends a job's HTTP(S) traffic
// through the proxy at addr ("127.0.0.1:3128"); loopback stays direct.
func ProxyEnv(addr string) []string {
	u := "http://" + addr
	noProxy := "localhost,127.0.0.1,::1"
	return []string{"HTTP_PROXY=" + u, "HTTPS_PROXY=" + u, "http_proxy=" + u, "https_proxy=" + u,
		"NO_PROXY=" + noProxy, "no_proxy=" + noProxy}
}

// EgressProxy is an HTTP forward proxy (CONNECT for TLS, absolute URLs for
// plain HTTP) that refuses destinations a job must never reach: loopback
// (the worker's own services), link-local (the cloud metadata server at
// 169.254.169.254), and unspecified or multicast addresses. The check is
// on the address actually dialled, after DNS, so a name that resolves to a
// forbidden address (DNS rebinding) is refused too.
type EgressProxy struct {
	// Allow lists "ip:port" destinations allowed even so (tests use it
	// for a server on loopback standing in for the internet).
	Allow []string
	// Refused, if set, is told of every refused destination (the worker
	// writes it into the job's log).
	Refused func(dest, why string)
	// DialTimeout bounds one connection attempt (default 30s).
	DialTimeout time.Duration
}

// forbidden returns why a is not a destination for jobs ("" if it is).
func forbidden(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "a link-local address (the cloud metadata server lives there)"
	case a.IsUnspecified():
		return "an unspecified address"
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "a multicast address"
	case a == awsMetadataV6:
		return "a cloud metadata address"
	}
	return ""
}

var awsMetadataV6 = netip.MustParseAddr("fd00:ec2::254")

// refusal is the dial error for a forbidden destination.
type refusal struct{ dest, why string }

func (r *refusal) Error() string {
	return fmt.Sprintf("%s is %s: refused by the sandbox", r.dest, r.why)
}

func (p *EgressProxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	allowed := false
	for _, a := range p.Allow {
		if a == addr {
			allowed = true
		}
	}
	d := net.Dialer{Timeout: p.DialTimeout}
	if d.Timeout <= 0 {
		d.Timeout = 30 * time.Second
	}
	var refused atomic.Pointer[refusal] // dial attempts may run in parallel
	d.Control = func(_, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return err
		}
		if why := forbidden(ap.Addr()); why != "" && !allowed {
			r := &refusal{dest: addr, why: why}
			refused.Store(r)
			return r
		}
		return nil
	}
	c, err := d.DialContext(ctx, network, addr)
	if err == nil {
		return c, nil
	}
	if r := refused.Load(); r != nil {
		if p.Refused != nil {
			p.Refused(addr, r.why)
		}
		return nil, r
	}
	return nil, err
}

// ServeHTTP implements the proxy.
func (p *EgressProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodConnect {
		p.connect(w, r)
		return
	}
	if !r.URL.IsAbs() || r.URL.Scheme != "http" {
		http.Error(w, "tollgate egress proxy: want an absolute http:// URL or CONNECT", http.StatusBadRequest)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{DialContext: p.dial, Proxy: nil, ResponseHeaderTimeout: 5 * time.Minute},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			status := http.StatusBadGateway
			if errors.As(err, new(*refusal)) {
				status = http.StatusForbidden
			}
			http.Error(w, "tollgate egress proxy: "+err.Error(), status)
		},
	}
	rp.ServeHTTP(w, r)
}

func (p *EgressProxy) connect(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		http.Error(w, "tollgate egress proxy: CONNECT wants host:port", http.StatusBadRequest)
		return
	}
	up, err := p.dial(r.Context(), "tcp", host)
	if err != nil {
		status := http.StatusBadGateway
		if errors.As(err, new(*refusal)) {
			status = http.StatusForbidden
		}
		http.Error(w, "tollgate egress proxy: "+err.Error(), status)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "tollgate egress proxy: cannot hijack", http.StatusInternalServerError)
		return
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	defer c.Close()
	defer up.Close()
	if _, err := io.WriteString(c, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	// Bytes the client sent after the CONNECT line are already buffered.
	if n := buf.Reader.Buffered(); n > 0 {
		b, _ := buf.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	relay(c, up)
}
