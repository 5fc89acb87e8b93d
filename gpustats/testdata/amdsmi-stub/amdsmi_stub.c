/*
 * Stub libamd_smi for gpustats' cgo tests (make test-amdsmi): two GPUs on one
 * socket with canned values. GPUSTATS_AMDSMI_STUB in the environment picks a
 * failure mode:
 *   init_fail     amdsmi_init answers AMDSMI_STATUS_DRIVER_NOT_LOADED
 *   metric_error  GPU 1's activity answers AMDSMI_STATUS_UNKNOWN_ERROR and its
 *                 memory clock reports a current level beyond num_supported
 * GPU 0 is MI300X-like: no edge sensor (NOT_SUPPORTED), no average power
 * (0xFFFF), current power instead. GPU 1 is MI250X-like: amdsmi_get_power_info
 * is NOT_SUPPORTED.
 */
#include <stdlib.h>
#include <string.h>

#include "amd_smi/amdsmi.h"

static int initialized;
static int socket0;
static int gpus[2];

static const char *mode(void) {
	const char *m = getenv("GPUSTATS_AMDSMI_STUB");
	return m ? m : "";
}

static int gpu_index(amdsmi_processor_handle h) {
	if (h == (amdsmi_processor_handle)&gpus[0]) return 0;
	if (h == (amdsmi_processor_handle)&gpus[1]) return 1;
	return -1;
}

amdsmi_status_t amdsmi_init(uint64_t flags) {
	if (strcmp(mode(), "init_fail") == 0) return AMDSMI_STATUS_DRIVER_NOT_LOADED;
	if (!(flags & AMDSMI_INIT_AMD_GPUS)) return AMDSMI_STATUS_INVAL;
	initialized = 1;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_shut_down(void) {
	initialized = 0;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_status_code_to_string(amdsmi_status_t status, const char **s) {
	switch (status) {
	case AMDSMI_STATUS_SUCCESS: *s = "AMDSMI_STATUS_SUCCESS: Call succeeded"; break;
	case AMDSMI_STATUS_INVAL: *s = "AMDSMI_STATUS_INVAL: Invalid parameters"; break;
	case AMDSMI_STATUS_NOT_SUPPORTED: *s = "AMDSMI_STATUS_NOT_SUPPORTED: Command not supported"; break;
	case AMDSMI_STATUS_NOT_INIT: *s = "AMDSMI_STATUS_NOT_INIT: Processor not initialized"; break;
	case AMDSMI_STATUS_DRIVER_NOT_LOADED: *s = "AMDSMI_STATUS_DRIVER_NOT_LOADED: Driver not loaded"; break;
	default: *s = "AMDSMI_STATUS_UNKNOWN_ERROR: An unknown error occurred"; break;
	}
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_socket_handles(uint32_t *count, amdsmi_socket_handle *handles) {
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (count == NULL) return AMDSMI_STATUS_INVAL;
	if (handles == NULL) { *count = 1; return AMDSMI_STATUS_SUCCESS; }
	if (*count < 1) return AMDSMI_STATUS_INVAL;
	*count = 1;
	handles[0] = &socket0;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_processor_handles(amdsmi_socket_handle s, uint32_t *count, amdsmi_processor_handle *handles) {
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (s != (amdsmi_socket_handle)&socket0 || count == NULL) return AMDSMI_STATUS_INVAL;
	if (handles == NULL) { *count = 2; return AMDSMI_STATUS_SUCCESS; }
	if (*count < 2) return AMDSMI_STATUS_INVAL;
	*count = 2;
	handles[0] = &gpus[0];
	handles[1] = &gpus[1];
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_gpu_asic_info(amdsmi_processor_handle h, amdsmi_asic_info_t *info) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || info == NULL) return AMDSMI_STATUS_INVAL;
	memset(info, 0, sizeof *info);
	strcpy(info->market_name, g == 0 ? "AMD Instinct MI300X" : "AMD Instinct MI250X");
	strcpy(info->asic_serial, g == 0 ? "0x1234ABCD5678EF00" : "0x0BADC0FFEE000001");
	info->vendor_id = 0x1002;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_gpu_activity(amdsmi_processor_handle h, amdsmi_engine_usage_t *info) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || info == NULL) return AMDSMI_STATUS_INVAL;
	if (g == 1 && strcmp(mode(), "metric_error") == 0) return AMDSMI_STATUS_UNKNOWN_ERROR;
	memset(info, 0, sizeof *info);
	info->gfx_activity = g == 0 ? 57 : 4;
	info->umc_activity = g == 0 ? 23 : 1;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_gpu_memory_total(amdsmi_processor_handle h, amdsmi_memory_type_t t, uint64_t *total) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || total == NULL || t != AMDSMI_MEM_TYPE_VRAM) return AMDSMI_STATUS_INVAL;
	*total = g == 0 ? 206158430208ULL /* 192 GiB */ : 68702699520ULL /* 64 GiB */;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_gpu_memory_usage(amdsmi_processor_handle h, amdsmi_memory_type_t t, uint64_t *used) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || used == NULL || t != AMDSMI_MEM_TYPE_VRAM) return AMDSMI_STATUS_INVAL;
	*used = g == 0 ? 180388626432ULL /* 168 GiB */ : 1073741824ULL /* 1 GiB */;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_power_info(amdsmi_processor_handle h, amdsmi_power_info_t *info) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || info == NULL) return AMDSMI_STATUS_INVAL;
	if (g == 1) return AMDSMI_STATUS_NOT_SUPPORTED;
	memset(info, 0, sizeof *info);
	info->current_socket_power = 612;
	info->average_socket_power = 0xFFFF;
	info->power_limit = 750;
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_temp_metric(amdsmi_processor_handle h, amdsmi_temperature_type_t type,
                                       amdsmi_temperature_metric_t metric, int64_t *temp) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || temp == NULL || metric != AMDSMI_TEMP_CURRENT) return AMDSMI_STATUS_INVAL;
	switch (type) {
	case AMDSMI_TEMPERATURE_TYPE_EDGE:
		if (g == 0) return AMDSMI_STATUS_NOT_SUPPORTED;
		*temp = 41;
		break;
	case AMDSMI_TEMPERATURE_TYPE_HOTSPOT: *temp = g == 0 ? 71 : 45; break;
	case AMDSMI_TEMPERATURE_TYPE_VRAM: *temp = g == 0 ? 58 : 44; break;
	default: return AMDSMI_STATUS_NOT_SUPPORTED;
	}
	return AMDSMI_STATUS_SUCCESS;
}

amdsmi_status_t amdsmi_get_clk_freq(amdsmi_processor_handle h, amdsmi_clk_type_t type, amdsmi_frequencies_t *f) {
	int g = gpu_index(h);
	if (!initialized) return AMDSMI_STATUS_NOT_INIT;
	if (g < 0 || f == NULL) return AMDSMI_STATUS_INVAL;
	memset(f, 0, sizeof *f);
	switch (type) {
	case AMDSMI_CLK_TYPE_SYS:
		if (g == 0) {
			f->num_supported = 3;
			f->frequency[0] = 500000000ULL;
			f->frequency[1] = 1500000000ULL;
			f->frequency[2] = 2100000000ULL;
			f->current = 2;
		} else {
			f->num_supported = 1;
			f->frequency[0] = 800000000ULL;
			f->current = 0;
		}
		break;
	case AMDSMI_CLK_TYPE_MEM:
		f->num_supported = 1;
		f->frequency[0] = g == 0 ? 1300000000ULL : 1600000000ULL;
		f->current = (g == 1 && strcmp(mode(), "metric_error") == 0) ? 5 : 0;
		break;
	default:
		return AMDSMI_STATUS_NOT_SUPPORTED;
	}
	return AMDSMI_STATUS_SUCCESS;
}
