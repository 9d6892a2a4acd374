package infra

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/tollgate-ci/tollgate/core/controller"
)

// This file reads the Go code, without type checking, for what each
// deployed identity does that needs a grant: which actions it defers (a
// Pub/Sub publish on the action's topic) and whether it reads or writes the
// artifacts bucket or the cache. The IAM test compares that with the grants.
//
// The analysis follows calls from a root through the packages it parses:
//   - a call of a function of the same package, or of a method on the
//     method's own receiver;
//   - controller.F(...) from another package;
//   - from another package, a method call named like an exported method of
//     *controller.Controller (CancelJob, RetryJob, ...) through whatever
//     interface holds it (api.Actions is the controller); Handle is left
//     out, since http.ServeMux has one too and only the event functions
//     run the dispatcher.
// A deferral is a call of Defer or deferTask: its action is the constant it
// names, or, when the action is computed (a loop over a list), every action
// constant the function names.

const repoRoot = ".."

// Packages read, relative to the repository root.
var codeDirs = []string{"core/controller", "core/fleet", "core/worker", "functions/webhook",
	"functions/api", "functions/ui", "functions/workerapi"}

// The code each HTTP function and the worker VMs run (functions/cloudrun
// wires the handlers; TestCodeRoots checks it still does).
var httpCode = map[string][]string{
	"gerrit_webhook": {"functions/webhook"},
	"api":            {"functions/api", "functions/ui"},
	"worker_api":     {"functions/workerapi", "core/fleet"},
}

var workerCode = []string{"core/fleet", "core/worker"}

const controllerPath = "github.com/tollgate-ci/tollgate/core/controller"

// fnInfo is what one function (or one case of the dispatcher) does.
type fnInfo struct {
	pkg     string
	defers  map[string]bool // actions deferred by constant
	dynamic bool            // defers an action it computes
	names   map[string]bool // action constants it names
	calls   []string        // "pkg.Name" (unresolved names are ignored)
	blobs   map[string]bool // "read", "write"
	cache   bool
}

type codeGraph struct {
	fns         map[string]*fnInfo // "pkg.Name"
	byDir       map[string][]string
	actionConst map[string]string // constant name => action
	ctrlMethods map[string]bool   // exported methods of the controller
	dispatch    map[string]*fnInfo
}

func parseCode(t *testing.T) *codeGraph {
	t.Helper()
	g := &codeGraph{fns: map[string]*fnInfo{}, byDir: map[string][]string{}, actionConst: map[string]string{},
		ctrlMethods: map[string]bool{}, dispatch: map[string]*fnInfo{}}
	fset := token.NewFileSet()
	type file struct {
		dir string
		f   *ast.File
	}
	var files []file
	for _, dir := range codeDirs {
		names, err := filepath.Glob(filepath.Join(repoRoot, dir, "*.go"))
		if err != nil || len(names) == 0 {
			t.Fatalf("no Go files in %s: %v", dir, err)
		}
		for _, n := range names {
			if strings.HasSuffix(n, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, n, nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, file{dir, f})
		}
	}
	// The action constants and the controller's exported methods first.
	for _, fl := range files {
		if fl.dir != "core/controller" {
			continue
		}
		for _, d := range fl.f.Decls {
			switch d := d.(type) {
			case *ast.GenDecl:
				if d.Tok != token.CONST {
					continue
				}
				for _, s := range d.Specs {
					vs := s.(*ast.ValueSpec)
					for i, n := range vs.Names {
						if i >= len(vs.Values) {
							continue
						}
						if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
							v, _ := strconv.Unquote(lit.Value)
							if slices.Contains(controller.Actions, v) {
								g.actionConst[n.Name] = v
							}
						}
					}
				}
			case *ast.FuncDecl:
				if d.Recv != nil && d.Name.IsExported() && recvType(d) == "Controller" && d.Name.Name != "Handle" {
					g.ctrlMethods[d.Name.Name] = true
				}
			}
		}
	}
	if len(g.actionConst) != len(controller.Actions) {
		t.Fatalf("found %d action constants in core/controller, want %d (controller.Actions)", len(g.actionConst), len(controller.Actions))
	}
	for _, fl := range files {
		pkg := fl.f.Name.Name
		imports := map[string]string{}
		for _, im := range fl.f.Imports {
			p, _ := strconv.Unquote(im.Path.Value)
			name := p[strings.LastIndex(p, "/")+1:]
			if im.Name != nil {
				name = im.Name.Name
			}
			imports[name] = p
		}
		for _, d := range fl.f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			recv := ""
			if fd.Recv != nil && len(fd.Recv.List) > 0 && len(fd.Recv.List[0].Names) > 0 {
				recv = fd.Recv.List[0].Names[0].Name
			}
			key := pkg + "." + fd.Name.Name
			info := g.fns[key]
			if info == nil {
				info = &fnInfo{pkg: pkg, defers: map[string]bool{}, names: map[string]bool{}, blobs: map[string]bool{}}
				g.fns[key] = info
				g.byDir[fl.dir] = append(g.byDir[fl.dir], key)
			}
			g.visit(fd.Body, info, pkg, recv, imports)
			if pkg == "controller" && fd.Name.Name == "dispatch" {
				g.parseDispatch(t, fd, recv, imports)
			}
		}
	}
	return g
}

func recvType(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return ""
	}
	e := fd.Recv.List[0].Type
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// parseDispatch reads the controller's dispatcher: what each action's case
// runs is that action's code.
func (g *codeGraph) parseDispatch(t *testing.T, fd *ast.FuncDecl, recv string, imports map[string]string) {
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		cc, ok := n.(*ast.CaseClause)
		if !ok {
			return true
		}
		for _, e := range cc.List {
			id, ok := e.(*ast.Ident)
			if !ok || g.actionConst[id.Name] == "" {
				continue
			}
			info := &fnInfo{pkg: "controller", defers: map[string]bool{}, names: map[string]bool{}, blobs: map[string]bool{}}
			for _, s := range cc.Body {
				g.visit(s, info, "controller", recv, imports)
			}
			// The case's own label is no deferral.
			delete(info.names, id.Name)
			g.dispatch[g.actionConst[id.Name]] = info
		}
		return false
	})
}

func (g *codeGraph) visit(body ast.Node, info *fnInfo, pkg, recv string, imports map[string]string) {
	constOf := func(e ast.Expr) string {
		switch e := e.(type) {
		case *ast.Ident:
			if pkg == "controller" {
				return g.actionConst[e.Name]
			}
		case *ast.SelectorExpr:
			if x, ok := e.X.(*ast.Ident); ok && imports[x.Name] == controllerPath {
				return g.actionConst[e.Sel.Name]
			}
		case *ast.BasicLit:
			if v, err := strconv.Unquote(e.Value); err == nil && slices.Contains(controller.Actions, v) {
				return v
			}
		}
		return ""
	}
	sels := map[*ast.Ident]bool{} // the Sel of x.Sel: a field or method, not a constant
	ast.Inspect(body, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.Ident:
			if a := constOf(n); a != "" && !sels[n] {
				info.names[a] = true
			}
		case *ast.SelectorExpr:
			sels[n.Sel] = true
			if a := constOf(n); a != "" {
				info.names[a] = true
			}
		case *ast.CallExpr:
			name := ""
			switch f := n.Fun.(type) {
			case *ast.Ident:
				name = f.Name
				info.calls = append(info.calls, pkg+"."+f.Name)
			case *ast.SelectorExpr:
				name = f.Sel.Name
				switch x := f.X.(type) {
				case *ast.Ident:
					switch {
					case imports[x.Name] == controllerPath:
						info.calls = append(info.calls, "controller."+f.Sel.Name)
					case imports[x.Name] != "":
						// another package's function
					case x.Name == recv && recv != "":
						info.calls = append(info.calls, pkg+"."+f.Sel.Name)
					case pkg != "controller" && g.ctrlMethods[f.Sel.Name]:
						info.calls = append(info.calls, "controller."+f.Sel.Name)
					}
					if imports[x.Name] == "" {
						g.use(info, x.Name, f.Sel.Name)
					}
				case *ast.SelectorExpr:
					if pkg != "controller" && g.ctrlMethods[f.Sel.Name] {
						info.calls = append(info.calls, "controller."+f.Sel.Name)
					}
					g.use(info, x.Sel.Name, f.Sel.Name)
				}
			}
			if (name == "Defer" || name == "deferTask") && len(n.Args) >= 2 {
				if a := constOf(n.Args[1]); a != "" {
					info.defers[a] = true
				} else {
					info.dynamic = true
				}
			}
		}
		return true
	})
}

// use records a method call on a field or variable named like the
// artifacts bucket (Blobs) or the cache.
func (g *codeGraph) use(info *fnInfo, holder, method string) {
	switch holder {
	case "Blobs", "blobs":
		switch method {
		case "Put", "Delete":
			info.blobs["write"] = true
		default:
			info.blobs["read"] = true
		}
	case "Cache", "cache":
		info.cache = true
	}
}

// needs is what the code reachable from roots does.
type needs struct {
	defers      map[string]bool
	blobs       map[string]bool
	cache       bool
	controllers map[string]bool // controller functions reached, for messages
}

func (g *codeGraph) closure(roots []*fnInfo) needs {
	out := needs{defers: map[string]bool{}, blobs: map[string]bool{}, controllers: map[string]bool{}}
	seen := map[*fnInfo]bool{}
	var walk func(*fnInfo)
	walk = func(f *fnInfo) {
		if f == nil || seen[f] {
			return
		}
		seen[f] = true
		for a := range f.defers {
			out.defers[a] = true
		}
		if f.dynamic {
			for a := range f.names {
				out.defers[a] = true
			}
		}
		for k := range f.blobs {
			out.blobs[k] = true
		}
		out.cache = out.cache || f.cache
		for _, c := range f.calls {
			if strings.HasPrefix(c, "controller.") {
				out.controllers[c] = true
			}
			walk(g.fns[c])
		}
	}
	for _, r := range roots {
		walk(r)
	}
	return out
}

// action is what the function of action runs.
func (g *codeGraph) action(t *testing.T, action string) needs {
	t.Helper()
	d, ok := g.dispatch[action]
	if !ok {
		t.Fatalf("core/controller dispatch has no case for action %s", action)
	}
	return g.closure([]*fnInfo{d})
}

// packages is what every function of dirs may do.
func (g *codeGraph) packages(dirs ...string) needs {
	var roots []*fnInfo
	for _, d := range dirs {
		for _, k := range g.byDir[d] {
			roots = append(roots, g.fns[k])
		}
	}
	return g.closure(roots)
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k, v := range m {
		if v {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// TestCodeAnalysis pins what the analysis finds on code whose behaviour is
// documented, so that a refactoring that blinds it fails here rather than
// silently dropping grants.
func TestCodeAnalysis(t *testing.T) {
	g := parseCode(t)
	for action, want := range map[string][]string{
		controller.Tick:       {controller.CheckNewCLs, controller.CheckPendingCLs, controller.UpdateQueueMetrics, controller.ReapDeadWorkers},
		controller.CancelJob:  {controller.CheckPendingCL, controller.UpdateJobMetrics},
		controller.CheckNewCL: {controller.CancelOlderJobs},
	} {
		got := g.action(t, action).defers
		for _, w := range want {
			if !got[w] {
				t.Errorf("the analysis misses that %s defers %s (found %q)", action, w, sortedKeys(got))
			}
		}
	}
	if got := g.packages(httpCode["gerrit_webhook"]...).defers; !got[controller.CheckNewCL] {
		t.Errorf("the analysis misses that gerrit_webhook defers check_new_cl (found %q)", sortedKeys(got))
	}
	if n := g.packages(workerCode...); !n.defers[controller.CheckPendingCL] || !n.blobs["write"] {
		t.Errorf("the analysis misses that a worker defers check_pending_cl and writes artifacts (found %q, blobs %q)",
			sortedKeys(n.defers), sortedKeys(n.blobs))
	}
	if n := g.action(t, controller.CacheCleanup); !n.cache {
		t.Error("the analysis misses that cache_cleanup uses the cache")
	}
}

// TestCodeRoots checks that the composition root still serves the HTTP
// functions from the packages httpCode names, and the worker VMs from
// core/fleet.
func TestCodeRoots(t *testing.T) {
	read := func(p string) string {
		b, err := os.ReadFile(filepath.Join(repoRoot, p))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	cr := read("functions/cloudrun/cloudrun.go")
	for _, want := range []string{"webhook.New(", "ui.New(", "workerapi.NewHandler(", "fleet.NewService(", "Actions: rt.Controller"} {
		if !strings.Contains(cr, want) {
			t.Errorf("functions/cloudrun/cloudrun.go no longer calls %s: update httpCode in infra/code_test.go", want)
		}
	}
	fl := read("functions/cloudrun/fleet.go")
	if !strings.Contains(fl, "fleet.NewService(") {
		t.Error("functions/cloudrun/fleet.go no longer builds fleet.NewService: update workerCode in infra/code_test.go")
	}
}
