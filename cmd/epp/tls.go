package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"
)

// serverTLS returns the ext_proc TLS config: the pair in certPath
// (tls.crt, tls.key) or a fresh self-signed certificate. With reload (and a
// certPath) the pair is re-read while ctx lasts and each handshake gets the
// newest good one.
func serverTLS(ctx context.Context, certPath string, reload bool, log *slog.Logger) (*tls.Config, error) {
	if certPath != "" {
		crt, key := filepath.Join(certPath, "tls.crt"), filepath.Join(certPath, "tls.key")
		if reload {
			r, err := newCertReloader(crt, key, log)
			if err != nil {
				return nil, fmt.Errorf("--cert-path %s: expected tls.crt and tls.key (PEM): %w", certPath, err)
			}
			go r.run(ctx, certReloadInterval)
			return &tls.Config{GetCertificate: r.get, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}, nil
		}
		pair, err := tls.LoadX509KeyPair(crt, key)
		if err != nil {
			return nil, fmt.Errorf("--cert-path %s: expected tls.crt and tls.key (PEM): %w", certPath, err)
		}
		return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}, nil
	}
	pair, err := selfSigned()
	if err != nil {
		return nil, err
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12, NextProtos: []string{"h2"}}, nil
}

// certReloadInterval is how often --enable-cert-reload re-reads the pair
// (a variable for tests).
var certReloadInterval = time.Second

// certReloader serves the newest good certificate pair of two files. It
// re-reads both files every interval (they are small) and loads them when
// their bytes changed; a pair that does not load (half-written, mismatched)
// keeps the previous certificate and is logged once.
type certReloader struct {
	crtPath, keyPath string
	log              *slog.Logger
	cert             atomic.Pointer[tls.Certificate]
	crt, key         []byte // bytes of the last load attempt
	lastErr          string
}

func newCertReloader(crtPath, keyPath string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{crtPath: crtPath, keyPath: keyPath, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// get is tls.Config.GetCertificate.
func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return r.cert.Load(), nil }

// load reads both files and, when their bytes changed, makes them the
// served certificate if they form a pair.
func (r *certReloader) load() error {
	crt, err := os.ReadFile(r.crtPath)
	if err != nil {
		return err
	}
	key, err := os.ReadFile(r.keyPath)
	if err != nil {
		return err
	}
	if r.cert.Load() != nil && bytes.Equal(crt, r.crt) && bytes.Equal(key, r.key) {
		return nil
	}
	r.crt, r.key = crt, key
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return err
	}
	r.cert.Store(&pair)
	return nil
}

func (r *certReloader) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := r.cert.Load()
		err := r.load()
		switch {
		case err != nil:
			if err.Error() != r.lastErr {
				r.lastErr = err.Error()
				r.log.Error("TLS certificate not reloaded; serving the previous one", "crt", r.crtPath, "key", r.keyPath, "err", err)
			}
		case r.cert.Load() != before:
			r.lastErr = ""
			attrs := []any{"crt", r.crtPath}
			if leaf, err := x509.ParseCertificate(r.cert.Load().Certificate[0]); err == nil {
				attrs = append(attrs, "subject", leaf.Subject.String(), "notAfter", leaf.NotAfter)
			}
			r.log.Info("TLS certificate reloaded", attrs...)
		}
	}
}

func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{Organization: []string{"fastepp"}, CommonName: "epp"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.AddDate(10, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
