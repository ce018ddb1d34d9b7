package replicas

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// proxyMode is what a proxy does with the bytes between a replica and
// PostgreSQL.
type proxyMode int

const (
	// pass forwards both ways.
	pass proxyMode = iota
	// reset closes every proxied connection at once with an RST and resets
	// new ones as soon as they are accepted, like a firewall rejecting.
	reset
	// stall keeps every socket open and forwards nothing, either way; new
	// connections are accepted and never forwarded: a black hole. Bytes
	// read meanwhile are held, and delivered if the proxy passes again, as
	// TCP retransmits once a path heals.
	stall
)

func (m proxyMode) String() string { return [...]string{"pass", "reset", "stall"}[m] }

// proxy is a loopback TCP proxy in front of one address, with a switchable
// fault. Standard library only.
type proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	mode    proxyMode
	changed chan struct{} // closed and replaced at each mode change
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// newProxy listens on 127.0.0.1 and forwards to target (host:port); it is
// closed, with its connections, when the test ends.
func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{target: target, ln: ln, changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// via rewrites a postgres:// URL to go through the proxy.
func (p *proxy) via(t *testing.T, db string) string {
	t.Helper()
	u, err := url.Parse(db)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.ln.Addr().String()
	return u.String()
}

// set switches the mode; reset closes the connections open now.
func (p *proxy) set(m proxyMode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	if m == reset {
		for c := range p.conns {
			rst(c)
		}
		clear(p.conns)
	}
}

// rst closes a connection with an RST rather than a FIN.
func rst(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetLinger(0)
	}
	c.Close()
}

// gate waits while the proxy stalls and says whether to forward (pass) or
// to drop the connection (reset, or closed).
func (p *proxy) gate() bool {
	for {
		p.mu.Lock()
		m, ch, closed := p.mode, p.changed, p.closed
		p.mu.Unlock()
		switch {
		case closed || m == reset:
			return false
		case m == pass:
			return true
		}
		<-ch
	}
}

// track registers a connection to be closed by a reset; false when it
// must be dropped at once.
func (p *proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == reset {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *proxy) serve(client net.Conn) {
	if !p.track(client) {
		rst(client)
		return
	}
	// A new connection during a stall waits here, never forwarded, until
	// the proxy passes again (or resets).
	if !p.gate() {
		p.untrack(client)
		rst(client)
		return
	}
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		p.untrack(client)
		rst(client)
		return
	}
	if !p.track(server) {
		p.untrack(client)
		rst(client)
		rst(server)
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { p.pipe(server, client) })
	wg.Go(func() { p.pipe(client, server) })
	wg.Wait()
	p.untrack(client, server)
	client.Close()
	server.Close()
}

// pipe copies src to dst, holding each read at the gate: during a stall
// nothing reaches dst, and src's sender fills its buffers and waits.
func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate() {
				rst(src)
				rst(dst)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Half close: pass the FIN on, once the path is open.
				if p.gate() {
					if tc, ok := dst.(*net.TCPConn); ok {
						tc.CloseWrite()
						return
					}
				}
			}
			dst.Close()
			return
		}
	}
}

func (p *proxy) close() {
	p.mu.Lock()
	p.closed = true
	close(p.changed)
	p.changed = make(chan struct{})
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
	p.mu.Unlock()
	p.ln.Close()
	p.wg.Wait()
}
