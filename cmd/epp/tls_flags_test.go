package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes a fresh self-signed pair into dir as tls.crt and tls.key
// (each by rename, as a Secret update would) and returns the certificate.
func writePair(t *testing.T, dir string) []byte {
	t.Helper()
	pair, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(pair.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	put := func(name string, data []byte) {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	put("tls.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}))
	put("tls.crt", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: pair.Certificate[0]}))
	return pair.Certificate[0]
}

// servedCert dials addr over TLS and returns the certificate it presents.
func servedCert(t *testing.T, addr string) []byte {
	t.Helper()
	var seen []byte
	conf := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}, VerifyConnection: func(cs tls.ConnectionState) error {
		seen = cs.PeerCertificates[0].Raw
		return nil
	}}
	c, err := tls.Dial("tcp", addr, conf)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	return seen
}

// TestCertReload: with --enable-cert-reload, rewriting --cert-path's files
// changes the served certificate without a restart; a broken pair keeps the
// previous one (logged); without the flag the first pair stays.
func TestCertReload(t *testing.T) {
	defer func(d time.Duration) { certReloadInterval = d }(certReloadInterval)
	certReloadInterval = 50 * time.Millisecond
	for _, reload := range []bool{true, false} {
		dir := t.TempDir()
		first := writePair(t, dir)
		extra := []string{"--cert-path", dir}
		if reload {
			extra = append(extra, "--enable-cert-reload")
		}
		a, cancel, done, _, logs := startEPP(t, 1, extra...)
		if !bytes.Equal(servedCert(t, a.grpc), first) {
			t.Fatal("epp did not serve the first certificate")
		}
		second := writePair(t, dir)
		if !reload {
			time.Sleep(300 * time.Millisecond) // several reload intervals
			if !bytes.Equal(servedCert(t, a.grpc), first) {
				t.Error("without --enable-cert-reload the certificate changed")
			}
			cancel()
			<-done.c
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for !bytes.Equal(servedCert(t, a.grpc), second) {
			if time.Now().After(deadline) {
				t.Fatal("the rewritten certificate was not served within 10s")
			}
			time.Sleep(100 * time.Millisecond)
		}
		// A key that does not match: the second certificate stays, one log line.
		if err := os.WriteFile(filepath.Join(dir, "tls.key"), []byte("not a key"), 0o600); err != nil {
			t.Fatal(err)
		}
		deadline = time.Now().Add(10 * time.Second)
		for {
			logs.mu.Lock()
			text := logs.w.(*bytes.Buffer).String()
			logs.mu.Unlock()
			if n := strings.Count(text, "TLS certificate not reloaded; serving the previous one"); n > 0 {
				time.Sleep(300 * time.Millisecond) // several more reload intervals
				logs.mu.Lock()
				later := strings.Count(logs.w.(*bytes.Buffer).String(), "TLS certificate not reloaded")
				logs.mu.Unlock()
				if later != n {
					t.Errorf("the same broken pair was logged again (%d lines, then %d)", n, later)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no log line for the broken pair:\n%s", text)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if !bytes.Equal(servedCert(t, a.grpc), second) {
			t.Error("a broken pair replaced the served certificate")
		}
		cancel()
		<-done.c
	}
}

// TestCertReloadSecretVolume: a Secret mounted as a volume (cert-manager's
// Certificate, the chart's tls values) is rotated by the kubelet's atomic
// writer: the pair is written into a new hidden directory, the "..data"
// symlink is swapped to it by rename, and tls.crt/tls.key are symlinks
// through "..data". --enable-cert-reload serves the rotated pair.
func TestCertReloadSecretVolume(t *testing.T) {
	defer func(d time.Duration) { certReloadInterval = d }(certReloadInterval)
	certReloadInterval = 50 * time.Millisecond
	dir := t.TempDir()
	version := func(name string) []byte {
		if err := os.Mkdir(filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
		cert := writePair(t, filepath.Join(dir, name))
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
		return cert
	}
	first := version("..2026_11_30_01")
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	a, _, _, _, _ := startEPP(t, 1, "--cert-path", dir, "--enable-cert-reload")
	if !bytes.Equal(servedCert(t, a.grpc), first) {
		t.Fatal("epp did not serve the mounted certificate")
	}
	second := version("..2026_11_30_02")
	if err := os.RemoveAll(filepath.Join(dir, "..2026_11_30_01")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !bytes.Equal(servedCert(t, a.grpc), second) {
		if time.Now().After(deadline) {
			t.Fatal("the rotated Secret's certificate was not served within 10s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
