package controller_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/fastepp/fastepp/controller"
	"github.com/fastepp/fastepp/internal/kubetest"
)

// repoRoot is the module root (tests run in controller/).
const repoRoot = ".."

// testImage is the picker image the tests' controller defaults to.
const testImage = "example.com/fastepp/epp:test"

// server is a real API server with the controller running on it as the
// ServiceAccount deploy/controller/rbac.yaml grants, so every test also
// checks that those grants are enough.
type server struct {
	env *kubetest.Env
	// c is the admin's client, with the controller's scheme.
	c client.Client
}

// crdPaths are the CRDs the tests install besides kubetest's (InferencePool,
// InferenceObjective): ours, Gateway API's standard Gateway, GatewayClass
// and HTTPRoute from the gateway-api module, and the AIGatewayRoute
// stand-in.
func crdPaths(t testing.TB) []string {
	t.Helper()
	gw, err := kubetest.ModuleDir("sigs.k8s.io/gateway-api", "")
	if err != nil {
		t.Fatal(err)
	}
	std := filepath.Join(gw, "config", "crd", "standard")
	return []string{
		filepath.Join(repoRoot, "deploy", "controller", "crds"),
		filepath.Join(std, "gateway.networking.k8s.io_gatewayclasses.yaml"),
		filepath.Join(std, "gateway.networking.k8s.io_gateways.yaml"),
		filepath.Join(std, "gateway.networking.k8s.io_httproutes.yaml"),
		filepath.Join("testdata", "aigatewayroute-crd.yaml"),
	}
}

// startServer starts the API server and the controller; both stop at the
// test's end.
func startServer(t *testing.T) *server {
	t.Helper()
	env := kubetest.StartWith(t, kubetest.Options{ExtraCRDs: crdPaths(t)})
	scheme, err := controller.Scheme()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(env.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"namespace.yaml", "rbac.yaml", "deployment.yaml"} {
		env.ApplyFile(t, admin, "", filepath.Join(repoRoot, "deploy", "controller", f))
	}
	cfg := env.ServiceAccountConfig(t, "fastepp-system", "fastepp-controller")
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "fastepp-controller.fastepp.io",
		LeaderElectionNamespace: "fastepp-system",
		LeaseDuration:           ptr(15 * time.Second),
		RenewDeadline:           ptr(10 * time.Second),
		RetryPeriod:             ptr(time.Second),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := controller.Setup(mgr, testImage); err != nil {
		t.Fatal(err)
	}
	if f := os.Getenv("CONTROLLER_TEST_LOG"); f != "" {
		out, err := os.Create(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { out.Close() })
		ctrl.SetLogger(logr.FromSlogHandler(slog.NewTextHandler(out, nil)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("controller: %v", err)
		}
	})
	return &server{env: env, c: admin}
}

// eventually polls f until it returns nil, failing the test with f's last
// error after the deadline.
var eventually = kubetest.Eventually

// get reads an object into o (key from o's name and namespace).
func (s *server) get(o client.Object) error {
	return s.c.Get(context.Background(), client.ObjectKeyFromObject(o), o)
}

// metricsAuthRoleExists checks the controller's install created the shared
// ClusterRole each picker binds.
func (s *server) metricsAuthRoleExists(t testing.TB) {
	t.Helper()
	cr := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: controller.MetricsAuthClusterRole}}
	if err := s.get(cr); err != nil {
		t.Fatalf("deploy/controller/rbac.yaml: expected ClusterRole %s: %v", controller.MetricsAuthClusterRole, err)
	}
}

func ptr[T any](v T) *T { return &v }

type clientObject = client.Object
