package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/icey/icey-server/internal/fuzzhelp"
)

// configKeys lists every key an error may name: the dotted file keys of
// Config and the names Validate gives the settings that have no file key.
func configKeys() []string {
	keys := []string{"(top level)", "health check URL", "pprof listen", "log level", "log format"}
	var walk func(t reflect.Type, prefix string)
	walk = func(t reflect.Type, prefix string) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			keys = append(keys, prefix+name)
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, prefix+name+".")
			}
		}
	}
	walk(reflect.TypeOf(Config{}), "")
	return keys
}

func namesKey(msg string, keys []string) bool {
	low := strings.ToLower(msg)
	for _, k := range keys {
		if strings.Contains(low, strings.ToLower(k)) {
			return true
		}
	}
	return false
}

// comparable drops what legitimately differs between two loads of the
// same settings: where they came from, warnings, raw JSON formatting.
func comparable(c Config) Config {
	c.Path, c.Warnings = "", nil
	compact := func(r json.RawMessage) json.RawMessage {
		if len(r) == 0 {
			return nil
		}
		var b bytes.Buffer
		if json.Compact(&b, r) != nil {
			return r
		}
		return b.Bytes()
	}
	c.Media.Video, c.Media.Audio = compact(c.Media.Video), compact(c.Media.Audio)
	return c
}

// exactlySpelled is a config file without the keys the loader ignores
// because they are not spelled exactly (encoding/json alone would match them
// case-insensitively and blame them); data itself when it is not one object.
func exactlySpelled(data []byte) []byte {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if dec.Decode(&raw) != nil || raw == nil {
		return data
	}
	if _, err := dec.Token(); err != io.EOF {
		return data
	}
	out, err := json.Marshal(knownKeys(raw, reflect.TypeOf(Config{})))
	if err != nil {
		return data
	}
	return out
}

// FuzzConfigFile: any bytes as the config file give a valid config or an
// ErrInvalid error that names the key (a type error names the key the JSON
// decoder blames), never a panic. A config that loads, written back as a
// file, loads to the same config.
func FuzzConfigFile(f *testing.F) {
	if b, err := os.ReadFile("../deploy/config.example.json"); err == nil {
		f.Add(b)
	}
	for _, s := range []string{
		`{}`, ``, `null`, `[]`, `{"http":`, `{"http":{"port":"80"}}`, `{"http":{"port":0}}`,
		`{"http":{"host":"127.0.0.1","port":5000,"drainSeconds":3},"webrtc":{"port":5001,"publicIps":["203.0.113.7"],"maxSessions":10},
		  "tls":{"cert":"c.pem","key":"k.pem"},"auth":{"token":"t0ken","allowedOrigins":["https://a.example"]},
		  "turn":{"enabled":false,"port":3479,"realm":"r","externalIp":"198.51.100.1","secret":"s","username":"u",
		  "credentialTtlSeconds":999999,"allowLocalRelay":true},"stun":{"urls":["stun:127.0.0.1:3478"]},
		  "media":{"mode":"record","source":"clip.mp4","recordDir":"rec","loop":false,"sourceGraceSeconds":30,
		  "video":{"width":640, "height":360},"audio":null,"intelligence":{"vision":{"enabled":true,"model":"x"}}},
		  "metrics":{"listen":"127.0.0.1:9100","bearerToken":"b"},"healthCheck":{"intervalSeconds":30},"webRoot":"web","extra":1}`,
		`{"media":{"source":"rtsp://u:p@cam/x","mode":"relay"},"metrics":{"listen":"0.0.0.0:9"}}`,
		`{"webrtc":{"publicIps":["not-an-ip"]},"stun":{"urls":["turn:x"]}}`,
		`{"turn":{"credentialTtlSeconds":-1,"realm":" "}}`,
		`{"HTTP":{"PORT":81}}`,
		`{"media":{"source":"a.mp4"},"paths":{"front":{"source":"rtsp://u:pw1@cam/x?token=abc","sourceOnDemand":true,
		  "sourceOnDemandStartTimeoutSeconds":5,"sourceOnDemandCloseAfterSeconds":60,"required":true},
		  "stage":{"publish":true,"read":false,"record":true,"publishToken":"pt"},"lobby":{"source":"./lobby.mp4","sorce":1},
		  "test":{"source":"builtin"}}}`,
		`{"paths":{"main":{"publish":true},"x":null}}`,
		`{"paths":{"bad name":{"publish":true},"API":{"source":"x","publish":true},"a":{"read":false}}}`,
		`{"paths":{"a":{"publish":"yes"}}}`, `{"paths":{"a":5}}`, `{"paths":[]}`, `{"paths":{"a":{"Publish":"x"}},"Paths":1}`,
	} {
		f.Add([]byte(s))
	}
	dir := f.TempDir()
	keys := configKeys()
	f.Fuzz(func(t *testing.T, data []byte) {
		p := filepath.Join(dir, "config.json")
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		o, err := Parse([]string{"-c", p}, env(nil))
		if err != nil {
			if o != nil {
				t.Fatalf("error %v with options", err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %q does not wrap ErrInvalid", err)
			}
			var te *json.UnmarshalTypeError
			if jerr := json.Unmarshal(exactlySpelled(data), new(Config)); errors.As(jerr, &te) && te.Field != "" {
				// The decoder leaves map keys out of Field (paths.publish
				// for paths.front.publish); the loader names the path.
				want := te.Field
				if strings.HasPrefix(want, "paths.") {
					want = "paths"
				}
				if !strings.Contains(err.Error(), want) {
					t.Fatalf("type error %q does not name the key %q", err, te.Field)
				}
			} else if jerr == nil && !namesKey(err.Error(), keys) {
				t.Fatalf("error %q names no key", err)
			} else if jerr != nil && !strings.Contains(err.Error(), p) {
				t.Fatalf("file error %q does not name the file", err)
			}
			return
		}
		c := o.Config
		if err := c.Validate(); err != nil {
			t.Fatalf("loaded config fails Validate: %v", err)
		}
		if c.Path != p {
			t.Fatalf("Path %q, want %q", c.Path, p)
		}
		// Round trip through the file format.
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatalf("marshal loaded config: %v", err)
		}
		if err := os.WriteFile(p, out, 0o600); err != nil {
			t.Fatal(err)
		}
		o2, err := Parse([]string{"-c", p}, env(nil))
		if err != nil {
			t.Fatalf("config written back as %s fails to load: %v", out, err)
		}
		// Relative paths in a file resolve against its directory (values
		// that came from defaults were relative to the working directory).
		want := c
		for _, q := range []*string{&want.TLS.Cert, &want.TLS.Key, &want.Media.RecordDir, &want.WebRoot} {
			if *q != "" && !filepath.IsAbs(*q) {
				*q = filepath.Join(dir, *q)
			}
		}
		if want.SourceKind() == "file" && !filepath.IsAbs(want.Media.Source) {
			want.Media.Source = filepath.Join(dir, want.Media.Source)
		}
		if a, b := comparable(want), comparable(o2.Config); !reflect.DeepEqual(a, b) {
			t.Fatalf("round trip changed the config:\n%+v\n%+v", a, b)
		}
	})
}

// envSettings are the ICEY_* variables other than ICEY_CONFIG, with the
// keys an error about each may name (its own name, or the keys it sets or
// derives), and how a string or number value shows in the config.
var envSettings = []struct {
	name  string
	keys  []string
	str   func(*Config) string
	num   func(*Config) int
	isNum bool
}{
	{name: "ICEY_HOST", keys: []string{"http.host"}, str: func(c *Config) string { return c.HTTP.Host }},
	{name: "ICEY_PORT", keys: []string{"http.port", "webrtc.port"}, num: func(c *Config) int { return c.HTTP.Port }, isNum: true},
	{name: "ICEY_WEBRTC_PORT", keys: []string{"webrtc.port"}, num: func(c *Config) int { return c.WebRTC.Port }, isNum: true},
	{name: "ICEY_PUBLIC_IPS", keys: []string{"webrtc.publicIps"}},
	{name: "ICEY_TLS_CERT", str: func(c *Config) string { return c.TLS.Cert }},
	{name: "ICEY_TLS_KEY", str: func(c *Config) string { return c.TLS.Key }},
	{name: "ICEY_AUTH_TOKEN", str: func(c *Config) string { return c.Auth.Token }},
	{name: "ICEY_TURN"},
	{name: "ICEY_TURN_PORT", keys: []string{"turn.port"}, num: func(c *Config) int { return c.TURN.Port }, isNum: true},
	{name: "ICEY_TURN_EXTERNAL_IP", keys: []string{"turn.externalIp", "webrtc.publicIps"}, str: func(c *Config) string { return c.TURN.ExternalIP }},
	{name: "ICEY_TURN_SECRET", str: func(c *Config) string { return c.TURN.Secret }},
	{name: "ICEY_MODE", keys: []string{"media.mode"}, str: func(c *Config) string { return c.Media.Mode }},
	{name: "ICEY_SOURCE", str: func(c *Config) string { return c.Media.Source }},
	{name: "ICEY_RECORD_DIR", str: func(c *Config) string { return c.Media.RecordDir }},
	{name: "ICEY_LOOP"},
	{name: "ICEY_WEB_ROOT", str: func(c *Config) string { return c.WebRoot }},
	{name: "ICEY_LOG_LEVEL", keys: []string{"log level"}, str: func(c *Config) string { return c.LogLevel }},
	{name: "ICEY_LOG_FORMAT", keys: []string{"log format"}, str: func(c *Config) string { return c.LogFormat }},
	{name: "ICEY_METRICS_TOKEN", keys: []string{"metrics.bearerToken"}, str: func(c *Config) string { return c.Metrics.BearerToken }},
	{name: "ICEY_HEALTH_CHECK_URL", keys: []string{"health check URL"}, str: func(c *Config) string { return c.HealthCheckURL }},
	{name: "ICEY_HEALTH_CHECK_INTERVAL", keys: []string{"healthCheck.intervalSeconds"}, num: func(c *Config) int { return c.HealthCheck.IntervalSeconds }, isNum: true},
	{name: "ICEY_METRICS_LISTEN", keys: []string{"metrics.listen", "metrics.bearerToken"}, str: func(c *Config) string { return c.Metrics.Listen }},
	{name: "ICEY_PPROF_LISTEN", keys: []string{"pprof listen"}, str: func(c *Config) string { return c.PprofListen }},
	{name: "ICEY_PATHS", keys: []string{"paths"}},
}

// FuzzConfigEnv: any values of up to three ICEY_* variables give a valid
// config carrying them, or an ErrInvalid error that names one of the
// variables set or a key they set; never a panic.
func FuzzConfigEnv(f *testing.F) {
	idx := func(name string) uint8 {
		for i, s := range envSettings {
			if s.name == name {
				return uint8(i)
			}
		}
		panic(name)
	}
	f.Add(idx("ICEY_PORT"), "6000", idx("ICEY_MODE"), "relay", idx("ICEY_LOOP"), "auto")
	f.Add(idx("ICEY_PORT"), " 70000 ", idx("ICEY_TURN"), "maybe", idx("ICEY_HOST"), "::1")
	f.Add(idx("ICEY_PUBLIC_IPS"), "203.0.113.1, ,x", idx("ICEY_TURN_EXTERNAL_IP"), "198.51.100.2", idx("ICEY_AUTH_TOKEN"), "")
	f.Add(idx("ICEY_METRICS_LISTEN"), "0.0.0.0:9100", idx("ICEY_METRICS_TOKEN"), "", idx("ICEY_PPROF_LISTEN"), "localhost:6060")
	f.Add(idx("ICEY_HEALTH_CHECK_URL"), "https://hc.example/ping/k", idx("ICEY_HEALTH_CHECK_INTERVAL"), "-5", idx("ICEY_LOG_LEVEL"), "trace")
	f.Add(idx("ICEY_SOURCE"), "rtsp://u:p@cam/x", idx("ICEY_LOG_FORMAT"), "json", idx("ICEY_WEBRTC_PORT"), "0x10")
	f.Add(idx("ICEY_PATHS"), `{"a":{"publish":true},"b":{"source":"x.mp4","sorce":1}}`, idx("ICEY_MODE"), "record", idx("ICEY_PATHS"), "{")
	f.Add(idx("ICEY_PATHS"), `{"api":{"source":"x","publish":true},"c d":{}}`, idx("ICEY_PORT"), "1", idx("ICEY_HOST"), "::")
	dir := f.TempDir()
	base := filepath.Join(dir, "config.json")
	if err := os.WriteFile(base, []byte(`{}`), 0o600); err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, k1 uint8, v1 string, k2 uint8, v2 string, k3 uint8, v3 string) {
		vars := map[string]string{}
		for _, kv := range []struct {
			k uint8
			v string
		}{{k1, v1}, {k2, v2}, {k3, v3}} {
			vars[envSettings[int(kv.k)%len(envSettings)].name] = kv.v
		}
		o, err := Parse([]string{"-c", base}, env(vars))
		if err != nil {
			if o != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("env %q: error %q (options %v) does not wrap ErrInvalid", vars, err, o != nil)
			}
			var names []string
			for _, s := range envSettings {
				if _, ok := vars[s.name]; ok {
					names = append(names, s.name)
					names = append(names, s.keys...)
				}
			}
			if !namesKey(err.Error(), names) {
				t.Fatalf("env %q: error %q names none of %q", vars, err, names)
			}
			return
		}
		c := o.Config
		if err := c.Validate(); err != nil {
			t.Fatalf("env %q: loaded config fails Validate: %v", vars, err)
		}
		for _, s := range envSettings {
			v, ok := vars[s.name]
			if !ok || v == "" {
				continue
			}
			switch {
			case s.isNum:
				want, _ := strconv.Atoi(strings.TrimSpace(v))
				if want == 0 && s.name == "ICEY_WEBRTC_PORT" {
					want = c.HTTP.Port // 0: the HTTP port
				}
				if s.num(&c) != want {
					t.Fatalf("%s=%q gave %d", s.name, v, s.num(&c))
				}
			case s.str != nil:
				if s.str(&c) != v {
					t.Fatalf("%s=%q gave %q", s.name, v, s.str(&c))
				}
			}
		}
	})
}

// FuzzRedacted: a source URL with a password shows nowhere in the
// redacted config or the public source, and a whole-URL source's password
// is among Secrets (so loggers scrub it) once long enough to scrub.
func FuzzRedacted(f *testing.F) {
	f.Add("", "rtsp", "admin", "hunter2", "10.0.0.5:554/live", "")
	f.Add(" ", "rtsps", "u", "p%40ss", "cam.local", "")
	f.Add("", "rtsp", "u", "it's", "h/x?y=1", " x")
	f.Add("x", "rtmp", "", "a@b", "[::1]:1935/app", "")
	f.Fuzz(func(t *testing.T, prefix, scheme, user, pass, rest, suffix string) {
		raw, ok := fuzzhelp.UserinfoURL(scheme, user, pass, rest)
		if !ok || pass == "" {
			return
		}
		c := Default()
		c.Media.Source = prefix + raw + suffix
		c.Auth.Token, c.TURN.Secret, c.HealthCheckURL = "tok", "sec", "https://hc.example/"+pass
		r := c.Redacted()
		public := prefix + scheme + "://" + rest + suffix
		for what, s := range map[string]string{"Redacted().Media.Source": r.Media.Source, "PublicSource()": c.PublicSource()} {
			if fuzzhelp.PasswordLeft(s, pass, public) {
				t.Fatalf("%s of %q = %q: password %q left", what, c.Media.Source, s, pass)
			}
		}
		if r.HealthCheckURL != "[redacted]" || r.Auth.Token != "[redacted]" || r.TURN.Secret != "[redacted]" {
			t.Fatalf("secrets not masked: %+v", r)
		}
		if prefix == "" && suffix == "" {
			pw, _ := url.PathUnescape(pass)
			if len(pw) >= 3 && !slices.Contains(c.Secrets(), pw) {
				t.Fatalf("Secrets() = %q lacks the source password %q", c.Secrets(), pw)
			}
		}
	})
}
