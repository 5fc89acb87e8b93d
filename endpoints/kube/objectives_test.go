package kube

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// The helpers at the top are shared by the tests of Objectives, Leader and
// MetricsAuth.

// testLogger logs into the test's output until the test ends (client-go
// goroutines may still log a little after that).
func testLogger(t testing.TB) *slog.Logger {
	l, _ := capturingLogger(t)
	return l
}

// capturingLogger is testLogger that also keeps the lines, for has.
func capturingLogger(t testing.TB) (*slog.Logger, *testLogWriter) {
	w := &testLogWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), w
}

type testLogWriter struct {
	mu    sync.Mutex
	t     testing.TB
	done  bool
	lines []string
}

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	line := strings.TrimRight(string(p), "\n")
	w.lines = append(w.lines, line)
	if !w.done {
		w.t.Log(line)
	}
	return len(p), nil
}

// has reports whether a line logged so far contains s.
func (w *testLogWriter) has(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.ContainsFunc(w.lines, func(l string) bool { return strings.Contains(l, s) })
}

// runUntilCleanup runs run in the background, and at cleanup ends its
// context and checks it returned nil within 10s. The returned channel is
// closed when run returns (its error is checked at cleanup).
func runUntilCleanup(t testing.TB, what string, run func(context.Context) error) (cancel context.CancelFunc, done <-chan struct{}) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := make(chan struct{})
	var err error
	go func() {
		defer close(d)
		err = run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-d:
			if err != nil {
				t.Errorf("%s: Run: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return 10s after its context ended", what)
		}
	})
	return cancel, d
}

// waitUntil polls cond every 10ms until it holds, failing the test after
// timeout; cond returns what it found, for the failure message.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() (ok bool, found string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, found := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: expected %s, found %s", timeout, what, found)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// objectiveYAML is an InferenceObjective; priority nil leaves it unset,
// group "" leaves poolRef.group to the CRD's default.
func objectiveYAML(name, pool, group string, priority *int) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: inference.networking.x-k8s.io/v1alpha2\nkind: InferenceObjective\nmetadata:\n  name: %s\nspec:\n", name)
	if priority != nil {
		fmt.Fprintf(&b, "  priority: %d\n", *priority)
	}
	fmt.Fprintf(&b, "  poolRef:\n    name: %s\n", pool)
	if group != "" {
		fmt.Fprintf(&b, "    group: %s\n", group)
	}
	return []byte(b.String())
}

func deleteObjective(t testing.TB, env *kubetest.Env, ns, name string) {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(kubetest.ObjectiveGVK)
	u.SetNamespace(ns)
	u.SetName(name)
	if err := env.Client.Delete(context.Background(), u); err != nil {
		t.Fatalf("deleting InferenceObjective %s/%s: %v", ns, name, err)
	}
}

// prio is an expected Priority result; absent means ok=false.
type prio struct {
	p      int
	absent bool
}

func (p prio) String() string {
	if p.absent {
		return "absent"
	}
	return fmt.Sprint(p.p)
}

// waitPriorities waits (2s at most) until o reports want for every name.
func waitPriorities(t testing.TB, o *Objectives, want map[string]prio) {
	t.Helper()
	waitUntil(t, 2*time.Second, fmt.Sprint(want), func() (bool, string) {
		got := map[string]prio{}
		for name := range want {
			p, ok := o.Priority(name)
			got[name] = prio{p: p, absent: !ok}
		}
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprint(got)
	})
}

func waitSynced(t testing.TB, o *Objectives) {
	t.Helper()
	waitUntil(t, 5*time.Second, "Synced() true", func() (bool, string) { return o.Synced(), "false" })
}

func intp(i int) *int { return &i }

func TestObjectivesFollowThePool(t *testing.T) {
	env := kubetest.Start(t)
	ns, otherNS := env.Namespace(t), env.Namespace(t)
	log := testLogger(t)

	pool := &Objectives{Config: env.Config, Namespace: ns, PoolName: "pool-a", Logger: log.With("objectives", "pool-a")}
	all := &Objectives{Config: env.Config, Namespace: ns, Logger: log.With("objectives", "all")}
	for _, o := range []*Objectives{pool, all} {
		runUntilCleanup(t, "Objectives", o.Run)
	}
	waitSynced(t, pool)
	waitSynced(t, all)

	apply := func(name, pool, group string, priority *int) func(t *testing.T) {
		return func(t *testing.T) { env.Apply(t, nil, ns, objectiveYAML(name, pool, group, priority)) }
	}
	absent := prio{absent: true}
	steps := []struct {
		name     string
		do       func(t *testing.T)
		wantPool map[string]prio // pool's view
		wantAll  map[string]prio // all's view
	}{
		{"create for the pool", apply("chat", "pool-a", "", intp(10)),
			map[string]prio{"chat": {p: 10}}, map[string]prio{"chat": {p: 10}}},
		{"unset priority is 0", apply("batch", "pool-a", "", nil),
			map[string]prio{"batch": {p: 0}, "chat": {p: 10}}, map[string]prio{"batch": {p: 0}}},
		{"another pool's objective", apply("other", "pool-b", "", intp(5)),
			map[string]prio{"other": absent}, map[string]prio{"other": {p: 5}}},
		{"objective in another namespace", func(t *testing.T) {
			env.Apply(t, nil, otherNS, objectiveYAML("elsewhere", "pool-a", "", intp(7)))
		}, map[string]prio{"elsewhere": absent}, map[string]prio{"elsewhere": absent}},
		{"same pool name, another group", apply("alpha", "pool-a", "inference.networking.x-k8s.io", intp(3)),
			map[string]prio{"alpha": absent}, map[string]prio{"alpha": {p: 3}}},
		{"priority changed", apply("chat", "pool-a", "", intp(-3)),
			map[string]prio{"chat": {p: -3}}, map[string]prio{"chat": {p: -3}}},
		{"moved into the pool", apply("other", "pool-a", "", intp(5)),
			map[string]prio{"other": {p: 5}}, map[string]prio{"other": {p: 5}}},
		{"moved out of the pool", apply("chat", "pool-b", "", intp(-3)),
			map[string]prio{"chat": absent, "other": {p: 5}}, map[string]prio{"chat": {p: -3}}},
		{"deleted", func(t *testing.T) { deleteObjective(t, env, ns, "batch") },
			map[string]prio{"batch": absent, "other": {p: 5}}, map[string]prio{"batch": absent}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			start := time.Now()
			s.do(t)
			applied := time.Now()
			waitPriorities(t, pool, s.wantPool)
			waitPriorities(t, all, s.wantAll)
			t.Logf("applied in %v, seen %v later", applied.Sub(start).Round(time.Millisecond), time.Since(applied).Round(time.Millisecond))
		})
	}
}

func TestObjectivesWithoutCRD(t *testing.T) {
	env := kubetest.StartWith(t, kubetest.Options{NoObjectiveCRD: true})
	ns := env.Namespace(t)
	log, logged := capturingLogger(t)
	o := &Objectives{Config: env.Config, Namespace: ns, PoolName: "pool-a", Logger: log, Recheck: 200 * time.Millisecond}
	_, done := runUntilCleanup(t, "Objectives", o.Run)
	waitSynced(t, o)
	if p, ok := o.Priority("chat"); ok {
		t.Fatalf("Priority(chat) without the CRD: expected ok=false, found %d, true", p)
	}
	select {
	case <-done:
		t.Fatal("Run returned without the CRD; expected it to keep looking until its context ends")
	default:
	}

	// The CRD shows up later: the next recheck finds it.
	crds, err := kubetest.CRDPaths()
	if err != nil {
		t.Fatal(err)
	}
	crd := env.ApplyFile(t, nil, "", crds[1])
	waitUntil(t, 10*time.Second, "the objective's priority once the CRD is installed", func() (bool, string) {
		// Creating fails until the API server serves the new resource.
		objs, err := kubetest.DecodeYAML(objectiveYAML("chat", "pool-a", "", intp(4)))
		if err != nil {
			t.Fatal(err)
		}
		objs[0].SetNamespace(ns)
		if err := env.Client.Create(context.Background(), objs[0], &client.CreateOptions{}); err != nil && !strings.Contains(err.Error(), "already exists") {
			return false, "create: " + err.Error()
		}
		p, ok := o.Priority("chat")
		return ok && p == 4, fmt.Sprintf("%d, %v", p, ok)
	})

	// And goes away again: the objectives go with it.
	if err := env.Client.Delete(context.Background(), crd[0]); err != nil {
		t.Fatalf("deleting the CRD: %v", err)
	}
	waitUntil(t, 10*time.Second, "no priority once the CRD is deleted", func() (bool, string) {
		p, ok := o.Priority("chat")
		return !ok, fmt.Sprintf("%d, %v", p, ok)
	})
	const removed = "InferenceObjective CRD removed"
	waitUntil(t, 10*time.Second, fmt.Sprintf("%q logged", removed), func() (bool, string) { return logged.has(removed), "not yet" })
	if !o.Synced() {
		t.Error("Synced() false after the CRD went away; expected true")
	}
}

func TestObjectivesPriorityDoesNotAllocate(t *testing.T) {
	o := &Objectives{}
	if n := testing.AllocsPerRun(100, func() { o.Priority("chat") }); n != 0 {
		t.Errorf("Priority before any table: expected 0 allocations, found %v", n)
	}
	m := map[string]int{"chat": 10, "batch": 0}
	o.prio.Store(&m)
	name := strings.Repeat("x", 64) // a long name that is not there
	for _, tc := range []struct {
		name string
		want prio
	}{{"chat", prio{p: 10}}, {"batch", prio{p: 0}}, {name, prio{absent: true}}} {
		var p int
		var ok bool
		n := testing.AllocsPerRun(1000, func() { p, ok = o.Priority(tc.name) })
		if n != 0 {
			t.Errorf("Priority(%.10s): expected 0 allocations, found %v", tc.name, n)
		}
		if got := (prio{p: p, absent: !ok}); got != tc.want {
			t.Errorf("Priority(%.10s): expected %v, found %v", tc.name, tc.want, got)
		}
	}
}

// restConfigForErrors points nowhere; Run must reject the configuration
// before using it.
var restConfigForErrors = rest.Config{Host: "https://127.0.0.1:1"}

func TestObjectivesConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    *Objectives
		want string
	}{
		{"no config", &Objectives{Namespace: "ns"}, "expected a rest.Config, found nil"},
		{"no namespace", &Objectives{Config: &restConfigForErrors}, "expected a namespace, found none"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.o.Run(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("expected an error containing %q, found %v", tc.want, err)
			}
		})
	}
}
