package tcpfault

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// target listens on loopback; every line it reads is sent on got and
// echoed back.
func target(t *testing.T) (string, <-chan string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got := make(chan string, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					got <- line
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), got
}

func TestModes(t *testing.T) {
	addr, got := target(t)
	p := New(t, addr)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	send := func(line string) {
		t.Helper()
		if _, err := c.Write([]byte(line + "\n")); err != nil {
			t.Fatal(err)
		}
	}
	arrives := func(want string) {
		t.Helper()
		select {
		case line := <-got:
			if line != want+"\n" {
				t.Fatalf("target read %q, want %q", line, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%q never reached the target", want)
		}
	}
	nothingArrives := func() {
		t.Helper()
		select {
		case line := <-got:
			t.Fatalf("target read %q during a stall", line)
		case <-time.After(100 * time.Millisecond):
		}
	}
	answered := func(want string) {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, err := r.ReadString('\n')
		if err != nil || line != want+"\n" {
			t.Fatalf("client read %q, %v; want %q", line, err, want)
		}
	}
	unanswered := func() {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if line, err := r.ReadString('\n'); err == nil || line != "" {
			t.Fatalf("client read %q, %v during a stall of the replies", line, err)
		}
	}

	send("one")
	arrives("one")
	answered("one")

	p.Set(Stall)
	send("two")
	nothingArrives()
	p.Set(Pass)
	arrives("two")
	answered("two")

	p.Set(StallReplies)
	send("three")
	arrives("three")
	unanswered()
	p.Set(Pass)
	answered("three")

	p.Set(Reset)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("a reset connection still reads")
	}
}
