package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// CPU and storage accounting from /proc, so that a figure can be read with
// what the machine was doing: whether arx serve was CPU-bound, how much CPU
// other processes on this shared machine took during the phase, and how many
// bytes the server wrote to storage. Where /proc is missing (not Linux) the
// figures are left out.

// userHZ is the unit of the CPU times in /proc (USER_HZ, 100 on Linux).
const userHZ = 100

// cpuSample is CPU time used so far, in ticks.
type cpuSample struct {
	at                     time.Time
	arx, echo, self, total int64
	ok                     bool
	arxWritten             int64 // bytes arx serve caused to be written to storage; -1: unknown
	devWritten             int64 // bytes the data directory's disk wrote; -1: unknown
}

// cpuUse is the average number of cores busy over an interval.
type cpuUse struct {
	arx, echo, client, other float64
	ok                       bool
	arxWritten               int64 // bytes arx serve caused to be written to storage; -1: unknown
	devWritten               int64 // bytes the data directory's disk wrote; -1: unknown
}

func (u cpuUse) String() string {
	if !u.ok {
		return "cpu: not measured"
	}
	return fmt.Sprintf("cpu cores: arx %.2f, echo %.2f, client %.2f, other processes %.2f", u.arx, u.echo, u.client, u.other)
}

func sampleCPU(arxPID, echoPID int) cpuSample {
	s := cpuSample{at: time.Now(), ok: true}
	s.arxWritten = writeBytes(strconv.Itoa(arxPID))
	s.devWritten = deviceWritten(dataDevice)
	var err error
	if s.total, err = busyTicks(); err != nil {
		return cpuSample{arxWritten: -1, devWritten: -1}
	}
	for _, p := range []struct {
		pid string
		out *int64
	}{{strconv.Itoa(arxPID), &s.arx}, {strconv.Itoa(echoPID), &s.echo}, {"self", &s.self}} {
		if *p.out, err = procTicks(p.pid); err != nil {
			return cpuSample{arxWritten: -1, devWritten: -1}
		}
	}
	return s
}

func (a cpuSample) to(b cpuSample) cpuUse {
	sec := b.at.Sub(a.at).Seconds()
	if !a.ok || !b.ok || sec <= 0 {
		return cpuUse{arxWritten: -1, devWritten: -1}
	}
	cores := func(t int64) float64 { return float64(t) / userHZ / sec }
	u := cpuUse{arx: cores(b.arx - a.arx), echo: cores(b.echo - a.echo), client: cores(b.self - a.self), ok: true}
	u.other = max(0, cores(b.total-a.total)-u.arx-u.echo-u.client)
	u.arxWritten, u.devWritten = -1, -1
	if a.arxWritten >= 0 && b.arxWritten >= 0 {
		u.arxWritten = b.arxWritten - a.arxWritten
	}
	if a.devWritten >= 0 && b.devWritten >= 0 {
		u.devWritten = b.devWritten - a.devWritten
	}
	return u
}

// measureCPU samples after warmup and again after dur, in the background,
// alongside a load phase of the same timing; wait returns the use.
func measureCPU(ctx context.Context, arxPID, echoPID int, warmup, dur time.Duration) (wait func() cpuUse) {
	done := make(chan cpuUse, 1)
	go func() {
		if !sleepCtx(ctx, warmup) {
			done <- cpuUse{arxWritten: -1, devWritten: -1}
			return
		}
		a := sampleCPU(arxPID, echoPID)
		if !sleepCtx(ctx, dur) {
			done <- cpuUse{arxWritten: -1}
			return
		}
		done <- a.to(sampleCPU(arxPID, echoPID))
	}()
	return func() cpuUse { return <-done }
}

// procTicks is utime+stime of a process (all its threads), from
// /proc/PID/stat (proc(5): fields 14 and 15).
func procTicks(pid string) (int64, error) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces: fields count from its ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%s/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%s/stat: %d fields", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%s/stat: bad utime or stime", pid)
	}
	return u + s, nil
}

// busyTicks is the CPU time of the whole machine that was not idle, from
// the "cpu" line of /proc/stat: user nice system idle iowait irq softirq
// steal (guest time is already inside user).
func busyTicks() (int64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %v", err)
		}
		busy += v
	}
	return busy, nil
}

// writeBytes is write_bytes of /proc/PID/io: what the process caused to be
// sent to storage (its WAL and database pages, not its sockets); -1 when
// unknown.
func writeBytes(pid string) int64 {
	b, err := os.ReadFile("/proc/" + pid + "/io")
	if err != nil {
		return -1
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "write_bytes:"); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			return n
		}
	}
	return -1
}

// dataDevice is the /sys/dev/block entry of the disk that holds the data
// directory ("" when unknown), set by findDevice.
var dataDevice string

// findDevice finds the disk that holds dir.
func findDevice(dir string) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return
	}
	p := fmt.Sprintf("/sys/dev/block/%d:%d/stat", unix.Major(uint64(st.Dev)), unix.Minor(uint64(st.Dev)))
	if _, err := os.Stat(p); err == nil {
		dataDevice = p
	}
}

// deviceWritten is what the disk at p (a /sys/dev/block/M:N/stat) wrote
// so far, in bytes: every process's writes, the filesystem's journal and
// metadata included; -1 when unknown.
func deviceWritten(p string) int64 {
	if p == "" {
		return -1
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return -1
	}
	f := strings.Fields(string(b))
	if len(f) < 7 {
		return -1
	}
	n, err := strconv.ParseInt(f[6], 10, 64) // sectors written, of 512 bytes
	if err != nil {
		return -1
	}
	return n * 512
}
