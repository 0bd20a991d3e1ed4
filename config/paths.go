package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Path defaults and bounds.
const (
	// DefaultPathName is the name of the default path, the one the legacy
	// media.mode and media.source keys define.
	DefaultPathName = "main"
	// DefaultSourceOnDemandTimeoutSeconds is the default of both
	// sourceOnDemandStartTimeoutSeconds and sourceOnDemandCloseAfterSeconds.
	DefaultSourceOnDemandTimeoutSeconds = 10
	// MaxSourceOnDemandTimeoutSeconds bounds both on-demand timeouts.
	MaxSourceOnDemandTimeoutSeconds = 3600
)

// PathConfig is one entry of the paths object: a named stream, pulled from
// Source or fed by one publisher, with the viewers and recorder attached to
// it. JSON tags are the file keys (see paths.md, Configuration).
type PathConfig struct {
	// Source is what the path pulls: anything media.source accepts (a media
	// file, rtsp(s)://, another URL, v4l2:/dev/videoN, or "builtin" for the
	// built-in test stream). A relative file resolves against the config
	// file's directory. It is exclusive with Publish.
	// It defaults to none.
	Source string `json:"source"`
	// SourceOnDemand connects the source when the first reader arrives and
	// disconnects it after SourceOnDemandCloseAfterSeconds without readers.
	// It needs a Source.
	// It defaults to false.
	SourceOnDemand bool `json:"sourceOnDemand"`
	// SourceOnDemandStartTimeoutSeconds is how long a first viewer's request
	// waits for the on-demand source's first keyframe (1-3600).
	// It defaults to 10.
	SourceOnDemandStartTimeoutSeconds int `json:"sourceOnDemandStartTimeoutSeconds"`
	// SourceOnDemandCloseAfterSeconds is how long an on-demand source stays
	// connected without readers (1-3600).
	// It defaults to 10.
	SourceOnDemandCloseAfterSeconds int `json:"sourceOnDemandCloseAfterSeconds"`
	// Publish accepts one publisher (Symple Broadcast or WHIP) on the path.
	// It is exclusive with Source.
	// It defaults to false.
	Publish bool `json:"publish"`
	// Record records whatever flows through the path.
	// It defaults to false.
	Record bool `json:"record"`
	// Read accepts viewers; nil means the default. A path that neither
	// reads, publishes nor records is an error.
	// It defaults to true.
	Read *bool `json:"read,omitempty"`
	// Required makes readiness (/api/ready) fail when this path's source is
	// down past media.sourceGraceSeconds. Given as paths.main, it replaces
	// the default path's own Required (true) like every other key.
	// It defaults to false.
	Required bool `json:"required"`
	// PublishToken is a token a publisher must present for this path, in
	// addition to the auth.token rules. A secret: redacted and scrubbed
	// from logs.
	// It defaults to none.
	PublishToken string `json:"publishToken"`
	// Intelligence analyses the path's media (the keys of
	// media.intelligence, which configures the default path).
	// It defaults to none.
	Intelligence Intelligence `json:"intelligence"`
}

// UnmarshalJSON decodes a path with the defaults for the keys it leaves out.
func (p *PathConfig) UnmarshalJSON(data []byte) error {
	type plain PathConfig // no UnmarshalJSON: no recursion
	v := plain{
		SourceOnDemandStartTimeoutSeconds: DefaultSourceOnDemandTimeoutSeconds,
		SourceOnDemandCloseAfterSeconds:   DefaultSourceOnDemandTimeoutSeconds,
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*p = PathConfig(v)
	return nil
}

// ReadEnabled is Read with its default applied.
func (p PathConfig) ReadEnabled() bool { return p.Read == nil || *p.Read }

// PathSpec is one effective path (see Config.ResolvedPaths).
type PathSpec struct {
	Name   string
	Source string // "" when the path publishes or plays the built-in stream
	// SourceKind is builtin, file, rtsp, device or url (see SourceKind);
	// "" when the path has no source (a publisher slot).
	SourceKind   string
	OnDemand     bool
	StartTimeout time.Duration
	CloseAfter   time.Duration
	Publish      bool
	Record       bool
	Read         bool
	Required     bool
	PublishToken string
	// Intelligence is the path's analysis (media.intelligence for the
	// default path of the legacy keys).
	Intelligence Intelligence
	// Template is true for a path whose Name is a regular expression
	// ("~" followed by the pattern, e.g. "~^(.+)$"): any requested path
	// name it matches becomes a path of its own, on demand, its Source
	// with $1... replaced by the name's submatches (edges:
	// rtsp://origin:8554/$1).
	Template bool
}

// ValidPathName reports whether name is a valid (non-template) path name.
func ValidPathName(name string) bool {
	if !pathNameRE.MatchString(name) {
		return false
	}
	for _, r := range reservedPathNames {
		if strings.EqualFold(name, r) {
			return false
		}
	}
	return true
}

// IsTemplateName reports whether a paths key is a template ("~regexp").
func IsTemplateName(name string) bool { return strings.HasPrefix(name, "~") }

var pathNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// reservedPathNames collide with the server's own URLs (/whep, /api/...).
var reservedPathNames = []string{"whep", "whip", "api", "ws", "metrics", "debug"}

// pathKey is how errors and warnings name path name's key: paths.name, or
// paths["name"] when the name is not a valid one.
func pathKey(name string) string {
	if pathNameRE.MatchString(name) {
		return "paths." + name
	}
	return fmt.Sprintf("paths[%q]", name)
}

// pathSourceKind classifies a path's source: "" for none, "builtin" for
// the word builtin, else SourceKind.
func pathSourceKind(src string) string {
	s := strings.TrimSpace(src)
	switch {
	case s == "":
		return ""
	case strings.EqualFold(s, "builtin"):
		return "builtin"
	}
	return SourceKind(s)
}

// ResolvedPaths returns the effective paths: the default path main first,
// then the others sorted by name. The legacy keys define main (media.mode
// stream pulls media.source, empty = the built-in stream, with readers on;
// record = publish and record, no readers; relay = publish with readers),
// unless paths.main is given, which replaces it entirely.
func (c *Config) ResolvedPaths() []PathSpec {
	out := make([]PathSpec, 0, len(c.Paths)+1)
	if p, ok := c.Paths[DefaultPathName]; ok {
		out = append(out, p.spec(DefaultPathName))
	} else {
		out = append(out, c.legacyPath())
	}
	names := make([]string, 0, len(c.Paths))
	for name := range c.Paths {
		if name != DefaultPathName {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	for _, name := range names {
		out = append(out, c.Paths[name].spec(name))
	}
	return out
}

// LookupPath returns the effective path called name (exact spelling). (It
// cannot be called Path: that is the field naming the config file.)
func (c *Config) LookupPath(name string) (PathSpec, bool) {
	for _, p := range c.ResolvedPaths() {
		if p.Name == name {
			return p, true
		}
	}
	return PathSpec{}, false
}

func (c *Config) legacyPath() PathSpec {
	d := time.Duration(DefaultSourceOnDemandTimeoutSeconds) * time.Second
	p := PathSpec{Name: DefaultPathName, StartTimeout: d, CloseAfter: d, Required: true, Intelligence: c.Media.Intelligence}
	switch c.Media.Mode {
	case "record":
		p.Publish, p.Record = true, true
	case "relay":
		p.Publish, p.Read = true, true
	default: // stream
		p.Source, p.SourceKind, p.Read = c.Media.Source, SourceKind(c.Media.Source), true
	}
	return p
}

func (p PathConfig) spec(name string) PathSpec {
	secs := func(n int) time.Duration {
		if n <= 0 { // a Config built in Go without the defaults
			n = DefaultSourceOnDemandTimeoutSeconds
		}
		return time.Duration(n) * time.Second
	}
	s := PathSpec{
		Template:     IsTemplateName(name),
		Name:         name,
		Source:       p.Source,
		SourceKind:   pathSourceKind(p.Source),
		OnDemand:     p.SourceOnDemand,
		StartTimeout: secs(p.SourceOnDemandStartTimeoutSeconds),
		CloseAfter:   secs(p.SourceOnDemandCloseAfterSeconds),
		Publish:      p.Publish,
		Record:       p.Record,
		Read:         p.ReadEnabled(),
		Required:     p.Required,
		PublishToken: p.PublishToken,
		Intelligence: p.Intelligence,
	}
	switch {
	case p.Publish:
		s.Source, s.SourceKind = "", ""
	case s.SourceKind == "" || s.SourceKind == "builtin":
		s.Source = "" // the built-in stream, as an empty media.source
	}
	if s.Template {
		s.OnDemand = true // a template's paths exist only while asked for
	}
	return s
}

// validatePaths adds the errors of c.Paths, in name order.
func (c *Config) validatePaths(add func(key, format string, a ...any)) {
	names := make([]string, 0, len(c.Paths))
	for name := range c.Paths {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p, key := c.Paths[name], pathKey(name)
		if IsTemplateName(name) {
			if _, err := regexp.Compile(name[1:]); err != nil || len(name) < 2 {
				add(key, "invalid template: %q is not a regular expression after the ~", name[1:])
			}
			if strings.TrimSpace(p.Source) == "" || p.Publish {
				add(key, "a template path needs a source (it is pulled on demand) and cannot publish")
			}
			continue
		}
		if !pathNameRE.MatchString(name) {
			add(key, "invalid path name (want letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64 characters)")
		}
		for _, r := range reservedPathNames {
			if strings.EqualFold(name, r) {
				add(key, "the name %q is reserved (it collides with the server's /%s URLs)", name, r)
			}
		}
		hasSource := strings.TrimSpace(p.Source) != ""
		switch {
		case hasSource && p.Publish:
			add(key+".source", "exclusive with publish: true (a path either pulls a source or accepts a publisher)")
		case !hasSource && !p.Publish:
			add(key, "needs a source or publish: true")
		}
		if p.SourceOnDemand && !hasSource {
			add(key+".sourceOnDemand", "needs a source")
		}
		for _, t := range []struct {
			key string
			n   int
		}{
			{"sourceOnDemandStartTimeoutSeconds", p.SourceOnDemandStartTimeoutSeconds},
			{"sourceOnDemandCloseAfterSeconds", p.SourceOnDemandCloseAfterSeconds},
		} {
			if t.n < 1 || t.n > MaxSourceOnDemandTimeoutSeconds {
				add(key+"."+t.key, "%d out of range (1-%d)", t.n, MaxSourceOnDemandTimeoutSeconds)
			}
		}
		if !p.ReadEnabled() && !p.Publish && !p.Record {
			add(key+".read", "false with publish and record off: the path would do nothing")
		}
		p.Intelligence.validate(key+".intelligence", add)
	}
}

// pathsSecrets are the secrets of c.Paths: publish tokens and the
// credentials of path sources.
func (c *Config) pathsSecrets() []string {
	names := make([]string, 0, len(c.Paths))
	for name := range c.Paths {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []string
	for _, name := range names {
		p := c.Paths[name]
		out = append(out, p.PublishToken, sourcePassword(p.Source))
		out = append(out, querySecrets(p.Source)...)
	}
	return out
}

// redactedPaths is a copy of paths fit to show: sources without
// credentials, publish tokens masked. The original map is not touched.
func redactedPaths(paths map[string]PathConfig, mask func(string) string) map[string]PathConfig {
	if paths == nil {
		return nil
	}
	out := make(map[string]PathConfig, len(paths))
	for name, p := range paths {
		p.Source = RedactSource(p.Source)
		p.PublishToken = mask(p.PublishToken)
		out[name] = p
	}
	return out
}

var pathConfigType = reflect.TypeOf(PathConfig{})

// decodePaths decodes the value of a paths key (as decoded with UseNumber):
// a JSON object of path objects, or null. Keys that PathConfig does not
// spell exactly are left out and returned as unknown (dotted, from paths.).
// Errors name the key.
func decodePaths(v any) (map[string]PathConfig, []string, error) {
	if v == nil {
		return nil, nil, nil
	}
	raw, ok := v.(map[string]any)
	if !ok {
		return nil, nil, fmt.Errorf("paths: wrong type: got JSON %s, want object", rawKind(v))
	}
	names := make([]string, 0, len(raw))
	for name := range raw {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make(map[string]PathConfig, len(raw))
	var unknown []string
	for _, name := range names {
		key := pathKey(name)
		var sub map[string]any
		switch e := raw[name].(type) {
		case nil: // null: an empty path (validation names what it lacks)
		case map[string]any:
			sub = e
		default:
			return nil, nil, fmt.Errorf("%s: wrong type: got JSON %s, want object", key, rawKind(e))
		}
		unknown = append(unknown, unknownKeys(sub, pathConfigType, "paths."+name+".")...)
		known, err := json.Marshal(knownKeys(sub, pathConfigType))
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %v", key, err)
		}
		var p PathConfig
		if err := json.Unmarshal(known, &p); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) && te.Field != "" {
				return nil, nil, fmt.Errorf("%s.%s: wrong type: got JSON %s, want %s", key, te.Field, te.Value, jsonKind(te.Type))
			}
			return nil, nil, fmt.Errorf("%s: %v", key, err)
		}
		out[name] = p
	}
	sort.Strings(unknown)
	return out, unknown, nil
}

// rawKind names the JSON type of a value decoded into any (with UseNumber).
func rawKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// parsePathsEnv decodes ICEY_PATHS: one JSON object shaped like the file's
// paths. It returns the paths and warnings for unknown keys.
func parsePathsEnv(value string) (map[string]PathConfig, []string, error) {
	data := []byte(value)
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, nil, fmt.Errorf("ICEY_PATHS: %s", describeJSONError(data, err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("ICEY_PATHS: invalid JSON: data after the object")
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, nil, fmt.Errorf("ICEY_PATHS: got JSON %s, want an object of paths", rawKind(v))
	}
	paths, unknown, err := decodePaths(v)
	if err != nil {
		return nil, nil, fmt.Errorf("ICEY_PATHS: %w", err)
	}
	var warnings []string
	for _, k := range unknown {
		warnings = append(warnings, fmt.Sprintf("unknown config key %q in ICEY_PATHS ignored", k))
	}
	return paths, warnings, nil
}
