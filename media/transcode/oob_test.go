package transcode

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/icey/icey-server/internal/testenv"
	"github.com/icey/icey-server/media"
	"github.com/icey/icey-server/media/childtest"
)

// A URL that ffmpeg opens itself: the URL and its password travel in a
// 0600 list file in a 0700 directory, never in ffmpeg's command line or
// environment; the server still gets the credentials and frames come out.
func TestURLInputOutOfBand(t *testing.T) {
	testenv.RequireTool(t, "ffmpeg")
	checkLeaks(t)
	const pass = "Http-Pa55-oob"
	live := childtest.ServeLiveTS(t, "viewer", pass)
	t.Setenv("ICEY_SOURCE", live.URL())
	t.Setenv("ICEY_AUTH_TOKEN", "oob-auth-token")
	t.Setenv("http_proxy", "http://proxyuser:proxy-secret@127.0.0.1:9")

	src, err := New(Config{Input: live.URL()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := childtest.Start(t, src, 40*time.Second)
	tl := childtest.Count(r.Ctx, t, r.Stream, func(tl childtest.Tally) bool { return tl.AUs >= 25 && tl.Audio >= 25 })
	if tl.AUs < 25 || tl.Keyframes == 0 || tl.Audio < 25 {
		t.Fatalf("got %+v", tl)
	}
	if live.Authorized.Load() == 0 {
		t.Fatal("the HTTP server never saw the credentials")
	}
	p := childtest.CheckChild(t, int(src.pid.Load()), pass, "viewer:", "/live.ts", "oob-auth-token", "proxy-secret", "ICEY_")
	// The list file: private, and gone once ffmpeg exited.
	var list string
	for i, a := range p.Cmdline {
		if a == "-i" && i+1 < len(p.Cmdline) {
			list = p.Cmdline[i+1]
		}
	}
	fi, err := os.Stat(list)
	if err != nil {
		t.Fatalf("input list %q: %v", list, err)
	}
	di, err := os.Stat(filepath.Dir(list))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || di.Mode().Perm() != 0o700 {
		t.Errorf("list %v dir %v, want 0600 in 0700", fi.Mode().Perm(), di.Mode().Perm())
	}
	r.Stop(t)
	if _, err := os.Stat(filepath.Dir(list)); !os.IsNotExist(err) {
		t.Errorf("list dir %s left behind", filepath.Dir(list))
	}

	// Wrong password: a clear error, still without the password.
	bad, err := New(Config{Input: live.URLWithCredentials("viewer", "wrong-Pa55")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = childtest.RunErr(t, bad, 20*time.Second)
	if !errors.Is(err, media.ErrSourceUnavailable) || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), "wrong-Pa55") {
		t.Errorf("Run = %v, want ErrSourceUnavailable with 401 and no password", err)
	}
}

func TestChildEnvIsAnAllowList(t *testing.T) {
	t.Setenv("ICEY_AUTH_TOKEN", "x1")
	t.Setenv("ICEY_SOURCE", "rtsp://a:b@h/")
	t.Setenv("HTTPS_PROXY", "http://u:p@h:1")
	t.Setenv("LC_ALL", "C.UTF-8")
	t.Setenv("PATH", "/usr/bin:/bin")
	env := strings.Join(ChildEnv(), "\n")
	for _, bad := range []string{"ICEY_", "HTTPS_PROXY"} {
		if strings.Contains(env, bad) {
			t.Errorf("child env has %s:\n%s", bad, env)
		}
	}
	for _, good := range []string{"PATH=/usr/bin:/bin", "LC_ALL=C.UTF-8"} {
		if !strings.Contains(env, good) {
			t.Errorf("child env lacks %s", good)
		}
	}
}
