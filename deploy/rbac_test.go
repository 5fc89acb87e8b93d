package deploy_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// verbs are every verb the checks ask about.
var verbs = []string{"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}

// resource is an API resource the checks ask about.
type resource struct{ group, name string }

func (r resource) String() string {
	if r.group == "" {
		return r.name
	}
	return r.name + "." + r.group
}

var (
	pods                 = resource{"", "pods"}
	secrets              = resource{"", "secrets"}
	configmaps           = resource{"", "configmaps"}
	inferencepools       = resource{"inference.networking.k8s.io", "inferencepools"}
	inferenceobjectives  = resource{"inference.networking.x-k8s.io", "inferenceobjectives"}
	leases               = resource{"coordination.k8s.io", "leases"}
	tokenreviews         = resource{"authentication.k8s.io", "tokenreviews"}
	subjectaccessreviews = resource{"authorization.k8s.io", "subjectaccessreviews"}

	// namespaced are asked about in the picker's namespace, clusterScoped
	// without one.
	namespaced    = []resource{pods, secrets, configmaps, inferencepools, inferenceobjectives, leases}
	clusterScoped = []resource{tokenreviews, subjectaccessreviews}
)

// grants is an expected table: resource -> allowed verbs. Every other verb on
// every resource asked about must be denied. metrics is whether GET /metrics
// (a non-resource URL) is allowed.
type grants struct {
	resources map[resource][]string
	metrics   bool
}

var (
	readOnly = []string{"get", "list", "watch"}

	// pickerDiscovery: what every picker needs.
	pickerDiscovery = map[resource][]string{pods: readOnly, inferencepools: readOnly, inferenceobjectives: readOnly}
	// leaseVerbs: client-go's lease lock gets, creates and updates.
	leaseVerbs = []string{"get", "create", "update"}
	// reviewVerbs: /metrics authentication creates TokenReviews and
	// SubjectAccessReviews.
	reviewVerbs = []string{"create"}
)

// with returns g's resources plus more.
func with(base map[resource][]string, more map[resource][]string) map[resource][]string {
	m := map[resource][]string{}
	for k, v := range base {
		m[k] = v
	}
	for k, v := range more {
		m[k] = v
	}
	return m
}

// checkRBAC asks the API server, as ns/sa itself (a token from the
// TokenRequest API, SelfSubjectAccessReview), about every verb on every
// resource, and compares each answer with want. It also checks that nothing
// is granted outside ns (another namespace, cluster-wide).
func checkRBAC(t *testing.T, env *kubetest.Env, ns, sa string, want grants) {
	t.Helper()
	cs, err := kubernetes.NewForConfig(env.ServiceAccountConfig(t, ns, sa))
	if err != nil {
		t.Fatal(err)
	}
	ask := func(ra *authzv1.ResourceAttributes, nra *authzv1.NonResourceAttributes) bool {
		r, err := cs.AuthorizationV1().SelfSubjectAccessReviews().Create(context.Background(),
			&authzv1.SelfSubjectAccessReview{Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: ra, NonResourceAttributes: nra}},
			metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("SelfSubjectAccessReview as %s/%s: %v", ns, sa, err)
		}
		return r.Status.Allowed
	}
	var wrong []string
	check := func(where string, r resource, verb string, allowed, expected bool) {
		if allowed != expected {
			wrong = append(wrong, fmt.Sprintf("%s %s %s: allowed=%v, expected %v", verb, r, where, allowed, expected))
		}
	}
	for _, r := range namespaced {
		for _, v := range verbs {
			expected := slices.Contains(want.resources[r], v)
			check("in "+ns, r, v, ask(&authzv1.ResourceAttributes{Namespace: ns, Verb: v, Group: r.group, Resource: r.name}, nil), expected)
			// Namespaced grants stop at the namespace.
			check("in kube-system", r, v, ask(&authzv1.ResourceAttributes{Namespace: "kube-system", Verb: v, Group: r.group, Resource: r.name}, nil), false)
			check("cluster-wide", r, v, ask(&authzv1.ResourceAttributes{Verb: v, Group: r.group, Resource: r.name}, nil), false)
		}
	}
	for _, r := range clusterScoped {
		for _, v := range verbs {
			expected := slices.Contains(want.resources[r], v)
			check("(cluster)", r, v, ask(&authzv1.ResourceAttributes{Verb: v, Group: r.group, Resource: r.name}, nil), expected)
		}
	}
	if got := ask(nil, &authzv1.NonResourceAttributes{Path: "/metrics", Verb: "get"}); got != want.metrics {
		wrong = append(wrong, fmt.Sprintf("get /metrics: allowed=%v, expected %v", got, want.metrics))
	}
	for r := range want.resources {
		if !slices.Contains(namespaced, r) && !slices.Contains(clusterScoped, r) {
			t.Fatalf("expected table names %s, which the check does not ask about", r)
		}
	}
	if len(wrong) > 0 {
		t.Errorf("RBAC of system:serviceaccount:%s:%s differs from the expected table:\n  %s", ns, sa, strings.Join(wrong, "\n  "))
	}
}

// manifestsRBAC reads deploy/manifests/rbac.yaml with its ClusterRoleBindings'
// subject namespace (default) changed to ns, as a user deploying to ns does.
func manifestsRBAC(t *testing.T, ns string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("manifests", "rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const from = "  namespace: default\n"
	if n := bytes.Count(b, []byte(from)); n != 2 {
		t.Fatalf("rbac.yaml: expected the two ClusterRoleBinding subjects in namespace default, found %d %q lines", n, strings.TrimSpace(from))
	}
	return bytes.ReplaceAll(b, []byte(from), []byte("  namespace: "+ns+"\n"))
}

// TestManifestsRBAC applies deploy/manifests/rbac.yaml and checks that the
// picker's ServiceAccount may do exactly what it needs and that the metrics
// reader may only GET /metrics.
func TestManifestsRBAC(t *testing.T) {
	t.Parallel()
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	env.Apply(t, nil, ns, manifestsRBAC(t, ns))
	for _, c := range []struct {
		sa   string
		want grants
	}{
		{eppName, grants{resources: with(pickerDiscovery, map[resource][]string{
			leases: leaseVerbs, tokenreviews: reviewVerbs, subjectaccessreviews: reviewVerbs})}},
		{eppName + "-metrics-reader", grants{metrics: true}},
	} {
		t.Run(c.sa, func(t *testing.T) { checkRBAC(t, env, ns, c.sa, c.want) })
	}
}

// TestChartRBAC renders the chart with several values, applies each release's
// objects and checks its ServiceAccounts' grants: leases only with leader
// election, the review APIs only when /metrics authenticates, the metrics
// reader only with a ServiceMonitor.
func TestChartRBAC(t *testing.T) {
	t.Parallel()
	env := kubetest.StartWith(t, kubetest.Options{ExtraCRDs: standInCRDs})
	const base = "inferencePool:\n  modelServers:\n    matchLabels:\n      app: " + poolName + "\n"
	for _, c := range []struct {
		name, values string
		epp          grants
		reader       *grants // nil: no metrics reader ServiceAccount
	}{
		{
			name:   "defaults",
			values: base,
			epp:    grants{resources: with(pickerDiscovery, map[resource][]string{tokenreviews: reviewVerbs, subjectaccessreviews: reviewVerbs})},
		},
		{
			name:   "replicas 2 and ServiceMonitor",
			values: base + "inferenceExtension:\n  replicas: 2\n  monitoring:\n    prometheus:\n      enabled: true\n",
			epp: grants{resources: with(pickerDiscovery, map[resource][]string{
				leases: leaseVerbs, tokenreviews: reviewVerbs, subjectaccessreviews: reviewVerbs})},
			reader: &grants{metrics: true},
		},
		{
			name:   "leader election by flag, metrics auth off",
			values: base + "inferenceExtension:\n  flags:\n    ha-enable-leader-election: true\n  monitoring:\n    prometheus:\n      enabled: true\n      auth:\n        enabled: false\n",
			epp:    grants{resources: with(pickerDiscovery, map[resource][]string{leases: leaseVerbs})},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := env.Namespace(t)
			objs := decode(t, helmTemplate(t, poolName, ns, c.values))
			env.Apply(t, nil, ns, encode(t, objs))
			checkRBAC(t, env, ns, eppName, c.epp)
			hasReader := kinds(objs)["ServiceAccount"] > 1
			if hasReader != (c.reader != nil) {
				t.Fatalf("metrics reader ServiceAccount rendered: %v, expected %v (objects: %s)", hasReader, c.reader != nil, inventory(objs))
			}
			if c.reader != nil {
				checkRBAC(t, env, ns, eppName+"-metrics-reader", *c.reader)
			}
		})
	}
}
