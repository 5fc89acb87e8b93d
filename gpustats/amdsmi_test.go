//go:build linux && cgo && amdsmi

package gpustats

// These tests run against the stub libamd_smi in testdata/amdsmi-stub
// (make test-amdsmi); GPUSTATS_AMDSMI_STUB selects its failure modes.

import (
	"context"
	"strings"
	"testing"
)

func openAMDSMI(t *testing.T) Source {
	t.Helper()
	s, err := NewAMDSMI(clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { Close(s) })
	return s
}

func TestAMDSMIRead(t *testing.T) {
	t.Setenv("GPUSTATS_AMDSMI_STUB", "")
	gpus, err := openAMDSMI(t).Read(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Units: bytes stay bytes, W stay W, °C stay °C, the current level's Hz;
	// GPU 0 has no edge sensor and no average power, GPU 1 no power info.
	golden(t, "amdsmi_stub.json", gpus)
}

func TestAMDSMIInitFailure(t *testing.T) {
	t.Setenv("GPUSTATS_AMDSMI_STUB", "init_fail")
	_, err := NewAMDSMI(nil)
	if err == nil || !strings.Contains(err.Error(), "amdsmi_init(AMDSMI_INIT_AMD_GPUS): expected AMDSMI_STATUS_SUCCESS, found AMDSMI_STATUS_DRIVER_NOT_LOADED") {
		t.Fatalf("want the init failure, found %v", err)
	}
	// auto falls through to sysfs / the empty source, without an error.
	s, err := New(Options{SysfsRoot: t.TempDir()})
	if err != nil || s.Name() != "none" {
		t.Fatalf("auto after init failure: %v, %v", s, err)
	}
	if _, err := New(Options{Kind: "amdsmi"}); err == nil {
		t.Fatal("explicit amdsmi hides the init failure")
	}
}

func TestAMDSMIAutoPicksAMDSMI(t *testing.T) {
	t.Setenv("GPUSTATS_AMDSMI_STUB", "")
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer Close(s)
	if s.Name() != "amdsmi" {
		t.Fatalf("auto picked %q, want amdsmi", s.Name())
	}
}

func TestAMDSMIMetricErrors(t *testing.T) {
	t.Setenv("GPUSTATS_AMDSMI_STUB", "metric_error")
	gpus, err := openAMDSMI(t).Read(context.Background())
	if len(gpus) != 2 {
		t.Fatalf("%d GPUs, want 2 (a failing metric must not lose the GPU)", len(gpus))
	}
	for _, want := range []string{
		"gpu 1: amd-smi amdsmi_get_gpu_activity: expected AMDSMI_STATUS_SUCCESS, found AMDSMI_STATUS_UNKNOWN_ERROR",
		"gpu 1: amd-smi amdsmi_get_clk_freq(MEM): expected a current level below num_supported 1, found 5",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("want error containing %q, found %v", want, err)
		}
	}
	if err != nil && strings.Contains(err.Error(), "NOT_SUPPORTED") {
		t.Errorf("unsupported metrics must be absent, not errors: %v", err)
	}
	g := gpus[1]
	if g.GfxActivityPercent != nil || g.MemActivityPercent != nil || g.MclkHz != nil {
		t.Errorf("failed metrics present: %+v", g)
	}
	if g.SclkHz == nil || *g.SclkHz != 800e6 || g.VRAMTotalBytes == nil {
		t.Errorf("metrics that worked are missing: %+v", g)
	}
	if gpus[0].GfxActivityPercent == nil || *gpus[0].GfxActivityPercent != 57 {
		t.Errorf("gpu 0 affected: %+v", gpus[0])
	}
}

func TestAMDSMIClose(t *testing.T) {
	t.Setenv("GPUSTATS_AMDSMI_STUB", "")
	a, b := openAMDSMI(t), openAMDSMI(t)
	if err := Close(a); err != nil {
		t.Fatal(err)
	}
	if err := Close(a); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := a.Read(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("read after close: %v", err)
	}
	// The library stays initialised while another source is open.
	if gpus, err := b.Read(context.Background()); err != nil || len(gpus) != 2 {
		t.Fatalf("other source after close: %d GPUs, %v", len(gpus), err)
	}
	Close(b)
	// After the last close the library is shut down: a new source re-inits.
	c := openAMDSMI(t)
	if _, err := c.Read(context.Background()); err != nil {
		t.Fatal(err)
	}
}
