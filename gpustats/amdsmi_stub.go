//go:build !(linux && cgo && amdsmi)

package gpustats

import "time"

// AMDSMICompiledIn reports whether this build carries the amd-smi binding.
const AMDSMICompiledIn = false

// NewAMDSMI returns ErrNotCompiledIn: this build has no amd-smi binding
// (build with -tags amdsmi and cgo, see the package doc).
func NewAMDSMI(now func() time.Time) (Source, error) {
	return nil, ErrNotCompiledIn
}
