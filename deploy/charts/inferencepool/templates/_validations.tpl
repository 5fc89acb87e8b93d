{{/*
Values GIE's chart accepts but fastepp cannot honour fail here, at render
time, with the reason, instead of giving a picker that refuses to start.
*/}}
{{- define "fastepp.validate" -}}
{{- $pool := .Values.inferencePool -}}
{{- $ext := .Values.inferenceExtension -}}
{{- if or (empty $pool.modelServers) (empty $pool.modelServers.matchLabels) -}}
{{- fail "inferencePool.modelServers.matchLabels is required: the labels of the model-server pods (e.g. --set inferencePool.modelServers.matchLabels.app=vllm-llama3-8b-instruct)" -}}
{{- end -}}
{{- if ne ($pool.apiVersion | default "inference.networking.k8s.io/v1") "inference.networking.k8s.io/v1" -}}
{{- fail (printf "inferencePool.apiVersion %q: only inference.networking.k8s.io/v1 is supported" $pool.apiVersion) -}}
{{- end -}}
{{- $type := lower ($pool.modelServerType | default "vllm") -}}
{{- if not (has $type (list "vllm" "sglang" "triton-tensorrt-llm" "trtllm-serve")) -}}
{{- fail (printf "inferencePool.modelServerType %q: expected vllm, sglang, triton-tensorrt-llm or trtllm-serve (other engines: a custom config with core-metrics-extractor's engineConfigs, see docs/COMPAT.md)" $pool.modelServerType) -}}
{{- end -}}
{{- if ne (lower ($pool.modelServerProtocol | default "http")) "http" -}}
{{- fail (printf "inferencePool.modelServerProtocol %q: fastepp reads OpenAI HTTP request bodies; vLLM's gRPC API (vllmgrpc-parser) is not supported, use its OpenAI HTTP server" $pool.modelServerProtocol) -}}
{{- end -}}
{{- if not (has ($pool.parser | default "") (list "" "openai-parser")) -}}
{{- fail (printf "inferencePool.parser %q: fastepp reads every body as OpenAI JSON; only openai-parser (or empty) is accepted (passthrough-parser and vllmgrpc-parser are not supported)" $pool.parser) -}}
{{- end -}}
{{- if and $ext.latencyPredictor $ext.latencyPredictor.enabled -}}
{{- fail "inferenceExtension.latencyPredictor.enabled: fastepp has no latency predictor (GIE's predicted-latency plugins are refused); use the default queue, KV-cache and prefix scorers" -}}
{{- end -}}
{{- if not (has (lower .Values.provider.name) (list "none" "gke" "istio")) -}}
{{- fail (printf "provider.name %q: expected none, gke or istio" .Values.provider.name) -}}
{{- end -}}
{{- if and $ext.tls.certManager.enabled (not $ext.tls.secretName) -}}
{{- fail "inferenceExtension.tls.certManager.enabled needs inferenceExtension.tls.secretName: the Secret cert-manager writes and the picker mounts" -}}
{{- end -}}
{{- if and $ext.tls.certManager.enabled (not $ext.tls.certManager.issuerRef.name) -}}
{{- fail "inferenceExtension.tls.certManager.issuerRef.name is required with inferenceExtension.tls.certManager.enabled" -}}
{{- end -}}
{{- if and $ext.monitoring.prometheus.enabled $ext.monitoring.prometheus.auth.enabled (not $ext.monitoring.prometheus.auth.secretName) -}}
{{- fail "inferenceExtension.monitoring.prometheus.auth.secretName is required when the ServiceMonitor authenticates" -}}
{{- end -}}
{{- end -}}
