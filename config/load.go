package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"
)

// Options is the parsed command line plus the resulting configuration.
type Options struct {
	Config  Config
	Help    bool
	Version bool
	Doctor  bool
	// Usage is the --help text.
	Usage string
}

// Getenv looks up an environment variable (os.LookupEnv in production).
type Getenv func(key string) (string, bool)

// Parse builds the configuration from args (without the program name),
// the environment and the config file, in the precedence order
// defaults < file < env < flags. Errors wrap ErrUsage (exit 2) or ErrInvalid
// (exit 3); a failed parse never returns a partly applied config.
func Parse(args []string, getenv Getenv) (*Options, error) {
	if getenv == nil {
		getenv = os.LookupEnv
	}
	fs := flag.NewFlagSet("icey-server", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var (
		o       Options
		cfgPath string
	)
	fs.StringVar(&cfgPath, "c", "", "config file (JSON)")
	fs.StringVar(&cfgPath, "config", "", "config file (JSON); default ./config.json if present")
	// Each setting flag records how it applies to the config; only flags
	// given on the command line are applied (over file and environment).
	b := binder{fs: fs, apply: map[string]func(*Config){}}
	b.str("host", "bind host (default 0.0.0.0)", func(c *Config) *string { return &c.HTTP.Host })
	b.num("port", "HTTP/WebSocket port (default 4500)", func(c *Config) *int { return &c.HTTP.Port })
	b.num("webrtc-port", "WebRTC UDP port shared by all sessions (default: the HTTP port)", func(c *Config) *int { return &c.WebRTC.Port })
	b.str("tls-cert", "TLS certificate file (PEM)", func(c *Config) *string { return &c.TLS.Cert })
	b.str("tls-key", "TLS private key file (PEM)", func(c *Config) *string { return &c.TLS.Key })
	b.boolean("no-turn", "disable the embedded TURN server", func(c *Config, v bool) {
		if v {
			c.TURN.Enabled = false
		}
	})
	b.num("turn-port", "TURN port, UDP and TCP (default 3478)", func(c *Config) *int { return &c.TURN.Port })
	b.boolean("rtsp", "serve every path over RTSP (rtsp://host:8554/<path>)", func(c *Config, v bool) { c.RTSP.Enabled = v })
	b.num("rtsp-port", "RTSP re-serve port (default 8554)", func(c *Config) *int { return &c.RTSP.Port })
	b.str("turn-external-ip", "public IP advertised as the TURN relay address", func(c *Config) *string { return &c.TURN.ExternalIP })
	b.str("mode", "stream | record | relay (default stream)", func(c *Config) *string { return &c.Media.Mode })
	b.str("source", "rtsp://..., a media file, v4l2:/dev/videoN or a URL (default: built-in test stream)", func(c *Config) *string { return &c.Media.Source })
	b.str("record-dir", "directory for recordings (default ./recordings)", func(c *Config) *string { return &c.Media.RecordDir })
	b.boolean("loop", "loop file sources (default)", func(c *Config, v bool) { c.Media.Loop = v })
	b.boolean("no-loop", "play file sources once", func(c *Config, v bool) {
		if v {
			c.Media.Loop = false
		}
	})
	b.str("web-root", "serve the web UI from this directory instead of the embedded copy", func(c *Config) *string { return &c.WebRoot })
	b.str("log-level", "debug | info | warn | error (default info)", func(c *Config) *string { return &c.LogLevel })
	b.str("log-format", "text | json (default text)", func(c *Config) *string { return &c.LogFormat })
	b.str("health-check-url", "healthchecks.io-style ping URL (start, success, fail)", func(c *Config) *string { return &c.HealthCheckURL })
	b.str("pprof-listen", "serve Go profiles (net/http/pprof) on this loopback host:port", func(c *Config) *string { return &c.PprofListen })
	fs.BoolVar(&o.Help, "h", false, "show help")
	fs.BoolVar(&o.Help, "help", false, "show help")
	fs.BoolVar(&o.Version, "version", false, "print the version and exit")
	fs.BoolVar(&o.Doctor, "doctor", false, "print the preflight report and exit 0 when ready, 1 when not")
	o.Usage = usage(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("%w: unexpected argument %q", ErrUsage, fs.Arg(0))
	}
	if o.Help || o.Version {
		return &o, nil
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if set["loop"] && set["no-loop"] {
		return nil, fmt.Errorf("%w: --loop and --no-loop are mutually exclusive", ErrUsage)
	}

	cfg := Default()

	// Config file: flag, then env, then ./config.json if present.
	explicit := true
	if !set["c"] && !set["config"] {
		if v, ok := getenv("ICEY_CONFIG"); ok && v != "" {
			cfgPath = v
		} else {
			cfgPath, explicit = DefaultConfigFile, false
		}
	}
	if cfgPath != "" {
		data, err := os.ReadFile(cfgPath)
		switch {
		case err == nil:
			if err := applyFile(&cfg, cfgPath, data); err != nil {
				return nil, err
			}
		case errors.Is(err, os.ErrNotExist) && !explicit:
			// no ./config.json: defaults
		default:
			return nil, fmt.Errorf("%w: config file %s: %v", ErrInvalid, cfgPath, unwrapPathErr(err))
		}
	}

	if err := applyEnv(&cfg, getenv); err != nil {
		return nil, err
	}
	// File and environment errors are config errors (exit 3); what only
	// fails once flags are applied is a bad flag value (exit 2).
	if pre := finish(cfg); pre.Validate() != nil {
		return nil, pre.Validate()
	}

	for name := range set {
		if apply := b.apply[name]; apply != nil {
			apply(&cfg)
		}
	}

	cfg = finish(cfg)
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	o.Config = cfg
	return &o, nil
}

// binder defines setting flags and remembers how each applies to a Config.
type binder struct {
	fs    *flag.FlagSet
	apply map[string]func(*Config)
}

func (b binder) str(name, usage string, field func(*Config) *string) {
	v := b.fs.String(name, "", usage)
	b.apply[name] = func(c *Config) { *field(c) = *v }
}

func (b binder) num(name, usage string, field func(*Config) *int) {
	v := b.fs.Int(name, 0, usage)
	b.apply[name] = func(c *Config) { *field(c) = *v }
}

func (b binder) boolean(name, usage string, set func(*Config, bool)) {
	v := b.fs.Bool(name, false, usage)
	b.apply[name] = func(c *Config) { set(c, *v) }
}

// finish fills derived defaults.
func finish(cfg Config) Config {
	cfg.Warnings = append([]string(nil), cfg.Warnings...)
	if cfg.WebRTC.Port == 0 {
		cfg.WebRTC.Port = cfg.HTTP.Port
	}
	if len(cfg.WebRTC.PublicIPs) == 0 && cfg.TURN.ExternalIP != "" {
		cfg.WebRTC.PublicIPs = []string{cfg.TURN.ExternalIP}
	}
	if cfg.TURN.CredentialTTLSeconds > MaxCredentialTTLSeconds {
		cfg.Warnings = append(cfg.Warnings, fmt.Sprintf(
			"turn.credentialTtlSeconds %d exceeds the maximum; clamped to %d", cfg.TURN.CredentialTTLSeconds, MaxCredentialTTLSeconds))
		cfg.TURN.CredentialTTLSeconds = MaxCredentialTTLSeconds
	}
	if _, ok := cfg.Paths[DefaultPathName]; ok && (cfg.Media.Source != "" || cfg.Media.Mode != "stream") {
		cfg.Warnings = append(cfg.Warnings, "paths.main replaces the default path: media.source and media.mode are ignored")
	}
	return cfg
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func usage(fs *flag.FlagSet) string {
	var b strings.Builder
	b.WriteString("Usage: icey-server [flags]\n       icey-server healthcheck [--ready] [--url URL]\n\n")
	b.WriteString("Streams a camera, file or the built-in test stream to browsers over WebRTC.\n")
	b.WriteString("Precedence: defaults < config file < ICEY_* environment < flags.\n")
	b.WriteString("Secrets (auth.token, turn.secret) come only from the file or ICEY_AUTH_TOKEN / ICEY_TURN_SECRET.\n\nFlags:\n")
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "c" || f.Name == "h" {
			return
		}
		name := "--" + f.Name
		if f.Name == "config" {
			name = "-c, --config"
		}
		if f.Name == "help" {
			name = "-h, --help"
		}
		fmt.Fprintf(&b, "  %-22s %s\n", name, f.Usage)
	})
	b.WriteString("\nExit codes: 0 ok, 1 runtime failure or doctor not ready, 2 usage, 3 config, 4 startup preflight failure.\n")
	return b.String()
}

// applyFile merges a JSON config file into cfg. It decodes into a copy so a
// failure leaves cfg untouched.
func applyFile(cfg *Config, path string, data []byte) error {
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return fmt.Errorf("%w: config file %s: %s", ErrInvalid, path, describeJSONError(data, err))
	}
	// One JSON object and nothing after it (json.Unmarshal's rule; a
	// Decoder alone would ignore the rest).
	if _, err := dec.Token(); err != io.EOF {
		detail := "invalid JSON: data after the top-level object"
		if err != nil {
			detail = describeJSONError(data, err)
		}
		return fmt.Errorf("%w: config file %s: %s", ErrInvalid, path, detail)
	}
	// encoding/json matches keys case-insensitively, but a key that is not
	// spelled exactly is reported as unknown and ignored: decode only the
	// exactly-spelled keys, so the warning tells the truth.
	knownRaw := knownKeys(raw, reflect.TypeOf(Config{}))
	// paths is a map of objects: decoded on its own so that its unknown
	// keys warn and its errors name the path.
	rawPaths, hasPaths := knownRaw["paths"]
	delete(knownRaw, "paths")
	paths, unknownPaths, err := decodePaths(rawPaths)
	if err != nil {
		return fmt.Errorf("%w: config file %s: %v", ErrInvalid, path, err)
	}
	known, _ := json.Marshal(knownRaw)
	next := *cfg
	if err := json.Unmarshal(known, &next); err != nil {
		return fmt.Errorf("%w: config file %s: %s", ErrInvalid, path, describeJSONError(known, err))
	}
	if hasPaths {
		next.Paths = paths
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	dir := filepath.Dir(abs)
	resolve := func(p *string, fileVal bool) {
		if fileVal && *p != "" && !filepath.IsAbs(*p) {
			*p = filepath.Join(dir, *p)
		}
	}
	resolve(&next.TLS.Cert, has(raw, "tls", "cert"))
	resolve(&next.TLS.Key, has(raw, "tls", "key"))
	resolve(&next.Media.RecordDir, has(raw, "media", "recordDir"))
	resolve(&next.WebRoot, has(raw, "webRoot"))
	if has(raw, "media", "source") && SourceKind(next.Media.Source) == "file" {
		resolve(&next.Media.Source, true)
	}
	for name, p := range next.Paths {
		if has(raw, "paths", name, "source") && pathSourceKind(p.Source) == "file" && !IsTemplateName(name) {
			resolve(&p.Source, true)
			next.Paths[name] = p
		}
	}
	unknown := append(unknownKeys(raw, reflect.TypeOf(Config{}), ""), unknownPaths...)
	sort.Strings(unknown)
	for _, k := range unknown {
		next.Warnings = append(next.Warnings, fmt.Sprintf("unknown config key %q ignored", k))
	}
	next.Path = abs
	*cfg = next
	return nil
}

func has(raw map[string]any, keys ...string) bool {
	var cur any = raw
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[k]; !ok {
			return false
		}
	}
	return true
}

var rawMessageType = reflect.TypeOf(json.RawMessage{})

// unknownKeys lists the dotted keys of raw that have no field in t. Fields of
// kept-as-is sections (json.RawMessage) accept any key.
func unknownKeys(raw map[string]any, t reflect.Type, prefix string) []string {
	fields := jsonFields(t)
	var out []string
	for k, v := range raw {
		f, ok := fields[k]
		if !ok {
			out = append(out, prefix+k)
			continue
		}
		sub, isMap := v.(map[string]any)
		if !isMap || f.Type == rawMessageType || f.Type.Kind() != reflect.Struct {
			continue
		}
		out = append(out, unknownKeys(sub, f.Type, prefix+k+".")...)
	}
	return out
}

// knownKeys is raw without the keys unknownKeys reports (the same walk).
func knownKeys(raw map[string]any, t reflect.Type) map[string]any {
	fields := jsonFields(t)
	out := make(map[string]any, len(raw))
	for k, v := range raw {
		f, ok := fields[k]
		if !ok {
			continue
		}
		if sub, isMap := v.(map[string]any); isMap && f.Type != rawMessageType && f.Type.Kind() == reflect.Struct {
			v = knownKeys(sub, f.Type)
		}
		out[k] = v
	}
	return out
}

func jsonFields(t reflect.Type) map[string]reflect.StructField {
	fields := map[string]reflect.StructField{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		fields[name] = f
	}
	return fields
}

func describeJSONError(data []byte, err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		key := te.Field
		if key == "" {
			key = "(top level)"
		}
		return fmt.Sprintf("%s: wrong type: got JSON %s, want %s", key, te.Value, jsonKind(te.Type))
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line := 1 + bytes.Count(data[:min(int(se.Offset), len(data))], []byte("\n"))
		return fmt.Sprintf("invalid JSON at line %d: %v", line, se)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "invalid JSON: unexpected end of file"
	}
	if errors.Is(err, io.EOF) {
		return "empty file (want a JSON object)"
	}
	return err.Error()
}

func jsonKind(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint16, reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean (true/false)"
	case reflect.String:
		return "string"
	case reflect.Slice:
		return "array"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.String()
}

// applyEnv applies ICEY_* variables. An empty value counts as unset, so a
// set-but-empty ICEY_AUTH_TOKEN never wipes a token from the file.
func applyEnv(cfg *Config, getenv Getenv) error {
	next := *cfg
	var errs []string
	str := func(key string, dst *string) {
		if v, ok := getenv(key); ok && v != "" {
			*dst = v
		}
	}
	num := func(key string, dst *int) {
		if v, ok := getenv(key); ok && v != "" {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				errs = append(errs, fmt.Sprintf("%s: %q is not a number", key, v))
				return
			}
			*dst = n
		}
	}
	boolean := func(key string, dst *bool, allowAuto bool) {
		if v, ok := getenv(key); ok && v != "" {
			lv := strings.ToLower(strings.TrimSpace(v))
			if allowAuto && lv == "auto" {
				*dst = true // files loop; live sources never loop
				return
			}
			b, err := strconv.ParseBool(lv)
			if err != nil {
				want := "true or false"
				if allowAuto {
					want = "true, false or auto"
				}
				errs = append(errs, fmt.Sprintf("%s: %q is not %s", key, v, want))
				return
			}
			*dst = b
		}
	}
	str("ICEY_HOST", &next.HTTP.Host)
	num("ICEY_PORT", &next.HTTP.Port)
	num("ICEY_WEBRTC_PORT", &next.WebRTC.Port)
	if v, ok := getenv("ICEY_PUBLIC_IPS"); ok && v != "" {
		next.WebRTC.PublicIPs = nil
		for _, ip := range strings.Split(v, ",") {
			if ip = strings.TrimSpace(ip); ip != "" {
				next.WebRTC.PublicIPs = append(next.WebRTC.PublicIPs, ip)
			}
		}
	}
	str("ICEY_TLS_CERT", &next.TLS.Cert)
	str("ICEY_TLS_KEY", &next.TLS.Key)
	str("ICEY_AUTH_TOKEN", &next.Auth.Token)
	boolean("ICEY_TURN", &next.TURN.Enabled, false)
	num("ICEY_TURN_PORT", &next.TURN.Port)
	boolean("ICEY_RTSP", &next.RTSP.Enabled, false)
	num("ICEY_RTSP_PORT", &next.RTSP.Port)
	str("ICEY_PUBLIC_URL", &next.HTTP.PublicURL)
	str("ICEY_TURN_EXTERNAL_IP", &next.TURN.ExternalIP)
	str("ICEY_TURN_SECRET", &next.TURN.Secret)
	str("ICEY_MODE", &next.Media.Mode)
	str("ICEY_SOURCE", &next.Media.Source)
	str("ICEY_RECORD_DIR", &next.Media.RecordDir)
	boolean("ICEY_LOOP", &next.Media.Loop, true)
	str("ICEY_WEB_ROOT", &next.WebRoot)
	str("ICEY_LOG_LEVEL", &next.LogLevel)
	str("ICEY_LOG_FORMAT", &next.LogFormat)
	str("ICEY_METRICS_TOKEN", &next.Metrics.BearerToken)
	str("ICEY_HEALTH_CHECK_URL", &next.HealthCheckURL)
	num("ICEY_HEALTH_CHECK_INTERVAL", &next.HealthCheck.IntervalSeconds)
	str("ICEY_METRICS_LISTEN", &next.Metrics.Listen)
	str("ICEY_PPROF_LISTEN", &next.PprofListen)
	if v, ok := getenv("ICEY_PATHS"); ok && strings.TrimSpace(v) != "" {
		paths, warnings, err := parsePathsEnv(v)
		if err != nil {
			errs = append(errs, err.Error())
		} else {
			next.Paths = paths
			next.Warnings = append(append([]string(nil), next.Warnings...), warnings...)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrInvalid, strings.Join(errs, "; "))
	}
	*cfg = next
	return nil
}
