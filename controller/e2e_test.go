package controller_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fastepp/fastepp/controller"
	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// TestOnAPIServer runs everything that needs the real API server on one
// (starting it takes seconds): the end-to-end life of a ModelRoute, every
// condition and reason, the hand-over of an unowned child, and the
// deploy/samples ModelRoute.
func TestOnAPIServer(t *testing.T) {
	s := startServer(t)
	s.metricsAuthRoleExists(t)
	t.Run("EndToEnd", s.testEndToEnd)
	t.Run("Conditions", s.testConditions)
	t.Run("ChildConflictAndHandOver", s.testHandOver)
	t.Run("Sample", s.testSample)
	t.Run("Validation", s.testValidation)
	t.Run("SpecChanges", s.testSpecChanges)
	t.Run("RBACBounds", s.testRBACBounds)
}

// modelRoute is a ModelRoute m in ns with an HTTPRoute to Gateway gw.
func modelRoute(ns, name string) *v1alpha1.ModelRoute {
	to := gwapiv1.Duration("300s")
	return &v1alpha1.ModelRoute{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: v1alpha1.ModelRouteSpec{
			Model:       "meta-llama/Llama-3.1-8B-Instruct",
			Selector:    metav1.LabelSelector{MatchLabels: map[string]string{"app": "vllm-llama3"}},
			TargetPorts: []v1alpha1.Port{{Number: 8000}},
			Routing: &v1alpha1.Routing{
				GatewayRef:     &gwapiv1.ParentReference{Name: "gw"},
				PathTemplate:   "/{.metadata.namespace}/{.metadata.name}",
				RequestTimeout: &to,
			},
		},
	}
}

// gateway is a Gateway gw in ns with one HTTP listener for host.
func gateway(ns, host string) *gwapiv1.Gateway {
	h := gwapiv1.Hostname(host)
	return &gwapiv1.Gateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gw"},
		Spec: gwapiv1.GatewaySpec{
			GatewayClassName: "test",
			Listeners:        []gwapiv1.Listener{{Name: "http", Protocol: gwapiv1.HTTPProtocolType, Port: 80, Hostname: &h}},
		},
	}
}

// condition waits until the ModelRoute's condition typ has status and
// reason at its current generation, and returns the ModelRoute.
func (s *server) condition(t testing.TB, ns, name, typ string, status metav1.ConditionStatus, reason string) *v1alpha1.ModelRoute {
	t.Helper()
	mr := &v1alpha1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	eventually(t, fmt.Sprintf("ModelRoute %s/%s condition %s", ns, name, typ), func() error {
		if err := s.get(mr); err != nil {
			return err
		}
		if mr.Status.ObservedGeneration != mr.Generation {
			return fmt.Errorf("expected observedGeneration %d, found %d", mr.Generation, mr.Status.ObservedGeneration)
		}
		c := meta.FindStatusCondition(mr.Status.Conditions, typ)
		if c == nil {
			return fmt.Errorf("expected %s=%s/%s, found no such condition among %v", typ, status, reason, mr.Status.Conditions)
		}
		if c.Status != status || c.Reason != reason {
			return fmt.Errorf("expected %s=%s/%s, found %s/%s: %s", typ, status, reason, c.Status, c.Reason, c.Message)
		}
		return nil
	})
	return mr
}

// owned checks o has mr as its controller owner.
func owned(t testing.TB, o client.Object, mr *v1alpha1.ModelRoute) {
	t.Helper()
	ref := metav1.GetControllerOf(o)
	if ref == nil || ref.UID != mr.UID || ref.Kind != "ModelRoute" || ref.BlockOwnerDeletion == nil || !*ref.BlockOwnerDeletion {
		t.Errorf("%T %s: expected controller owner ModelRoute %s (uid %s, blockOwnerDeletion), found %+v", o, o.GetName(), mr.Name, mr.UID, ref)
	}
}

func (s *server) testEndToEnd(t *testing.T) {
	ctx := context.Background()
	ns := s.env.Namespace(t)
	if err := s.c.Create(ctx, gateway(ns, "models.example.com")); err != nil {
		t.Fatal(err)
	}
	mr := modelRoute(ns, "llama")
	if err := s.c.Create(ctx, mr); err != nil {
		t.Fatal(err)
	}
	mr = s.condition(t, ns, "llama", controller.CondRouteReady, metav1.ConditionFalse, controller.ReasonWaitingForGateway)
	if !slices.Contains(mr.Finalizers, controller.Finalizer) {
		t.Errorf("expected finalizer %s, found %v", controller.Finalizer, mr.Finalizers)
	}
	wantPath := "/" + ns + "/llama"
	if mr.Status.Path != wantPath {
		t.Errorf("status.path: expected %q, found %q", wantPath, mr.Status.Path)
	}
	// envtest runs no Deployment controller: the Deployment's status stays
	// unobserved until the test writes it.
	s.condition(t, ns, "llama", controller.CondEndpointPickerReady, metav1.ConditionFalse, controller.ReasonProgressing)
	s.condition(t, ns, "llama", controller.CondConfigResolved, metav1.ConditionTrue, controller.ReasonResolved)
	s.condition(t, ns, "llama", controller.CondInferencePoolReady, metav1.ConditionTrue, controller.ReasonCreated)
	s.condition(t, ns, "llama", controller.CondReady, metav1.ConditionFalse, controller.ReasonProgressing)

	// Every child, owned, with the right content.
	epp := "llama-epp"
	children := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}},
		&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}},
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}},
		&giev1.InferencePool{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama"}},
		&gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama"}},
	}
	for _, o := range children {
		if err := s.get(o); err != nil {
			t.Fatalf("child %T %s: %v", o, o.GetName(), err)
		}
		owned(t, o, mr)
	}
	if n := len(mr.Status.Children); n != len(children)+1 {
		t.Errorf("status.children: expected %d (the namespaced children and the ClusterRoleBinding), found %d: %+v", len(children)+1, n, mr.Status.Children)
	}
	crb := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "llama-" + ns + "-epp-metrics-auth"}}
	if err := s.get(crb); err != nil {
		t.Fatalf("ClusterRoleBinding: %v", err)
	}
	if crb.RoleRef.Name != controller.MetricsAuthClusterRole || len(crb.Subjects) != 1 || crb.Subjects[0].Name != epp || crb.Subjects[0].Namespace != ns {
		t.Errorf("ClusterRoleBinding: expected %s bound to ServiceAccount %s/%s, found %+v %+v", controller.MetricsAuthClusterRole, ns, epp, crb.RoleRef, crb.Subjects)
	}

	pool := children[6].(*giev1.InferencePool)
	if ref := pool.Spec.EndpointPickerRef; ref == nil || string(ref.Name) != epp || ref.Port == nil || ref.Port.Number != 9002 || ref.FailureMode != giev1.EndpointPickerFailOpen {
		t.Errorf("InferencePool endpointPickerRef: expected %s:9002 FailOpen, found %+v", epp, ref)
	}
	if got := pool.Spec.Selector.MatchLabels["app"]; got != "vllm-llama3" || len(pool.Spec.TargetPorts) != 1 || pool.Spec.TargetPorts[0].Number != 8000 {
		t.Errorf("InferencePool: expected selector app=vllm-llama3 and port 8000, found %+v", pool.Spec)
	}
	route := children[7].(*gwapiv1.HTTPRoute)
	checkHTTPRoute(t, route, ns, wantPath)
	dep := children[5].(*appsv1.Deployment)
	if img := dep.Spec.Template.Spec.Containers[0].Image; img != testImage {
		t.Errorf("picker image: expected the controller's default %s, found %s", testImage, img)
	}

	// A child deleted by hand comes back.
	svc := children[4].(*corev1.Service)
	oldUID := svc.UID
	if err := s.c.Delete(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Service deleted by hand comes back", func() error {
		got := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: epp}}
		if err := s.get(got); err != nil {
			return err
		}
		if got.UID == oldUID {
			return fmt.Errorf("expected a new Service, found the old one (uid %s)", oldUID)
		}
		return nil
	})

	// A child edited by hand is put back.
	if err := s.get(dep); err != nil {
		t.Fatal(err)
	}
	dep.Spec.Replicas = ptr(int32(5))
	dep.Spec.Template.Spec.Containers[0].Image = "example.com/hand-edited:1"
	if err := s.c.Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	eventually(t, "Deployment edited by hand is put back", func() error {
		if err := s.get(dep); err != nil {
			return err
		}
		if r, img := *dep.Spec.Replicas, dep.Spec.Template.Spec.Containers[0].Image; r != 1 || img != testImage {
			return fmt.Errorf("expected 1 replica of %s, found %d of %s", testImage, r, img)
		}
		return nil
	})

	// The Deployment becomes available (the test plays the
	// controller-manager): EndpointPickerReady.
	dep.Status = appsv1.DeploymentStatus{ObservedGeneration: dep.Generation, Replicas: 1, ReadyReplicas: 1, AvailableReplicas: 1, UpdatedReplicas: 1}
	if err := s.c.Status().Update(ctx, dep); err != nil {
		t.Fatal(err)
	}
	s.condition(t, ns, "llama", controller.CondEndpointPickerReady, metav1.ConditionTrue, controller.ReasonAvailable)
	s.condition(t, ns, "llama", controller.CondReady, metav1.ConditionFalse, controller.ReasonWaitingForGateway)

	// The Gateway accepts the route (the test plays the gateway): Ready, and
	// the URL from the Gateway's listener.
	if err := s.get(route); err != nil {
		t.Fatal(err)
	}
	route.Status.Parents = []gwapiv1.RouteParentStatus{{
		ParentRef:      gwapiv1.ParentReference{Name: "gw"},
		ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionTrue, Reason: "Accepted",
			ObservedGeneration: route.Generation, LastTransitionTime: metav1.Now()}},
	}}
	if err := s.c.Status().Update(ctx, route); err != nil {
		t.Fatal(err)
	}
	s.condition(t, ns, "llama", controller.CondRouteReady, metav1.ConditionTrue, controller.ReasonAccepted)
	mr = s.condition(t, ns, "llama", controller.CondReady, metav1.ConditionTrue, controller.ReasonReady)
	if want := "http://models.example.com" + wantPath; mr.Status.URL != want {
		t.Errorf("status.url: expected %q, found %q", want, mr.Status.URL)
	}

	// A spec change makes a new route generation: the old acceptance no
	// longer counts.
	mr.Spec.Routing.RequestTimeout = ptr(gwapiv1.Duration("60s"))
	if err := s.c.Update(ctx, mr); err != nil {
		t.Fatal(err)
	}
	s.condition(t, ns, "llama", controller.CondRouteReady, metav1.ConditionFalse, controller.ReasonWaitingForGateway)

	// Events were recorded.
	eventually(t, "a Created event", func() error {
		var evs corev1.EventList
		if err := s.c.List(ctx, &evs, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "Created" && e.InvolvedObject.Name == "llama" {
				return nil
			}
		}
		return fmt.Errorf("expected a Created event about ModelRoute llama, found %d events", len(evs.Items))
	})

	// Delete: the finalizer removes the ClusterRoleBinding, then the
	// ModelRoute goes (the children go with the garbage collector, which
	// envtest has not: their owner references were checked above).
	if err := s.c.Delete(ctx, mr); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ModelRoute deleted after its finalizer", func() error {
		err := s.get(&v1alpha1.ModelRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "llama"}})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("expected ModelRoute gone, found it (err %v)", err)
	})
	if err := s.get(crb); !apierrors.IsNotFound(err) {
		t.Errorf("ClusterRoleBinding %s: expected deleted by the finalizer, found err %v", crb.Name, err)
	}
}

// checkHTTPRoute checks the route's one rule.
func checkHTTPRoute(t testing.TB, route *gwapiv1.HTTPRoute, ns, path string) {
	t.Helper()
	if len(route.Spec.ParentRefs) != 1 || route.Spec.ParentRefs[0].Name != "gw" {
		t.Errorf("HTTPRoute parentRefs: expected Gateway gw, found %+v", route.Spec.ParentRefs)
	}
	if len(route.Spec.Rules) != 1 {
		t.Fatalf("HTTPRoute: expected 1 rule, found %d", len(route.Spec.Rules))
	}
	r := route.Spec.Rules[0]
	if len(r.Matches) != 1 || r.Matches[0].Path == nil || *r.Matches[0].Path.Type != gwapiv1.PathMatchPathPrefix || *r.Matches[0].Path.Value != path {
		t.Errorf("HTTPRoute match: expected PathPrefix %s, found %+v", path, r.Matches)
	}
	if len(r.Filters) != 1 || r.Filters[0].URLRewrite == nil || r.Filters[0].URLRewrite.Path == nil ||
		r.Filters[0].URLRewrite.Path.Type != gwapiv1.PrefixMatchHTTPPathModifier || *r.Filters[0].URLRewrite.Path.ReplacePrefixMatch != "/" {
		t.Errorf("HTTPRoute filters: expected URLRewrite ReplacePrefixMatch /, found %+v", r.Filters)
	}
	if len(r.BackendRefs) != 1 || string(*r.BackendRefs[0].Group) != "inference.networking.k8s.io" || string(*r.BackendRefs[0].Kind) != "InferencePool" || r.BackendRefs[0].Name != gwapiv1.ObjectName(route.Name) {
		t.Errorf("HTTPRoute backendRefs: expected InferencePool %s, found %+v", route.Name, r.BackendRefs)
	}
	if r.Timeouts == nil || r.Timeouts.Request == nil || *r.Timeouts.Request != "300s" {
		t.Errorf("HTTPRoute timeouts: expected request 300s, found %+v", r.Timeouts)
	}
}
