{{/* The release's object names. */}}
{{- define "lameduck.fullname" -}}
{{- if contains "lameduck" .Release.Name -}}
{{- .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-lameduck" .Release.Name | trunc 55 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "lameduck.webhook" -}}
{{- printf "%s-webhook" (include "lameduck.fullname" .) -}}
{{- end -}}

{{- define "lameduck.labels" -}}
app.kubernetes.io/name: lameduck
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The webhook's pods: never injected (lameduck.dev/component). */}}
{{- define "lameduck.selectorLabels" -}}
app.kubernetes.io/name: lameduck
app.kubernetes.io/instance: {{ .Release.Name }}
lameduck.dev/component: webhook
{{- end -}}

{{- define "lameduck.secretName" -}}
{{- printf "%s-tls" (include "lameduck.webhook" .) -}}
{{- end -}}

{{- define "lameduck.dnsNames" -}}
{{- $svc := include "lameduck.webhook" . -}}
{{- list $svc (printf "%s.%s" $svc .Release.Namespace) (printf "%s.%s.svc" $svc .Release.Namespace) (printf "%s.%s.svc.cluster.local" $svc .Release.Namespace) | toJson -}}
{{- end -}}
