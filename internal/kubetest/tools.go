package kubetest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// Command runs name with a deadline and returns its stdout; an error names
// the command and carries its stderr (or says the deadline passed).
func Command(timeout time.Duration, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("timed out after %v", timeout)
		}
		return stdout.Bytes(), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

var (
	helmOnce sync.Once
	helmPath string
	helmErr  error
)

// Helm returns the helm binary the chart tests render with: $HELM, else
// the per-machine build of scripts/helm.sh (a few minutes the first time,
// then cached).
func Helm() (string, error) {
	helmOnce.Do(func() {
		if h := os.Getenv("HELM"); h != "" {
			helmPath = h
			return
		}
		start := time.Now()
		out, err := Command(20*time.Minute, nil, "bash", filepath.Join(repoRoot(), "scripts", "helm.sh"))
		if err != nil {
			helmErr = fmt.Errorf("HELM is not set and scripts/helm.sh failed: %v", err)
			return
		}
		helmPath = strings.TrimSpace(string(out))
		if d := time.Since(start); d > 10*time.Second {
			fmt.Fprintf(os.Stderr, "kubetest: scripts/helm.sh built helm in %v\n", d.Round(time.Second))
		}
	})
	return helmPath, helmErr
}

// HelmEnv keeps helm's cache, config and data under dir, away from the
// user's.
func HelmEnv(dir string) []string {
	return []string{"HELM_CACHE_HOME=" + dir + "/cache", "HELM_CONFIG_HOME=" + dir + "/config", "HELM_DATA_HOME=" + dir + "/data"}
}
