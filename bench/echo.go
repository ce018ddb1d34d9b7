package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// The echo server is the ceiling: what the same client, on the same
// machine, gets from a bare net/http server that answers each of the two
// round trips of a "call" with a small JSON body and does nothing else (no
// authentication, no JSON decoding, no signing, no database).
//
// It runs as a second process, this benchmark's own binary started again
// with echoServerArg, because arx serve is a separate process too: an
// in-process echo server would share the client's Go scheduler and heap,
// and skip the cross-process scheduling that the governed figure pays.
const echoServerArg = "-internal-echo-server"

// echoServerMain serves until SIGTERM, an interrupt, or the end of its
// standard input (the parent went away). It prints its address first.
func echoServerMain() int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench echo server: %v\n", err)
		return 1
	}
	echo := func(status int) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 64<<10))
			if err != nil {
				http.Error(w, `{"error":{"code":"request.bad_body"}}`, http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			w.Write(body)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/calls", echo(http.StatusCreated))
	mux.HandleFunc("POST /v1/calls/{id}/complete", echo(http.StatusOK))
	// The same server timeouts and limits as arx serve (internal/server).
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Printf("listening %s\n", ln.Addr())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	stdinDone := make(chan struct{})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		close(stdinDone)
	}()
	select {
	case <-stop:
	case <-stdinDone:
	case err := <-served:
		fmt.Fprintf(os.Stderr, "bench echo server: %v\n", err)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "bench echo server: shutdown: %v\n", err)
		return 1
	}
	return 0
}

// echoProc is the running echo server.
type echoProc struct {
	cmd    *exec.Cmd
	stdin  io.Closer
	url    string
	exited chan struct{}
	err    error
}

func startEcho(ctx context.Context) (*echoProc, error) {
	return startSelf(ctx, echoServerArg, "the echo server")
}

// startSelf starts this binary again with a hidden first argument (the echo
// server, the gateway's upstream) and waits for the address it prints.
func startSelf(ctx context.Context, arg, name string) (*echoProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, arg)
	dieWithParent(cmd)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &echoProc{cmd: cmd, stdin: stdin, exited: make(chan struct{})}
	addr := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		addr <- strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t := time.NewTimer(startTimeout)
	defer t.Stop()
	select {
	case a := <-addr:
		if a == "" {
			p.stop()
			return nil, fmt.Errorf("%s did not print its address", name)
		}
		p.url = "http://" + a
		return p, nil
	case <-t.C:
		p.stop()
		return nil, fmt.Errorf("%s did not start within %s", name, startTimeout)
	case <-ctx.Done():
		p.stop()
		return nil, ctx.Err()
	}
}

// stop shuts the echo server down with SIGTERM, killing it if it does not
// exit in time.
func (p *echoProc) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	select {
	case <-p.exited:
	case <-t.C:
		p.cmd.Process.Kill()
		<-p.exited
		p.stdin.Close()
		return fmt.Errorf("did not exit within %s of SIGTERM: killed", stopTimeout)
	}
	p.stdin.Close()
	return p.err
}
