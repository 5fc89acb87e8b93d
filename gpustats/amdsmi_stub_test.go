//go:build !(linux && cgo && amdsmi)

package gpustats

import (
	"errors"
	"testing"
)

func TestAMDSMINotCompiledIn(t *testing.T) {
	s, err := NewAMDSMI(nil)
	if s != nil || !errors.Is(err, ErrNotCompiledIn) {
		t.Fatalf("default build: %v, %v", s, err)
	}
	if AMDSMICompiledIn {
		t.Fatal("AMDSMICompiledIn in a build without the tag")
	}
}
