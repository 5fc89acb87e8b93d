package kube

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/cache"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	"k8s.io/apimachinery/pkg/util/wait"
	authnv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	authzv1client "k8s.io/client-go/kubernetes/typed/authorization/v1"
	"k8s.io/client-go/rest"
)

// metricsAuthSettings are the knobs of controller-runtime's
// filters.WithAuthenticationAndAuthorization (v0.24.1), which GIE's EPP
// puts in front of /metrics with --metrics-endpoint-auth.
type metricsAuthSettings struct {
	tokenTTL  time.Duration // TokenReview results, authenticated or not (CacheTTL)
	allowTTL  time.Duration // allowing SubjectAccessReviews (AllowCacheTTL)
	denyTTL   time.Duration // denying ones (DenyCacheTTL)
	timeout   time.Duration // one review, retries included (TokenAccessReviewTimeout)
	backoff   wait.Backoff  // retries of transient failures (WebhookRetryBackoff)
	cacheSize int           // entries per cache (the SAR cache's size in k8s.io/apiserver)
}

var defaultMetricsAuthSettings = metricsAuthSettings{
	tokenTTL:  time.Minute,
	allowTTL:  5 * time.Minute,
	denyTTL:   30 * time.Second,
	timeout:   10 * time.Second,
	backoff:   wait.Backoff{Duration: 500 * time.Millisecond, Factor: 1.5, Jitter: 0.2, Steps: 5},
	cacheSize: 10000,
}

// MetricsAuth returns middleware that serves a request only to a caller
// the API server authenticates and authorises, as GIE's EPP protects
// /metrics: the bearer token is checked with a TokenReview and the
// identity's right to the request's lower-cased method on its path (a
// non-resource URL, so "get" on "/metrics" for a scrape) with a
// SubjectAccessReview. No or a rejected token gets 401, a denied identity
// 403, a failed review 500. Results are cached like controller-runtime's
// filter does: tokens for 1 minute, allowances for 5 minutes, denials for
// 30 seconds.
//
// The identity of cfg needs "create" on tokenreviews
// (authentication.k8s.io) and subjectaccessreviews (authorization.k8s.io);
// scrapers need "get" on the nonResourceURL "/metrics".
//
// This is controller-runtime's filters.WithAuthenticationAndAuthorization
// rebuilt on client-go, which spares fastepp k8s.io/apiserver and its CEL
// dependencies, with one deliberate difference: the filter answers 500 to a
// token the API server rejects (k8s.io/apiserver's bearer-token
// authenticator reports it as an error); here that is 401, as the API
// server itself answers.
func MetricsAuth(cfg *rest.Config, log *slog.Logger) (func(http.Handler) http.Handler, error) {
	a, err := newMetricsAuth(cfg, log, defaultMetricsAuthSettings)
	if err != nil {
		return nil, err
	}
	return a.wrap, nil
}

// metricsAuth checks requests with TokenReviews and SubjectAccessReviews.
type metricsAuth struct {
	tokens authnv1client.TokenReviewInterface
	sars   authzv1client.SubjectAccessReviewInterface
	set    metricsAuthSettings
	log    *slog.Logger

	tokenCache *cache.LRUExpireCache // sha256(token) → tokenResult
	sarCache   *cache.LRUExpireCache // JSON of the review's spec → sarResult
}

// tokenResult is a cached TokenReview outcome (user nil: not authenticated).
type tokenResult struct {
	user   *authnv1.UserInfo
	reason string
}

// sarResult is a cached SubjectAccessReview outcome.
type sarResult struct {
	allowed bool
	reason  string
}

func newMetricsAuth(cfg *rest.Config, log *slog.Logger, set metricsAuthSettings) (*metricsAuth, error) {
	if cfg == nil {
		return nil, errors.New("kube.MetricsAuth: expected a rest.Config, found nil")
	}
	if log == nil {
		log = slog.Default()
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("kube.MetricsAuth: HTTP client for %s: %w", cfg.Host, err)
	}
	authn, err := authnv1client.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("kube.MetricsAuth: TokenReview client for %s: %w", cfg.Host, err)
	}
	authz, err := authzv1client.NewForConfigAndClient(cfg, hc)
	if err != nil {
		return nil, fmt.Errorf("kube.MetricsAuth: SubjectAccessReview client for %s: %w", cfg.Host, err)
	}
	return &metricsAuth{
		tokens:     authn.TokenReviews(),
		sars:       authz.SubjectAccessReviews(),
		set:        set,
		log:        log,
		tokenCache: cache.NewLRUExpireCache(set.cacheSize),
		sarCache:   cache.NewLRUExpireCache(set.cacheSize),
	}, nil
}

// wrap puts the checks in front of next.
func (a *metricsAuth) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx := r.Context()
		user, reason, err := a.authenticate(ctx, r)
		if err != nil {
			a.log.Error("metrics request: authentication failed", "remote", r.RemoteAddr, "err", err)
			http.Error(w, "Authentication failed", http.StatusInternalServerError)
			return
		}
		if user == nil {
			a.log.Debug("metrics request: unauthenticated", "remote", r.RemoteAddr, "reason", reason)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		spec := authzv1.SubjectAccessReviewSpec{
			User:   user.Username,
			UID:    user.UID,
			Groups: user.Groups,
			Extra:  sarExtra(user.Extra),
			NonResourceAttributes: &authzv1.NonResourceAttributes{
				Path: r.URL.Path,
				Verb: strings.ToLower(r.Method),
			},
		}
		allowed, reason, err := a.authorize(ctx, spec)
		if err != nil {
			msg := fmt.Sprintf("Authorization for user %s failed", user.Username)
			a.log.Error("metrics request: "+msg, "remote", r.RemoteAddr, "err", err)
			http.Error(w, msg, http.StatusInternalServerError)
			return
		}
		if !allowed {
			msg := fmt.Sprintf("Authorization denied for user %s", user.Username)
			a.log.Debug("metrics request: "+msg, "remote", r.RemoteAddr, "reason", reason)
			http.Error(w, msg, http.StatusForbidden)
			return
		}
		// As k8s.io/apiserver does: the token goes no further once used.
		r.Header.Del("Authorization")
		next.ServeHTTP(w, r)
	})
}

// authenticate returns the caller's identity (with the
// system:authenticated group, as k8s.io/apiserver adds it), or nil and why
// not. An error means the API server could not be asked.
func (a *metricsAuth) authenticate(ctx context.Context, r *http.Request) (*authnv1.UserInfo, string, error) {
	token, ok := bearerToken(r)
	if !ok {
		return nil, "no bearer token", nil
	}
	sum := sha256.Sum256([]byte(token))
	key := string(sum[:])
	if v, ok := a.tokenCache.Get(key); ok {
		res := v.(tokenResult)
		return res.user, res.reason, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.set.timeout)
	defer cancel()
	var review *authnv1.TokenReview
	err := withRetries(ctx, a.set.backoff, func() error {
		var err error
		review, err = a.tokens.Create(ctx, &authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return nil, "", fmt.Errorf("TokenReview: %w", err)
	}
	res := tokenResult{reason: "token rejected"}
	if review.Status.Error != "" {
		res.reason = review.Status.Error
	}
	if review.Status.Authenticated {
		u := review.Status.User
		if u.Username != "system:anonymous" &&
			!slices.Contains(u.Groups, "system:authenticated") && !slices.Contains(u.Groups, "system:unauthenticated") {
			u.Groups = append(slices.Clip(u.Groups), "system:authenticated")
		}
		res = tokenResult{user: &u}
	}
	a.tokenCache.Add(key, res, a.set.tokenTTL)
	return res.user, res.reason, nil
}

// authorize asks whether spec is allowed.
func (a *metricsAuth) authorize(ctx context.Context, spec authzv1.SubjectAccessReviewSpec) (allowed bool, reason string, err error) {
	k, err := json.Marshal(spec)
	if err != nil {
		return false, "", err
	}
	key := string(k)
	if v, ok := a.sarCache.Get(key); ok {
		res := v.(sarResult)
		return res.allowed, res.reason, nil
	}
	ctx, cancel := context.WithTimeout(ctx, a.set.timeout)
	defer cancel()
	var review *authzv1.SubjectAccessReview
	err = withRetries(ctx, a.set.backoff, func() error {
		var err error
		review, err = a.sars.Create(ctx, &authzv1.SubjectAccessReview{Spec: spec}, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return false, "", fmt.Errorf("SubjectAccessReview: %w", err)
	}
	st := review.Status
	if st.Allowed && st.Denied {
		return false, "", fmt.Errorf("SubjectAccessReview: expected allowed or denied, found both (%s)", st.Reason)
	}
	res := sarResult{allowed: st.Allowed, reason: st.Reason}
	ttl := a.set.denyTTL
	if res.allowed {
		ttl = a.set.allowTTL
	}
	a.sarCache.Add(key, res, ttl)
	return res.allowed, res.reason, nil
}

// bearerToken reads "Authorization: Bearer <token>" the way k8s.io/apiserver
// does.
func bearerToken(r *http.Request) (string, bool) {
	h := strings.TrimSpace(r.Header.Get("Authorization"))
	parts := strings.SplitN(h, " ", 3)
	if len(parts) < 2 || !strings.EqualFold(parts[0], "bearer") || parts[1] == "" {
		return "", false
	}
	return parts[1], true
}

// sarExtra converts a user's extra fields to a review's.
func sarExtra(in map[string]authnv1.ExtraValue) map[string]authzv1.ExtraValue {
	if in == nil {
		return nil
	}
	out := make(map[string]authzv1.ExtraValue, len(in))
	for k, v := range in {
		out[k] = authzv1.ExtraValue(v)
	}
	return out
}

// withRetries runs f, again after a backoff while it fails transiently (as
// k8s.io/apiserver's webhook.DefaultShouldRetry decides), at most b.Steps
// times in all.
func withRetries(ctx context.Context, b wait.Backoff, f func() error) error {
	for {
		err := f()
		if err == nil || !transient(err) || b.Steps <= 1 {
			return err
		}
		if !sleepCtx(ctx, b.Step()) {
			return err
		}
	}
}

// transient reports whether err is worth retrying.
func transient(err error) bool {
	if utilnet.IsConnectionReset(err) || utilnet.IsHTTP2ConnectionLost(err) ||
		apierrors.IsInternalError(err) || apierrors.IsTimeout(err) || apierrors.IsTooManyRequests(err) {
		return true
	}
	_, retry := apierrors.SuggestsClientDelay(err)
	return retry
}
