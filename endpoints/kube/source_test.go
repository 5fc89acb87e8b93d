package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"

	"github.com/fastepp/fastepp/endpoints"
	"github.com/fastepp/fastepp/internal/kubetest"
)

// recorder keeps the last list a Source reported.
type recorder struct {
	mu    sync.Mutex
	last  []string
	calls int
}

func (r *recorder) update(ts []endpoints.Target) {
	var out []string
	for _, t := range ts {
		out = append(out, t.Name+"="+t.HostPort())
	}
	r.mu.Lock()
	r.last, r.calls = out, r.calls+1
	r.mu.Unlock()
}

func (r *recorder) get() ([]string, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.last), r.calls
}

// waitList waits up to 2 s (the bound for a pod change to reach
// routing) for the reported list to equal want.
func (r *recorder) waitList(t *testing.T, what string, want ...string) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, calls := r.get()
		if calls > 0 && slices.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: expected endpoints %v within 2s, found %v", what, want, got)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// fixture is a namespace on a real API server with helpers to play the
// kubelet's part (pod status).
type fixture struct {
	t   *testing.T
	env *kubetest.Env
	ns  string
	ctx context.Context
}

func newFixture(t *testing.T, env *kubetest.Env) *fixture {
	return &fixture{t: t, env: env, ns: env.Namespace(t), ctx: context.Background()}
}

// pod creates a pod with labels and, when ip is not empty, a status with
// that IP and Ready = ready.
func (f *fixture) pod(name string, lbls map[string]string, ip string, ready bool) *corev1.Pod {
	f.t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name, Labels: lbls},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "vllm", Image: "vllm"}}},
	}
	if err := f.env.Client.Create(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
	if ip != "" {
		f.setStatus(p, ip, ready)
	}
	return p
}

func (f *fixture) setStatus(p *corev1.Pod, ip string, ready bool) {
	f.t.Helper()
	st := corev1.ConditionFalse
	if ready {
		st = corev1.ConditionTrue
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st, LastTransitionTime: metav1.Now()}},
	}
	if err := f.env.Client.Status().Update(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) pool(name string, sel map[string]string, ports ...int32) *giev1.InferencePool {
	f.t.Helper()
	p := &giev1.InferencePool{ObjectMeta: metav1.ObjectMeta{Namespace: f.ns, Name: name}}
	setPoolSpec(p, sel, ports...)
	if err := f.env.Client.Create(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
	return p
}

func setPoolSpec(p *giev1.InferencePool, sel map[string]string, ports ...int32) {
	p.Spec.Selector.MatchLabels = map[giev1.LabelKey]giev1.LabelValue{}
	for k, v := range sel {
		p.Spec.Selector.MatchLabels[giev1.LabelKey(k)] = giev1.LabelValue(v)
	}
	p.Spec.TargetPorts = nil
	for _, n := range ports {
		p.Spec.TargetPorts = append(p.Spec.TargetPorts, giev1.Port{Number: giev1.PortNumber(n)})
	}
	p.Spec.EndpointPickerRef = &giev1.EndpointPickerRef{Name: "epp", Port: &giev1.Port{Number: 9002}}
}

func (f *fixture) run(s *Source) *recorder {
	f.t.Helper()
	s.Config, s.Namespace = f.env.Config, f.ns
	ctx, cancel := context.WithCancel(context.Background())
	r := &recorder{}
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, r.update) }()
	f.t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				f.t.Errorf("Run: %v", err)
			}
		case <-time.After(10 * time.Second):
			f.t.Errorf("Run did not return 10s after its context ended")
		}
	})
	return r
}

func TestSourceFollowsPoolAndPods(t *testing.T) {
	env := kubetest.Start(t)
	f := newFixture(t, env)
	app := map[string]string{"app": "vllm"}
	f.pod("a", app, "10.0.0.1", true)
	b := f.pod("b", app, "10.0.0.2", true)
	f.pod("not-ready", app, "10.0.0.3", false)
	f.pod("no-ip", app, "", false)
	f.pod("other-app", map[string]string{"app": "other"}, "10.0.0.9", true)
	pool := f.pool("llm", app, 8000)

	src := &Source{PoolName: "llm"}
	r := f.run(src)
	r.waitList(t, "first sync", "a=10.0.0.1:8000", "b=10.0.0.2:8000")
	if st := src.State(); !st.Synced || !st.PoolFound || !strings.Contains(st.Pool, "llm") {
		t.Fatalf("State after sync = %+v, expected synced with the pool found", st)
	}

	steps := []struct {
		name string
		do   func()
		want []string
	}{
		{"pod turns NotReady", func() { f.setStatus(b, "10.0.0.2", false) }, []string{"a=10.0.0.1:8000"}},
		{"pod Ready again", func() { f.setStatus(b, "10.0.0.2", true) }, []string{"a=10.0.0.1:8000", "b=10.0.0.2:8000"}},
		{"new Ready pod", func() { f.pod("c", app, "10.0.0.4", true) }, []string{"a=10.0.0.1:8000", "b=10.0.0.2:8000", "c=10.0.0.4:8000"}},
		{"pod deleted", func() {
			if err := env.Client.Delete(f.ctx, b); err != nil {
				t.Fatal(err)
			}
		}, []string{"a=10.0.0.1:8000", "c=10.0.0.4:8000"}},
		{"terminating pod leaves", func() {
			p := &corev1.Pod{}
			if err := env.Client.Get(f.ctx, client.ObjectKey{Namespace: f.ns, Name: "c"}, p); err != nil {
				t.Fatal(err)
			}
			p.Finalizers = []string{"test.fastepp.io/hold"}
			if err := env.Client.Update(f.ctx, p); err != nil {
				t.Fatal(err)
			}
			if err := env.Client.Delete(f.ctx, p); err != nil {
				t.Fatal(err)
			}
		}, []string{"a=10.0.0.1:8000"}},
		{"two target ports: data-parallel ranks", func() {
			f.updatePool(pool, app, 8000, 8001)
		}, []string{"a-rank-0=10.0.0.1:8000", "a-rank-1=10.0.0.1:8001"}},
		{"active-ports annotation", func() {
			p := &corev1.Pod{}
			if err := env.Client.Get(f.ctx, client.ObjectKey{Namespace: f.ns, Name: "a"}, p); err != nil {
				t.Fatal(err)
			}
			p.Annotations = map[string]string{ActivePortsAnnotation: "8001"}
			if err := env.Client.Update(f.ctx, p); err != nil {
				t.Fatal(err)
			}
		}, []string{"a-rank-1=10.0.0.1:8001"}},
		{"selector changes", func() {
			f.updatePool(pool, map[string]string{"app": "other"}, 9000)
		}, []string{"other-app=10.0.0.9:9000"}},
		{"pool deleted", func() {
			if err := env.Client.Delete(f.ctx, pool); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"pool created again", func() {
			pool = f.pool("llm", app, 8001) // a's annotation keeps only 8001 active
		}, []string{"a=10.0.0.1:8001"}},
		{"pool deleted again", func() {
			if err := env.Client.Delete(f.ctx, pool); err != nil {
				t.Fatal(err)
			}
		}, nil},
		{"pool created matching no pod: found, no endpoints", func() {
			pool = f.pool("llm", map[string]string{"app": "none"}, 8000)
		}, nil},
	}
	for _, s := range steps {
		s.do()
		r.waitList(t, s.name, s.want...)
		wantFound := !strings.HasPrefix(s.name, "pool deleted")
		deadline := time.Now().Add(2 * time.Second)
		for src.State().PoolFound != wantFound {
			if time.Now().After(deadline) {
				t.Fatalf("%s: State = %+v, expected PoolFound %v", s.name, src.State(), wantFound)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func (f *fixture) updatePool(p *giev1.InferencePool, sel map[string]string, ports ...int32) {
	f.t.Helper()
	if err := f.env.Client.Get(f.ctx, client.ObjectKeyFromObject(p), p); err != nil {
		f.t.Fatal(err)
	}
	setPoolSpec(p, sel, ports...)
	if err := f.env.Client.Update(f.ctx, p); err != nil {
		f.t.Fatal(err)
	}
}

func TestSourceSelectorMode(t *testing.T) {
	env := kubetest.Start(t)
	f := newFixture(t, env)
	f.pod("m1", map[string]string{"app": "vllm", "tier": "a"}, "10.0.1.1", true)
	f.pod("m2", map[string]string{"app": "vllm", "tier": "b"}, "10.0.1.2", true)
	r := f.run(&Source{Selector: map[string]string{"app": "vllm", "tier": "a"}, TargetPorts: []int{8000}})
	r.waitList(t, "selector mode", "m1=10.0.1.1:8000")
	f.pod("m3", map[string]string{"app": "vllm", "tier": "a"}, "10.0.1.3", true)
	r.waitList(t, "selector mode, new pod", "m1=10.0.1.1:8000", "m3=10.0.1.3:8000")
}

// TestSourceSurvivesAPIServerRestart: while the API server is down the last
// list stands (routing goes on); once it is back, changes flow again without
// restarting the source.
func TestSourceSurvivesAPIServerRestart(t *testing.T) {
	env := kubetest.Start(t)
	f := newFixture(t, env)
	app := map[string]string{"app": "vllm"}
	f.pod("a", app, "10.0.2.1", true)
	f.pool("llm", app, 8000)
	r := f.run(&Source{PoolName: "llm"})
	r.waitList(t, "before the restart", "a=10.0.2.1:8000")

	env.StopAPIServer(t)
	time.Sleep(2 * time.Second)
	if got, _ := r.get(); !slices.Equal(got, []string{"a=10.0.2.1:8000"}) {
		t.Fatalf("while the API server was down the list became %v, expected the last known one", got)
	}
	env.StartAPIServer(t)
	f.pod("b", app, "10.0.2.2", true)
	deadline := time.Now().Add(30 * time.Second) // the watch reconnects with backoff
	for {
		got, _ := r.get()
		if slices.Equal(got, []string{"a=10.0.2.1:8000", "b=10.0.2.2:8000"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("30s after the API server came back the list is %v, expected the new pod in it", got)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestCheckWithoutCRD(t *testing.T) {
	env := kubetest.StartWith(t, kubetest.Options{NoPoolCRD: true})
	s := &Source{Config: env.Config, Namespace: "default", PoolName: "llm"}
	err := s.Check(context.Background())
	if err == nil || !strings.Contains(err.Error(), "install GIE's InferencePool CRD") {
		t.Fatalf("Check without the CRD = %v, expected an error saying to install it", err)
	}
	s.PoolName = "missing-but-crd-is-there"
	env2 := kubetest.Start(t)
	s.Config = env2.Config
	if err := s.Check(context.Background()); err != nil {
		t.Fatalf("Check with the CRD and no pool = %v, expected nil (the pool is waited for)", err)
	}
}

func TestParseSelectorAndPorts(t *testing.T) {
	for _, c := range []struct {
		in, want, err string
	}{
		{"app=vllm", "map[app:vllm]", ""},
		{"app=vllm, tier=a", "map[app:vllm tier:a]", ""},
		{"app", "", "expected key=value"},
		{"=x", "", "expected key=value"},
		{"app=bad value", "", "bad value"},
	} {
		got, err := ParseSelector(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseSelector(%q) error = %v, expected one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("ParseSelector(%q) = %v, %v; expected %s", c.in, got, err, c.want)
		}
	}
	for _, c := range []struct {
		in, want, err string
	}{
		{"8000", "[8000]", ""},
		{"8000, 8001", "[8000 8001]", ""},
		{"0", "", "expected port numbers"},
		{"x", "", "expected port numbers"},
		{"8000,8000", "", "twice"},
	} {
		got, err := ParsePorts(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParsePorts(%q) error = %v, expected one containing %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want {
			t.Errorf("ParsePorts(%q) = %v, %v; expected %s", c.in, got, err, c.want)
		}
	}
}
