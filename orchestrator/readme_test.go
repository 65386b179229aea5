package orchestrator_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strings"
	"testing"
)

// The README's Go API section quotes the Example of example_test.go
// verbatim, so the code a reader copies is the code `go test` compiles and
// runs (its output checked) on every test run.
func TestReadmeQuotesTheExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	quoted, ok := goBlockAfter(string(readme), "## Go API")
	if !ok {
		t.Fatal("README.md: no ```go block in the section \"## Go API\"")
	}
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "example_test.go", src, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	var example string
	for _, d := range f.Decls {
		if fn, ok := d.(*ast.FuncDecl); ok && fn.Name.Name == "Example" && fn.Recv == nil {
			example = string(src[fset.Position(fn.Pos()).Offset:fset.Position(fn.End()).Offset]) + "\n"
		}
	}
	if example == "" {
		t.Fatal("example_test.go has no func Example")
	}
	if quoted != example {
		t.Errorf("README.md's Go API block is not orchestrator/example_test.go's Example verbatim; copy the function into the README.\nREADME:\n%s\nExample:\n%s", quoted, example)
	}
}

// goBlockAfter returns the first ```go fenced block after the heading.
func goBlockAfter(md, heading string) (string, bool) {
	i := strings.Index(md, "\n"+heading+"\n")
	if i < 0 {
		return "", false
	}
	md = md[i+len(heading)+2:]
	if next := strings.Index(md, "\n## "); next >= 0 {
		md = md[:next]
	}
	start := strings.Index(md, "\n```go\n")
	if start < 0 {
		return "", false
	}
	md = md[start+len("\n```go\n"):]
	end := strings.Index(md, "\n```\n")
	if end < 0 {
		return "", false
	}
	return md[:end+1], true
}
