package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	giev1 "sigs.k8s.io/gateway-api-inference-extension/api/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	v1alpha1 "github.com/fastepp/fastepp/controller/api/v1alpha1"
)

const (
	// Finalizer lets the controller delete the picker's cluster-scoped
	// ClusterRoleBinding before the ModelRoute goes.
	Finalizer = "fastepp.io/metrics-auth-binding"
	// AdoptAnnotation, set to "true" on an existing object that has a
	// child's name, hands it over: the controller takes ownership and
	// overwrites it. Without it such an object is a ChildConflict.
	AdoptAnnotation = "fastepp.io/adopt"
	// FieldOwner is the controller's server-side-apply field manager.
	FieldOwner = "fastepp-controller"
)

// Condition types.
const (
	CondReady               = "Ready"
	CondConfigResolved      = "ConfigResolved"
	CondEndpointPickerReady = "EndpointPickerReady"
	CondInferencePoolReady  = "InferencePoolReady"
	CondRouteReady          = "RouteReady"
	CondChildConflict       = "ChildConflict"
)

// Condition reasons.
const (
	ReasonReady                = "Ready"
	ReasonResolved             = "Resolved"
	ReasonConfigNotFound       = "ConfigNotFound"
	ReasonPathTemplateInvalid  = "PathTemplateInvalid"
	ReasonChildConflict        = "ChildConflict"
	ReasonNoConflict           = "NoConflict"
	ReasonAvailable            = "Available"
	ReasonUnavailable          = "Unavailable"
	ReasonProgressing          = "Progressing"
	ReasonCreated              = "Created"
	ReasonAccepted             = "Accepted"
	ReasonNotAccepted          = "NotAccepted"
	ReasonWaitingForGateway    = "WaitingForGateway"
	ReasonGatewayNotConfigured = "GatewayNotConfigured"
	ReasonRoutingDisabled      = "RoutingDisabled"
	ReasonRouteKindUnavailable = "RouteKindUnavailable"
	ReasonConfigUnresolved     = "ConfigUnresolved"
)

// Scheme knows every type the controller reads or writes.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, giev1.Install, gwapiv1.Install, v1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Reconciler reconciles ModelRoutes.
type Reconciler struct {
	// Client reads (from the manager's cache) and writes.
	Client client.Client
	// Scheme must be Scheme()'s.
	Scheme *runtime.Scheme
	// Recorder records events; nil records none.
	Recorder events.EventRecorder
	// EPPImage is the picker image when a ModelRoute names none.
	EPPImage string
	// AIGatewayRoutes is true when the AIGatewayRoute CRD is installed
	// (SetupWithManager finds out at start; install the CRD first, or
	// restart the controller after).
	AIGatewayRoutes bool
	// HTTPRoutes is true when Gateway API's HTTPRoute CRD is installed
	// (found out the same way).
	HTTPRoutes bool
}

// SetupWithManager registers the controller: ModelRoutes, every child kind
// (mapped back to the ModelRoute by owner, label or name, so a deleted,
// edited or handed-over child triggers a reconcile), routing configs and
// Gateways.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	mapper := mgr.GetRESTMapper()
	if _, err := mapper.RESTMapping(AIGatewayRouteGVK.GroupKind(), AIGatewayRouteGVK.Version); err == nil {
		r.AIGatewayRoutes = true
	}
	if _, err := mapper.RESTMapping(gwapiv1.SchemeGroupVersion.WithKind("HTTPRoute").GroupKind(), gwapiv1.GroupVersion.Version); err == nil {
		r.HTTPRoutes = true
	}
	byChild := handler.EnqueueRequestsFromMapFunc(r.mapChild)
	all := handler.EnqueueRequestsFromMapFunc(r.mapAll)
	b := ctrl.NewControllerManagedBy(mgr).
		Named("modelroute").
		For(&v1alpha1.ModelRoute{}).
		Watches(&appsv1.Deployment{}, byChild).
		Watches(&corev1.Service{}, byChild).
		Watches(&corev1.ConfigMap{}, byChild).
		Watches(&corev1.ServiceAccount{}, byChild).
		Watches(&rbacv1.Role{}, byChild).
		Watches(&rbacv1.RoleBinding{}, byChild).
		Watches(&rbacv1.ClusterRoleBinding{}, byChild).
		Watches(&giev1.InferencePool{}, byChild).
		Watches(&v1alpha1.RoutingConfig{}, all).
		Watches(&v1alpha1.ClusterRoutingConfig{}, all)
	if r.HTTPRoutes {
		b = b.Watches(&gwapiv1.HTTPRoute{}, byChild).Watches(&gwapiv1.Gateway{}, all)
	}
	if r.AIGatewayRoutes {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(AIGatewayRouteGVK)
		b = b.Watches(u, byChild)
	}
	return b.Complete(r)
}

// mapChild finds the ModelRoute of a child: its controller owner, its
// fastepp.io/modelroute label, or its name (<name>, <name>-epp,
// <name>-epp-leader-election) for objects not yet owned.
func (r *Reconciler) mapChild(_ context.Context, o client.Object) []reconcile.Request {
	ns := o.GetNamespace()
	if v := o.GetLabels()[LabelOwnerNamespace]; v != "" {
		ns = v
	}
	if ns == "" {
		return nil
	}
	if ref := metav1.GetControllerOf(o); ref != nil && ref.Kind == "ModelRoute" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: ref.Name}}}
	}
	if v := o.GetLabels()[LabelModelRoute]; v != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: ns, Name: v}}}
	}
	n := o.GetName()
	names := []string{n}
	for _, suf := range []string{"-epp-leader-election", "-epp"} {
		if s, ok := strings.CutSuffix(n, suf); ok {
			names = append(names, s)
		}
	}
	reqs := make([]reconcile.Request, 0, len(names))
	for _, name := range names {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: ns, Name: name}})
	}
	return reqs
}

// mapAll enqueues every ModelRoute (of the object's namespace when it has
// one): routing configs and Gateways are few and change rarely.
func (r *Reconciler) mapAll(ctx context.Context, o client.Object) []reconcile.Request {
	var list v1alpha1.ModelRouteList
	var opts []client.ListOption
	if _, isRC := o.(*v1alpha1.RoutingConfig); isRC {
		opts = append(opts, client.InNamespace(o.GetNamespace()))
	}
	if err := r.Client.List(ctx, &list, opts...); err != nil {
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, mr := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Namespace: mr.Namespace, Name: mr.Name}})
	}
	return reqs
}

// condErr is a failure that becomes a condition, not a retry.
type condErr struct{ reason, msg string }

// Reconcile converges one ModelRoute's children and status.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	mr := &v1alpha1.ModelRoute{}
	if err := r.Client.Get(ctx, req.NamespacedName, mr); err != nil {
		return reconcile.Result{}, client.IgnoreNotFound(err)
	}
	if !mr.DeletionTimestamp.IsZero() {
		return reconcile.Result{}, r.finalize(ctx, mr)
	}
	if !controllerutil.ContainsFinalizer(mr, Finalizer) {
		controllerutil.AddFinalizer(mr, Finalizer)
		if err := r.Client.Update(ctx, mr); err != nil {
			return reconcile.Result{}, err
		}
	}
	orig := mr.DeepCopy()
	s := &state{mr: mr}

	// Routing: the three levels, then the path.
	routing, cerr := r.resolveRouting(ctx, mr)
	var path string
	// An AIGatewayRoute matches the model header, not a path: no template.
	if cerr == nil && routing.Kind != v1alpha1.RouteKindAIGatewayRoute {
		p, err := RenderPath(routing.PathTemplate, mr)
		if err != nil {
			cerr = &condErr{ReasonPathTemplateInvalid, err.Error()}
		}
		path = p
	}
	if cerr != nil {
		s.set(CondConfigResolved, false, cerr.reason, cerr.msg)
		if newReason(orig, CondConfigResolved, cerr.reason) {
			r.event(mr, corev1.EventTypeWarning, cerr.reason, cerr.msg)
		}
	} else {
		s.set(CondConfigResolved, true, ReasonResolved, fmt.Sprintf("routing from ModelRoute, RoutingConfig and ClusterRoutingConfig %q", configName(mr)))
	}

	// The picker.
	var pickerConflicts []string
	apply := func(obj client.Object, conflicts *[]string) error {
		ok, err := r.ensure(ctx, mr, obj)
		if err != nil {
			return err
		}
		if !ok {
			*conflicts = append(*conflicts, childName(obj))
			return nil
		}
		s.children = append(s.children, childRef(obj))
		return nil
	}
	pickerObjs := PickerObjects(mr, r.EPPImage)
	var dep *appsv1.Deployment
	for _, o := range pickerObjs {
		if d, ok := o.(*appsv1.Deployment); ok {
			dep = d
		}
	}
	for _, o := range pickerObjs {
		if err := apply(o, &pickerConflicts); err != nil {
			return reconcile.Result{}, err
		}
	}
	if !leaderElection(mr) { // remove what an earlier spec made
		name := leaderElectionName(mr)
		if err := r.deleteOwned(ctx, mr, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: mr.Namespace, Name: name}}); err != nil {
			return reconcile.Result{}, err
		}
		if err := r.deleteOwned(ctx, mr, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: mr.Namespace, Name: name}}); err != nil {
			return reconcile.Result{}, err
		}
	}

	// The pool.
	var poolConflicts []string
	var poolAnn map[string]string
	if routing.Kind == v1alpha1.RouteKindAIGatewayRoute && routing.BodyMode != "" {
		poolAnn = map[string]string{BodyModeAnnotation: routing.BodyMode}
	}
	pool := InferencePool(mr, poolAnn)
	if err := apply(pool, &poolConflicts); err != nil {
		return reconcile.Result{}, err
	}

	// The route.
	var routeConflicts []string
	var route client.Object
	routeKind := v1alpha1.RouteKind("")
	switch {
	case cerr != nil:
		s.set(CondRouteReady, false, ReasonConfigUnresolved, "routing is not resolved: "+cerr.msg)
	case !*routing.Enabled:
		s.set(CondRouteReady, true, ReasonRoutingDisabled, "routing.enabled is false: no route is created")
	case routing.GatewayRef == nil:
		s.set(CondRouteReady, false, ReasonGatewayNotConfigured, "no gatewayRef in the ModelRoute, its RoutingConfig or the ClusterRoutingConfig")
	case routing.Kind == v1alpha1.RouteKindAIGatewayRoute && !r.AIGatewayRoutes:
		s.set(CondRouteReady, false, ReasonRouteKindUnavailable, "the AIGatewayRoute CRD (aigateway.envoyproxy.io/v1alpha1) is not installed")
	case routing.Kind == v1alpha1.RouteKindHTTPRoute && !r.HTTPRoutes:
		s.set(CondRouteReady, false, ReasonRouteKindUnavailable, "the HTTPRoute CRD (gateway.networking.k8s.io/v1) is not installed")
	default:
		routeKind = routing.Kind
		if routeKind == v1alpha1.RouteKindAIGatewayRoute {
			route = AIGatewayRoute(mr, routing)
		} else {
			route = HTTPRoute(mr, routing, path)
		}
		if err := apply(route, &routeConflicts); err != nil {
			return reconcile.Result{}, err
		}
	}
	// Remove a route of the kind not (or no longer) wanted.
	if cerr == nil {
		if routeKind != v1alpha1.RouteKindHTTPRoute && r.HTTPRoutes {
			if err := r.deleteOwned(ctx, mr, &gwapiv1.HTTPRoute{ObjectMeta: metav1.ObjectMeta{Namespace: mr.Namespace, Name: mr.Name}}); err != nil {
				return reconcile.Result{}, err
			}
		}
		if routeKind != v1alpha1.RouteKindAIGatewayRoute && r.AIGatewayRoutes {
			u := &unstructured.Unstructured{}
			u.SetGroupVersionKind(AIGatewayRouteGVK)
			u.SetNamespace(mr.Namespace)
			u.SetName(mr.Name)
			if err := r.deleteOwned(ctx, mr, u); err != nil {
				return reconcile.Result{}, err
			}
		}
	}

	// Status from the children's own status.
	conflicts := slices.Concat(pickerConflicts, poolConflicts, routeConflicts)
	if len(conflicts) > 0 {
		msg := fmt.Sprintf("objects exist without this ModelRoute as owner: %s; annotate one with %s=true to hand it over", strings.Join(conflicts, ", "), AdoptAnnotation)
		s.set(CondChildConflict, true, ReasonChildConflict, msg)
		if newReason(orig, CondChildConflict, ReasonChildConflict) {
			r.event(mr, corev1.EventTypeWarning, ReasonChildConflict, msg)
		}
	} else {
		s.set(CondChildConflict, false, ReasonNoConflict, "every child is owned by this ModelRoute")
	}
	if len(pickerConflicts) > 0 {
		s.set(CondEndpointPickerReady, false, ReasonChildConflict, "not owned: "+strings.Join(pickerConflicts, ", "))
	} else if err := r.pickerStatus(ctx, s, dep); err != nil {
		return reconcile.Result{}, err
	}
	if len(poolConflicts) > 0 {
		s.set(CondInferencePoolReady, false, ReasonChildConflict, "not owned: "+strings.Join(poolConflicts, ", "))
	} else if err := r.poolStatus(ctx, s, pool); err != nil {
		return reconcile.Result{}, err
	}
	if route != nil {
		if len(routeConflicts) > 0 {
			s.set(CondRouteReady, false, ReasonChildConflict, "not owned: "+strings.Join(routeConflicts, ", "))
		} else if err := r.routeStatus(ctx, s, route, gatewayParent(mr, routing)); err != nil {
			return reconcile.Result{}, err
		}
	}
	s.ready()

	mr.Status.ObservedGeneration = mr.Generation
	mr.Status.Path = path
	mr.Status.URL = ""
	if cerr == nil && route != nil && *routing.Enabled {
		mr.Status.URL = r.gatewayURL(ctx, gatewayParent(mr, routing), path)
	}
	mr.Status.Children = s.children
	if !equality.Semantic.DeepEqual(orig.Status, mr.Status) {
		if err := r.Client.Status().Patch(ctx, mr, client.MergeFrom(orig)); err != nil {
			return reconcile.Result{}, err
		}
	}
	return reconcile.Result{}, nil
}

// configName is the routing config the ModelRoute names.
func configName(mr *v1alpha1.ModelRoute) string {
	if mr.Spec.RoutingConfigName != "" {
		return mr.Spec.RoutingConfigName
	}
	return DefaultConfigName
}

// resolveRouting merges the three levels. A named config must exist at the
// namespace or the cluster level; "default" may be missing at both. The
// result is Effective even on error (so the pool's annotation is stable).
func (r *Reconciler) resolveRouting(ctx context.Context, mr *v1alpha1.ModelRoute) (v1alpha1.Routing, *condErr) {
	name := configName(mr)
	var nsLevel, clusterLevel *v1alpha1.Routing
	rc := &v1alpha1.RoutingConfig{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Namespace: mr.Namespace, Name: name}, rc); {
	case err == nil:
		nsLevel = &rc.Spec.Routing
	case !apierrors.IsNotFound(err):
		return Effective(MergeRouting(mr.Spec.Routing)), &condErr{ReasonConfigNotFound, fmt.Sprintf("reading RoutingConfig %s/%s: %v", mr.Namespace, name, err)}
	}
	crc := &v1alpha1.ClusterRoutingConfig{}
	switch err := r.Client.Get(ctx, types.NamespacedName{Name: name}, crc); {
	case err == nil:
		clusterLevel = &crc.Spec.Routing
	case !apierrors.IsNotFound(err):
		return Effective(MergeRouting(mr.Spec.Routing)), &condErr{ReasonConfigNotFound, fmt.Sprintf("reading ClusterRoutingConfig %s: %v", name, err)}
	}
	merged := Effective(MergeRouting(mr.Spec.Routing, nsLevel, clusterLevel))
	if name != DefaultConfigName && nsLevel == nil && clusterLevel == nil {
		return merged, &condErr{ReasonConfigNotFound, fmt.Sprintf("spec.routingConfigName is %q: expected a RoutingConfig %s/%s or a ClusterRoutingConfig %s, found neither", name, mr.Namespace, name, name)}
	}
	return merged, nil
}

// owns reports whether mr owns the existing object o.
func owns(mr *v1alpha1.ModelRoute, o client.Object) bool {
	if o.GetNamespace() == "" { // cluster-scoped: labels stand for the owner reference
		l := o.GetLabels()
		return l[LabelModelRoute] == mr.Name && l[LabelOwnerNamespace] == mr.Namespace
	}
	ref := metav1.GetControllerOf(o)
	return ref != nil && ref.UID == mr.UID
}

// ensure server-side-applies the desired object unless an object of its
// name exists that mr does not own and that is not handed over (false).
func (r *Reconciler) ensure(ctx context.Context, mr *v1alpha1.ModelRoute, desired client.Object) (bool, error) {
	gvk, err := r.gvkOf(desired)
	if err != nil {
		return false, err
	}
	cur, err := r.newObject(gvk)
	if err != nil {
		return false, err
	}
	err = r.Client.Get(ctx, client.ObjectKeyFromObject(desired), cur)
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return false, fmt.Errorf("reading %s: %w", childName(desired), err)
	case !owns(mr, cur) && cur.GetAnnotations()[AdoptAnnotation] != "true":
		return false, nil
	}
	if desired.GetNamespace() != "" {
		if err := controllerutil.SetControllerReference(mr, desired, r.Scheme); err != nil {
			return false, err
		}
	}
	u, err := toApply(desired, gvk)
	if err != nil {
		return false, err
	}
	if cur.GetResourceVersion() != "" && !owns(mr, cur) {
		// Hand-over: replace the object whole (an apply would keep the
		// fields its old managers set), then apply as usual from now on.
		u.SetResourceVersion(cur.GetResourceVersion())
		if gvk.Kind == "Service" {
			keepAllocated(u, cur)
		}
		if err := r.Client.Update(ctx, u, client.FieldOwner(FieldOwner)); err != nil {
			return false, fmt.Errorf("taking over %s: %w", childName(desired), err)
		}
		r.event(mr, corev1.EventTypeNormal, "HandedOver", fmt.Sprintf("took over %s (annotation %s)", childName(desired), AdoptAnnotation))
		return true, nil
	}
	if err := r.Client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return false, fmt.Errorf("applying %s: %w", childName(desired), err)
	}
	if cur.GetResourceVersion() == "" {
		r.event(mr, corev1.EventTypeNormal, "Created", "created "+childName(desired))
	}
	return true, nil
}

// toApply is the object as an apply configuration: apiVersion and kind
// set, no status, no creationTimestamp.
func toApply(o client.Object, gvk gvkT) (*unstructured.Unstructured, error) {
	var u *unstructured.Unstructured
	if in, ok := o.(*unstructured.Unstructured); ok {
		u = in.DeepCopy()
	} else {
		m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(o)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", gvk.Kind, o.GetName(), err)
		}
		u = &unstructured.Unstructured{Object: m}
	}
	u.SetGroupVersionKind(gvk)
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

type gvkT = schema.GroupVersionKind

// deleteOwned deletes o if it exists and mr owns it.
func (r *Reconciler) deleteOwned(ctx context.Context, mr *v1alpha1.ModelRoute, o client.Object) error {
	if err := r.Client.Get(ctx, client.ObjectKeyFromObject(o), o); err != nil {
		return client.IgnoreNotFound(err)
	}
	if !owns(mr, o) {
		return nil
	}
	if err := r.Client.Delete(ctx, o); err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}

// finalize deletes the ClusterRoleBinding and releases the ModelRoute.
func (r *Reconciler) finalize(ctx context.Context, mr *v1alpha1.ModelRoute) error {
	if !controllerutil.ContainsFinalizer(mr, Finalizer) {
		return nil
	}
	if err := r.deleteOwned(ctx, mr, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: ClusterBindingName(mr)}}); err != nil {
		return err
	}
	controllerutil.RemoveFinalizer(mr, Finalizer)
	return r.Client.Update(ctx, mr)
}

func (r *Reconciler) event(mr *v1alpha1.ModelRoute, typ, reason, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(mr, nil, typ, reason, "Reconcile", "%s", msg)
	}
}

var errNoGVK = errors.New("no kind")

func (r *Reconciler) gvkOf(o client.Object) (gvkT, error) {
	if u, ok := o.(*unstructured.Unstructured); ok {
		return u.GroupVersionKind(), nil
	}
	gvks, _, err := r.Scheme.ObjectKinds(o)
	if err != nil || len(gvks) == 0 {
		return gvkT{}, fmt.Errorf("%T: %w: %v", o, errNoGVK, err)
	}
	return gvks[0], nil
}

func (r *Reconciler) newObject(gvk gvkT) (client.Object, error) {
	if gvk == AIGatewayRouteGVK {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gvk)
		return u, nil
	}
	o, err := r.Scheme.New(gvk)
	if err != nil {
		return nil, err
	}
	co, ok := o.(client.Object)
	if !ok {
		return nil, fmt.Errorf("%v is not an object", gvk)
	}
	return co, nil
}

func childName(o client.Object) string {
	kind := o.GetObjectKind().GroupVersionKind().Kind
	if o.GetNamespace() == "" {
		return kind + " " + o.GetName()
	}
	return kind + " " + o.GetNamespace() + "/" + o.GetName()
}

func childRef(o client.Object) v1alpha1.ChildRef {
	gvk := o.GetObjectKind().GroupVersionKind()
	return v1alpha1.ChildRef{APIVersion: gvk.GroupVersion().String(), Kind: gvk.Kind, Name: o.GetName(), Namespace: o.GetNamespace()}
}

// Setup registers the ModelRoute controller with mgr (whose scheme must be
// Scheme()'s), recording events as "fastepp-controller"; eppImage is the
// picker image for ModelRoutes that name none.
func Setup(mgr ctrl.Manager, eppImage string) error {
	r := &Reconciler{
		Client:   mgr.GetClient(),
		Scheme:   mgr.GetScheme(),
		Recorder: mgr.GetEventRecorder(FieldOwner),
		EPPImage: eppImage,
	}
	return r.SetupWithManager(mgr)
}

// keepAllocated copies a Service's allocated cluster IPs into the
// replacement (they are immutable).
func keepAllocated(u *unstructured.Unstructured, cur client.Object) {
	svc, ok := cur.(*corev1.Service)
	if !ok {
		return
	}
	if svc.Spec.ClusterIP != "" {
		_ = unstructured.SetNestedField(u.Object, svc.Spec.ClusterIP, "spec", "clusterIP")
	}
	if len(svc.Spec.ClusterIPs) > 0 {
		_ = unstructured.SetNestedStringSlice(u.Object, svc.Spec.ClusterIPs, "spec", "clusterIPs")
	}
}

// newReason reports whether the condition typ of the ModelRoute as read
// had another reason (events are recorded on changes, not every reconcile).
func newReason(mr *v1alpha1.ModelRoute, typ, reason string) bool {
	c := meta.FindStatusCondition(mr.Status.Conditions, typ)
	return c == nil || c.Reason != reason
}
