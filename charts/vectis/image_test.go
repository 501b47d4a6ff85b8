package chart_test

import (
	"bufio"
	"bytes"
	"context"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestDockerfile cannot build the image (no Docker engine here); it checks
// that the Dockerfile agrees with the module it builds and stays non-root.
func TestDockerfile(t *testing.T) {
	df := string(readFile(t, repoFile(t, "Dockerfile")))

	goMod := string(readFile(t, repoFile(t, "go.mod")))
	goLine := regexp.MustCompile(`(?m)^go (\d+\.\d+)`).FindStringSubmatch(goMod)
	argLine := regexp.MustCompile(`(?m)^ARG GO_VERSION=(\S+)$`).FindStringSubmatch(df)
	if goLine == nil || argLine == nil || goLine[1] != argLine[1] {
		t.Errorf("Dockerfile GO_VERSION %v does not match go.mod's go %v", argLine, goLine)
	}
	if !strings.Contains(df, "FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build") {
		t.Error("the build stage is not golang:${GO_VERSION}")
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "-X main.version=${VERSION}", "./cmd/vectis"} {
		if !strings.Contains(df, want) {
			t.Errorf("the build command lacks %q", want)
		}
	}
	// -X main.version needs that variable in package main.
	root := string(readFile(t, repoFile(t, "cmd/vectis/root.go")))
	if !regexp.MustCompile(`(?m)^var version = `).MatchString(root) {
		t.Error("cmd/vectis has no `var version` for -X main.version")
	}

	froms := regexp.MustCompile(`(?m)^FROM .*$`).FindAllString(df, -1)
	if len(froms) != 2 || !strings.HasPrefix(froms[1], "FROM gcr.io/distroless/static") {
		t.Errorf("want a builder and a distroless static runtime stage, got %q", froms)
	}
	runtime := df[strings.LastIndex(df, "\nFROM "):]
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).MatchString(runtime) {
		t.Error("the runtime stage does not run as 65532")
	}
	labels := regexp.MustCompile(`(org\.opencontainers\.image\.[a-z.]+)=`).FindAllStringSubmatch(runtime, -1)
	have := map[string]bool{}
	for _, l := range labels {
		have[l[1]] = true
	}
	for _, want := range []string{"title", "description", "source", "version", "revision", "created", "licenses"} {
		if !have["org.opencontainers.image."+want] {
			t.Errorf("missing OCI label org.opencontainers.image.%s", want)
		}
	}
	if !strings.Contains(runtime, `ENTRYPOINT ["/usr/local/bin/vectis"]`) {
		t.Error("the entrypoint is not the vectis binary")
	}
}

// TestDockerignoreKeepsTheBuild: no package that cmd/vectis compiles, nor
// go.mod/go.sum, is left out of the build context.
func TestDockerignoreKeepsTheBuild(t *testing.T) {
	root := repoFile(t, ".")
	var patterns []string
	sc := bufio.NewScanner(bytes.NewReader(readFile(t, filepath.Join(root, ".dockerignore"))))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line != "" && !strings.HasPrefix(line, "#") {
			patterns = append(patterns, strings.TrimSuffix(line, "/"))
		}
	}
	ignored := func(rel string) bool {
		for _, p := range patterns {
			// A pattern matches the path or one of its parent directories.
			for dir := rel; dir != "." && dir != "/"; dir = filepath.Dir(dir) {
				if ok, _ := filepath.Match(p, dir); ok {
					return true
				}
			}
		}
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./cmd/vectis")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dirs := strings.Fields(string(out))
	if len(dirs) == 0 {
		t.Fatal("go list found no package of the module under cmd/vectis")
	}
	for _, rel := range []string{"go.mod", "go.sum"} {
		if ignored(rel) {
			t.Errorf(".dockerignore excludes %s", rel)
		}
	}
	for _, d := range dirs {
		rel, err := filepath.Rel(root, d)
		if err != nil {
			t.Fatal(err)
		}
		if ignored(rel) {
			t.Errorf(".dockerignore excludes %s, which cmd/vectis compiles", rel)
		}
	}
}
