package controller_test

import (
	"context"
	"fmt"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/fastepp/fastepp/controller"
	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

// testConditions: one ModelRoute per case, each in its own namespace, and
// the condition (and reason) it must reach. Cluster-scoped configs get
// names unique to the case, so cases do not see each other's.
func (s *server) testConditions(t *testing.T) {
	ctx := context.Background()
	type env struct {
		ns, crc string // the case's namespace and ClusterRoutingConfig name
	}
	gwRef := func(name string) *gwapiv1.ParentReference {
		return &gwapiv1.ParentReference{Name: gwapiv1.ObjectName(name)}
	}
	tests := []struct {
		name string
		// edit changes the ModelRoute before it is created.
		edit func(e env, mr *v1alpha1.ModelRoute)
		// setup creates objects before the ModelRoute.
		setup func(t *testing.T, e env)
		// after runs once the ModelRoute exists (playing a gateway).
		after  func(t *testing.T, e env)
		cond   string
		status metav1.ConditionStatus
		reason string
		check  func(t *testing.T, e env, mr *v1alpha1.ModelRoute)
	}{
		{
			name: "named config missing: ConfigNotFound",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.RoutingConfigName = "missing"; mr.Spec.Routing = nil },
			cond: controller.CondConfigResolved, status: metav1.ConditionFalse, reason: controller.ReasonConfigNotFound,
		},
		{
			name: "default config missing is fine",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.RoutingConfigName = "" },
			cond: controller.CondConfigResolved, status: metav1.ConditionTrue, reason: controller.ReasonResolved,
		},
		{
			name: "named config created later: resolved (configs are watched)",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.RoutingConfigName = "later"; mr.Spec.Routing = nil },
			after: func(t *testing.T, e env) {
				s.condition(t, e.ns, "m", controller.CondConfigResolved, metav1.ConditionFalse, controller.ReasonConfigNotFound)
				s.create(t, &v1alpha1.RoutingConfig{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "later"},
					Spec: v1alpha1.RoutingConfigSpec{Routing: v1alpha1.Routing{GatewayRef: gwRef("later-gw")}}})
			},
			cond: controller.CondConfigResolved, status: metav1.ConditionTrue, reason: controller.ReasonResolved,
			check: func(t *testing.T, e env, mr *v1alpha1.ModelRoute) { s.routeParent(t, e.ns, mr.Name, "later-gw") },
		},
		{
			name: "the namespace's default RoutingConfig applies without a name",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.Routing = nil },
			setup: func(t *testing.T, e env) {
				s.create(t, &v1alpha1.RoutingConfig{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "default"},
					Spec: v1alpha1.RoutingConfigSpec{Routing: v1alpha1.Routing{GatewayRef: gwRef("default-gw"), PathTemplate: "/d/{.metadata.name}"}}})
			},
			cond: controller.CondRouteReady, status: metav1.ConditionFalse, reason: controller.ReasonWaitingForGateway,
			check: func(t *testing.T, e env, mr *v1alpha1.ModelRoute) {
				s.routeParent(t, e.ns, mr.Name, "default-gw")
				if mr.Status.Path != "/d/m" {
					t.Errorf("status.path: expected /d/m from the default RoutingConfig, found %q", mr.Status.Path)
				}
			},
		},
		{
			name: "Ready is False while a config is missing",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.RoutingConfigName = "missing" },
			cond: controller.CondReady, status: metav1.ConditionFalse, reason: controller.ReasonConfigNotFound,
		},
		{
			name: "bad path template: PathTemplateInvalid",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.Routing.PathTemplate = "/{.metadata.labels['team']}" },
			cond: controller.CondConfigResolved, status: metav1.ConditionFalse, reason: controller.ReasonPathTemplateInvalid,
		},
		{
			name: "route waits for a resolved config",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.Routing.PathTemplate = "/{.metadata.labels['team']}" },
			cond: controller.CondRouteReady, status: metav1.ConditionFalse, reason: controller.ReasonConfigUnresolved,
		},
		{
			name: "no gateway anywhere: GatewayNotConfigured",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.Routing = nil },
			cond: controller.CondRouteReady, status: metav1.ConditionFalse, reason: controller.ReasonGatewayNotConfigured,
			check: func(t *testing.T, e env, mr *v1alpha1.ModelRoute) {
				if err := s.get(&gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: mr.Name}}); !apierrors.IsNotFound(err) {
					t.Errorf("expected no HTTPRoute without a gateway, found err %v", err)
				}
			},
		},
		{
			name: "routing disabled",
			edit: func(e env, mr *v1alpha1.ModelRoute) { mr.Spec.Routing.Enabled = ptr(false) },
			cond: controller.CondRouteReady, status: metav1.ConditionTrue, reason: controller.ReasonRoutingDisabled,
		},
		{
			name: "gateway from the RoutingConfig (namespace level)",
			edit: func(e env, mr *v1alpha1.ModelRoute) {
				mr.Spec.RoutingConfigName = "shared"
				mr.Spec.Routing.GatewayRef = nil
			},
			setup: func(t *testing.T, e env) {
				s.create(t, &v1alpha1.RoutingConfig{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "shared"},
					Spec: v1alpha1.RoutingConfigSpec{Routing: v1alpha1.Routing{GatewayRef: gwRef("ns-gw")}}})
				s.create(t, &v1alpha1.ClusterRoutingConfig{ObjectMeta: metav1.ObjectMeta{Name: "shared"},
					Spec: v1alpha1.RoutingConfigSpec{Routing: v1alpha1.Routing{GatewayRef: gwRef("cluster-gw")}}})
			},
			cond: controller.CondRouteReady, status: metav1.ConditionFalse, reason: controller.ReasonWaitingForGateway,
			check: func(t *testing.T, e env, mr *v1alpha1.ModelRoute) { s.routeParent(t, e.ns, mr.Name, "ns-gw") },
		},
		{
			name: "gateway from the ClusterRoutingConfig when the namespace has none",
			edit: func(e env, mr *v1alpha1.ModelRoute) {
				mr.Spec.RoutingConfigName = e.crc
				mr.Spec.Routing = &v1alpha1.Routing{PathTemplate: "/c/{.metadata.name}"}
			},
			setup: func(t *testing.T, e env) {
				s.create(t, &v1alpha1.ClusterRoutingConfig{ObjectMeta: metav1.ObjectMeta{Name: e.crc},
					Spec: v1alpha1.RoutingConfigSpec{Routing: v1alpha1.Routing{GatewayRef: gwRef("cluster-gw"), PathTemplate: "/ignored"}}})
			},
			cond: controller.CondConfigResolved, status: metav1.ConditionTrue, reason: controller.ReasonResolved,
			check: func(t *testing.T, e env, mr *v1alpha1.ModelRoute) {
				s.routeParent(t, e.ns, mr.Name, "cluster-gw")
				if mr.Status.Path != "/c/m" {
					t.Errorf("status.path: expected the ModelRoute's template (/c/m), found %q", mr.Status.Path)
				}
			},
		},
		{
			name: "gateway rejects the route: NotAccepted",
			after: func(t *testing.T, e env) {
				s.setRouteAccepted(t, e.ns, "m", metav1.ConditionFalse)
			},
			cond: controller.CondRouteReady, status: metav1.ConditionFalse, reason: controller.ReasonNotAccepted,
		},
		{
			name: "gateway rejects the pool: InferencePoolReady NotAccepted",
			after: func(t *testing.T, e env) {
				pool := &giev1.InferencePool{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "m"}}
				eventually(t, "pool", func() error { return s.get(pool) })
				pool.Status.Parents = []giev1.ParentStatus{{
					ParentRef: giev1.ParentReference{Name: "gw"},
					Conditions: []metav1.Condition{{Type: "Accepted", Status: metav1.ConditionFalse, Reason: "NotSupportedByParent",
						ObservedGeneration: pool.Generation, LastTransitionTime: metav1.Now()}},
				}}
				if err := s.c.Status().Update(context.Background(), pool); err != nil {
					t.Fatal(err)
				}
			},
			cond: controller.CondInferencePoolReady, status: metav1.ConditionFalse, reason: controller.ReasonNotAccepted,
		},
		{
			name: "AIGatewayRoute with body mode, accepted",
			edit: func(e env, mr *v1alpha1.ModelRoute) {
				mr.Spec.Routing.Kind = v1alpha1.RouteKindAIGatewayRoute
				mr.Spec.Routing.BodyMode = "buffered"
			},
			after: func(t *testing.T, e env) {
				u := &unstructured.Unstructured{}
				u.SetGroupVersionKind(controller.AIGatewayRouteGVK)
				u.SetNamespace(e.ns)
				u.SetName("m")
				eventually(t, "AIGatewayRoute", func() error { return s.get(u) })
				_ = unstructured.SetNestedSlice(u.Object, []any{map[string]any{
					"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
					"observedGeneration": u.GetGeneration(), "lastTransitionTime": metav1.Now().UTC().Format("2006-01-02T15:04:05Z"),
				}}, "status", "conditions")
				if err := s.c.Status().Update(context.Background(), u); err != nil {
					t.Fatal(err)
				}
			},
			cond: controller.CondRouteReady, status: metav1.ConditionTrue, reason: controller.ReasonAccepted,
			check: func(t *testing.T, e env, mr *v1alpha1.ModelRoute) {
				pool := &giev1.InferencePool{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "m"}}
				if err := s.get(pool); err != nil {
					t.Fatal(err)
				}
				if mr.Status.Path != "" {
					t.Errorf("status.path: expected none with an AIGatewayRoute (it matches the model header), found %q", mr.Status.Path)
				}
				if got := pool.Annotations[controller.BodyModeAnnotation]; got != "buffered" {
					t.Errorf("pool annotation %s: expected buffered, found %q", controller.BodyModeAnnotation, got)
				}
				if err := s.get(&gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "m"}}); !apierrors.IsNotFound(err) {
					t.Errorf("expected no HTTPRoute with kind AIGatewayRoute, found err %v", err)
				}
			},
		},
		{
			name: "picker's Deployment not yet observed: Progressing",
			after: func(t *testing.T, e env) {
				s.setDeploymentStatus(t, e.ns, "m-epp", -1)
			},
			cond: controller.CondEndpointPickerReady, status: metav1.ConditionFalse, reason: controller.ReasonProgressing,
		},
		{
			name: "picker's Deployment observed, none available: Unavailable",
			after: func(t *testing.T, e env) {
				s.setDeploymentStatus(t, e.ns, "m-epp", 0)
			},
			cond: controller.CondEndpointPickerReady, status: metav1.ConditionFalse, reason: controller.ReasonUnavailable,
		},
		{
			name: "unowned Service of the picker's name: ChildConflict",
			setup: func(t *testing.T, e env) {
				s.create(t, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "m-epp"},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}}})
			},
			cond: controller.CondEndpointPickerReady, status: metav1.ConditionFalse, reason: controller.ReasonChildConflict,
		},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := env{ns: s.env.Namespace(t), crc: fmt.Sprintf("crc-%d", i)}
			if tc.setup != nil {
				tc.setup(t, e)
			}
			mr := modelRoute(e.ns, "m")
			if tc.edit != nil {
				tc.edit(e, mr)
			}
			if err := s.c.Create(ctx, mr); err != nil {
				t.Fatal(err)
			}
			if tc.after != nil {
				tc.after(t, e)
			}
			got := s.condition(t, e.ns, "m", tc.cond, tc.status, tc.reason)
			if tc.check != nil {
				tc.check(t, e, got)
			}
		})
	}
}

func (s *server) create(t testing.TB, o interface {
	GetName() string
}) {
	t.Helper()
	co, ok := o.(clientObject)
	if !ok {
		t.Fatalf("%T is not an object", o)
	}
	if err := s.c.Create(context.Background(), co); err != nil {
		t.Fatalf("creating %T %s: %v", o, o.GetName(), err)
	}
}

// routeParent waits for HTTPRoute ns/name to name Gateway gw as its parent.
func (s *server) routeParent(t testing.TB, ns, name, gw string) {
	t.Helper()
	eventually(t, "HTTPRoute parent "+gw, func() error {
		rt := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
		if err := s.get(rt); err != nil {
			return err
		}
		if len(rt.Spec.ParentRefs) != 1 || string(rt.Spec.ParentRefs[0].Name) != gw {
			return fmt.Errorf("expected parentRef %s, found %+v", gw, rt.Spec.ParentRefs)
		}
		return nil
	})
}

// setRouteAccepted plays the gateway: Accepted=st on HTTPRoute ns/name at
// its generation.
func (s *server) setRouteAccepted(t testing.TB, ns, name string, st metav1.ConditionStatus) {
	t.Helper()
	rt := &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}}
	eventually(t, "HTTPRoute "+name, func() error { return s.get(rt) })
	rt.Status.Parents = []gwapiv1.RouteParentStatus{{
		ParentRef:      gwapiv1.ParentReference{Name: "gw"},
		ControllerName: "example.com/gateway",
		Conditions: []metav1.Condition{{Type: "Accepted", Status: st, Reason: "NotAllowedByListeners",
			ObservedGeneration: rt.Generation, LastTransitionTime: metav1.Now()}},
	}}
	if err := s.c.Status().Update(context.Background(), rt); err != nil {
		t.Fatal(err)
	}
}

// setDeploymentStatus plays the Deployment controller: observed at the
// generation plus lag (negative: not yet observed), no replica available.
func (s *server) setDeploymentStatus(t testing.TB, ns, name string, lag int64) {
	t.Helper()
	d := &appsv1.Deployment{}
	d.Namespace, d.Name = ns, name
	eventually(t, "Deployment "+name, func() error { return s.get(d) })
	d.Status.ObservedGeneration = d.Generation + lag
	if err := s.c.Status().Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
}
