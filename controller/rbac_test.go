package controller_test

import (
	"context"
	"testing"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// testRBACBounds: deploy/controller/rbac.yaml grants enough (every other
// subtest runs the controller with it) and no more than this: the
// controller's ServiceAccount may not read Secrets, make pods, create
// ClusterRoles, bind any ClusterRole but the metrics-auth one, or escalate.
func (s *server) testRBACBounds(t *testing.T) {
	const user = "system:serviceaccount:fastepp-system:fastepp-controller"
	tests := []struct {
		name    string
		attr    authzv1.ResourceAttributes
		allowed bool
	}{
		{"bind the metrics-auth ClusterRole", authzv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "fastepp-epp-metrics-auth"}, true},
		{"create a picker Deployment", authzv1.ResourceAttributes{Verb: "create", Group: "apps", Resource: "deployments", Namespace: "any"}, true},
		{"update ModelRoute finalizers", authzv1.ResourceAttributes{Verb: "update", Group: "fastepp.io", Resource: "modelroutes", Subresource: "finalizers", Namespace: "any"}, true},
		{"bind cluster-admin", authzv1.ResourceAttributes{Verb: "bind", Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Name: "cluster-admin"}, false},
		{"escalate roles", authzv1.ResourceAttributes{Verb: "escalate", Group: "rbac.authorization.k8s.io", Resource: "roles", Namespace: "any"}, false},
		{"create ClusterRoles", authzv1.ResourceAttributes{Verb: "create", Group: "rbac.authorization.k8s.io", Resource: "clusterroles"}, false},
		{"read Secrets", authzv1.ResourceAttributes{Verb: "get", Resource: "secrets", Namespace: "any"}, false},
		{"create pods", authzv1.ResourceAttributes{Verb: "create", Resource: "pods", Namespace: "any"}, false},
		{"write Gateways", authzv1.ResourceAttributes{Verb: "update", Group: "gateway.networking.k8s.io", Resource: "gateways", Namespace: "any"}, false},
		{"write RoutingConfigs", authzv1.ResourceAttributes{Verb: "update", Group: "fastepp.io", Resource: "routingconfigs", Namespace: "any"}, false},
		{"delete ModelRoutes", authzv1.ResourceAttributes{Verb: "delete", Group: "fastepp.io", Resource: "modelroutes", Namespace: "any"}, false},
		{"create InferenceObjectives", authzv1.ResourceAttributes{Verb: "create", Group: "inference.networking.x-k8s.io", Resource: "inferenceobjectives", Namespace: "any"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			attr := tc.attr
			sar := &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
				User: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:fastepp-system", "system:authenticated"},
				ResourceAttributes: &attr,
			}}
			got, err := s.env.Clientset.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), sar, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if got.Status.Allowed != tc.allowed {
				t.Errorf("%+v: expected allowed=%v, found %v (%s)", tc.attr, tc.allowed, got.Status.Allowed, got.Status.Reason)
			}
		})
	}
}
