package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// modelServer is a metrics page on loopback whose queue length the test sets.
type modelServer struct {
	port    int
	waiting atomic.Int64
}

func newModelServer(t *testing.T) *modelServer {
	m := &modelServer{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, metricsPage, m.waiting.Load())
	}))
	t.Cleanup(srv.Close)
	_, p, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	m.port, _ = strconv.Atoi(p)
	return m
}

// kubeCluster is a namespace on a real API server where the test plays the
// kubelet: every pod gets IP 127.0.0.1 and one "active port" (GIE's
// inference.networking.k8s.io/active-ports annotation) of the pool's target
// ports, so each pod is one loopback model server.
type kubeCluster struct {
	t       *testing.T
	env     *kubetest.Env
	ns      string
	servers []*modelServer
}

func newKubeCluster(t *testing.T, env *kubetest.Env, servers int) *kubeCluster {
	k := &kubeCluster{t: t, env: env, ns: env.Namespace(t)}
	for range servers {
		k.servers = append(k.servers, newModelServer(t))
	}
	return k
}

// pod creates pod name serving on server i, Ready or not.
func (k *kubeCluster) pod(name string, i int, ready bool) *corev1.Pod {
	k.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: name, Labels: map[string]string{"app": "vllm"},
			Annotations: map[string]string{"inference.networking.k8s.io/active-ports": strconv.Itoa(k.servers[i].port)}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "vllm", Image: "vllm"}}},
	}
	if err := k.env.Client.Create(context.Background(), p); err != nil {
		k.t.Fatal(err)
	}
	k.setReady(p, ready)
	return p
}

func (k *kubeCluster) setReady(p *corev1.Pod, ready bool) {
	k.t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.Now()}}}
	if err := k.env.Client.Status().Update(context.Background(), p); err != nil {
		k.t.Fatal(err)
	}
}

// pool creates the InferencePool "llm" over every server's port.
func (k *kubeCluster) pool() *giev1.InferencePool {
	k.t.Helper()
	p := &giev1.InferencePool{ObjectMeta: metav1.ObjectMeta{Namespace: k.ns, Name: "llm"}}
	p.Spec.Selector.MatchLabels = map[giev1.LabelKey]giev1.LabelValue{"app": "vllm"}
	for _, s := range k.servers {
		p.Spec.TargetPorts = append(p.Spec.TargetPorts, giev1.Port{Number: giev1.PortNumber(s.port)})
	}
	p.Spec.EndpointPickerRef = &giev1.EndpointPickerRef{Name: "llm-epp", Port: &giev1.Port{Number: 9002}}
	if err := k.env.Client.Create(context.Background(), p); err != nil {
		k.t.Fatal(err)
	}
	return p
}

// objective creates the InferenceObjective name for the pool "llm".
func (k *kubeCluster) objective(name string, priority int64) {
	k.t.Helper()
	obj := &unstructured.Unstructured{}
	obj.SetGroupVersionKind(kubetest.ObjectiveGVK)
	obj.SetNamespace(k.ns)
	obj.SetName(name)
	obj.Object["spec"] = map[string]any{"priority": priority, "poolRef": map[string]any{"name": "llm"}}
	if err := k.env.Client.Create(context.Background(), obj); err != nil {
		k.t.Fatal(err)
	}
}

func (k *kubeCluster) dest(i int) string { return "127.0.0.1:" + strconv.Itoa(k.servers[i].port) }

// eppArgs are the flags of an epp in Kubernetes mode on loopback.
func (k *kubeCluster) eppArgs(kubeconfig string, extra ...string) []string {
	return append([]string{
		"--pool-name", "llm", "--pool-namespace", k.ns, "--kubeconfig", kubeconfig,
		"--bind-address", "127.0.0.1", "--grpc-port", "0", "--grpc-health-port", "0", "--metrics-port", "0",
		"--secure-serving=false", "--refresh-metrics-interval", "20ms", "--shutdown-grace-period", "1s", "--tracing=false",
	}, extra...)
}

// readiness returns the health server's "readiness" status.
func readiness(t *testing.T, addr string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	return healthOf(t, addr, "readiness")
}

// healthOf returns the health server's status for service.
func healthOf(t *testing.T, addr, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return healthpb.HealthCheckResponse_UNKNOWN
	}
	return r.Status
}

// eventually polls cond every 20 ms until it holds or within passes.
func eventually(t *testing.T, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v; last seen: %s", what, within, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// destinations routes n requests and counts where they went.
func destinations(t *testing.T, conn *grpc.ClientConn, n int) map[string]int {
	out := map[string]int{}
	for i := range n {
		out[routeOnce(t, conn, fmt.Sprintf(`{"model":"m","prompt":"request %d"}`, i))]++
	}
	return out
}

func extprocConn(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestKubePool runs epp against a real API server: readiness waits for the
// pool; pods joining and leaving (NotReady, new Ready) change routing within
// 2 s; an InferenceObjective's priority sheds while saturated; the pool
// deleted → NOT_SERVING and 503, and back; the API server stopped → routing
// goes on on the last known pool, and after its restart pod and pool changes
// flow again (each watch reconnects with client-go's backoff: 0.8 s doubling
// to 30 s, jittered; measured ~28 s here after ~10 s down, bounded at 60 s).
func TestKubePool(t *testing.T) {
	env := kubetest.Start(t)
	k := newKubeCluster(t, env, 3)
	kc := kubetest.Kubeconfig(t, env.Config)
	a, _, _, _ := launch(t, k.eppArgs(kc, "--metrics-endpoint-auth=false"))

	if s := readiness(t, a.health); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("readiness with no InferencePool yet = %v, expected NOT_SERVING", s)
	}
	pool := k.pool()
	// GIE's chart probes "inference-extension" for liveness too: like GIE,
	// SERVING once the pool is synced, before any pod is Ready.
	eventually(t, 5*time.Second, "inference-extension SERVING once the pool exists, without pods", func() (bool, string) {
		s := healthOf(t, a.health, "inference-extension")
		return s == healthpb.HealthCheckResponse_SERVING, s.String()
	})
	if s := readiness(t, a.health); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("readiness with an empty pool = %v, expected NOT_SERVING", s)
	}
	podA := k.pod("a", 0, true)
	k.pod("b", 1, true)
	eventually(t, 5*time.Second, "readiness SERVING after the pool and its pods appear", func() (bool, string) {
		s := readiness(t, a.health)
		return s == healthpb.HealthCheckResponse_SERVING, s.String()
	})
	conn := extprocConn(t, a.grpc)
	// Readiness needs one endpoint; the second pod may join a moment later.
	eventually(t, 2*time.Second, "requests spread over both Ready pods", func() (bool, string) {
		got := destinations(t, conn, 20)
		return len(got) == 2 && got[k.dest(0)] > 0 && got[k.dest(1)] > 0, fmt.Sprint(got)
	})

	t.Run("NotReady pod gets no request within 2s", func(t *testing.T) {
		k.setReady(podA, false)
		eventually(t, 2*time.Second, "no request to the NotReady pod", func() (bool, string) {
			d := destinations(t, conn, 10)
			return d[k.dest(0)] == 0, fmt.Sprint(d)
		})
	})
	t.Run("new Ready pod gets requests within 2s", func(t *testing.T) {
		k.pod("c", 2, true)
		eventually(t, 2*time.Second, "requests to the new pod", func() (bool, string) {
			d := destinations(t, conn, 10)
			return d[k.dest(2)] > 0, fmt.Sprint(d)
		})
	})
	t.Run("InferenceObjective priority sheds when saturated", func(t *testing.T) {
		for _, s := range k.servers {
			s.waiting.Store(50)
		}
		defer func() {
			for _, s := range k.servers {
				s.waiting.Store(0)
			}
		}()
		// Before the objective exists, "batch" is unknown: priority 0, served.
		eventually(t, 2*time.Second, "saturated pool seen", func() (bool, string) {
			c := immediateStatus(t, conn, "batch")
			return c == 0, "status " + strconv.Itoa(c)
		})
		k.objective("batch", -1)
		eventually(t, 2*time.Second, "sheddable objective gets 429", func() (bool, string) {
			c := immediateStatus(t, conn, "batch")
			return c == 429, "status " + strconv.Itoa(c)
		})
	})
	t.Run("pool deleted: NOT_SERVING and 503", func(t *testing.T) {
		if err := env.Client.Delete(context.Background(), pool); err != nil {
			t.Fatal(err)
		}
		eventually(t, 2*time.Second, "readiness NOT_SERVING after the pool was deleted", func() (bool, string) {
			s := readiness(t, a.health)
			return s == healthpb.HealthCheckResponse_NOT_SERVING, s.String()
		})
		if c := immediateStatus(t, conn, ""); c != 503 {
			t.Fatalf("a request with the pool deleted got %d, expected 503", c)
		}
	})
	t.Run("pool created again: SERVING", func(t *testing.T) {
		pool = k.pool()
		eventually(t, 2*time.Second, "readiness SERVING after the pool came back", func() (bool, string) {
			s := readiness(t, a.health)
			return s == healthpb.HealthCheckResponse_SERVING, s.String()
		})
	})
	t.Run("API server down: routing goes on; back: changes flow", func(t *testing.T) {
		env.StopAPIServer(t)
		d := destinations(t, conn, 10)
		if d[k.dest(1)]+d[k.dest(2)] != 10 {
			t.Fatalf("with the API server down requests went to %v, expected the last known pods", d)
		}
		if s := readiness(t, a.health); s != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("readiness with the API server down = %v, expected SERVING on the last known pool", s)
		}
		env.StartAPIServer(t)
		k.setReady(podA, true)
		eventually(t, 60*time.Second, "pod a routed again after the API server restarted", func() (bool, string) {
			d := destinations(t, conn, 10)
			return d[k.dest(0)] > 0, fmt.Sprint(d)
		})
		// Every watch is back (each reconnects with its own backoff).
		if err := env.Client.Delete(context.Background(), pool); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "pool deletion seen after the API server restarted", func() (bool, string) {
			s := readiness(t, a.health)
			return s == healthpb.HealthCheckResponse_NOT_SERVING, s.String()
		})
	})
}

// TestKubeLeaderElection: two replicas with --ha-enable-leader-election;
// exactly one reports ready; when it stops (SIGTERM releases the Lease) the
// other takes over.
func TestKubeLeaderElection(t *testing.T) {
	env := kubetest.Start(t)
	k := newKubeCluster(t, env, 1)
	k.pod("a", 0, true)
	k.pool()
	kc := kubetest.Kubeconfig(t, env.Config)
	args := k.eppArgs(kc, "--ha-enable-leader-election", "--metrics-endpoint-auth=false")
	a1, stop1, done1, _ := launch(t, args)
	a2, stop2, done2, _ := launch(t, args)
	var leader, follower addrs
	var stopLeader context.CancelFunc
	var doneLeader *exit
	eventually(t, 20*time.Second, "exactly one replica SERVING", func() (bool, string) {
		s1, s2 := readiness(t, a1.health), readiness(t, a2.health)
		switch {
		case s1 == healthpb.HealthCheckResponse_SERVING && s2 == healthpb.HealthCheckResponse_NOT_SERVING:
			leader, follower, stopLeader, doneLeader = a1, a2, stop1, done1
			return true, ""
		case s2 == healthpb.HealthCheckResponse_SERVING && s1 == healthpb.HealthCheckResponse_NOT_SERVING:
			leader, follower, stopLeader, doneLeader = a2, a1, stop2, done2
			return true, ""
		}
		return false, s1.String() + " " + s2.String()
	})
	_ = leader
	// Stay stable: the follower must not report ready while the leader runs.
	for range 10 {
		if s := readiness(t, follower.health); s != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Fatalf("follower readiness = %v while the leader runs, expected NOT_SERVING", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The follower still answers ext_proc (readiness only gates the gateway).
	if d := destinations(t, extprocConn(t, follower.grpc), 2); d[k.dest(0)] != 2 {
		t.Fatalf("follower routed to %v, expected the pool's pod", d)
	}
	stopLeader()
	select {
	case <-doneLeader.c:
	case <-time.After(10 * time.Second):
		t.Fatal("leader did not stop")
	}
	eventually(t, 20*time.Second, "the follower takes over", func() (bool, string) {
		s := readiness(t, follower.health)
		return s == healthpb.HealthCheckResponse_SERVING, s.String()
	})
}

// TestKubeMetricsAuth: in Kubernetes mode /metrics is authenticated by
// default (GIE's --metrics-endpoint-auth=true): no token → 401, a token
// without RBAC for /metrics → 403, an authorised ServiceAccount → 200.
func TestKubeMetricsAuth(t *testing.T) {
	env := kubetest.Start(t)
	k := newKubeCluster(t, env, 1)
	k.pod("a", 0, true)
	k.pool()
	a, _, _, _ := launch(t, k.eppArgs(kubetest.Kubeconfig(t, env.Config)))
	get := func(token string) int { return metricsStatus(t, a.metrics, token) }
	if c := get(""); c != http.StatusUnauthorized {
		t.Fatalf("/metrics without a token: %d, expected 401", c)
	}
	if c := get(env.Token(t, k.ns, "nobody")); c != http.StatusForbidden {
		t.Fatalf("/metrics with a token that may not read it: %d, expected 403", c)
	}
	// A second identity, granted before its first scrape (denials are
	// cached for 30 s, as in controller-runtime's filter).
	token := env.Token(t, k.ns, "prometheus")
	env.Apply(t, nil, k.ns, []byte(`
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: `+k.ns+`-metrics-reader}
rules: [{nonResourceURLs: ["/metrics"], verbs: ["get"]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: `+k.ns+`-metrics-reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: `+k.ns+`-metrics-reader}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: `+k.ns+`}]
`))
	eventually(t, 5*time.Second, "/metrics served to the authorised ServiceAccount", func() (bool, string) {
		c := get(token)
		return c == http.StatusOK, strconv.Itoa(c)
	})
}

// metricsStatus GETs /metrics with the bearer token ("" = none) and returns
// the status code.
func metricsStatus(t *testing.T, addr, token string) int {
	t.Helper()
	req, err := http.NewRequest("GET", "http://"+addr+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
