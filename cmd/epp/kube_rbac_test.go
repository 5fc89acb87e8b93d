package main

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// TestKubeWithDeployRBAC runs epp with the token of the ServiceAccount that
// deploy/manifests/rbac.yaml creates and binds, and nothing else: every
// Kubernetes feature must work with exactly those grants (pool and pod
// watch, InferenceObjectives, the leader Lease, TokenReview and
// SubjectAccessReview for /metrics). deploy's own tests check the grants are
// no more than that.
func TestKubeWithDeployRBAC(t *testing.T) {
	env := kubetest.Start(t)
	k := newKubeCluster(t, env, 2)
	rbac, err := os.ReadFile(filepath.Join("..", "..", "deploy", "manifests", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := kubetest.DecodeYAML(rbac)
	if err != nil {
		t.Fatal(err)
	}
	const sa = "vllm-llama3-8b-instruct-epp"
	var buf bytes.Buffer
	for _, o := range objs {
		// The ClusterRoleBindings name the namespace the manifests are
		// applied to (default); here that is the test's namespace.
		if subs, ok := o.Object["subjects"].([]any); ok {
			for _, s := range subs {
				if m, ok := s.(map[string]any); ok && m["namespace"] == "default" {
					m["namespace"] = k.ns
				}
			}
		}
		b, err := o.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		buf.WriteString("\n")
	}
	env.Apply(t, nil, k.ns, buf.Bytes())

	k.pod("a", 0, true)
	k.pod("b", 1, true)
	k.pool()
	k.objective("batch", -1)

	kc := kubetest.Kubeconfig(t, env.ServiceAccountConfig(t, k.ns, sa))
	a, _, _, logs := launch(t, k.eppArgs(kc, "--ha-enable-leader-election"))
	eventually(t, 20*time.Second, "SERVING (pool and pods listed, Lease won) with the deploy RBAC", func() (bool, string) {
		s := readiness(t, a.health)
		return s == healthpb.HealthCheckResponse_SERVING, s.String()
	})
	conn := extprocConn(t, a.grpc)
	if d := destinations(t, conn, 10); d[k.dest(0)]+d[k.dest(1)] != 10 {
		t.Fatalf("routed to %v, expected the pool's two pods", d)
	}
	for _, s := range k.servers {
		s.waiting.Store(50)
	}
	eventually(t, 5*time.Second, "the objective's priority (read with the deploy RBAC) sheds", func() (bool, string) {
		c := immediateStatus(t, conn, "batch")
		return c == 429, "status " + strconv.Itoa(c)
	})

	get := func(token string) int { return metricsStatus(t, a.metrics, token) }
	if c := get(""); c != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d, expected 401", c)
	}
	if c := get(env.Token(t, k.ns, sa+"-metrics-reader")); c != http.StatusOK {
		t.Fatalf("/metrics with the metrics-reader token: %d, expected 200 (TokenReview and SubjectAccessReview allowed to the picker)", c)
	}
	logs.mu.Lock()
	text := logs.w.(*bytes.Buffer).String()
	logs.mu.Unlock()
	if strings.Contains(strings.ToLower(text), "forbidden") {
		t.Fatalf("epp logged a permission error with the deploy RBAC:\n%s", text)
	}
}
