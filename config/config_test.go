package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(m map[string]string) Getenv {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsWithoutFile(t *testing.T) {
	t.Chdir(t.TempDir()) // no ./config.json here
	o, err := Parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if c.HTTP.Host != "0.0.0.0" || c.HTTP.Port != 4500 || c.WebRTC.Port != 4500 || c.TURN.Port != 3478 ||
		!c.TURN.Enabled || c.Media.Mode != "stream" || c.SourceKind() != "builtin" || !c.Media.Loop ||
		c.TURN.Realm != "icey" || c.TURN.CredentialTTLSeconds != 3600 || c.Path != "" {
		t.Fatalf("defaults: %+v", c)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "c.json", `{"http":{"host":"127.0.0.1","port":5000},"turn":{"port":5001,"realm":"file"},
		"media":{"mode":"record","source":"clip.mp4","recordDir":"rec"},"auth":{"token":"filetoken"}}`)
	o, err := Parse([]string{"-c", p, "--port", "7000"}, env(map[string]string{
		"ICEY_PORT": "6000", "ICEY_TURN_PORT": "6001", "ICEY_MODE": "relay", "ICEY_AUTH_TOKEN": "",
	}))
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	if c.HTTP.Port != 7000 { // flag > env > file
		t.Errorf("http.port = %d, want flag 7000", c.HTTP.Port)
	}
	if c.WebRTC.Port != 7000 {
		t.Errorf("webrtc.port = %d, want the HTTP port 7000", c.WebRTC.Port)
	}
	if c.TURN.Port != 6001 { // env > file
		t.Errorf("turn.port = %d, want env 6001", c.TURN.Port)
	}
	if c.Media.Mode != "relay" || c.HTTP.Host != "127.0.0.1" || c.TURN.Realm != "file" {
		t.Errorf("mode/host/realm = %s %s %s", c.Media.Mode, c.HTTP.Host, c.TURN.Realm)
	}
	if c.Auth.Token != "filetoken" {
		t.Errorf("empty ICEY_AUTH_TOKEN wiped the file token")
	}
	if c.Media.Source != filepath.Join(dir, "clip.mp4") || c.Media.RecordDir != filepath.Join(dir, "rec") {
		t.Errorf("relative paths not resolved against the file's dir: %s %s", c.Media.Source, c.Media.RecordDir)
	}
	if !strings.HasSuffix(c.Path, "c.json") {
		t.Errorf("path %q", c.Path)
	}
	// ICEY_CONFIG names the file when no flag does; env token beats file.
	o, err = Parse(nil, env(map[string]string{"ICEY_CONFIG": p, "ICEY_AUTH_TOKEN": "envtoken", "ICEY_LOOP": "false"}))
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.HTTP.Port != 5000 || o.Config.Auth.Token != "envtoken" || o.Config.Media.Loop {
		t.Errorf("ICEY_CONFIG: %+v", o.Config)
	}
}

func TestDefaultConfigFileInWorkingDir(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	writeFile(t, dir, "config.json", `{"http":{"port":4600}}`)
	o, err := Parse(nil, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.HTTP.Port != 4600 || o.Config.Path == "" {
		t.Fatalf("./config.json not used: %+v", o.Config.HTTP)
	}
}

func TestUnknownKeysWarn(t *testing.T) {
	p := writeFile(t, t.TempDir(), "c.json", `{"http":{"port":4500,"bogus":1},"extra":true,
		"media":{"video":{"codec":"h264","whatever":1},"intelligence":{"vision":{"enabled":false,"fps":2}}}}`)
	o, err := Parse([]string{"--config", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(o.Config.Warnings, "\n")
	if !strings.Contains(w, `"http.bogus"`) || !strings.Contains(w, `"extra"`) || !strings.Contains(w, `"media.intelligence.vision.fps"`) {
		t.Fatalf("warnings: %q", w)
	}
	if strings.Contains(w, "whatever") {
		t.Fatalf("kept-as-is sections (media.video) must not warn: %q", w)
	}
}

// A key spelled with other capitals is ignored, as its warning says
// (encoding/json alone would apply it case-insensitively).
func TestMiscapitalizedKeysAreIgnoredAsWarned(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "c.json", `{"HTTP":{"Port":4600},"media":{"RecordDir":"rec","recordDir":"rec2"}}`)
	o, err := Parse([]string{"--config", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(o.Config.Warnings, "\n")
	if o.Config.HTTP.Port != DefaultPort || !strings.Contains(w, `"HTTP"`) || !strings.Contains(w, `"media.RecordDir"`) {
		t.Fatalf("port %d, warnings %q", o.Config.HTTP.Port, w)
	}
	if o.Config.Media.RecordDir != filepath.Join(dir, "rec2") {
		t.Fatalf("recordDir %q", o.Config.Media.RecordDir)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name    string
		file    string // config body; "" = no file
		args    []string
		env     map[string]string
		wantErr error
		key     string // the message must name this
	}{
		{"port out of range in file", `{"http":{"port":70000}}`, nil, nil, ErrInvalid, "http.port"},
		{"zero webrtc port", `{"webrtc":{"port":0,"maxSessions":5},"http":{"port":0}}`, nil, nil, ErrInvalid, "http.port"},
		{"turn port negative", `{"turn":{"port":-1}}`, nil, nil, ErrInvalid, "turn.port"},
		{"unknown mode", `{"media":{"mode":"broadcast"}}`, nil, nil, ErrInvalid, "media.mode"},
		{"wrong type", `{"http":{"port":"4500"}}`, nil, nil, ErrInvalid, "http.port"},
		{"wrong type bool", `{"turn":{"enabled":"yes"}}`, nil, nil, ErrInvalid, "turn.enabled"},
		{"wrong type array", `{"webrtc":{"publicIps":"1.2.3.4"}}`, nil, nil, ErrInvalid, "webrtc.publicIps"},
		{"syntax error", `{"http": {"port": 4500,}}`, nil, nil, ErrInvalid, "line 1"},
		{"not an object", `[1,2]`, nil, nil, ErrInvalid, "config file"},
		{"empty file", ``, nil, nil, ErrInvalid, "empty file"},
		{"bad external ip", `{"turn":{"externalIp":"my.host"}}`, nil, nil, ErrInvalid, "turn.externalIp"},
		{"bad public ip", `{"webrtc":{"publicIps":["nope"]}}`, nil, nil, ErrInvalid, "webrtc.publicIps"},
		{"bad ttl", `{"turn":{"credentialTtlSeconds":0}}`, nil, nil, ErrInvalid, "turn.credentialTtlSeconds"},
		{"bad stun url", `{"stun":{"urls":["http://x"]}}`, nil, nil, ErrInvalid, "stun.urls"},
		{"bad host", `{"http":{"host":"example.com"}}`, nil, nil, ErrInvalid, "http.host"},
		{"env not a number", "", nil, map[string]string{"ICEY_PORT": "abc"}, ErrInvalid, "ICEY_PORT"},
		{"env port out of range", "", nil, map[string]string{"ICEY_PORT": "99999"}, ErrInvalid, "http.port"},
		{"env bad bool", "", nil, map[string]string{"ICEY_TURN": "maybe"}, ErrInvalid, "ICEY_TURN"},
		{"env bad loop", "", nil, map[string]string{"ICEY_LOOP": "sometimes"}, ErrInvalid, "ICEY_LOOP"},
		{"env bad mode", "", nil, map[string]string{"ICEY_MODE": "x"}, ErrInvalid, "media.mode"},
		{"flag out of range", "", []string{"--port", "0"}, nil, ErrUsage, "http.port"},
		{"flag not a number", "", []string{"--port", "abc"}, nil, ErrUsage, "port"},
		{"unknown flag", "", []string{"--frobnicate"}, nil, ErrUsage, "frobnicate"},
		{"flag bad mode", "", []string{"--mode", "x"}, nil, ErrUsage, "media.mode"},
		{"flag bad log level", "", []string{"--log-level", "loud"}, nil, ErrUsage, "log level"},
		{"flag bad log format", "", []string{"--log-format", "xml"}, nil, ErrUsage, "log format"},
		{"token is not a flag", "", []string{"--token", "x"}, nil, ErrUsage, "token"},
		{"stray argument", "", []string{"serve"}, nil, ErrUsage, "serve"},
		{"loop and no-loop", "", []string{"--loop", "--no-loop"}, nil, ErrUsage, "--no-loop"},
		{"missing explicit file", "", []string{"-c", filepath.Join(dir, "missing.json")}, nil, ErrInvalid, "missing.json"},
		{"missing ICEY_CONFIG file", "", nil, map[string]string{"ICEY_CONFIG": filepath.Join(dir, "nope.json")}, ErrInvalid, "nope.json"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			args := tc.args
			if tc.file != "" || strings.Contains(tc.name, "empty file") {
				p := writeFile(t, dir, "case"+string(rune('a'+i))+".json", tc.file)
				args = append([]string{"-c", p}, args...)
			}
			o, err := Parse(args, env(tc.env))
			if err == nil {
				t.Fatalf("want error, got config %+v", o.Config)
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("error %v is not %v", err, tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("error %q does not name %q", err, tc.key)
			}
		})
	}
}

func TestTTLClampWarns(t *testing.T) {
	p := writeFile(t, t.TempDir(), "c.json", `{"turn":{"credentialTtlSeconds":999999}}`)
	o, err := Parse([]string{"-c", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.TURN.CredentialTTLSeconds != MaxCredentialTTLSeconds || len(o.Config.Warnings) != 1 {
		t.Fatalf("ttl %d warnings %v", o.Config.TURN.CredentialTTLSeconds, o.Config.Warnings)
	}
}

func TestSourceKindAndRedaction(t *testing.T) {
	kinds := map[string]string{
		"": "builtin", "rtsp://u:p@cam/x": "rtsp", "RTSPS://cam/x": "rtsp", "v4l2:/dev/video0": "device",
		"/dev/video1": "device", "rtmp://h/app": "url", "srt://h:9000": "url", "https://h/x.m3u8": "url",
		"./demo.mp4": "file", "/abs/clip.mkv": "file",
	}
	for src, want := range kinds {
		if got := SourceKind(src); got != want {
			t.Errorf("SourceKind(%q) = %s, want %s", src, got, want)
		}
	}
	c := Default()
	c.Auth.Token, c.TURN.Secret, c.Media.Source = "tok123", "sec456", "rtsp://admin:pa55word@cam/x"
	r := c.Redacted()
	if r.Auth.Token == "tok123" || r.TURN.Secret == "sec456" || strings.Contains(r.Media.Source, "pa55word") {
		t.Fatalf("redacted: %+v", r)
	}
	secrets := strings.Join(c.Secrets(), ",")
	for _, s := range []string{"tok123", "sec456", "pa55word"} {
		if !strings.Contains(secrets, s) {
			t.Errorf("Secrets() misses %s", s)
		}
	}
}

func TestHelpAndVersionShortCircuit(t *testing.T) {
	o, err := Parse([]string{"--help"}, env(map[string]string{"ICEY_PORT": "bad"}))
	if err != nil || !o.Help || !strings.Contains(o.Usage, "--doctor") {
		t.Fatalf("help: %v %+v", err, o)
	}
	o, err = Parse([]string{"--version"}, env(nil))
	if err != nil || !o.Version {
		t.Fatalf("version: %v", err)
	}
}

func TestVideoTargetFromExistingConfig(t *testing.T) {
	p := writeFile(t, t.TempDir(), "c.json", `{"media":{"video":{"codec":"h264","width":1280,"height":720,"fps":25,"bitrate":1800000}}}`)
	o, err := Parse([]string{"-c", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	w, h, fps, br := o.Config.Media.VideoTarget()
	if w != 1280 || h != 720 || fps != 25 || br != 1800000 {
		t.Fatalf("targets %d %d %d %d", w, h, fps, br)
	}
	if len(o.Config.Warnings) != 0 {
		t.Fatalf("media.video keys must not warn: %v", o.Config.Warnings)
	}
}

// Credentials in a source's query (RTMP tokens, SRT passphrases, signed
// URLs) are shown as [redacted] and scrubbed from logs.
func TestRedactSourceQuery(t *testing.T) {
	cases := map[string]string{
		"rtmp://u:p@cam.example/live/cam?token=abcdef":                               "rtmp://cam.example/live/cam?token=[redacted]",
		"srt://127.0.0.1:9000?mode=caller&passphrase=longsecret1&streamid=#!::r=cam": "srt://127.0.0.1:9000?mode=caller&passphrase=[redacted]&streamid=[redacted]",
		"https://cdn.example/live.ts?X-Amz-Signature=00ff&x=1":                       "https://cdn.example/live.ts?X-Amz-Signature=[redacted]&x=1",
		"rtsp://admin:pw@10.0.0.5/stream1":                                           "rtsp://10.0.0.5/stream1",
		"./clip.mp4":                                                                 "./clip.mp4",
	}
	for in, want := range cases {
		if got := RedactSource(in); got != want {
			t.Errorf("RedactSource(%q) = %q, want %q", in, got, want)
		}
	}
	c := Config{Media: Media{Source: "srt://h:9000?passphrase=longsecret1"}}
	if !strings.Contains(strings.Join(c.Secrets(), " "), "longsecret1") {
		t.Fatalf("passphrase not among the secrets to scrub: %v", c.Secrets())
	}
}

// The recordings section: defaults, file values, bounds naming the key.
func TestRecordingsKeys(t *testing.T) {
	o, err := Parse(nil, env(nil))
	if err != nil || o.Config.Recordings.SegmentSeconds != 3600 || o.Config.Recordings.MaxAgeHours != 0 || o.Config.Recordings.MaxTotalGB != 0 {
		t.Fatalf("defaults %+v %v", o.Config.Recordings, err)
	}
	dir := t.TempDir()
	p := writeFile(t, dir, "c.json", `{"recordings":{"segmentSeconds":600,"maxAgeHours":48,"maxTotalGB":1.5}}`)
	o, err = Parse([]string{"-c", p}, env(nil))
	if err != nil || o.Config.Recordings != (Recordings{SegmentSeconds: 600, MaxAgeHours: 48, MaxTotalGB: 1.5}) {
		t.Fatalf("file %+v %v", o.Config.Recordings, err)
	}
	for body, key := range map[string]string{
		`{"recordings":{"segmentSeconds":0}}`: "recordings.segmentSeconds",
		`{"recordings":{"maxAgeHours":-1}}`:   "recordings.maxAgeHours",
		`{"recordings":{"maxTotalGB":-2}}`:    "recordings.maxTotalGB",
	} {
		p := writeFile(t, dir, "bad.json", body)
		if _, err := Parse([]string{"-c", p}, env(nil)); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v, want an error naming %s", body, err, key)
		}
	}
}

// RTSP re-serve and the public URL: defaults, env, flags, validation.
func TestRTSPAndPublicURL(t *testing.T) {
	o, err := Parse(nil, env(nil))
	if err != nil || o.Config.RTSP != (RTSP{Port: 8554}) || o.Config.HTTP.PublicURL != "" {
		t.Fatalf("defaults %+v %q %v", o.Config.RTSP, o.Config.HTTP.PublicURL, err)
	}
	o, err = Parse([]string{"--rtsp", "--rtsp-port", "9554"}, env(map[string]string{"ICEY_PUBLIC_URL": "https://edge-1.example.com"}))
	if err != nil || !o.Config.RTSP.Enabled || o.Config.RTSP.Port != 9554 || o.Config.HTTP.PublicURL != "https://edge-1.example.com" {
		t.Fatalf("flags/env %+v %q %v", o.Config.RTSP, o.Config.HTTP.PublicURL, err)
	}
	for _, bad := range []string{"edge-1", "ftp://x", "https://x/path", "https://u:p@x", "https://x?q=1"} {
		if _, err := Parse(nil, env(map[string]string{"ICEY_PUBLIC_URL": bad})); err == nil || !strings.Contains(err.Error(), "http.publicUrl") {
			t.Errorf("ICEY_PUBLIC_URL=%q: %v", bad, err)
		}
	}
	if _, err := Parse([]string{"--rtsp-port", "0"}, env(nil)); err == nil || !strings.Contains(err.Error(), "rtsp.port") {
		t.Errorf("rtsp.port 0: %v", err)
	}
}

// Template paths ("~regexp"): accepted with a source, on demand, never
// resolved as files; bad patterns and publish templates are errors.
func TestTemplatePaths(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "c.json", `{"paths":{"~^cam-(.+)$":{"source":"rtsp://origin:8554/$1"}}}`)
	o, err := Parse([]string{"-c", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var tpl *PathSpec
	for _, sp := range o.Config.ResolvedPaths() {
		if sp.Template {
			sp := sp
			tpl = &sp
		}
	}
	if tpl == nil || tpl.Name != "~^cam-(.+)$" || tpl.Source != "rtsp://origin:8554/$1" || !tpl.OnDemand || tpl.SourceKind != "rtsp" {
		t.Fatalf("template %+v", tpl)
	}
	for body, want := range map[string]string{
		`{"paths":{"~^(+$":{"source":"rtsp://o/$1"}}}`: "invalid template",
		`{"paths":{"~^(.+)$":{"publish":true}}}`:       "template path needs a source",
		`{"paths":{"~":{"source":"rtsp://o/x"}}}`:      "invalid template",
	} {
		p := writeFile(t, dir, "bad.json", body)
		if _, err := Parse([]string{"-c", p}, env(nil)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", body, err, want)
		}
	}
	if !ValidPathName("cam-1") || ValidPathName("whep") || ValidPathName("../x") || ValidPathName("~x") {
		t.Error("ValidPathName")
	}
}
