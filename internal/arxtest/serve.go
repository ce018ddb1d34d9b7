package arxtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"sync"
)

// ServeLog keeps the log of an arx serve run as a separate process with
// --log-format json, and reports the URL it serves on.
type ServeLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
	url chan string
}

// WatchServe reads stderr (an arx serve's, with --log-format json) in the
// background until it ends, keeping every line. The URL of the first
// "arx serving" line arrives on URL.
func WatchServe(stderr io.Reader) *ServeLog {
	l := &ServeLog{url: make(chan string, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			l.mu.Lock()
			l.buf.WriteString(line + "\n")
			l.mu.Unlock()
			var m struct {
				Msg string `json:"msg"`
				URL string `json:"url"`
			}
			if json.Unmarshal([]byte(line), &m) == nil && m.Msg == "arx serving" {
				select {
				case l.url <- m.URL:
				default:
				}
			}
		}
	}()
	return l
}

// URL delivers the URL the server serves on, once it serves.
func (l *ServeLog) URL() <-chan string { return l.url }

// String is the log so far, one line per entry.
func (l *ServeLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
