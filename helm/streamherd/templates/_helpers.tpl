{{/* The release's base name: the release name, with the chart's prepended unless it has it. */}}
{{- define "streamherd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "streamherd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "streamherd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "streamherd.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "streamherd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "streamherd.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: streamherd
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The operator's ServiceAccount. */}}
{{- define "streamherd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "streamherd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The janitor's ServiceAccount (the same name in every namespace its CronJobs run in). */}}
{{- define "streamherd.janitorServiceAccountName" -}}
{{- default (printf "%s-janitor" (include "streamherd.fullname" .)) .Values.janitor.serviceAccount.name -}}
{{- end -}}

{{/* The image reference: repository:tag (the tag defaults to appVersion), or @digest. */}}
{{- define "streamherd.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* The namespaces whose objects the operator watches: none means all. */}}
{{- define "streamherd.watchesAll" -}}
{{- if .Values.watchNamespaces }}{{ else }}true{{ end -}}
{{- end -}}

{{/* Namespaces the janitor's ServiceAccount is created in: the watched ones, or the listed. */}}
{{- define "streamherd.janitorNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- toJson .Values.watchNamespaces -}}
{{- else -}}
{{- toJson (default (list .Release.Namespace) .Values.janitor.namespaces) -}}
{{- end -}}
{{- end -}}

{{/* The rules of files/rbac.yaml: "operator", "cluster", "leader" or "janitor". */}}
{{- define "streamherd.rules" -}}
{{- $all := .context.Files.Get "files/rbac.yaml" | fromYaml -}}
{{- toYaml (index $all .part) -}}
{{- end -}}
