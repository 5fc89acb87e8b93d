//go:build linux && cgo && amdsmi

package gpustats

/*
#cgo LDFLAGS: -lamd_smi
#include <stdlib.h>
#include <stdint.h>
#include <amd_smi/amdsmi.h>
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"
)

// AMDSMICompiledIn reports whether this build carries the amd-smi binding.
const AMDSMICompiledIn = true

// amdsmiNA is what amd-smi puts in a uint16/uint32 field it cannot fill.
const (
	amdsmiNA16 = 0xFFFF
	amdsmiNA32 = 0xFFFFFFFF
)

// The library is initialised once per process and shut down when the last
// AMDSMI source is closed.
var (
	amdsmiMu   sync.Mutex
	amdsmiRefs int
)

// AMDSMI reads GPUs through libamd_smi (ROCm's AMD SMI C library).
type AMDSMI struct {
	mu     sync.Mutex
	closed bool
	now    func() time.Time
}

// statusError is a non-success amdsmi_status_t from a named call.
type statusError struct {
	call   string
	status C.amdsmi_status_t
}

func (e *statusError) Error() string {
	var s *C.char
	msg := fmt.Sprintf("status %d", uint32(e.status))
	if C.amdsmi_status_code_to_string(e.status, &s) == C.AMDSMI_STATUS_SUCCESS && s != nil {
		msg = C.GoString(s)
	}
	return fmt.Sprintf("amd-smi %s: expected AMDSMI_STATUS_SUCCESS, found %s", e.call, msg)
}

// unsupported reports whether the status means "this card does not expose it".
func (e *statusError) unsupported() bool {
	return e.status == C.AMDSMI_STATUS_NOT_SUPPORTED || e.status == C.AMDSMI_STATUS_NOT_YET_IMPLEMENTED
}

func check(call string, st C.amdsmi_status_t) error {
	if st == C.AMDSMI_STATUS_SUCCESS {
		return nil
	}
	return &statusError{call, st}
}

// NewAMDSMI initialises libamd_smi for AMD GPUs; an error means the library
// or driver is not usable (no GPU, driver not loaded).
func NewAMDSMI(now func() time.Time) (Source, error) {
	amdsmiMu.Lock()
	defer amdsmiMu.Unlock()
	if amdsmiRefs == 0 {
		if err := check("amdsmi_init(AMDSMI_INIT_AMD_GPUS)", C.amdsmi_init(C.uint64_t(C.AMDSMI_INIT_AMD_GPUS))); err != nil {
			return nil, err
		}
	}
	amdsmiRefs++
	return &AMDSMI{now: nowFunc(now)}, nil
}

// Name is "amdsmi".
func (a *AMDSMI) Name() string { return "amdsmi" }

// Close releases the library (amdsmi_shut_down after the last source).
func (a *AMDSMI) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	amdsmiMu.Lock()
	defer amdsmiMu.Unlock()
	amdsmiRefs--
	if amdsmiRefs == 0 {
		return check("amdsmi_shut_down", C.amdsmi_shut_down())
	}
	return nil
}

// handles returns every GPU processor handle, socket by socket.
func (a *AMDSMI) handles() ([]C.amdsmi_processor_handle, error) {
	var ns C.uint32_t
	if err := check("amdsmi_get_socket_handles", C.amdsmi_get_socket_handles(&ns, nil)); err != nil {
		return nil, err
	}
	if ns == 0 {
		return nil, nil
	}
	sockets := (*C.amdsmi_socket_handle)(C.calloc(C.size_t(ns), C.size_t(unsafe.Sizeof(C.amdsmi_socket_handle(nil)))))
	defer C.free(unsafe.Pointer(sockets))
	if err := check("amdsmi_get_socket_handles", C.amdsmi_get_socket_handles(&ns, sockets)); err != nil {
		return nil, err
	}
	var out []C.amdsmi_processor_handle
	for _, s := range unsafe.Slice(sockets, ns) {
		var np C.uint32_t
		if err := check("amdsmi_get_processor_handles", C.amdsmi_get_processor_handles(s, &np, nil)); err != nil {
			return nil, err
		}
		if np == 0 {
			continue
		}
		ps := (*C.amdsmi_processor_handle)(C.calloc(C.size_t(np), C.size_t(unsafe.Sizeof(C.amdsmi_processor_handle(nil)))))
		err := check("amdsmi_get_processor_handles", C.amdsmi_get_processor_handles(s, &np, ps))
		if err == nil {
			out = append(out, unsafe.Slice(ps, np)...)
		}
		C.free(unsafe.Pointer(ps))
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Read returns one GPU per processor handle. A metric the card does not
// support is absent; any other failed call leaves its metric absent and is
// named in the returned error.
func (a *AMDSMI) Read(ctx context.Context) ([]GPU, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil, errors.New("amd-smi: expected an open source, found it closed")
	}
	hs, err := a.handles()
	if err != nil {
		return nil, err
	}
	now := a.now()
	var errs []error
	note := func(i int, err error) {
		var se *statusError
		if err == nil || (errors.As(err, &se) && se.unsupported()) {
			return
		}
		errs = append(errs, fmt.Errorf("gpu %d: %w", i, err))
	}
	gpus := make([]GPU, 0, len(hs))
	for i, h := range hs {
		g := GPU{Index: i, ReadTime: now}

		var asic C.amdsmi_asic_info_t
		if err := check("amdsmi_get_gpu_asic_info", C.amdsmi_get_gpu_asic_info(h, &asic)); err == nil {
			g.Product = C.GoString(&asic.market_name[0])
			g.UniqueID = C.GoString(&asic.asic_serial[0])
		} else {
			note(i, err)
		}

		var act C.amdsmi_engine_usage_t
		if err := check("amdsmi_get_gpu_activity", C.amdsmi_get_gpu_activity(h, &act)); err == nil {
			g.GfxActivityPercent = pct(uint32(act.gfx_activity))
			g.MemActivityPercent = pct(uint32(act.umc_activity))
		} else {
			note(i, err)
		}

		var total, used C.uint64_t
		if err := check("amdsmi_get_gpu_memory_total", C.amdsmi_get_gpu_memory_total(h, C.AMDSMI_MEM_TYPE_VRAM, &total)); err == nil {
			g.VRAMTotalBytes = F(float64(total))
		} else {
			note(i, err)
		}
		if err := check("amdsmi_get_gpu_memory_usage", C.amdsmi_get_gpu_memory_usage(h, C.AMDSMI_MEM_TYPE_VRAM, &used)); err == nil {
			g.VRAMUsedBytes = F(float64(used))
		} else {
			note(i, err)
		}

		var pw C.amdsmi_power_info_t
		if err := check("amdsmi_get_power_info", C.amdsmi_get_power_info(h, &pw)); err == nil {
			// MI300-class parts report current_socket_power and no average;
			// older parts the reverse.
			g.PowerWatts = watts(uint32(pw.current_socket_power))
			if g.PowerWatts == nil {
				g.PowerWatts = watts(uint32(pw.average_socket_power))
			}
			g.PowerCapWatts = watts(uint32(pw.power_limit))
		} else {
			note(i, err)
		}

		for _, t := range []struct {
			call string
			typ  C.amdsmi_temperature_type_t
			dst  **float64
		}{
			{"amdsmi_get_temp_metric(EDGE)", C.AMDSMI_TEMPERATURE_TYPE_EDGE, &g.EdgeTemperatureCelsius},
			{"amdsmi_get_temp_metric(HOTSPOT)", C.AMDSMI_TEMPERATURE_TYPE_HOTSPOT, &g.JunctionTemperatureCelsius},
			{"amdsmi_get_temp_metric(VRAM)", C.AMDSMI_TEMPERATURE_TYPE_VRAM, &g.MemoryTemperatureCelsius},
		} {
			var v C.int64_t
			if err := check(t.call, C.amdsmi_get_temp_metric(h, t.typ, C.AMDSMI_TEMP_CURRENT, &v)); err == nil {
				*t.dst = F(float64(v))
			} else {
				note(i, err)
			}
		}

		for _, c := range []struct {
			call string
			typ  C.amdsmi_clk_type_t
			dst  **float64
		}{
			{"amdsmi_get_clk_freq(SYS)", C.AMDSMI_CLK_TYPE_SYS, &g.SclkHz},
			{"amdsmi_get_clk_freq(MEM)", C.AMDSMI_CLK_TYPE_MEM, &g.MclkHz},
		} {
			var f C.amdsmi_frequencies_t
			if err := check(c.call, C.amdsmi_get_clk_freq(h, c.typ, &f)); err != nil {
				note(i, err)
				continue
			}
			n := min(uint32(f.num_supported), uint32(C.AMDSMI_MAX_NUM_FREQUENCIES))
			if uint32(f.current) >= n {
				note(i, fmt.Errorf("amd-smi %s: expected a current level below num_supported %d, found %d", c.call, n, uint32(f.current)))
				continue
			}
			*c.dst = F(float64(f.frequency[f.current]))
		}
		gpus = append(gpus, g)
	}
	return gpus, errors.Join(errs...)
}

// pct converts an activity percentage; the N/A markers are absent.
func pct(v uint32) *float64 {
	if v == amdsmiNA16 || v == amdsmiNA32 || v > 100 {
		return nil
	}
	return F(float64(v))
}

// watts converts a power field in W; the N/A markers are absent.
func watts(v uint32) *float64 {
	if v == amdsmiNA16 || v == amdsmiNA32 {
		return nil
	}
	return F(float64(v))
}
