{{/* Chart name, cut to 63 characters (a DNS label). */}}
{{- define "webhook-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects. Cut to 52 characters: the StatefulSet adds "-<ordinal>" to pod names
and a controller-revision-hash label of its own, and the headless Service adds "-headless".
*/}}
{{- define "webhook-gateway.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "webhook-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "webhook-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "webhook-gateway.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "webhook-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "webhook-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "webhook-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret holding ADMIN_TOKEN, INGEST_API_KEYS and METRICS_TOKEN (the chart's own or an existing one). */}}
{{- define "webhook-gateway.secretName" -}}
{{- default (include "webhook-gateway.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The Secret holding the SASL password: an existing one, else the chart's own. */}}
{{- define "webhook-gateway.saslSecretName" -}}
{{- default (include "webhook-gateway.fullname" .) .Values.kafka.sasl.existingSecret }}
{{- end }}

{{- define "webhook-gateway.saslPasswordKey" -}}
{{- if .Values.kafka.sasl.existingSecret }}{{ .Values.kafka.sasl.passwordKey }}{{ else }}kafka-sasl-password{{ end }}
{{- end }}

{{/* True when the pod mounts Kafka credential files (TLS CA, client certificate, SASL password). */}}
{{- define "webhook-gateway.kafkaFiles" -}}
{{- if or (and .Values.kafka.tls.enabled (or .Values.kafka.tls.ca.secretName .Values.kafka.tls.clientCert.secretName)) .Values.kafka.sasl.mechanism }}true{{ end }}
{{- end }}

{{/* Checks of the values that a template cannot render without. */}}
{{- define "webhook-gateway.validate" -}}
{{- if not .Values.kafka.brokers }}
{{- fail "kafka.brokers is required: the chart does not run Kafka; list the bootstrap brokers as host:port (e.g. my-cluster-kafka-bootstrap.kafka:9093 for Strimzi)" }}
{{- end }}
{{- with .Values.kafka.sasl }}
{{- if .mechanism }}
{{- if not (has .mechanism (list "plain" "scram-sha-256" "scram-sha-512")) }}
{{- fail "kafka.sasl.mechanism must be plain, scram-sha-256 or scram-sha-512" }}
{{- end }}
{{- if not .username }}
{{- fail "kafka.sasl.username is required with kafka.sasl.mechanism" }}
{{- end }}
{{- if and (not .existingSecret) (not .password) }}
{{- fail "kafka.sasl.password or kafka.sasl.existingSecret is required with kafka.sasl.mechanism" }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.kafka.tls.clientCert }}
{{- if and .secretName (not $.Values.kafka.tls.enabled) }}
{{- fail "kafka.tls.clientCert needs kafka.tls.enabled=true" }}
{{- end }}
{{- end }}
{{- if and .Values.kafka.tls.ca.secretName (not .Values.kafka.tls.enabled) }}
{{- fail "kafka.tls.ca needs kafka.tls.enabled=true" }}
{{- end }}
{{- end }}
