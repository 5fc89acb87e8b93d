// Package deploy_test checks the deploy artifacts against the real things
// they meet: a kube-apiserver (internal/kubetest) for the manifests and the
// rendered Helm chart, the API server's RBAC authorizer for the grants, the
// epp binary for the configs and arguments they pass, and the picker's
// /metrics for the dashboard.
//
// helm is built from tools/helm by scripts/helm.sh (once per machine, cached)
// unless $HELM names one.
package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// repoRoot is the module root (tests run in deploy/).
const repoRoot = ".."

const (
	poolName = "vllm-llama3-8b-instruct"
	eppName  = poolName + "-epp"
	chartDir = "charts/inferencepool"
)

// tmpDir holds what the tests share (the epp binary, helm's home); TestMain
// removes it.
var tmpDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "fastepp-deploy-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tmpDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// run runs a command with a deadline and returns its stdout; a failure
// reports the command and its stderr.
func run(t testing.TB, timeout time.Duration, env []string, name string, args ...string) []byte {
	t.Helper()
	out, err := runErr(timeout, env, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func runErr(timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	return kubetest.Command(timeout, env, name, args...)
}

// helm returns the helm binary ($HELM, else scripts/helm.sh's build).
func helm(t testing.TB) string {
	t.Helper()
	h, err := kubetest.Helm()
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// helmTemplate renders the chart as release in ns with the values YAML
// (and more helm arguments).
func helmTemplate(t testing.TB, release, ns, values string, args ...string) []byte {
	t.Helper()
	out, err := helmTemplateErr(t, release, ns, values, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func helmTemplateErr(t testing.TB, release, ns, values string, args ...string) ([]byte, error) {
	t.Helper()
	h := helm(t)
	// Not under t.TempDir(): helm splits -f on commas, and subtest names
	// have them.
	f, err := os.CreateTemp(tmpDir, "values-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vf := f.Name()
	_, err = f.WriteString(values)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(tmpDir, "helm-home")
	env := kubetest.HelmEnv(home)
	return runErr(time.Minute, env, h, append([]string{"template", release, chartDir, "--namespace", ns, "-f", vf}, args...)...)
}

var (
	eppOnce sync.Once
	eppPath string
	eppErr  error
)

// eppVersion is the version the test build of epp is stamped with.
const eppVersion = "v0.0.0-deploytest"

// eppBinary builds ./cmd/epp as the Dockerfile does: static, CGO-free,
// trimmed and stripped.
func eppBinary(t testing.TB) string {
	t.Helper()
	eppOnce.Do(func() {
		p := filepath.Join(tmpDir, "epp")
		_, eppErr = runErr(5*time.Minute, []string{"CGO_ENABLED=0"}, "go", "build", "-C", repoRoot, "-trimpath", "-buildvcs=false",
			"-ldflags", "-s -w -X github.com/fastepp/fastepp/version.Version="+eppVersion, "-o", p, "./cmd/epp")
		eppPath = p
	})
	if eppErr != nil {
		t.Fatal(eppErr)
	}
	return eppPath
}

// decode splits YAML into objects.
func decode(t testing.TB, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := kubetest.DecodeYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// find returns the object of that kind and name, failing the test when
// there is none.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("no %s %q among %s", kind, name, inventory(objs))
	return nil
}

// inventory lists "Kind/name" of each object, sorted as given.
func inventory(objs []*unstructured.Unstructured) string {
	var s []string
	for _, o := range objs {
		s = append(s, o.GetKind()+"/"+o.GetName())
	}
	return strings.Join(s, ", ")
}

// kinds counts the objects of each kind.
func kinds(objs []*unstructured.Unstructured) map[string]int {
	m := map[string]int{}
	for _, o := range objs {
		m[o.GetKind()]++
	}
	return m
}

// deployment converts the Deployment named name to its typed form.
func deployment(t testing.TB, objs []*unstructured.Unstructured, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := fromUnstructured(find(t, objs, "Deployment", name), &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// encode joins objects into one YAML (JSON) stream for kubetest.Apply.
func encode(t testing.TB, objs []*unstructured.Unstructured) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, o := range objs {
		b, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// fromUnstructured converts u to a typed object.
func fromUnstructured(u *unstructured.Unstructured, into any) error {
	return runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, into)
}
