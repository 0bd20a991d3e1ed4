package leaktest_test

// TestEveryCloserHasALeakTest keeps one promise: every type of the module
// with a Close method is closed, at least once, by a test whose goroutine
// check compares stacks (leaktest.Check, goleak), so a Close that forgets a
// goroutine fails a test naming that goroutine's stack instead of going
// unnoticed until a soak shows the memory growing.
//
// The rules, kept simple on purpose:
//
//   - A "closer" is a named type declared in a non-test .go file of this
//     module with a method declaration named Close (any signature, pointer
//     or value receiver, exported or not). Interface types are not closers:
//     what they promise is checked on their implementations.
//   - Skipped: testdata and vendor trees, hidden and _ directories, nested
//     modules (a directory with its own go.mod, e.g. deploy/k8s/validate),
//     and test-helper packages (package name beginning or ending in "test":
//     internal/testpeer, internal/rtsptest, media/childtest, ...). Helpers are not in any shipped
//     binary and a goroutine they leak fails every leaktest-checked test
//     that uses them; the test below checks that no non-test file outside
//     such a helper imports one, so the skip cannot hide production code.
//   - "Arms leaktest.Check": the test function's body (function literals
//     included, e.g. t.Run subtests) calls leaktest.Check, i.e. a selector
//     Check on the import of .../internal/leaktest under whatever name the
//     file imports it; or it calls a function declared in the same
//     directory's _test.go files whose body does. One level of helper only.
//     testenv.CheckGoroutines (a goroutine count) does not count.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

const leaktestImport = "github.com/icey/icey-server/internal/leaktest"

// closeLeakTests maps each closer ("import/path.Type") to the tests of its
// package that close it under leaktest.Check.
var closeLeakTests = map[string][]string{
	"github.com/icey/icey-server/intel.Analyzer":            {"TestCloseLeaksAnalyzer"},
	"github.com/icey/icey-server/intel.Clipper":             {"TestCloseLeaksClipper"},
	"github.com/icey/icey-server/intel.Snapshots":           {"TestCloseLeaksSnapshots"},
	"github.com/icey/icey-server/internal/app.listeners":    {"TestCloseLeaksListeners"},
	"github.com/icey/icey-server/internal/events.Bus":       {"TestCloseLeaksBus"},
	"github.com/icey/icey-server/internal/events.Sub":       {"TestCloseLeaksBus"},
	"github.com/icey/icey-server/internal/udpgso.Batch":     {"TestCloseLeaksBatch"},
	"github.com/icey/icey-server/internal/udpgso.Conn":      {"TestCloseLeaksBatch"},
	"github.com/icey/icey-server/media.Stream":              {"TestCloseLeaksStream"},
	"github.com/icey/icey-server/media.Subscriber":          {"TestCloseLeaksStream"},
	"github.com/icey/icey-server/media/transcode.AudioPipe": {"TestCloseLeaksAudioPipe"},
	"github.com/icey/icey-server/paths.Set":                 {"TestOnDemand", "TestSharedSource"},
	"github.com/icey/icey-server/recordings.Clip":           {"TestCloseLeaksClip"},
	"github.com/icey/icey-server/recordings.Recorder":       {"TestRecorderRotation", "TestRecorderStopStart"},
	"github.com/icey/icey-server/renditions.Set":            {"TestCloseLeaksSet"},
	"github.com/icey/icey-server/rtspserve.Server":          {"TestPlayTCP", "TestBindErrorAndCloseIdempotent"},
	"github.com/icey/icey-server/signaling.Manager":         {"TestCloseLeaksManager"},
	"github.com/icey/icey-server/signaling.Session":         {"TestCloseLeaksManager"},
	"github.com/icey/icey-server/turn.Server":               {"TestCloseLeaksServer"},
	"github.com/icey/icey-server/turn.tcpConn":              {"TestCloseLeaksServer"},
	"github.com/icey/icey-server/turn.tcpListener":          {"TestCloseLeaksServer"},
}

// pkgInfo is what the check needs of one package directory.
type pkgInfo struct {
	dir        string              // relative to the module root
	importPath string              // module path + dir
	name       string              // package name of its non-test files
	closers    map[string]string   // type name -> position of its Close
	imports    map[string][]string // import path -> non-test files importing it
	testFuncs  map[string]*ast.FuncDecl
	testFiles  map[*ast.FuncDecl]*ast.File
}

func TestEveryCloserHasALeakTest(t *testing.T) {
	root, module := moduleRoot(t)
	r := checkClosers(t, root, module, closeLeakTests)
	for _, p := range r.problems {
		t.Error(p)
	}
	if r.closers == 0 {
		t.Fatalf("no type with a Close method found under %s: the scan is broken", root)
	}
	t.Logf("%d types with Close in %d packages (%d test-helper packages skipped: %s); %d table entries, %d test references arm leaktest.Check",
		r.closers, r.packages, len(r.helpers), strings.Join(r.helpers, ", "), len(closeLeakTests), r.armed)
}

// closerReport is what checkClosers found.
type closerReport struct {
	problems          []string // one message per problem, sorted
	closers, packages int      // closers found, in how many packages
	armed             int      // table references that arm leaktest.Check
	helpers           []string // skipped test-helper packages
}

// checkClosers applies the rules at the top of the file to the module at
// root against table.
func checkClosers(t *testing.T, root, module string, table map[string][]string) closerReport {
	t.Helper()
	pkgs := loadModule(t, root, module)
	var r closerReport
	found := map[string]*pkgInfo{} // closer key -> its package
	for _, p := range pkgs {
		if isHelper(p) {
			r.helpers = append(r.helpers, p.importPath)
			continue
		}
		for typ := range p.closers {
			found[p.importPath+"."+typ] = p
		}
	}
	sort.Strings(r.helpers)
	r.closers, r.packages = len(found), countPkgs(found)

	// The skip of helper packages holds only while nothing shipped imports them.
	for _, p := range pkgs {
		if isHelper(p) {
			continue
		}
		for _, h := range r.helpers {
			for _, f := range p.imports[h] {
				r.problems = append(r.problems, fmt.Sprintf("%s imports test helper %s: helpers are skipped by this check only because no production code uses them; move the code out of the helper or drop the skip", f, h))
			}
		}
	}

	for key, p := range found {
		typ := key[strings.LastIndex(key, ".")+1:]
		tests, ok := table[key]
		if !ok || len(tests) == 0 {
			r.problems = append(r.problems, fmt.Sprintf("%s (Close at %s) has no leak test: write a test in %s/close_leak_test.go, e.g. TestCloseLeaks%s, that calls leaktest.Check(t) first, constructs a %s for real, uses it, closes it; then add %q: {\"TestCloseLeaks%s\"} to closeLeakTests in internal/leaktest/closers_test.go",
				key, p.closers[typ], p.dir, exported(typ), typ, key, exported(typ)))
			continue
		}
		for _, name := range tests {
			fn := p.testFuncs[name]
			if fn == nil {
				r.problems = append(r.problems, fmt.Sprintf("%s: closeLeakTests names %s, but no _test.go file in %s declares func %s", key, name, p.dir, name))
				continue
			}
			if !armsLeakCheck(fn, p) {
				r.problems = append(r.problems, fmt.Sprintf("%s: %s (%s) does not arm leaktest.Check, neither in its body nor in a helper it calls directly (testenv.CheckGoroutines counts goroutines and does not count here)", key, name, p.dir))
				continue
			}
			r.armed++
		}
	}
	for key := range table {
		if found[key] == nil {
			r.problems = append(r.problems, fmt.Sprintf("closeLeakTests lists %s, but no non-test file of the module declares a Close method on it any more: remove the entry", key))
		}
	}
	sort.Strings(r.problems)
	return r
}

// The check itself can fail: on a small module holding one case of each
// rule it reports exactly the problems planted there.
func TestEveryCloserCheckCatchesEachProblem(t *testing.T) {
	const module = "example.com/m"
	root := t.TempDir()
	files := map[string]string{
		"go.mod": "module " + module + "\n\ngo 1.26\n",
		// Covered directly, through a helper, under an import alias, with a
		// generic receiver; an interface's Close is no closer.
		"a/a.go": `package a
type Good struct{}
func (Good) Close() {}
type ViaHelper struct{}
func (*ViaHelper) Close() error { return nil }
type Gen[T any] struct{}
func (g *Gen[T]) Close() {}
type I interface{ Close() error }
// Problems: no entry, a test that does not exist, a count-based check only.
type Missing struct{}
func (*Missing) Close() {}
type NoSuchTest struct{}
func (*NoSuchTest) Close() {}
type CountOnly struct{}
func (*CountOnly) Close() {}
`,
		"a/a_test.go": `package a
import (
	"testing"
	lt "` + leaktestImport + `"
	"github.com/icey/icey-server/internal/testenv"
)
func TestGood(t *testing.T) { t.Run("x", func(t *testing.T) { lt.Check(t) }) }
func arm(t *testing.T) { lt.Check(t) }
func TestViaHelper(t *testing.T) { arm(t) }
func TestCount(t *testing.T) { testenv.CheckGoroutines(t) }
`,
		// A helper package is skipped, but production code may not import it.
		"a/atest/h.go":    "package atest\ntype Fixture struct{}\nfunc (Fixture) Close() {}\n",
		"b/b.go":          "package b\nimport _ \"" + module + "/a/atest\"\n",
		"a/testdata/x.go": "package x\ntype T struct{}\nfunc (T) Close() {}\n",
		"nested/go.mod":   "module other\n",
		"nested/n.go":     "package n\ntype T struct{}\nfunc (T) Close() {}\n",
	}
	for name, body := range files {
		path := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	table := map[string][]string{
		module + "/a.Good":       {"TestGood"},
		module + "/a.ViaHelper":  {"TestViaHelper"},
		module + "/a.Gen":        {"TestGood"},
		module + "/a.NoSuchTest": {"TestNoSuchTest"},
		module + "/a.CountOnly":  {"TestCount"},
		module + "/a.Gone":       {"TestGood"},
	}
	r := checkClosers(t, root, module, table)
	want := []string{ // sorted, as the problems are
		"b/b.go imports test helper " + module + "/a/atest",
		"closeLeakTests lists " + module + "/a.Gone, but no non-test file",
		module + "/a.CountOnly: TestCount (a) does not arm leaktest.Check",
		module + "/a.Missing (Close at a/a.go:11) has no leak test",
		module + "/a.NoSuchTest: closeLeakTests names TestNoSuchTest, but no _test.go file in a declares func TestNoSuchTest",
	}
	if len(r.problems) != len(want) {
		t.Errorf("%d problems, want %d:\n%s", len(r.problems), len(want), strings.Join(r.problems, "\n"))
	}
	for i := range min(len(want), len(r.problems)) {
		if !strings.HasPrefix(r.problems[i], want[i]) {
			t.Errorf("problem %d:\n got %s\nwant %s...", i, r.problems[i], want[i])
		}
	}
	if r.closers != 6 || r.armed != 3 {
		t.Errorf("%d closers (want 6: Good ViaHelper Gen Missing NoSuchTest CountOnly), %d armed references (want 3)", r.closers, r.armed)
	}
	t.Logf("synthetic module: %d closers, %d armed references, %d problems reported as planted; helpers skipped: %v", r.closers, r.armed, len(r.problems), r.helpers)
}

func countPkgs(found map[string]*pkgInfo) int {
	seen := map[*pkgInfo]bool{}
	for _, p := range found {
		seen[p] = true
	}
	return len(seen)
}

func exported(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// isHelper reports whether p is a test-helper package (see the rules above).
func isHelper(p *pkgInfo) bool {
	return strings.HasPrefix(p.name, "test") || strings.HasSuffix(p.name, "test")
}

// moduleRoot walks up from the test's directory to the go.mod of the module.
func moduleRoot(t *testing.T) (root, module string) {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(data), "\n") {
				if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
					return dir, strings.Trim(strings.TrimSpace(rest), `"`)
				}
			}
			t.Fatalf("%s/go.mod has no module line", dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

func loadModule(t *testing.T, root, module string) map[string]*pkgInfo {
	t.Helper()
	fset := token.NewFileSet()
	pkgs := map[string]*pkgInfo{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			base := d.Name()
			if rel != "." && (base == "testdata" || base == "vendor" || strings.HasPrefix(base, ".") || strings.HasPrefix(base, "_")) {
				return filepath.SkipDir
			}
			if rel != "." {
				if _, err := os.Stat(filepath.Join(p, "go.mod")); err == nil {
					return filepath.SkipDir // a nested module
				}
			}
			return nil
		}
		if !strings.HasSuffix(rel, ".go") {
			return nil
		}
		dir := path.Dir(rel)
		pi := pkgs[dir]
		if pi == nil {
			ip := module
			if dir != "." {
				ip = module + "/" + dir
			}
			pi = &pkgInfo{dir: dir, importPath: ip, closers: map[string]string{}, imports: map[string][]string{},
				testFuncs: map[string]*ast.FuncDecl{}, testFiles: map[*ast.FuncDecl]*ast.File{}}
			pkgs[dir] = pi
		}
		f, err := parser.ParseFile(fset, p, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		if strings.HasSuffix(rel, "_test.go") {
			for _, decl := range f.Decls {
				if fn, ok := decl.(*ast.FuncDecl); ok && fn.Recv == nil {
					pi.testFuncs[fn.Name.Name] = fn
					pi.testFiles[fn] = f
				}
			}
			return nil
		}
		if pi.name == "" {
			pi.name = f.Name.Name
		}
		for _, imp := range f.Imports {
			ip, _ := strconv.Unquote(imp.Path.Value)
			pi.imports[ip] = append(pi.imports[ip], rel)
		}
		for _, decl := range f.Decls {
			fn, ok := decl.(*ast.FuncDecl)
			if !ok || fn.Recv == nil || fn.Name.Name != "Close" || len(fn.Recv.List) != 1 {
				continue
			}
			if typ := recvType(fn.Recv.List[0].Type); typ != "" {
				pi.closers[typ] = fmt.Sprintf("%s:%d", rel, fset.Position(fn.Pos()).Line)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return pkgs
}

// recvType names the receiver's type: T, *T, T[P], *T[P, Q].
func recvType(e ast.Expr) string {
	for {
		switch x := e.(type) {
		case *ast.StarExpr:
			e = x.X
		case *ast.ParenExpr:
			e = x.X
		case *ast.IndexExpr:
			e = x.X
		case *ast.IndexListExpr:
			e = x.X
		case *ast.Ident:
			return x.Name
		default:
			return ""
		}
	}
}

// armsLeakCheck applies the rule documented at the top of the file.
func armsLeakCheck(fn *ast.FuncDecl, p *pkgInfo) bool {
	if callsLeaktestCheck(fn, p.testFiles[fn]) {
		return true
	}
	armed := false
	ast.Inspect(fn.Body, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || armed {
			return !armed
		}
		if id, ok := call.Fun.(*ast.Ident); ok {
			if h := p.testFuncs[id.Name]; h != nil && h != fn && callsLeaktestCheck(h, p.testFiles[h]) {
				armed = true
			}
		}
		return true
	})
	return armed
}

// callsLeaktestCheck reports whether fn's body calls Check of the leaktest
// package as imported by fn's file.
func callsLeaktestCheck(fn *ast.FuncDecl, f *ast.File) bool {
	if fn.Body == nil || f == nil {
		return false
	}
	name := ""
	for _, imp := range f.Imports {
		if ip, _ := strconv.Unquote(imp.Path.Value); ip == leaktestImport {
			name = "leaktest"
			if imp.Name != nil {
				name = imp.Name.Name
			}
		}
	}
	if name == "" || name == "_" {
		return false
	}
	if name == "." {
		// A dot import makes Check a bare identifier.
		return containsCall(fn.Body, func(c *ast.CallExpr) bool {
			id, ok := c.Fun.(*ast.Ident)
			return ok && id.Name == "Check"
		})
	}
	return containsCall(fn.Body, func(c *ast.CallExpr) bool {
		sel, ok := c.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "Check" {
			return false
		}
		id, ok := sel.X.(*ast.Ident)
		return ok && id.Name == name
	})
}

func containsCall(n ast.Node, match func(*ast.CallExpr) bool) bool {
	found := false
	ast.Inspect(n, func(n ast.Node) bool {
		if found {
			return false
		}
		if c, ok := n.(*ast.CallExpr); ok && match(c) {
			found = true
		}
		return !found
	})
	return found
}
