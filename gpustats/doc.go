// Package gpustats reads GPU telemetry (AMD first, NVIDIA through
// dcgm-exporter) and reports it in one shape, GPU, through one interface,
// Source. It owns the readers and their unit conversions; it does not score,
// and it knows nothing of the picker (docs/GPUSTATS.md says how the picker
// will use it).
//
// Sources:
//
//   - Sysfs (the default on Linux, pure Go): the amdgpu driver's files under
//     /sys/class/drm/cardN/device of cards whose vendor is 0x1002.
//   - AMDSMI: a thin cgo binding of ROCm's AMD SMI C library (libamd_smi),
//     compiled only with the amdsmi build tag; the default build carries a
//     stub whose NewAMDSMI returns ErrNotCompiledIn.
//   - Exporter: a scrape of AMD's device-metrics-exporter or NVIDIA's
//     dcgm-exporter; GPUs keep the pod, namespace and host labels, and Attach
//     gives each endpoint its GPUs. WriteExporter writes GPUs back in the AMD
//     exporter's names (what `gpustats serve` exports).
//   - Fake and Empty: fixed GPUs for tests and demos, and none.
//
// New picks one: the explicit Kind, else amd-smi when compiled in and its
// init succeeds, else sysfs when an AMD card is present, else Empty.
//
// Absent values: every metric is a *float64 that is nil when the card or
// source does not expose it (null in JSON). A missing value is never
// reported as 0: an MI300X has no edge temperature sensor, and sysfs on it
// has power1_input instead of power1_average.
//
// # Building with amd-smi against a real ROCm install
//
// ROCm installs the header as /opt/rocm/include/amd_smi/amdsmi.h and the
// library as /opt/rocm/lib/libamd_smi.so. Build with cgo and the tag:
//
//	CGO_ENABLED=1 \
//	CGO_CFLAGS="-I/opt/rocm/include" \
//	CGO_LDFLAGS="-L/opt/rocm/lib -Wl,-rpath,/opt/rocm/lib" \
//	go build -tags amdsmi ./cmd/gpustats
//
// (the binding itself adds -lamd_smi). Without the rpath, run with
// LD_LIBRARY_PATH=/opt/rocm/lib. The process needs read access to
// /dev/dri and /dev/kfd (the render and video groups). Check with
// `gpustats --source amdsmi --once --format table`.
//
// CI compiles and tests the binding against a stub library built from
// testdata/amdsmi-stub (amd_smi/amdsmi.h declares just the types and
// functions the binding uses, amdsmi_stub.c returns canned values and error
// codes): `make test-amdsmi`. That proves the conversions and the error
// paths; only a ROCm host proves the real library's values.
package gpustats
