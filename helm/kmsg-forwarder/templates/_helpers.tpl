{{/* Chart name, overridable. */}}
{{- define "kmsg-forwarder.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "kmsg-forwarder.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "kmsg-forwarder.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kmsg-forwarder.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kmsg-forwarder.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "kmsg-forwarder.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kmsg-forwarder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kmsg-forwarder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kmsg-forwarder.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The forwarder's TOML config: the user's config and sinks, plus what the chart owns
(host = the node's name, the state directory mount, the metrics listener the probes use).
*/}}
{{- define "kmsg-forwarder.config" -}}
{{- $config := deepCopy .Values.config }}
{{- $_ := set $config "host" "${NODE_NAME}" }}
{{- $_ := set $config "state_dir" "/var/lib/kmsg-forwarder" }}
{{- $metrics := deepCopy (default (dict) .Values.config.metrics) }}
{{- $_ := set $metrics "listen" (printf "0.0.0.0:%d" (int .Values.metrics.port)) }}
{{- $_ := set $config "metrics" $metrics }}
{{- $_ := set $config "sinks" (deepCopy (default (dict "stdout" (dict "type" "stdout")) .Values.sinks)) }}
{{- include "kmsg-forwarder.wholeNumbers" $config }}
{{- toToml $config }}
{{- end }}

{{/*
Values files give every number as a float (500 -> 500.0); turn the whole ones back into
integers, in place, so the TOML reads max_records = 500 as a person would write it.
*/}}
{{- define "kmsg-forwarder.wholeNumbers" -}}
{{- range $key, $value := . }}
{{- if and (kindIs "float64" $value) (eq $value (float64 (int64 $value))) }}
{{- $_ := set $ $key (int64 $value) }}
{{- else if kindIs "map" $value }}
{{- include "kmsg-forwarder.wholeNumbers" $value }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the init container must hand the state directory to the non-root user. */}}
{{- define "kmsg-forwarder.fixOwnership" -}}
{{- if and .Values.stateDir.fixOwnership (not .Values.privileged) (ne (int (default 0 .Values.securityContext.runAsUser)) 0) -}}
true
{{- end }}
{{- end }}

{{/*
A kernel-event alert expression: (list JOB_SELECTOR CLASS_SELECTOR WINDOW). increase()
misses the first event of a series that did not exist before (a new class, kind or pod),
so a series that appeared within the window counts as well.
*/}}
{{- define "kmsg-forwarder.kernelEventExpr" -}}
{{- $series := printf "kmsg_forwarder_kernel_events_total{%s, %s}" (index . 0) (index . 1) -}}
{{- $window := index . 2 -}}
sum by (node, class, kind) (increase({{ $series }}[{{ $window }}]) > 0 or ({{ $series }} unless {{ $series }} offset {{ $window }})) > 0
{{- end }}
