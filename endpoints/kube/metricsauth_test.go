package kube

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// metricsServer serves wrap(handler) on 127.0.0.1; the handler counts its
// calls and answers "metrics".
func metricsServer(t *testing.T, wrap func(http.Handler) http.Handler) (url string, calls *atomic.Int64) {
	t.Helper()
	calls = &atomic.Int64{}
	srv := httptest.NewServer(wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "the token reached the handler", http.StatusTeapot)
			return
		}
		io.WriteString(w, "metrics")
	})))
	t.Cleanup(srv.Close)
	return srv.URL, calls
}

// scrape sends method url with the Authorization header auth ("" = none)
// and returns the status and body.
func scrape(t *testing.T, method, url, auth string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(b))
}

// grantMetrics lets the ServiceAccount ns/sa get /metrics and waits until
// the API server's RBAC authorizer says so.
func grantMetrics(t *testing.T, env *kubetest.Env, ns, sa string) {
	t.Helper()
	name := "metrics-reader-" + ns + "-" + sa
	env.Apply(t, nil, "", []byte(fmt.Sprintf(`apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: %[1]s
rules:
- nonResourceURLs: ["/metrics"]
  verbs: ["get"]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: %[1]s
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: %[1]s
subjects:
- kind: ServiceAccount
  namespace: %[2]s
  name: %[3]s
`, name, ns, sa)))
	user := "system:serviceaccount:" + ns + ":" + sa
	waitUntil(t, 5*time.Second, user+" allowed to get /metrics", func() (bool, string) {
		r, err := env.Clientset.AuthorizationV1().SubjectAccessReviews().Create(context.Background(), &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
			User:                  user,
			Groups:                []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
			NonResourceAttributes: &authzv1.NonResourceAttributes{Path: "/metrics", Verb: "get"},
		}}, metav1.CreateOptions{})
		if err != nil {
			return false, err.Error()
		}
		return r.Status.Allowed, fmt.Sprintf("allowed=%v (%s)", r.Status.Allowed, r.Status.Reason)
	})
}

func TestMetricsAuth(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	grantMetrics(t, env, ns, "scraper")
	scraper := env.Token(t, ns, "scraper")
	nobody := env.Token(t, ns, "nobody")

	wrap, err := MetricsAuth(env.Config, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	url, calls := metricsServer(t, wrap)

	for _, tc := range []struct {
		name, method, path, auth string
		want                     int
	}{
		{"no token", "GET", "/metrics", "", http.StatusUnauthorized},
		{"not a bearer token", "GET", "/metrics", "Basic dXNlcjpwYXNz", http.StatusUnauthorized},
		{"empty bearer token", "GET", "/metrics", "Bearer ", http.StatusUnauthorized},
		{"bad token", "GET", "/metrics", "Bearer not-a-token", http.StatusUnauthorized},
		{"ServiceAccount without RBAC", "GET", "/metrics", "Bearer " + nobody, http.StatusForbidden},
		{"authorised ServiceAccount", "GET", "/metrics", "Bearer " + scraper, http.StatusOK},
		{"authorised again (cached)", "GET", "/metrics", "bearer " + scraper, http.StatusOK},
		{"authorised ServiceAccount, other verb", "POST", "/metrics", "Bearer " + scraper, http.StatusForbidden},
		{"authorised ServiceAccount, other path", "GET", "/debug/pprof/", "Bearer " + scraper, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := calls.Load()
			code, body := scrape(t, tc.method, url+tc.path, tc.auth)
			if code != tc.want {
				t.Fatalf("expected %d, found %d: %s", tc.want, code, body)
			}
			served := calls.Load() - before
			if want := int64(0); tc.want == http.StatusOK {
				if served != 1 || body != "metrics" {
					t.Fatalf("expected the handler to serve once with %q, found %d calls, body %q", "metrics", served, body)
				}
			} else if served != want {
				t.Fatalf("expected the handler not to be called, found %d calls", served)
			}
		})
	}
}

// TestMetricsAuthGrantApplies walks one ServiceAccount from 403 to 200 as
// RBAC grants it access. Denials are cached (30s with the defaults), so
// this runs with a short denial TTL.
func TestMetricsAuthGrantApplies(t *testing.T) {
	env := kubetest.Start(t)
	ns := env.Namespace(t)
	token := "Bearer " + env.Token(t, ns, "prometheus")

	set := defaultMetricsAuthSettings
	set.denyTTL = 100 * time.Millisecond
	a, err := newMetricsAuth(env.Config, testLogger(t), set)
	if err != nil {
		t.Fatal(err)
	}
	url, _ := metricsServer(t, a.wrap)
	url += "/metrics"

	if code, body := scrape(t, "GET", url, token); code != http.StatusForbidden {
		t.Fatalf("before the grant: expected 403, found %d: %s", code, body)
	}
	grantMetrics(t, env, ns, "prometheus")
	waitUntil(t, 5*time.Second, "200 after the grant", func() (bool, string) {
		code, body := scrape(t, "GET", url, token)
		return code == http.StatusOK, fmt.Sprintf("%d: %s", code, body)
	})
}

// TestMetricsAuthAPIServerDown: a review that cannot be made is a 500, and
// the handler is not called.
func TestMetricsAuthAPIServerDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	wrap, err := MetricsAuth(&rest.Config{Host: "http://" + addr}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	url, calls := metricsServer(t, wrap)
	if code, body := scrape(t, "GET", url+"/metrics", "Bearer some-token"); code != http.StatusInternalServerError {
		t.Fatalf("expected 500, found %d: %s", code, body)
	}
	if code, body := scrape(t, "GET", url+"/metrics", ""); code != http.StatusUnauthorized {
		t.Fatalf("without a token: expected 401 (no review needed), found %d: %s", code, body)
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("expected the handler not to be called, found %d calls", n)
	}
}

func TestMetricsAuthNilConfig(t *testing.T) {
	if _, err := MetricsAuth(nil, nil); err == nil || !strings.Contains(err.Error(), "expected a rest.Config, found nil") {
		t.Fatalf("expected an error about the missing config, found %v", err)
	}
}
