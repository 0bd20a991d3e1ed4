// Package testenv holds helpers shared by the project's tests: confining a
// test to a loopback-only network namespace, and finding external tools.
package testenv

import (
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// envInNetns marks a re-executed test binary that runs inside `unshare -n`.
const envInNetns = "ICEY_TEST_IN_NETNS"

// LoopbackOnly makes sure the calling test runs where only the loopback
// interface exists, so that a bug can never send a packet off the machine
// (TURN relay probes, browsers). If the process is already confined (make
// test runs the whole suite under `unshare -n`), it returns at once.
// Otherwise it re-runs just this test in a fresh network namespace (`unshare
// -n` as root, `unshare -rn` as a normal user) and reports that run's
// result; where neither is permitted it fails saying what to do.
func LoopbackOnly(t *testing.T) {
	t.Helper()
	if onlyLoopback() {
		return
	}
	if os.Getenv(envInNetns) != "" {
		t.Fatal("testenv: inside the namespace but a non-loopback interface is up")
	}
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("testenv: %s needs a loopback-only network namespace and `unshare` (util-linux) is missing: install it (apt-get install util-linux) or run `make test`", t.Name())
	}
	// As root, a plain network namespace; as a normal user, one inside a
	// user namespace mapped to root (unshare -rn), where lo can be set up.
	nsFlags := "-n"
	if os.Geteuid() != 0 {
		nsFlags = "-rn"
	}
	args := []string{nsFlags, "sh", "-c", `ip link set lo up && exec "$@"`, "sh", os.Args[0],
		"-test.run", "^" + strings.ReplaceAll(t.Name(), "/", "$/^") + "$", "-test.v"}
	if probe := exec.Command(unshare, nsFlags, "true"); probe.Run() != nil {
		t.Fatalf("testenv: %s needs a loopback-only network namespace, and `unshare %s` is not permitted here: "+
			"run the tests as root (sudo make test) or allow unprivileged user namespaces "+
			"(sysctl -w kernel.unprivileged_userns_clone=1 or user.max_user_namespaces=10000)", t.Name(), nsFlags)
	}
	cmd := exec.Command(unshare, args...)
	cmd.Env = append(os.Environ(), envInNetns+"=1")
	out, err := cmd.CombinedOutput()
	t.Logf("re-ran %s in a loopback-only network namespace:\n%s", t.Name(), out)
	if err != nil {
		t.Fatalf("confined run failed: %v", err)
	}
	t.SkipNow() // the real assertions ran (and passed) in the confined child
}

func onlyLoopback() bool {
	ifs, err := net.Interfaces()
	if err != nil {
		return false
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		if ifc.Flags&net.FlagLoopback == 0 {
			return false
		}
	}
	return true
}

// Confined reports whether the process runs with only loopback interfaces up.
func Confined() bool { return onlyLoopback() }

// RequireTool returns the path of an external tool. In CI (CI=true) a missing
// tool fails the test: CI must have installed it. Elsewhere it also fails,
// with the install hint, because `make test` installs it.
func RequireTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: run `make deps` (apt-get install -y chromium ffmpeg) or `make test`, which installs it", name)
	}
	return p
}

// CheckGoroutines fails the test if goroutines started during it are still
// running after its cleanups (it waits up to 10 s for them to settle).
// Call it first: cleanups run last-in first-out, so this one runs last.
func CheckGoroutines(t testing.TB) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		if n, stacks := settle(base, 10*time.Second); n > base {
			t.Errorf("goroutine leak: %d before, %d after\n%s", base, n, stacks)
		}
	})
}

// WaitGoroutines waits until at most base goroutines run, failing the test
// with every stack if they have not settled within d.
func WaitGoroutines(t testing.TB, base int, d time.Duration) {
	t.Helper()
	if n, stacks := settle(base, d); n > base {
		t.Fatalf("goroutines: %d now, %d before\n%s", n, base, stacks)
	}
}

func settle(base int, d time.Duration) (int, []byte) {
	deadline := time.Now().Add(d)
	for {
		n := runtime.NumGoroutine()
		if n <= base {
			return n, nil
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			return n, buf[:runtime.Stack(buf, true)]
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// UDPReceiveDrops is the network namespace's count of UDP datagrams the
// kernel dropped because a socket's receive buffer was full
// (/proc/net/snmp, Udp RcvbufErrors): a reader that fell behind, from a
// frozen peer or a loaded machine.
func UDPReceiveDrops(t testing.TB) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var head []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, name := range head {
			if name == "RcvbufErrors" && i < len(f) {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				return n
			}
		}
	}
	t.Fatal("no Udp RcvbufErrors in /proc/net/snmp")
	return 0
}
