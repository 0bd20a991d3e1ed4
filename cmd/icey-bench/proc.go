package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"syscall"
	"time"
)

// userHZ is the unit of utime/stime in /proc/<pid>/stat. The kernel exports
// USER_HZ = 100 to user space on every Linux architecture Go supports.
const userHZ = 100

// procSample is one reading of a process's CPU time and resident memory.
type procSample struct {
	cpu time.Duration // utime + stime
	rss int64         // bytes (VmRSS)
}

// sampleProc reads /proc/<pid>/stat and /proc/<pid>/status.
func sampleProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// comm (field 2) may contain spaces and parentheses: fields are
	// counted from the last ')'.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, fmt.Errorf("icey-bench: malformed /proc/%d/stat", pid)
	}
	f := bytes.Fields(stat[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return s, fmt.Errorf("icey-bench: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseInt(string(f[11]), 10, 64)
	st, err2 := strconv.ParseInt(string(f[12]), 10, 64)
	if err1 != nil || err2 != nil {
		return s, fmt.Errorf("icey-bench: malformed /proc/%d/stat", pid)
	}
	s.cpu = time.Duration(ut+st) * time.Second / userHZ

	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for line := range bytes.SplitSeq(status, []byte{'\n'}) {
		if v, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			fs := bytes.Fields(v) // "12345 kB"
			if len(fs) >= 1 {
				kb, err := strconv.ParseInt(string(fs[0]), 10, 64)
				if err == nil {
					s.rss = kb * 1024
				}
			}
			break
		}
	}
	return s, nil
}

// selfCPU returns this process's user+system CPU time from getrusage.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// udpErrors are the network namespace's UDP drop counters from
// /proc/net/snmp: a datagram dropped because a socket's receive (or send)
// buffer was full. They tell whether a loss happened in a kernel queue on
// this machine, and are meaningful when the bench owns the namespace (make
// bench runs it in a private one).
type udpErrors struct {
	rcvbuf, sndbuf int64
}

func sampleUDPErrors() (udpErrors, error) {
	var u udpErrors
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return u, err
	}
	var names []string
	for line := range bytes.SplitSeq(b, []byte{'\n'}) {
		rest, ok := bytes.CutPrefix(line, []byte("Udp:"))
		if !ok {
			continue
		}
		f := bytes.Fields(rest)
		if names == nil { // the first Udp: line names the columns
			for _, n := range f {
				names = append(names, string(n))
			}
			continue
		}
		for i, v := range f {
			if i >= len(names) {
				break
			}
			n, _ := strconv.ParseInt(string(v), 10, 64)
			switch names[i] {
			case "RcvbufErrors":
				u.rcvbuf = n
			case "SndbufErrors":
				u.sndbuf = n
			}
		}
		return u, nil
	}
	return u, fmt.Errorf("icey-bench: no Udp counters in /proc/net/snmp")
}
