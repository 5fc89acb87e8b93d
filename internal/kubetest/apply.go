package kubetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DecodeYAML splits a multi-document YAML (or JSON) stream into objects,
// skipping empty documents.
func DecodeYAML(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []*unstructured.Unstructured
	for i := 1; ; i++ {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, fmt.Errorf("document %d: %w", i, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetAPIVersion() == "" {
			return nil, fmt.Errorf("document %d: expected apiVersion and kind, found %v", i, m)
		}
		out = append(out, u)
	}
}

// Apply creates (or, when they exist, replaces) every object in data,
// putting namespaced objects without a namespace into ns. It returns the
// objects as the API server stored them.
func (e *Env) Apply(t testing.TB, c client.Client, ns string, data []byte) []*unstructured.Unstructured {
	t.Helper()
	objs, err := DecodeYAML(data)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	if c == nil {
		c = e.Client
	}
	ctx := context.Background()
	for _, u := range objs {
		namespaced, err := c.IsObjectNamespaced(u)
		if err != nil {
			t.Fatalf("kubetest: %s %s: %v", u.GetKind(), u.GetName(), err)
		}
		if namespaced && u.GetNamespace() == "" {
			u.SetNamespace(ns)
		}
		err = c.Create(ctx, u)
		if apierrors.IsAlreadyExists(err) {
			cur := &unstructured.Unstructured{}
			cur.SetGroupVersionKind(u.GroupVersionKind())
			if err = c.Get(ctx, client.ObjectKeyFromObject(u), cur); err == nil {
				u.SetResourceVersion(cur.GetResourceVersion())
				err = c.Update(ctx, u)
			}
		}
		if err != nil {
			t.Fatalf("kubetest: applying %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
		}
	}
	return objs
}

// ApplyFile is Apply on a file's content.
func (e *Env) ApplyFile(t testing.TB, c client.Client, ns, path string) []*unstructured.Unstructured {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("kubetest: %v", err)
	}
	return e.Apply(t, c, ns, b)
}
