package kube

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	coordv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/fastepp/fastepp/internal/kubetest"
)

func TestLeaseName(t *testing.T) {
	for _, tc := range []struct{ ns, pool, want string }{
		{"default", "vllm-llama3-8b-instruct", "epp-default-vllm-llama3-8b-instruct.gateway-api-inference-extension.sigs.k8s.io"},
		{"inference", "p", "epp-inference-p.gateway-api-inference-extension.sigs.k8s.io"},
	} {
		if got := LeaseName(tc.ns, tc.pool); got != tc.want {
			t.Errorf("LeaseName(%q, %q): expected %q, found %q", tc.ns, tc.pool, tc.want, got)
		}
	}
}

// candidate is a Leader under test and what its OnChange saw.
type candidate struct {
	*Leader
	cancel context.CancelFunc
	done   <-chan struct{}

	mu      sync.Mutex
	changes []bool
}

func (c *candidate) seen() []bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.changes)
}

// campaign starts a Leader with test timings on the lease ns/name.
func campaign(t *testing.T, env *kubetest.Env, ns, name, id string) *candidate {
	t.Helper()
	c := &candidate{}
	c.Leader = &Leader{
		Config: env.Config, Namespace: ns, Name: name, Identity: id,
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond,
		Logger: testLogger(t).With("candidate", id),
		OnChange: func(leading bool) {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.changes = append(c.changes, leading)
		},
	}
	c.cancel, c.done = runUntilCleanup(t, "Leader "+id, c.Run)
	return c
}

// holder is the Lease's holder identity ("" when none or no Lease).
func holder(env *kubetest.Env, ns, name string) string {
	l, err := env.Clientset.CoordinationV1().Leases(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil {
		return ""
	}
	return *l.Spec.HolderIdentity
}

// waitLeader waits until exactly one of cs leads and holds the Lease, and
// returns it.
func waitLeader(t *testing.T, env *kubetest.Env, ns, name string, timeout time.Duration, cs ...*candidate) *candidate {
	t.Helper()
	var leader *candidate
	waitUntil(t, timeout, "exactly one leader, holding the lease", func() (bool, string) {
		leader = nil
		var leading []string
		for _, c := range cs {
			if c.IsLeader() {
				leader = c
				leading = append(leading, c.Identity)
			}
		}
		h := holder(env, ns, name)
		found := fmt.Sprintf("leading %v, lease held by %q", leading, h)
		return len(leading) == 1 && h == leader.Identity, found
	})
	return leader
}

func TestLeaderFailover(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	name := LeaseName(ns, "pool")
	a := campaign(t, env, ns, name, "a")
	b := campaign(t, env, ns, name, "b")

	first := waitLeader(t, env, ns, name, 5*time.Second, a, b)
	other := a
	if first == a {
		other = b
	}
	// Ending the leader's context releases the lease: the other takes over
	// well before the lease would have expired.
	start := time.Now()
	first.cancel()
	select {
	case <-first.done:
	case <-time.After(5 * time.Second):
		t.Fatal("the leader's Run did not return 5s after its context ended")
	}
	if first.IsLeader() {
		t.Error("IsLeader() true after Run returned; expected false")
	}
	if got := waitLeader(t, env, ns, name, 5*time.Second, a, b); got != other {
		t.Fatalf("expected %s to take over, found %s", other.Identity, got.Identity)
	}
	t.Logf("takeover after %v", time.Since(start).Round(time.Millisecond))
	if got, want := first.seen(), []bool{true, false}; !slices.Equal(got, want) {
		t.Errorf("the first leader's OnChange: expected %v, found %v", want, got)
	}
	if got, want := other.seen(), []bool{true}; !slices.Equal(got, want) {
		t.Errorf("the new leader's OnChange: expected %v, found %v", want, got)
	}
}

func TestLeaderCampaignsAgainAfterLosingTheLease(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	name := LeaseName(ns, "pool")
	a := campaign(t, env, ns, name, "a")
	waitLeader(t, env, ns, name, 5*time.Second, a)

	// Someone else takes the lease over for 2s: a stops leading when it
	// cannot renew, and leads again once that lease has expired.
	leases := env.Clientset.CoordinationV1().Leases(ns)
	waitUntil(t, 5*time.Second, "the lease taken by an intruder", func() (bool, string) {
		l, err := leases.Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err.Error()
		}
		now := metav1.NewMicroTime(time.Now())
		l.Spec = coordv1.LeaseSpec{HolderIdentity: ptr.To("intruder"), LeaseDurationSeconds: ptr.To[int32](2), AcquireTime: &now, RenewTime: &now}
		if _, err := leases.Update(context.Background(), l, metav1.UpdateOptions{}); err != nil {
			return false, err.Error() // a renewal got in between: try again
		}
		return true, ""
	})
	waitUntil(t, 5*time.Second, "a to stop leading", func() (bool, string) { return !a.IsLeader(), "still leading" })
	waitLeader(t, env, ns, name, 8*time.Second, a)
	if got, want := a.seen(), []bool{true, false, true}; !slices.Equal(got, want) {
		t.Errorf("OnChange: expected %v, found %v", want, got)
	}
}

func TestLeaderConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    *Leader
		want string
	}{
		{"no config", &Leader{Namespace: "ns", Name: "n"}, "expected a rest.Config, found nil"},
		{"no name", &Leader{Config: &restConfigForErrors, Namespace: "ns"}, `expected a Lease namespace and name, found "ns" and ""`},
		{"renew deadline past the lease", &Leader{Config: &restConfigForErrors, Namespace: "ns", Name: "n", LeaseDuration: time.Second, RenewDeadline: 2 * time.Second},
			"expected LeaseDuration > RenewDeadline, found 1s and 2s"},
		{"retry period past the renew deadline", &Leader{Config: &restConfigForErrors, Namespace: "ns", Name: "n", RetryPeriod: 10 * time.Second},
			"expected RenewDeadline > 1.2 × RetryPeriod, found 10s and 10s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			err := tc.l.Run(ctx)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("expected an error containing %q, found %v", tc.want, err)
			}
		})
	}
}
