package controller_test

import (
	"context"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/fastepp/fastepp/controller"
)

// testHandOver: a hand-written Service of the picker's name is left alone
// (ChildConflict) until it carries the hand-over annotation; then the
// controller owns and overwrites it.
func (s *server) testHandOver(t *testing.T) {
	ctx := context.Background()
	ns := s.env.Namespace(t)
	mine := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "m-epp", Labels: map[string]string{"hand": "written"}},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "old", Port: 1234}}},
	}
	s.create(t, mine)
	if err := s.c.Create(ctx, modelRoute(ns, "m")); err != nil {
		t.Fatal(err)
	}
	mr := s.condition(t, ns, "m", controller.CondChildConflict, metav1.ConditionTrue, controller.ReasonChildConflict)
	s.condition(t, ns, "m", controller.CondReady, metav1.ConditionFalse, controller.ReasonChildConflict)
	if err := s.get(mine); err != nil {
		t.Fatal(err)
	}
	if len(mine.OwnerReferences) != 0 || len(mine.Spec.Ports) != 1 || mine.Spec.Ports[0].Port != 1234 {
		t.Fatalf("unowned Service: expected untouched, found owners %v ports %+v", mine.OwnerReferences, mine.Spec.Ports)
	}

	mine.Annotations = map[string]string{controller.AdoptAnnotation: "true"}
	if err := s.c.Update(ctx, mine); err != nil {
		t.Fatal(err)
	}
	s.condition(t, ns, "m", controller.CondChildConflict, metav1.ConditionFalse, controller.ReasonNoConflict)
	if err := s.get(mine); err != nil {
		t.Fatal(err)
	}
	owned(t, mine, mr)
	var ports []int32
	for _, p := range mine.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if len(ports) != 2 || ports[0] != controller.ExtProcPort || ports[1] != controller.MetricsPort {
		t.Errorf("handed-over Service ports: expected [9002 9090], found %v", ports)
	}
}
