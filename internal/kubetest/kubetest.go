// Package kubetest runs a real kube-apiserver and etcd (controller-runtime's
// envtest) for the tests of everything that talks to Kubernetes: the
// InferencePool source, epp's Kubernetes mode, the deploy artifacts. It owns
// finding the binaries (KUBEBUILDER_ASSETS, or the per-machine cache
// scripts/kube-assets.sh fills), installing the CRDs users have (GIE's
// InferencePool v1 from the module fastepp builds against, InferenceObjective
// from GIE v1.5.0, where it last shipped), and the chores tests share:
// namespaces, ServiceAccount tokens, restarting the API server, waiting for
// what a controller converges (Eventually), and the other tools those tests
// run (Command, Helm).
//
// There is no kubelet and no controller-manager: tests write pod status
// themselves, and nothing garbage-collects.
package kubetest

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	kruntime "k8s.io/apimachinery/pkg/runtime"
)

// ObjectiveGVK is GIE's InferenceObjective (v1.5.0; GIE v1.6.0 no longer
// ships it, so it is handled as unstructured everywhere).
var ObjectiveGVK = schema.GroupVersionKind{Group: "inference.networking.x-k8s.io", Version: "v1alpha2", Kind: "InferenceObjective"}

// Scheme knows the core types and InferencePool v1.
func Scheme() *kruntime.Scheme {
	s := kruntime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := giev1.Install(s); err != nil {
		panic(err)
	}
	return s
}

// Env is a running API server.
type Env struct {
	// Config is the admin's (system:masters) connection.
	Config *rest.Config
	// Client is a controller-runtime client on Config with Scheme().
	Client client.Client
	// Clientset is a client-go clientset on Config.
	Clientset kubernetes.Interface

	env *envtest.Environment
}

var (
	assetsOnce sync.Once
	assetsDir  string
	assetsErr  error
)

// Assets returns the directory holding kube-apiserver and etcd:
// $KUBEBUILDER_ASSETS, else the cache scripts/kube-assets.sh fills, which it
// runs (building the binaries once per machine) when they are missing.
func Assets() (string, error) {
	assetsOnce.Do(func() {
		if d := os.Getenv("KUBEBUILDER_ASSETS"); d != "" {
			assetsDir = d
			return
		}
		script := filepath.Join(repoRoot(), "scripts", "kube-assets.sh")
		out, err := Command(time.Hour, nil, "bash", script)
		if err != nil {
			assetsErr = fmt.Errorf("KUBEBUILDER_ASSETS is not set and %v", err)
			return
		}
		assetsDir = strings.TrimSpace(string(out))
	})
	return assetsDir, assetsErr
}

// repoRoot is the module root (this file is internal/kubetest/kubetest.go).
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ModuleDir returns the directory of module path at version ("" = the
// version go.mod selects), downloading it if needed.
func ModuleDir(path, version string) (string, error) {
	arg := path
	if version != "" {
		arg += "@" + version
	}
	out, err := Command(5*time.Minute, nil, "go", "-C", repoRoot(), "mod", "download", "-json", arg)
	if err != nil {
		return "", fmt.Errorf("%v%s", err, out) // the JSON on stdout says why
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal(out, &m); err != nil {
		return "", fmt.Errorf("go mod download %s: %v", arg, err)
	}
	if m.Error != "" || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: %s", arg, m.Error)
	}
	return m.Dir, nil
}

// CRDPaths are the CRD files installed in every Env.
func CRDPaths() ([]string, error) {
	gie, err := ModuleDir("sigs.k8s.io/gateway-api-inference-extension", "")
	if err != nil {
		return nil, err
	}
	gie15, err := ModuleDir("sigs.k8s.io/gateway-api-inference-extension", "v1.5.0")
	if err != nil {
		return nil, err
	}
	return []string{
		filepath.Join(gie, "config", "crd", "bases", "inference.networking.k8s.io_inferencepools.yaml"),
		filepath.Join(gie15, "config", "crd", "bases", "inference.networking.x-k8s.io_inferenceobjectives.yaml"),
	}, nil
}

// Options tune Start.
type Options struct {
	// NoObjectiveCRD leaves InferenceObjective out (a cluster without it).
	NoObjectiveCRD bool
	// NoPoolCRD leaves InferencePool out.
	NoPoolCRD bool
	// ExtraCRDs are more CRD files or directories to install.
	ExtraCRDs []string
}

// Start runs an API server for the test and stops it at cleanup.
func Start(t testing.TB) *Env { return StartWith(t, Options{}) }

// StartWith is Start with options.
func StartWith(t testing.TB, o Options) *Env {
	t.Helper()
	dir, err := Assets()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	crds, err := CRDPaths()
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	if o.NoObjectiveCRD {
		crds = slices.DeleteFunc(crds, func(p string) bool { return strings.Contains(p, "inferenceobjectives") })
	}
	if o.NoPoolCRD {
		crds = slices.DeleteFunc(crds, func(p string) bool { return strings.Contains(p, "inferencepools") })
	}
	crds = append(crds, o.ExtraCRDs...)
	env := &envtest.Environment{
		BinaryAssetsDirectory: dir,
		CRDDirectoryPaths:     crds,
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}
	// A fixed certificate directory keeps the serving CA across a restart
	// (envtest regenerates certificates in a directory it made itself).
	env.ControlPlane.GetAPIServer().CertDir = t.TempDir()
	env.ControlPlane.GetAPIServer().StartTimeout = time.Minute
	// kube-apiserver drains watches for tens of seconds on SIGTERM; after
	// this it is killed, which for a test is the same as a crash.
	env.ControlPlane.GetAPIServer().StopTimeout = 5 * time.Second
	env.ControlPlane.Etcd = &envtest.Etcd{StartTimeout: time.Minute}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("kubetest: starting kube-apiserver and etcd from %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
			t.Logf("kubetest: stopping the API server: %v", err)
		}
	})
	cfg.QPS, cfg.Burst = 200, 400
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Config: cfg, Client: c, Clientset: cs, env: env}
}

// StopAPIServer stops kube-apiserver (etcd keeps the data).
func (e *Env) StopAPIServer(t testing.TB) {
	t.Helper()
	if err := e.env.ControlPlane.APIServer.Stop(); err != nil && !strings.Contains(err.Error(), "timeout waiting for process") {
		t.Fatalf("kubetest: stopping kube-apiserver: %v", err)
	}
}

// StartAPIServer starts it again on the same address with the same
// certificates, so existing clients reconnect.
func (e *Env) StartAPIServer(t testing.TB) {
	t.Helper()
	if err := e.env.ControlPlane.APIServer.Start(); err != nil {
		t.Fatalf("kubetest: restarting kube-apiserver: %v", err)
	}
}

// Namespace creates a namespace with a generated name and returns it.
func (e *Env) Namespace(t testing.TB) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "t-"}}
	if err := e.Client.Create(context.Background(), ns); err != nil {
		t.Fatalf("kubetest: creating a namespace: %v", err)
	}
	return ns.Name
}

// Kubeconfig writes cfg as a kubeconfig file in a temp directory and returns
// its path (for binaries and flags that take --kubeconfig).
func Kubeconfig(t testing.TB, cfg *rest.Config) string {
	t.Helper()
	type cluster struct {
		Server string `json:"server"`
		CAData []byte `json:"certificate-authority-data,omitempty"`
	}
	type user struct {
		Token    string `json:"token,omitempty"`
		CertData []byte `json:"client-certificate-data,omitempty"`
		KeyData  []byte `json:"client-key-data,omitempty"`
	}
	kc := map[string]any{
		"apiVersion":      "v1",
		"kind":            "Config",
		"clusters":        []any{map[string]any{"name": "envtest", "cluster": cluster{Server: cfg.Host, CAData: cfg.CAData}}},
		"users":           []any{map[string]any{"name": "envtest", "user": user{Token: cfg.BearerToken, CertData: cfg.CertData, KeyData: cfg.KeyData}}},
		"contexts":        []any{map[string]any{"name": "envtest", "context": map[string]string{"cluster": "envtest", "user": "envtest"}}},
		"current-context": "envtest",
	}
	b, err := json.Marshal(kc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// ServiceAccountConfig returns a connection authenticated as the
// ServiceAccount ns/name (created if missing), with a token from the
// TokenRequest API, as a pod would have.
func (e *Env) ServiceAccountConfig(t testing.TB, ns, name string) *rest.Config {
	t.Helper()
	ctx := context.Background()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	if err := e.Client.Create(ctx, sa); err != nil && !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("kubetest: creating ServiceAccount %s/%s: %v", ns, name, err)
	}
	exp := int64(3600)
	tr, err := e.Clientset.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name,
		&authnv1.TokenRequest{Spec: authnv1.TokenRequestSpec{ExpirationSeconds: &exp}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("kubetest: token for %s/%s: %v", ns, name, err)
	}
	return &rest.Config{
		Host:            e.Config.Host,
		BearerToken:     tr.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: e.Config.CAData},
		QPS:             e.Config.QPS, Burst: e.Config.Burst,
	}
}

// Token returns a fresh token for the ServiceAccount ns/name (created if
// missing).
func (e *Env) Token(t testing.TB, ns, name string) string {
	return e.ServiceAccountConfig(t, ns, name).BearerToken
}

// Eventually polls f until it returns nil, failing the test with what and
// f's last error after 30 s.
func Eventually(t testing.TB, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: %v", what, err)
}
