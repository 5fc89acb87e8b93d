{{/*
Names follow GIE's inferencepool chart, so swapping charts keeps every object
name: the picker's objects are "<release>-epp", the InferencePool is
"<release>", cluster-scoped objects add the namespace.
*/}}
{{- define "fastepp.name" -}}
{{- $base := .Release.Name | default "default-pool" | lower | trim | trunc 40 -}}
{{ $base }}-epp
{{- end -}}

{{/* Cluster-scoped names: "<release>-<namespace>-epp". */}}
{{- define "fastepp.clusterName" -}}
{{- $base := .Release.Name | default "default-pool" | lower | trim | trunc 40 -}}
{{- $ns := .Release.Namespace | default "default" | lower | trim | trunc 40 -}}
{{- printf "%s-%s-epp" $base $ns -}}
{{- end -}}

{{/* The ServiceAccount a metrics scraper authenticates as. */}}
{{- define "fastepp.metricsReaderName" -}}
{{- printf "%s-metrics-reader" (include "fastepp.name" .) -}}
{{- end -}}

{{/* Common labels. */}}
{{- define "fastepp.labels" -}}
app.kubernetes.io/name: {{ include "fastepp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: fastepp
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
{{- end -}}

{{/* Selector labels of the picker's pods (GIE's). */}}
{{- define "fastepp.selectorLabels" -}}
inferencepool: {{ include "fastepp.name" . }}
{{- end -}}

{{/* The labels the Service carries and the ServiceMonitor selects on. */}}
{{- define "fastepp.serviceSelectorLabels" -}}
app.kubernetes.io/name: {{ include "fastepp.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The picker's image: registry/repository:tag, tag defaulting to appVersion. */}}
{{- define "fastepp.image" -}}
{{- $img := .Values.inferenceExtension.image -}}
{{- $tag := $img.tag | default .Chart.AppVersion -}}
{{- if $img.registry -}}
{{ $img.registry }}/{{ $img.repository }}:{{ $tag }}
{{- else -}}
{{ $img.repository }}:{{ $tag }}
{{- end -}}
{{- end -}}

{{/* true when the picker runs leader election (GIE: more than one replica). */}}
{{- define "fastepp.leaderElection" -}}
{{- $flag := index (.Values.inferenceExtension.flags | default dict) "ha-enable-leader-election" -}}
{{- if or (gt (int .Values.inferenceExtension.replicas) 1) (eq (toString $flag) "true") -}}
true
{{- end -}}
{{- end -}}

{{/* true when /metrics is served behind TokenReview authentication. */}}
{{- define "fastepp.metricsAuth" -}}
{{- if .Values.inferenceExtension.monitoring.prometheus.auth.enabled -}}
true
{{- end -}}
{{- end -}}

{{/* The port model servers serve on (the first target port). */}}
{{- define "fastepp.firstTargetPort" -}}
{{- if .Values.inferencePool.targetPorts -}}
{{ (index .Values.inferencePool.targetPorts 0).number }}
{{- else -}}
{{ .Values.inferencePool.targetPortNumber | default 8000 }}
{{- end -}}
{{- end -}}

{{/* The Gateway an experimental HTTPRoute attaches to. */}}
{{- define "fastepp.gatewayName" -}}
{{- if .Values.experimentalHttpRoute.inferenceGatewayName -}}
{{- .Values.experimentalHttpRoute.inferenceGatewayName | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-inference-gateway" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
