package config

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func parseFile(t *testing.T, body string, e map[string]string, args ...string) (*Options, error) {
	t.Helper()
	t.Chdir(t.TempDir())
	p := writeFile(t, t.TempDir(), "c.json", body)
	return Parse(append([]string{"-c", p}, args...), env(e))
}

func TestPathsValid(t *testing.T) {
	f, tr := false, true
	cases := []struct {
		name string
		file string
		want map[string]PathConfig
	}{
		{"none", `{}`, nil},
		{"null", `{"paths":null}`, nil},
		{"empty", `{"paths":{}}`, map[string]PathConfig{}},
		{"defaults", `{"paths":{"front":{"source":"rtsp://cam/1"},"stage":{"publish":true}}}`, map[string]PathConfig{
			"front": {Source: "rtsp://cam/1", SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
			"stage": {Publish: true, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
		}},
		{"every key", `{"paths":{"Cam_1.back-2":{"source":"srt://h:9000","sourceOnDemand":true,"sourceOnDemandStartTimeoutSeconds":1,
			"sourceOnDemandCloseAfterSeconds":3600,"record":true,"read":false,"required":true}}}`, map[string]PathConfig{
			"Cam_1.back-2": {Source: "srt://h:9000", SourceOnDemand: true, SourceOnDemandStartTimeoutSeconds: 1,
				SourceOnDemandCloseAfterSeconds: 3600, Record: true, Read: &f, Required: true},
		}},
		{"publisher with token, recording only", `{"paths":{"s":{"publish":true,"read":false,"record":true,"publishToken":"pt"}}}`, map[string]PathConfig{
			"s": {Publish: true, Record: true, Read: &f, PublishToken: "pt", SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
		}},
		{"read true explicit, publisher without readers", `{"paths":{"a":{"publish":true,"read":true},"b":{"publish":true,"read":false}}}`, map[string]PathConfig{
			"a": {Publish: true, Read: &tr, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
			"b": {Publish: true, Read: &f, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
		}},
		{"main allowed", `{"paths":{"main":{"publish":true}}}`, map[string]PathConfig{
			"main": {Publish: true, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
		}},
		{"64-character name, reserved word inside a name", `{"paths":{"` + strings.Repeat("a", 64) + `":{"publish":true},"api2":{"publish":true},"WHEPx":{"publish":true}}}`, map[string]PathConfig{
			strings.Repeat("a", 64): {Publish: true, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
			"api2":                  {Publish: true, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
			"WHEPx":                 {Publish: true, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10},
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFile(t, tc.file, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(o.Config.Paths, tc.want) {
				t.Fatalf("paths\n got %+v\nwant %+v", o.Config.Paths, tc.want)
			}
			if len(o.Config.Warnings) != 0 {
				t.Fatalf("warnings %q", o.Config.Warnings)
			}
		})
	}
}

func TestPathsInvalid(t *testing.T) {
	cases := []struct {
		name string
		file string
		env  map[string]string
		key  string // the error must name this
		also string // and contain this
	}{
		{"space in name", `{"paths":{"bad name":{"publish":true}}}`, nil, `paths["bad name"]`, "invalid path name"},
		{"leading dot", `{"paths":{".x":{"publish":true}}}`, nil, `paths[".x"]`, "invalid path name"},
		{"slash", `{"paths":{"a/b":{"publish":true}}}`, nil, `paths["a/b"]`, "invalid path name"},
		{"empty name", `{"paths":{"":{"publish":true}}}`, nil, `paths[""]`, "invalid path name"},
		{"65 characters", `{"paths":{"` + strings.Repeat("a", 65) + `":{"publish":true}}}`, nil, `paths["aaaa`, "invalid path name"},
		{"reserved whep", `{"paths":{"whep":{"publish":true}}}`, nil, "paths.whep", "reserved"},
		{"reserved whip", `{"paths":{"whip":{"publish":true}}}`, nil, "paths.whip", "reserved"},
		{"reserved API", `{"paths":{"API":{"publish":true}}}`, nil, "paths.API", "reserved"},
		{"reserved ws", `{"paths":{"ws":{"publish":true}}}`, nil, "paths.ws", "reserved"},
		{"reserved Metrics", `{"paths":{"Metrics":{"publish":true}}}`, nil, "paths.Metrics", "reserved"},
		{"reserved debug", `{"paths":{"debug":{"publish":true}}}`, nil, "paths.debug", "reserved"},
		{"source and publish", `{"paths":{"front":{"source":"rtsp://cam/1","publish":true}}}`, nil, "paths.front.source", "exclusive"},
		{"neither", `{"paths":{"front":{"record":true}}}`, nil, "paths.front", "needs a source or publish: true"},
		{"blank source", `{"paths":{"front":{"source":"  "}}}`, nil, "paths.front", "needs a source or publish: true"},
		{"null path", `{"paths":{"front":null}}`, nil, "paths.front", "needs a source or publish: true"},
		{"on demand without source", `{"paths":{"front":{"publish":true,"sourceOnDemand":true}}}`, nil, "paths.front.sourceOnDemand", "needs a source"},
		{"start timeout 0", `{"paths":{"front":{"source":"x.mp4","sourceOnDemandStartTimeoutSeconds":0}}}`, nil, "paths.front.sourceOnDemandStartTimeoutSeconds", "out of range"},
		{"start timeout too long", `{"paths":{"front":{"source":"x.mp4","sourceOnDemandStartTimeoutSeconds":3601}}}`, nil, "paths.front.sourceOnDemandStartTimeoutSeconds", "out of range"},
		{"close after negative", `{"paths":{"front":{"source":"x.mp4","sourceOnDemandCloseAfterSeconds":-1}}}`, nil, "paths.front.sourceOnDemandCloseAfterSeconds", "out of range"},
		{"does nothing", `{"paths":{"front":{"source":"x.mp4","read":false}}}`, nil, "paths.front.read", "would do nothing"},
		{"paths not an object", `{"paths":[]}`, nil, "paths", "want object"},
		{"path not an object", `{"paths":{"front":"rtsp://cam/1"}}`, nil, "paths.front", "want object"},
		{"wrong type in path", `{"paths":{"front":{"publish":"yes"}}}`, nil, "paths.front.publish", "wrong type"},
		{"wrong type read", `{"paths":{"front":{"publish":true,"read":1}}}`, nil, "paths.front.read", "wrong type"},
		{"env malformed", `{}`, map[string]string{"ICEY_PATHS": `{"front":`}, "ICEY_PATHS", "invalid JSON"},
		{"env not an object", `{}`, map[string]string{"ICEY_PATHS": `["front"]`}, "ICEY_PATHS", "want an object"},
		{"env trailing data", `{}`, map[string]string{"ICEY_PATHS": `{} {}`}, "ICEY_PATHS", "data after"},
		{"env wrong type", `{}`, map[string]string{"ICEY_PATHS": `{"a":{"source":5}}`}, "ICEY_PATHS: paths.a.source", "wrong type"},
		{"env invalid path", `{}`, map[string]string{"ICEY_PATHS": `{"a":{}}`}, "paths.a", "needs a source"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFile(t, tc.file, tc.env)
			if err == nil {
				t.Fatalf("want error, got paths %+v", o.Config.Paths)
			}
			if !errors.Is(err, ErrInvalid) || errors.Is(err, ErrUsage) {
				t.Fatalf("error %v is not a config error", err)
			}
			if !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), tc.also) {
				t.Fatalf("error %q does not name %q with %q", err, tc.key, tc.also)
			}
		})
	}
}

func TestPathsEnv(t *testing.T) {
	file := `{"paths":{"front":{"source":"rtsp://cam/1"},"back":{"source":"rtsp://cam/2"}}}`
	o, err := parseFile(t, file, map[string]string{"ICEY_PATHS": ` {"stage":{"publish":true,"publishtoken":"x"}} `})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]PathConfig{"stage": {Publish: true, SourceOnDemandStartTimeoutSeconds: 10, SourceOnDemandCloseAfterSeconds: 10}}
	if !reflect.DeepEqual(o.Config.Paths, want) {
		t.Fatalf("ICEY_PATHS must replace the file's paths: %+v", o.Config.Paths)
	}
	if w := strings.Join(o.Config.Warnings, "\n"); !strings.Contains(w, `"paths.stage.publishtoken"`) || !strings.Contains(w, "ICEY_PATHS") {
		t.Fatalf("unknown key in ICEY_PATHS: warnings %q", w)
	}
	// Empty counts as unset; {} removes the file's paths.
	for v, n := range map[string]int{"": 2, " ": 2, "{}": 0} {
		o, err := parseFile(t, file, map[string]string{"ICEY_PATHS": v})
		if err != nil {
			t.Fatal(err)
		}
		if len(o.Config.Paths) != n {
			t.Errorf("ICEY_PATHS=%q: %d paths, want %d", v, len(o.Config.Paths), n)
		}
	}
	// Without a file too.
	t.Chdir(t.TempDir())
	o, err = Parse(nil, env(map[string]string{"ICEY_PATHS": `{"cam":{"source":"rtsp://cam/3","sourceOnDemand":true}}`}))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := o.Config.LookupPath("cam"); !ok || !p.OnDemand || p.SourceKind != "rtsp" {
		t.Fatalf("cam: %+v %v", p, ok)
	}
}

func TestPathsUnknownKeysWarn(t *testing.T) {
	o, err := parseFile(t, `{"paths":{"front":{"sorce":"x.mp4","Publish":true,"publish":true},"b":{"source":"y.mp4","extra":{"deep":1}}}}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := strings.Join(o.Config.Warnings, "\n")
	for _, k := range []string{`unknown config key "paths.front.sorce" ignored`, `"paths.front.Publish"`, `"paths.b.extra"`} {
		if !strings.Contains(w, k) {
			t.Errorf("warnings %q lack %s", w, k)
		}
	}
	if strings.Contains(w, "deep") || len(o.Config.Warnings) != 3 {
		t.Errorf("warnings %q", w)
	}
	// A miscapitalized key is ignored, as its warning says.
	o, err = parseFile(t, `{"paths":{"front":{"Source":"x.mp4","publish":true}}}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.Config.Paths["front"].Source != "" {
		t.Fatalf("paths.front.Source applied: %+v", o.Config.Paths["front"])
	}
}

func TestPathsRelativeSources(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "c.json", `{"paths":{
		"rel":{"source":"./lobby.mp4"},"bare":{"source":"clip.mkv"},"abs":{"source":"/srv/a.mp4"},
		"cam":{"source":"rtsp://cam/1"},"dev":{"source":"v4l2:/dev/video0"},"test":{"source":"builtin"}}}`)
	o, err := Parse([]string{"-c", p}, env(map[string]string{"ICEY_SOURCE": "env.mp4"}))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"rel": filepath.Join(dir, "lobby.mp4"), "bare": filepath.Join(dir, "clip.mkv"), "abs": "/srv/a.mp4",
		"cam": "rtsp://cam/1", "dev": "v4l2:/dev/video0", "test": "builtin",
	}
	for name, src := range want {
		if got := o.Config.Paths[name].Source; got != src {
			t.Errorf("paths.%s.source = %q, want %q", name, got, src)
		}
	}
	if o.Config.Media.Source != "env.mp4" {
		t.Errorf("ICEY_SOURCE resolved: %q", o.Config.Media.Source)
	}
	if s, _ := o.Config.LookupPath("test"); s.SourceKind != "builtin" || s.Source != "" {
		t.Errorf("builtin path: %+v", s)
	}
	// ICEY_PATHS sources are not file values: relative to the working directory.
	o, err = Parse([]string{"-c", p}, env(map[string]string{"ICEY_PATHS": `{"rel":{"source":"./lobby.mp4"}}`}))
	if err != nil {
		t.Fatal(err)
	}
	if got := o.Config.Paths["rel"].Source; got != "./lobby.mp4" {
		t.Errorf("ICEY_PATHS source = %q", got)
	}
}

func TestResolvedPaths(t *testing.T) {
	d := 10 * time.Second
	main := func(mods func(*PathSpec)) PathSpec {
		p := PathSpec{Name: "main", StartTimeout: d, CloseAfter: d, Required: true}
		mods(&p)
		return p
	}
	f := false
	cases := []struct {
		name  string
		file  string
		args  []string
		want  []PathSpec
		warns int
	}{
		{"stream, built-in", `{}`, nil, []PathSpec{main(func(p *PathSpec) { p.SourceKind, p.Read = "builtin", true })}, 0},
		{"stream, camera", `{"media":{"source":"rtsp://u:p@cam/1"}}`, nil, []PathSpec{main(func(p *PathSpec) {
			p.Source, p.SourceKind, p.Read = "rtsp://u:p@cam/1", "rtsp", true
		})}, 0},
		{"record", `{"media":{"mode":"record","source":"rtsp://cam/1"}}`, nil, []PathSpec{main(func(p *PathSpec) {
			p.Publish, p.Record = true, true
		})}, 0},
		{"relay by flag", `{}`, []string{"--mode", "relay"}, []PathSpec{main(func(p *PathSpec) { p.Publish, p.Read = true, true })}, 0},
		{"paths sorted after main", `{"paths":{"zed":{"publish":true,"publishToken":"pt"},"Alpha":{"source":"rtsp://cam/2","sourceOnDemand":true,
			"sourceOnDemandStartTimeoutSeconds":3,"sourceOnDemandCloseAfterSeconds":30,"required":true},"beta":{"source":"srt://h:1","read":false,"record":true}}}`, nil,
			[]PathSpec{
				main(func(p *PathSpec) { p.SourceKind, p.Read = "builtin", true }),
				{Name: "Alpha", Source: "rtsp://cam/2", SourceKind: "rtsp", OnDemand: true, StartTimeout: 3 * time.Second, CloseAfter: 30 * time.Second, Read: true, Required: true},
				{Name: "beta", Source: "srt://h:1", SourceKind: "url", StartTimeout: d, CloseAfter: d, Record: true},
				{Name: "zed", StartTimeout: d, CloseAfter: d, Publish: true, Read: true, PublishToken: "pt"},
			}, 0},
		{"paths.main replaces the legacy keys", `{"media":{"source":"rtsp://cam/1"},"paths":{"main":{"publish":true,"read":false,"record":true},"x":{"source":"builtin"}}}`, nil,
			[]PathSpec{
				{Name: "main", StartTimeout: d, CloseAfter: d, Publish: true, Record: true},
				{Name: "x", SourceKind: "builtin", StartTimeout: d, CloseAfter: d, Read: true},
			}, 1},
		{"paths.main without legacy keys", `{"paths":{"main":{"source":"rtsp://cam/9","required":true}}}`, nil,
			[]PathSpec{{Name: "main", Source: "rtsp://cam/9", SourceKind: "rtsp", StartTimeout: d, CloseAfter: d, Read: true, Required: true}}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFile(t, tc.file, nil, tc.args...)
			if err != nil {
				t.Fatal(err)
			}
			got := o.Config.ResolvedPaths()
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("ResolvedPaths\n got %+v\nwant %+v", got, tc.want)
			}
			if len(o.Config.Warnings) != tc.warns {
				t.Fatalf("warnings %q", o.Config.Warnings)
			}
			for _, p := range tc.want {
				if q, ok := o.Config.LookupPath(p.Name); !ok || !reflect.DeepEqual(p, q) {
					t.Fatalf("LookupPath(%q) = %+v %v", p.Name, q, ok)
				}
			}
			if _, ok := o.Config.LookupPath("nope"); ok {
				t.Fatal("LookupPath of an unknown name")
			}
		})
	}
	// A Config built in Go without the defaults still resolves them.
	c := Default()
	c.Paths = map[string]PathConfig{"a": {Source: "x.mp4", Read: &f, Record: true}}
	if p, _ := c.LookupPath("a"); p.StartTimeout != d || p.CloseAfter != d || p.Read || p.SourceKind != "file" {
		t.Fatalf("Go-built path: %+v", p)
	}
}

func TestPathsSecretsRedacted(t *testing.T) {
	o, err := parseFile(t, `{"auth":{"token":"tok123"},"paths":{
		"front":{"source":"rtsp://admin:camPass1@cam/1"},
		"srt":{"source":"srt://h:9000?passphrase=longsecret1&mode=caller"},
		"stage":{"publish":true,"publishToken":"pubTok77"}}}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := o.Config
	secrets := strings.Join(c.Secrets(), ",")
	for _, s := range []string{"tok123", "camPass1", "longsecret1", "pubTok77"} {
		if !strings.Contains(secrets, s) {
			t.Errorf("Secrets() %q misses %s", secrets, s)
		}
	}
	r := c.Redacted()
	shown := r.Paths["front"].Source + r.Paths["srt"].Source + r.Paths["stage"].PublishToken
	for _, s := range []string{"camPass1", "longsecret1", "pubTok77"} {
		if strings.Contains(shown, s) {
			t.Errorf("Redacted() shows %s: %+v", s, r.Paths)
		}
	}
	if r.Paths["stage"].PublishToken != "[redacted]" || r.Paths["front"].Source != "rtsp://cam/1" {
		t.Errorf("redacted paths %+v", r.Paths)
	}
	// The original is untouched.
	if c.Paths["stage"].PublishToken != "pubTok77" || c.Paths["front"].Source != "rtsp://admin:camPass1@cam/1" {
		t.Errorf("Redacted() changed the config: %+v", c.Paths)
	}
}

// Existing configs resolve to exactly the one default path they meant.
func TestLegacyConfigHasOnlyMain(t *testing.T) {
	o, err := parseFile(t, `{"media":{"mode":"stream","source":"clip.mp4"}}`, nil)
	if err != nil {
		t.Fatal(err)
	}
	ps := o.Config.ResolvedPaths()
	if len(ps) != 1 || ps[0].Name != "main" || ps[0].Source != o.Config.Media.Source || ps[0].SourceKind != "file" || o.Config.Paths != nil {
		t.Fatalf("paths %+v", ps)
	}
}

// Intelligence per path: media.intelligence configures the default path,
// paths.<name>.intelligence its own path; out-of-range values are errors
// naming the key.
func TestPathIntelligence(t *testing.T) {
	dir := t.TempDir()
	p := writeFile(t, dir, "c.json", `{"media":{"intelligence":{"vision":{"enabled":true,"motion":{"threshold":0.1}}}},
		"paths":{"cam":{"source":"rtsp://127.0.0.1/x","intelligence":{"speech":{"enabled":true,"startThreshold":0.05}}}}}`)
	o, err := Parse([]string{"--config", p}, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	var main, cam PathSpec
	for _, s := range o.Config.ResolvedPaths() {
		switch s.Name {
		case DefaultPathName:
			main = s
		case "cam":
			cam = s
		}
	}
	if !main.Intelligence.Vision.Enabled || main.Intelligence.Vision.Motion.Threshold != 0.1 || main.Intelligence.Speech.Enabled {
		t.Fatalf("main: %+v", main.Intelligence)
	}
	if cam.Intelligence.Vision.Enabled || !cam.Intelligence.Speech.Enabled || cam.Intelligence.Speech.StartThreshold != 0.05 {
		t.Fatalf("cam: %+v", cam.Intelligence)
	}
	bad := writeFile(t, dir, "bad.json", `{"paths":{"cam":{"source":"rtsp://127.0.0.1/x","intelligence":{"vision":{"motion":{"threshold":2}},"speech":{"startThreshold":0.01,"stopThreshold":0.02}}}}}`)
	_, err = Parse([]string{"--config", bad}, env(nil))
	if err == nil || !strings.Contains(err.Error(), "paths.cam.intelligence.vision.motion.threshold") || !strings.Contains(err.Error(), "paths.cam.intelligence.speech.stopThreshold") {
		t.Fatalf("err = %v", err)
	}
}
