package chart_test

import (
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestDockerfile checks, without Docker, that the image is built with no
// registry and stays non-root: the Dockerfile is FROM scratch only, over the
// context that tools/image/build.sh prepares (static binary, CA bundle,
// passwd/group with 65532), and `make image` builds the binary static with
// its version. make e2e-kind builds and runs the image for real.
func TestDockerfile(t *testing.T) {
	df := string(readFile(t, repoFile(t, "Dockerfile")))
	froms := regexp.MustCompile(`(?m)^FROM .*$`).FindAllString(df, -1)
	if len(froms) != 1 || froms[0] != "FROM scratch" {
		t.Errorf("want one stage FROM scratch (no registry), got %q", froms)
	}
	if !regexp.MustCompile(`(?m)^USER 65532:65532$`).MatchString(df) {
		t.Error("the image does not run as 65532")
	}
	for _, want := range []string{"COPY rootfs/ /", "COPY --chown=65532:65532 data/ /var/lib/vectis/", `ENTRYPOINT ["/usr/local/bin/vectis"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("the Dockerfile lacks %q", want)
		}
	}
	labels := regexp.MustCompile(`(org\.opencontainers\.image\.[a-z.]+)=`).FindAllStringSubmatch(df, -1)
	have := map[string]bool{}
	for _, l := range labels {
		have[l[1]] = true
	}
	for _, want := range []string{"title", "description", "source", "version", "revision", "created", "licenses"} {
		if !have["org.opencontainers.image."+want] {
			t.Errorf("missing OCI label org.opencontainers.image.%s", want)
		}
	}

	build := string(readFile(t, repoFile(t, "tools/image/build.sh")))
	for _, want := range []string{
		`install -m 0755 "$bin" "$r/usr/local/bin/vectis"`,
		`"$r/etc/ssl/certs/ca-certificates.crt"`,
		"nonroot:x:65532:65532:",
		"nonroot:x:65532:",
		"DOCKER_BUILDKIT=0 docker build",
	} {
		if !strings.Contains(build, want) {
			t.Errorf("tools/image/build.sh lacks %q", want)
		}
	}

	mk := string(readFile(t, repoFile(t, "Makefile")))
	for _, want := range []string{"CGO_ENABLED=0 $(GO) build -trimpath", "-X main.version=$(VERSION)", "./tools/image/build.sh $(BIN) $(IMAGE) $(VERSION)"} {
		if !strings.Contains(mk, want) {
			t.Errorf("the Makefile lacks %q", want)
		}
	}
	// -X main.version needs that variable in package main.
	root := string(readFile(t, repoFile(t, "cmd/vectis/root.go")))
	if !regexp.MustCompile(`(?m)^var version = `).MatchString(root) {
		t.Error("cmd/vectis has no `var version` for -X main.version")
	}
}
