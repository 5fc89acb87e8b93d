/*
 * Minimal stand-in for ROCm's amd_smi/amdsmi.h: only the types, constants
 * and functions gpustats' cgo binding (gpustats/amdsmi.go) uses, written from
 * the shape of the ROCm 6.x API. The binding refers to names only (functions,
 * constants, struct fields), so the names here follow the real header; the
 * enum values and reserved padding are this stub's own and need not match.
 * It exists so CI can compile and test the binding against a stub libamd_smi
 * (amdsmi_stub.c); on a ROCm host the real header and library replace both.
 */
#ifndef GPUSTATS_AMDSMI_STUB_H
#define GPUSTATS_AMDSMI_STUB_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define AMDSMI_256_LENGTH 256
#define AMDSMI_MAX_NUM_FREQUENCIES 33

typedef enum {
	AMDSMI_STATUS_SUCCESS = 0,
	AMDSMI_STATUS_INVAL = 1,
	AMDSMI_STATUS_NOT_SUPPORTED = 2,
	AMDSMI_STATUS_NOT_YET_IMPLEMENTED = 3,
	AMDSMI_STATUS_FAIL_LOAD_MODULE = 4,
	AMDSMI_STATUS_DRIVER_NOT_LOADED = 34,
	AMDSMI_STATUS_NOT_INIT = 32,
	AMDSMI_STATUS_UNKNOWN_ERROR = 0xFFFFFFFF
} amdsmi_status_t;

typedef enum {
	AMDSMI_INIT_ALL_PROCESSORS = 0xFFFFFFFF,
	AMDSMI_INIT_AMD_CPUS = (1 << 0),
	AMDSMI_INIT_AMD_GPUS = (1 << 1),
	AMDSMI_INIT_NON_AMD_CPUS = (1 << 2),
	AMDSMI_INIT_NON_AMD_GPUS = (1 << 3)
} amdsmi_init_flags_t;

typedef void *amdsmi_socket_handle;
typedef void *amdsmi_processor_handle;

typedef enum {
	AMDSMI_MEM_TYPE_VRAM = 0,
	AMDSMI_MEM_TYPE_VIS_VRAM = 1,
	AMDSMI_MEM_TYPE_GTT = 2
} amdsmi_memory_type_t;

typedef enum {
	AMDSMI_TEMPERATURE_TYPE_EDGE = 0,
	AMDSMI_TEMPERATURE_TYPE_HOTSPOT = 1,
	AMDSMI_TEMPERATURE_TYPE_JUNCTION = 1,
	AMDSMI_TEMPERATURE_TYPE_VRAM = 2
} amdsmi_temperature_type_t;

typedef enum {
	AMDSMI_TEMP_CURRENT = 0x0
} amdsmi_temperature_metric_t;

typedef enum {
	AMDSMI_CLK_TYPE_SYS = 0x0,
	AMDSMI_CLK_TYPE_GFX = 0x0,
	AMDSMI_CLK_TYPE_DF = 0x1,
	AMDSMI_CLK_TYPE_DCEF = 0x2,
	AMDSMI_CLK_TYPE_SOC = 0x3,
	AMDSMI_CLK_TYPE_MEM = 0x4
} amdsmi_clk_type_t;

typedef struct {
	uint32_t gfx_activity; /* % */
	uint32_t umc_activity; /* % */
	uint32_t mm_activity;  /* % */
	uint32_t reserved[13];
} amdsmi_engine_usage_t;

typedef struct {
	uint64_t socket_power;
	uint32_t current_socket_power; /* W; 0xFFFF when not supported */
	uint32_t average_socket_power; /* W; 0xFFFF when not supported */
	uint64_t gfx_voltage;
	uint64_t soc_voltage;
	uint64_t mem_voltage;
	uint32_t power_limit; /* W */
	uint32_t reserved[11];
} amdsmi_power_info_t;

typedef struct {
	bool has_deep_sleep;
	uint32_t num_supported;
	uint32_t current;
	uint64_t frequency[AMDSMI_MAX_NUM_FREQUENCIES]; /* Hz */
} amdsmi_frequencies_t;

typedef struct {
	char market_name[AMDSMI_256_LENGTH];
	uint32_t vendor_id;
	char vendor_name[AMDSMI_256_LENGTH];
	uint32_t subvendor_id;
	uint64_t device_id;
	uint32_t rev_id;
	char asic_serial[AMDSMI_256_LENGTH];
	uint32_t oam_id;
	uint32_t num_of_compute_units;
	uint64_t target_graphics_version;
	uint32_t reserved[22];
} amdsmi_asic_info_t;

amdsmi_status_t amdsmi_init(uint64_t init_flags);
amdsmi_status_t amdsmi_shut_down(void);
amdsmi_status_t amdsmi_status_code_to_string(amdsmi_status_t status, const char **status_string);
amdsmi_status_t amdsmi_get_socket_handles(uint32_t *socket_count, amdsmi_socket_handle *socket_handles);
amdsmi_status_t amdsmi_get_processor_handles(amdsmi_socket_handle socket_handle, uint32_t *processor_count,
                                             amdsmi_processor_handle *processor_handles);
amdsmi_status_t amdsmi_get_gpu_asic_info(amdsmi_processor_handle processor_handle, amdsmi_asic_info_t *info);
amdsmi_status_t amdsmi_get_gpu_activity(amdsmi_processor_handle processor_handle, amdsmi_engine_usage_t *info);
amdsmi_status_t amdsmi_get_gpu_memory_total(amdsmi_processor_handle processor_handle, amdsmi_memory_type_t mem_type,
                                            uint64_t *total);
amdsmi_status_t amdsmi_get_gpu_memory_usage(amdsmi_processor_handle processor_handle, amdsmi_memory_type_t mem_type,
                                            uint64_t *used);
amdsmi_status_t amdsmi_get_power_info(amdsmi_processor_handle processor_handle, amdsmi_power_info_t *info);
amdsmi_status_t amdsmi_get_temp_metric(amdsmi_processor_handle processor_handle,
                                       amdsmi_temperature_type_t sensor_type, amdsmi_temperature_metric_t metric,
                                       int64_t *temperature);
amdsmi_status_t amdsmi_get_clk_freq(amdsmi_processor_handle processor_handle, amdsmi_clk_type_t clk_type,
                                    amdsmi_frequencies_t *f);

#ifdef __cplusplus
}
#endif

#endif
