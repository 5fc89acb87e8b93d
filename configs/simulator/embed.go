// Package simconfig embeds the simulator's GPU and model profiles
// (gpus.yaml, gpus-reference.yaml, models.yaml) and the sample fleet
// (fleet.yaml), so the simulator binary carries the same figures the YAML
// files document.
// The YAML files are the single source of those figures.
package simconfig

import "embed"

// FS holds gpus.yaml, gpus-reference.yaml, models.yaml and fleet.yaml.
//
//go:embed gpus.yaml gpus-reference.yaml models.yaml fleet.yaml
var FS embed.FS
