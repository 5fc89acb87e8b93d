// Package eppconfig embeds the EndpointPickerConfig files of configs/epp:
// recommended.yaml (fastepp's recommended configuration, the bench's `epp`
// strategy), gie-default.yaml (the GIE EPP's default configuration, the
// bench's `epp-gie-default` strategy) and gpu-aware.yaml (the GIE default with
// fastepp's GPU plugins, the bench's `epp-gpu-aware` strategy).
package eppconfig

import "embed"

// FS holds recommended.yaml, gie-default.yaml and gpu-aware.yaml.
//
//go:embed recommended.yaml gie-default.yaml gpu-aware.yaml
var FS embed.FS

// Recommended and GIEDefault are the file names in FS.
const (
	Recommended = "recommended.yaml"
	GIEDefault  = "gie-default.yaml"
	GPUAware    = "gpu-aware.yaml"
)
