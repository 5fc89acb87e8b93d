// Package eppconfig embeds the EndpointPickerConfig files of configs/epp:
// recommended.yaml (fastepp's recommended configuration, the bench's `epp`
// strategy) and gie-default.yaml (the GIE EPP's default configuration, the
// bench's `epp-gie-default` strategy).
package eppconfig

import "embed"

// FS holds recommended.yaml and gie-default.yaml.
//
//go:embed recommended.yaml gie-default.yaml
var FS embed.FS

// Recommended and GIEDefault are the file names in FS.
const (
	Recommended = "recommended.yaml"
	GIEDefault  = "gie-default.yaml"
)
