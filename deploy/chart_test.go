package deploy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"maps"
	"math/big"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/fastepp/fastepp/internal/kubetest"
)

// standInCRDs stand in for prometheus-operator's ServiceMonitor and
// cert-manager's Certificate (deploy/testdata).
var standInCRDs = []string{
	filepath.Join("testdata", "servicemonitor-crd.yaml"),
	filepath.Join("testdata", "certificate-crd.yaml"),
}

// baseValues is the one value the chart requires, as GIE's guides set it.
const baseValues = "inferencePool:\n  modelServers:\n    matchLabels:\n      app: " + poolName + "\n"

// chartArgs are the picker arguments the chart passes by default in ns.
func chartArgs(ns string, more ...string) []string {
	args := []string{"--pool-name", poolName, "--pool-namespace", ns, "--pool-group", "inference.networking.k8s.io",
		"--zap-encoder", "json", "--config-file", "/config/default-plugins.yaml"}
	return append(args, more...)
}

// TestChart renders the chart (defaults; replicas 2 with a ServiceMonitor
// and a TLS Secret; a cert-manager Certificate with InferenceObjectives),
// applies every object to a real API server, and checks the picker
// Deployment, the wiring, the optional objects and the pod's Pod Security.
func TestChart(t *testing.T) {
	t.Parallel()
	env := kubetest.StartWith(t, kubetest.Options{ExtraCRDs: standInCRDs})
	for _, c := range []struct {
		name   string
		values string
		setup  func(t *testing.T, ns string)
		kinds  map[string]int
		expect func(ns string) pickerExpect
		check  func(t *testing.T, ns string, objs []*unstructured.Unstructured)
	}{
		{
			name:   "defaults",
			values: baseValues,
			kinds: map[string]int{"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "ClusterRole": 1, "ClusterRoleBinding": 1,
				"ConfigMap": 1, "Deployment": 1, "Service": 1, "InferencePool": 1},
			expect: func(ns string) pickerExpect {
				return pickerExpect{args: chartArgs(ns, "--v=1", "--tracing=false"), replicas: 1}
			},
		},
		{
			name: "replicas 2, ServiceMonitor, TLS Secret",
			values: baseValues + `inferenceExtension:
  replicas: 2
  monitoring:
    prometheus:
      enabled: true
      extraLabels: {release: prometheus}
  tls:
    secretName: epp-tls
`,
			setup: func(t *testing.T, ns string) { createTLSSecret(t, env, ns, "epp-tls") },
			kinds: map[string]int{"ServiceAccount": 2, "Role": 2, "RoleBinding": 2, "ClusterRole": 2, "ClusterRoleBinding": 2,
				"Secret": 1, "ServiceMonitor": 1, "ConfigMap": 1, "Deployment": 1, "Service": 1, "InferencePool": 1},
			expect: func(ns string) pickerExpect {
				return pickerExpect{
					args: chartArgs(ns, "--ha-enable-leader-election", "--secure-serving=true", "--cert-path=/var/run/epp-tls",
						"--enable-cert-reload", "--v=1", "--tracing=false"),
					replicas: 2, extraMounts: map[string]string{"tls": "/var/run/epp-tls"},
				}
			},
			check: func(t *testing.T, ns string, objs []*unstructured.Unstructured) {
				d := deployment(t, objs, eppName)
				for _, v := range d.Spec.Template.Spec.Volumes {
					if v.Name == "tls" && (v.Secret == nil || v.Secret.SecretName != "epp-tls") {
						t.Errorf("volume tls %+v, expected the Secret epp-tls (a Secret volume, so renewals reach the files)", v)
					}
				}
				const secret = "inference-gateway-sa-metrics-reader-secret"
				sm := find(t, objs, "ServiceMonitor", eppName+"-monitor")
				eps, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
				if len(eps) != 1 {
					t.Fatalf("ServiceMonitor endpoints %v, expected one", eps)
				}
				ep := eps[0].(map[string]any)
				cred, _, _ := unstructured.NestedStringMap(ep, "authorization", "credentials")
				if ep["port"] != "http-metrics" || ep["path"] != "/metrics" || cred["name"] != secret || cred["key"] != "token" {
					t.Errorf("ServiceMonitor endpoint %v: expected port http-metrics, path /metrics, bearer token from %s key token", ep, secret)
				}
				if l := sm.GetLabels()["release"]; l != "prometheus" {
					t.Errorf("ServiceMonitor extraLabels not applied: labels %v", sm.GetLabels())
				}
				sel, _, _ := unstructured.NestedStringMap(sm.Object, "spec", "selector", "matchLabels")
				svc := find(t, objs, "Service", eppName)
				if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(svc.GetLabels())) {
					t.Errorf("ServiceMonitor selector %v does not select the Service (labels %v)", sel, svc.GetLabels())
				}
				if nss, _, _ := unstructured.NestedStringSlice(sm.Object, "spec", "namespaceSelector", "matchNames"); !slices.Equal(nss, []string{ns}) {
					t.Errorf("ServiceMonitor namespaceSelector %v, expected [%s]", nss, ns)
				}
				tok := find(t, objs, "Secret", secret)
				if typ, _, _ := unstructured.NestedString(tok.Object, "type"); typ != string(corev1.SecretTypeServiceAccountToken) ||
					tok.GetAnnotations()[corev1.ServiceAccountNameKey] != eppName+"-metrics-reader" {
					t.Errorf("Secret %s: type %q, annotations %v; expected a token of %s-metrics-reader", secret, typ, tok.GetAnnotations(), eppName)
				}
			},
		},
		{
			name: "cert-manager, objectives, sglang, buffered body",
			values: baseValues + `  modelServerType: sglang
  annotations:
    aigateway.envoyproxy.io/processing-body-mode: buffered
inferenceExtension:
  tls:
    secretName: epp-tls
    reload: false
    certManager:
      enabled: true
      issuerRef: {name: in-cluster-ca, kind: ClusterIssuer}
inferenceObjectives:
- name: interactive
  priority: 10
- name: batch
  priority: -1
`,
			kinds: map[string]int{"ServiceAccount": 1, "Role": 1, "RoleBinding": 1, "ClusterRole": 1, "ClusterRoleBinding": 1,
				"Certificate": 1, "InferenceObjective": 2, "ConfigMap": 1, "Deployment": 1, "Service": 1, "InferencePool": 1},
			expect: func(ns string) pickerExpect {
				return pickerExpect{
					args:     chartArgs(ns, "--secure-serving=true", "--cert-path=/var/run/epp-tls", "--v=1", "--tracing=false"),
					replicas: 1, extraMounts: map[string]string{"tls": "/var/run/epp-tls"},
				}
			},
			check: func(t *testing.T, ns string, objs []*unstructured.Unstructured) {
				cert := find(t, objs, "Certificate", eppName)
				secret, _, _ := unstructured.NestedString(cert.Object, "spec", "secretName")
				dns, _, _ := unstructured.NestedStringSlice(cert.Object, "spec", "dnsNames")
				issuer, _, _ := unstructured.NestedStringMap(cert.Object, "spec", "issuerRef")
				if secret != "epp-tls" || !slices.Contains(dns, eppName+"."+ns+".svc") || issuer["name"] != "in-cluster-ca" || issuer["kind"] != "ClusterIssuer" {
					t.Errorf("Certificate: secretName %q, dnsNames %v, issuerRef %v", secret, dns, issuer)
				}
				for _, name := range []string{"interactive", "batch"} {
					o := find(t, objs, "InferenceObjective", name)
					if ref, _, _ := unstructured.NestedString(o.Object, "spec", "poolRef", "name"); ref != poolName {
						t.Errorf("InferenceObjective %s poolRef.name %q, expected %s", name, ref, poolName)
					}
				}
				pool := find(t, objs, "InferencePool", poolName)
				if m := pool.GetAnnotations()["aigateway.envoyproxy.io/processing-body-mode"]; m != "buffered" {
					t.Errorf("InferencePool annotations %v, expected processing-body-mode buffered", pool.GetAnnotations())
				}
				cm := find(t, objs, "ConfigMap", eppName)
				if cfg, _, _ := unstructured.NestedString(cm.Object, "data", "default-plugins.yaml"); !strings.Contains(cfg, `defaultEngine: "sglang"`) {
					t.Errorf("config for sglang does not set core-metrics-extractor's defaultEngine:\n%s", cfg)
				}
			},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			ns := env.Namespace(t)
			if c.setup != nil {
				c.setup(t, ns)
			}
			rendered := decode(t, helmTemplate(t, poolName, ns, c.values))
			if got := kinds(rendered); !maps.Equal(got, c.kinds) {
				t.Errorf("rendered objects by kind: %v, expected %v", got, c.kinds)
			}
			objs := env.Apply(t, nil, ns, encode(t, rendered))
			for _, o := range objs {
				if o.GetUID() == "" {
					t.Errorf("%s/%s was not stored", o.GetKind(), o.GetName())
				}
			}
			want := c.expect(ns)
			want.image, want.configMap, want.serviceAccount = "ghcr.io/fastepp/epp:0.0.0", eppName, eppName
			d := deployment(t, objs, eppName)
			checkPickerDeployment(t, d, want)
			checkWiring(t, objs, poolName, eppName)
			checkRestricted(t, env, d.Spec.Template)
			if c.check != nil {
				c.check(t, ns, objs)
			}
		})
	}
}

// createTLSSecret stores a kubernetes.io/tls Secret with a fresh self-signed
// pair, as cert-manager would.
func createTLSSecret(t *testing.T, env *kubetest.Env, ns, name string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: eppName},
		DNSNames: []string{eppName + "." + ns + ".svc"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Type: corev1.SecretTypeTLS, Data: map[string][]byte{
		corev1.TLSCertKey:       pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		corev1.TLSPrivateKeyKey: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
	}}
	if err := env.Client.Create(context.Background(), s); err != nil {
		t.Fatal(err)
	}
}

// TestChartProviders renders the provider extras and optional objects that
// need CRDs the test API server lacks (GKE's, Istio's, Gateway API's) and
// checks them without applying.
func TestChartProviders(t *testing.T) {
	t.Parallel()
	const ns = "llm"
	for _, c := range []struct {
		name, values string
		check        func(t *testing.T, objs []*unstructured.Unstructured)
	}{
		{"istio", baseValues + "provider:\n  name: istio\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			dr := find(t, objs, "DestinationRule", eppName)
			host, _, _ := unstructured.NestedString(dr.Object, "spec", "host")
			mode, _, _ := unstructured.NestedString(dr.Object, "spec", "trafficPolicy", "tls", "mode")
			if host != eppName+"."+ns+".svc.cluster.local" || mode != "SIMPLE" {
				t.Errorf("DestinationRule host %q tls mode %q", host, mode)
			}
		}},
		{"gke with monitoring", baseValues + "provider:\n  name: gke\ninferenceExtension:\n  monitoring:\n    prometheus:\n      enabled: true\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			k := kinds(objs)
			for _, kind := range []string{"HealthCheckPolicy", "GCPBackendPolicy", "PodMonitoring"} {
				if k[kind] != 1 {
					t.Errorf("%s: %d rendered, expected 1 (objects: %s)", kind, k[kind], inventory(objs))
				}
			}
			if k["ServiceMonitor"] != 0 {
				t.Errorf("GKE renders a ServiceMonitor; expected PodMonitoring only")
			}
			hc := find(t, objs, "HealthCheckPolicy", poolName)
			if port, _, _ := unstructured.NestedFieldNoCopy(hc.Object, "spec", "default", "config", "httpHealthCheck", "port"); fmt.Sprint(port) != "8000" {
				t.Errorf("HealthCheckPolicy port %v, expected the pool's target port 8000", port)
			}
		}},
		{"experimental HTTPRoute", baseValues + "experimentalHttpRoute:\n  enabled: true\n", func(t *testing.T, objs []*unstructured.Unstructured) {
			r := find(t, objs, "HTTPRoute", poolName)
			rules, _, _ := unstructured.NestedSlice(r.Object, "spec", "rules")
			if len(rules) != 1 {
				t.Fatalf("HTTPRoute rules %v", rules)
			}
			refs, _, _ := unstructured.NestedSlice(rules[0].(map[string]any), "backendRefs")
			want := map[string]any{"group": "inference.networking.k8s.io", "kind": "InferencePool", "name": poolName}
			if len(refs) != 1 || !maps.Equal(refs[0].(map[string]any), want) {
				t.Errorf("HTTPRoute backendRefs %v, expected [%v]", refs, want)
			}
			parents, _, _ := unstructured.NestedSlice(r.Object, "spec", "parentRefs")
			if len(parents) != 1 || parents[0].(map[string]any)["name"] != "inference-gateway" {
				t.Errorf("HTTPRoute parentRefs %v, expected the Gateway inference-gateway", parents)
			}
		}},
		{"flags", baseValues + "inferenceExtension:\n  flags:\n    v: 3\n    max-request-body-bytes: 16777216\n    enable-pprof: true\n    metrics-staleness-threshold: 500ms\n",
			func(t *testing.T, objs []*unstructured.Unstructured) {
				d := deployment(t, objs, eppName)
				args := d.Spec.Template.Spec.Containers[0].Args
				for _, a := range []string{"--v=3", "--max-request-body-bytes=16777216", "--enable-pprof=true", "--metrics-staleness-threshold=500ms"} {
					if !slices.Contains(args, a) {
						t.Errorf("args %q: missing %q (one argument per flag, whole numbers not in e-notation)", args, a)
					}
				}
			}},
	} {
		t.Run(c.name, func(t *testing.T) { c.check(t, decode(t, helmTemplate(t, poolName, ns, c.values))) })
	}
}

// TestChartRefuses: values of GIE's chart for features fastepp does not have
// fail at render time with the reason, instead of deploying a picker that
// refuses to start.
func TestChartRefuses(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ name, values, want string }{
		{"no model servers", "inferenceExtension:\n  replicas: 1\n", "inferencePool.modelServers.matchLabels is required"},
		{"grpc model servers", baseValues + "  modelServerProtocol: grpc\n", "vLLM's gRPC API (vllmgrpc-parser) is not supported"},
		{"passthrough parser", baseValues + "  parser: passthrough-parser\n", "only openai-parser (or empty) is accepted"},
		{"unknown engine", baseValues + "  modelServerType: tgi\n", `inferencePool.modelServerType "tgi"`},
		{"latency predictor", baseValues + "inferenceExtension:\n  latencyPredictor:\n    enabled: true\n", "fastepp has no latency predictor"},
		{"unknown provider", baseValues + "provider:\n  name: aws\n", `provider.name "aws"`},
		{"cert-manager without a Secret", baseValues + "inferenceExtension:\n  tls:\n    certManager:\n      enabled: true\n      issuerRef: {name: ca}\n", "needs inferenceExtension.tls.secretName"},
		{"cert-manager without an issuer", baseValues + "inferenceExtension:\n  tls:\n    secretName: s\n    certManager:\n      enabled: true\n", "issuerRef.name is required"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, err := helmTemplateErr(t, poolName, "llm", c.values)
			if err == nil {
				t.Fatalf("rendered, expected an error containing %q:\n%s", c.want, out)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %v\nexpected it to contain %q", err, c.want)
			}
		})
	}
}
