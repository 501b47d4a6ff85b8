package server

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// The session's code falls in three groups of files: the connection (the
// rest of the package), the receive side and the send side. A type's
// methods live in one group, and neither side refers to what only the
// other declares: what both need is the connection's.
var sideFiles = map[string]string{
	"receive.go": "receive", "create.go": "receive", "sink.go": "receive", "restartindex.go": "receive",
	"send.go": "send", "select.go": "send", "sendtail.go": "send",
}

func fileGroup(name string) string {
	if g, ok := sideFiles[name]; ok {
		return g
	}
	return "connection"
}

// TestFileGroups checks the split with the package's syntax trees: types
// whose methods span groups, and package-level names or methods of one
// side used in the other's files.
func TestFileGroups(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for _, e := range entries {
		n := e.Name()
		if !strings.HasSuffix(n, ".go") || strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, n, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[n] = f
	}
	for n := range sideFiles {
		if files[n] == nil {
			t.Fatalf("%s is listed in a group but does not exist", n)
		}
	}

	typeGroup := map[string]string{}         // receiver type -> group of its methods
	topLevel := map[string]map[string]bool{} // name -> groups declaring it
	members := map[string]map[string]bool{}  // method or field name -> groups declaring it
	note := func(m map[string]map[string]bool, name, group string) {
		if m[name] == nil {
			m[name] = map[string]bool{}
		}
		m[name][group] = true
	}
	for n, f := range files {
		g := fileGroup(n)
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					note(topLevel, d.Name.Name, g)
					continue
				}
				typ := d.Recv.List[0].Type
				if st, ok := typ.(*ast.StarExpr); ok {
					typ = st.X
				}
				tn := typ.(*ast.Ident).Name
				if was, ok := typeGroup[tn]; ok && was != g {
					t.Errorf("type %s has methods in the %s group and in the %s group (%s.%s in %s)", tn, was, g, tn, d.Name.Name, n)
				}
				typeGroup[tn] = g
				note(members, d.Name.Name, g)
			case *ast.GenDecl:
				for _, sp := range d.Specs {
					switch sp := sp.(type) {
					case *ast.TypeSpec:
						note(topLevel, sp.Name.Name, g)
						ast.Inspect(sp.Type, func(x ast.Node) bool {
							if fl, ok := x.(*ast.Field); ok {
								for _, id := range fl.Names {
									note(members, id.Name, g)
								}
							}
							return true
						})
					case *ast.ValueSpec:
						for _, id := range sp.Names {
							if id.Name != "_" {
								note(topLevel, id.Name, g)
							}
						}
					}
				}
			}
		}
	}
	onlyIn := func(groups map[string]bool, g string) bool { return len(groups) == 1 && groups[g] }
	for n, f := range files {
		g := fileGroup(n)
		if g == "connection" {
			continue
		}
		other := map[string]string{"receive": "send", "send": "receive"}[g]
		ast.Inspect(f, func(x ast.Node) bool {
			switch x := x.(type) {
			case *ast.SelectorExpr:
				if onlyIn(members[x.Sel.Name], other) {
					t.Errorf("%s: %s uses .%s of the %s side", fset.Position(x.Pos()), n, x.Sel.Name, other)
				}
			case *ast.Ident:
				// Unresolved in its file: a package-level name.
				if x.Obj == nil && onlyIn(topLevel[x.Name], other) {
					t.Errorf("%s: %s uses %s of the %s side", fset.Position(x.Pos()), n, x.Name, other)
				}
			}
			return true
		})
	}
}
