package controller_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestGeneratedUpToDate: deploy/controller/crds and the deepcopy functions
// are what controller-gen (tools/controllergen's pinned release) makes from
// controller/api/v1alpha1 now. On failure run `go generate ./controller/...`.
func TestGeneratedUpToDate(t *testing.T) {
	dir := t.TempDir()
	cg := filepath.Join(dir, "controller-gen")
	if _, err := command(10*time.Minute, nil, "go", "build", "-C", filepath.Join(repoRoot, "tools", "controllergen"), "-o", cg, "sigs.k8s.io/controller-tools/cmd/controller-gen"); err != nil {
		t.Fatal(err)
	}
	crds, obj := filepath.Join(dir, "crds"), filepath.Join(dir, "obj")
	if _, err := command(5*time.Minute, nil, cg, "object", "crd:maxDescLen=400", "paths="+filepath.Join(repoRoot, "controller", "api")+"/...",
		"output:crd:artifacts:config="+crds, "output:object:dir="+obj); err != nil {
		t.Fatal(err)
	}
	pairs := map[string]string{filepath.Join(obj, "zz_generated.deepcopy.go"): filepath.Join(repoRoot, "controller", "api", "v1alpha1", "zz_generated.deepcopy.go")}
	gen, err := os.ReadDir(crds)
	if err != nil {
		t.Fatal(err)
	}
	have, err := filepath.Glob(filepath.Join(repoRoot, "deploy", "controller", "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(gen) != len(have) {
		t.Errorf("deploy/controller/crds: expected %d generated files, found %d", len(gen), len(have))
	}
	for _, e := range gen {
		pairs[filepath.Join(crds, e.Name())] = filepath.Join(repoRoot, "deploy", "controller", "crds", e.Name())
	}
	for fresh, checked := range pairs {
		a, err := os.ReadFile(fresh)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(checked)
		if err != nil {
			t.Errorf("%s: expected the generated file: %v (run go generate ./controller/...)", checked, err)
			continue
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s is stale: it differs from controller-gen's output (run go generate ./controller/...)", checked)
		}
	}
}
