// Package tcpfault is a loopback TCP proxy for tests, in front of one
// address, with a switchable fault: pass the bytes, reset every
// connection, stall (keep every socket open and carry nothing), or stall
// the replies only. Tests
// put it between a client and a database to cut or freeze the path.
// Standard library only.
package tcpfault

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
)

// Mode is what a proxy does with the bytes between its two ends.
type Mode int

const (
	// Pass forwards both ways.
	Pass Mode = iota
	// Reset closes every proxied connection at once with an RST and resets
	// new ones as soon as they are accepted, like a firewall rejecting.
	Reset
	// Stall keeps every socket open and forwards nothing, either way; new
	// connections are accepted and never forwarded: a black hole. Bytes
	// read meanwhile are held, and delivered if the proxy passes again, as
	// TCP retransmits once a path heals.
	Stall
	// StallReplies forwards what clients send and holds what the target
	// answers: a one-way partition. A database client's statements run,
	// and it never learns so; a transaction it opened stays open, idle.
	StallReplies
)

// String is "pass", "reset", "stall" or "stall-replies".
func (m Mode) String() string { return [...]string{"pass", "reset", "stall", "stall-replies"}[m] }

// Proxy is a loopback TCP proxy in front of one address. It starts in
// Pass.
type Proxy struct {
	target string
	ln     net.Listener

	mu      sync.Mutex
	mode    Mode
	changed chan struct{} // closed and replaced at each mode change
	conns   map[net.Conn]struct{}
	closed  bool
	wg      sync.WaitGroup
}

// New listens on 127.0.0.1 and forwards to target (host:port); the proxy
// is closed, with its connections, when the test ends.
func New(t testing.TB, target string) *Proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{target: target, ln: ln, changed: make(chan struct{}), conns: map[net.Conn]struct{}{}}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

// Addr is the proxy's host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Via rewrites a URL (postgres://, http://) to go through the proxy: its
// host becomes the proxy's.
func (p *Proxy) Via(t testing.TB, rawURL string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Host = p.Addr()
	return u.String()
}

// Set switches the mode; Reset closes the connections open now.
func (p *Proxy) Set(m Mode) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mode = m
	close(p.changed)
	p.changed = make(chan struct{})
	if m == Reset {
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

// gate waits while the proxy stalls bytes going this way (toTarget: from
// the client to the target) and says whether to forward them (pass) or to
// drop the connection (reset, or closed).
func (p *Proxy) gate(toTarget bool) bool {
	for {
		p.mu.Lock()
		m, ch, closed := p.mode, p.changed, p.closed
		p.mu.Unlock()
		switch {
		case closed || m == Reset:
			return false
		case m == Pass, m == StallReplies && toTarget:
			return true
		}
		<-ch
	}
}

// track registers a connection to be closed by a reset; false when it
// must be dropped at once.
func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.mode == Reset {
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Go(func() { p.serve(c) })
	}
}

func (p *Proxy) serve(client net.Conn) {
	if !p.track(client) {
		rst(client)
		return
	}
	// A new connection during a stall waits here, never forwarded, until
	// the proxy passes again (or resets).
	if !p.gate(true) {
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
	wg.Go(func() { p.pipe(server, client, true) })
	wg.Go(func() { p.pipe(client, server, false) })
	wg.Wait()
	p.untrack(client, server)
	client.Close()
	server.Close()
}

// pipe copies src to dst, holding each read at the gate: during a stall
// nothing reaches dst, and src's sender fills its buffers and waits.
// toTarget says which way the bytes go.
func (p *Proxy) pipe(dst, src net.Conn, toTarget bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !p.gate(toTarget) {
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
				if p.gate(toTarget) {
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

// close ends the proxy: its listener, its connections, and its goroutines
// (it waits for them).
func (p *Proxy) close() {
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
