// Package hosttest models separate hosts on one machine for tests: each
// Host is a network namespace of its own (a process started in it with
// Command), joined to the test's namespace by a veth pair; the test's
// namespace routes between the hosts. Addresses come from the
// benchmarking range 198.18.0.0/15: host n is 198.18.n.2, the test's end of
// its link 198.18.n.1. Nothing leaves the machine: the test runs inside the
// loopback-only namespace of scripts/netns.sh, whose only other interfaces
// are these links.
//
// It needs CAP_NET_ADMIN in the test's namespace (root, or the mapped root
// of `unshare -rn`), `ip` (iproute2) and `unshare` (util-linux).
package hosttest

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Host is one modelled host.
type Host struct {
	t testing.TB
	n int
	// Addr is the host's address; Gateway the test's end of its link
	// (the address a test peer talking to this host uses).
	Addr, Gateway string
	outer, inner  string // veth names
}

// New creates the link of host n (1..250): the test's end is configured
// and forwarding is on; the host's end waits for Command's process.
func New(t testing.TB, n int) *Host {
	t.Helper()
	if n < 1 || n > 250 {
		t.Fatalf("hosttest: host number %d out of range", n)
	}
	h := &Host{t: t, n: n, Addr: fmt.Sprintf("198.18.%d.2", n), Gateway: fmt.Sprintf("198.18.%d.1", n),
		outer: fmt.Sprintf("ht%d", n), inner: fmt.Sprintf("hc%d", n)}
	// A previous host n may still be going away with its namespace.
	deadline := time.Now().Add(5 * time.Second)
	for exec.Command("ip", "link", "show", h.outer).Run() == nil {
		if time.Now().After(deadline) {
			_ = exec.Command("ip", "link", "del", h.outer).Run()
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	run(t, "ip", "link", "add", h.outer, "type", "veth", "peer", "name", h.inner)
	run(t, "ip", "addr", "add", h.Gateway+"/24", "dev", h.outer)
	run(t, "ip", "link", "set", h.outer, "up")
	if err := os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644); err != nil {
		t.Fatalf("hosttest: enabling forwarding: %v", err)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", h.outer).Run() })
	return h
}

func run(t testing.TB, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("hosttest: %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// Command returns a command that runs name on the host: in a new network
// namespace that, once Attach moved the host's end of the link into it,
// has lo, the link with Addr and a default route through the test's
// namespace. Start it, then call Attach with its process. cmd.Env holds
// the link's variables only: append the environment the command needs
// (PATH included, for ip).
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	script := `while ! ip link show "$IF" >/dev/null 2>&1; do sleep 0.02; done
ip link set lo up && ip addr add "$ADDR"/24 dev "$IF" && ip link set "$IF" up && ip route add default via "$GW" && exec "$@"`
	cmd := exec.Command("unshare", append([]string{"-n", "sh", "-c", script, "sh", name}, args...)...)
	cmd.Env = []string{"IF=" + h.inner, "ADDR=" + h.Addr, "GW=" + h.Gateway}
	return cmd
}

// Attach moves the host's end of the link into the namespace of the
// started command (it waits for unshare to have made it).
func (h *Host) Attach(cmd *exec.Cmd) {
	h.t.Helper()
	pid := cmd.Process.Pid
	own, _ := os.Readlink("/proc/self/ns/net")
	deadline := time.Now().Add(5 * time.Second)
	for {
		ns, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/ns/net")
		if err == nil && ns != own {
			break
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("hosttest: process %d never entered its own network namespace", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
	run(h.t, "ip", "link", "set", h.inner, "netns", strconv.Itoa(pid))
}
