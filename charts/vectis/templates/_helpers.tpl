{{/* Names */}}
{{- define "vectis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "vectis.fullname" -}}
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

{{- define "vectis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object the chart makes. */}}
{{- define "vectis.labels" -}}
helm.sh/chart: {{ include "vectis.chart" . }}
{{ include "vectis.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: vectis
{{- end }}

{{/* Selector of the Vectis server pods (never includes the leader label). */}}
{{- define "vectis.selectorLabels" -}}
app: {{ .Values.appLabel }}
app.kubernetes.io/name: {{ include "vectis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "vectis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "vectis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "vectis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Election name in etcd: /vectis/<clusterName>/election/ */}}
{{- define "vectis.clusterName" -}}
{{- default (include "vectis.fullname" .) .Values.cluster.name }}
{{- end }}

{{/* Bundled dependency names */}}
{{- define "vectis.etcd.fullname" -}}
{{- printf "%s-etcd" (include "vectis.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "vectis.etcd.headless" -}}
{{- printf "%s-etcd-headless" (include "vectis.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- define "vectis.postgresql.fullname" -}}
{{- printf "%s-postgresql" (include "vectis.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* etcd client endpoints as a list (JSON, for fromJsonArray). */}}
{{- define "vectis.etcdEndpoints" -}}
{{- if .Values.etcd.bundled.enabled }}
{{- $eps := list }}
{{- $name := include "vectis.etcd.fullname" . }}
{{- $hl := include "vectis.etcd.headless" . }}
{{- range $i := until (int .Values.etcd.bundled.replicas) }}
{{- $eps = append $eps (printf "http://%s-%d.%s.%s.svc:2379" $name $i $hl $.Release.Namespace) }}
{{- end }}
{{- toJson $eps }}
{{- else }}
{{- toJson (.Values.cluster.etcd.endpoints | default list) }}
{{- end }}
{{- end }}

{{/* Secret holding the store URL, and its key. */}}
{{- define "vectis.storeSecretName" -}}
{{- default (printf "%s-store" (include "vectis.fullname" .)) .Values.store.existingSecret }}
{{- end }}
{{- define "vectis.storeSecretKey" -}}
{{- if .Values.store.existingSecret }}{{ .Values.store.existingSecretKey }}{{ else }}url{{ end }}
{{- end }}
{{- define "vectis.hasStore" -}}
{{- if or .Values.store.existingSecret .Values.store.url .Values.postgresql.bundled.enabled }}true{{ end }}
{{- end }}

{{- define "vectis.usersSecretName" -}}
{{- default (printf "%s-users" (include "vectis.fullname" .)) .Values.api.existingUsersSecret }}
{{- end }}
{{- define "vectis.hasUsers" -}}
{{- if or .Values.api.existingUsersSecret .Values.api.users }}true{{ end }}
{{- end }}

{{- define "vectis.pesitTLSSecretName" -}}
{{- default (printf "%s-pesit-tls" (include "vectis.fullname" .)) .Values.pesit.tls.existingSecret }}
{{- end }}

{{- define "vectis.claimName" -}}
{{- default (printf "%s-data" (include "vectis.fullname" .)) .Values.persistence.existingClaim }}
{{- end }}

{{/* Refuse combinations that install but cannot work. */}}
{{- define "vectis.validate" -}}
{{- $replicas := int .Values.replicaCount }}
{{- if and .Values.persistence.enabled (eq .Values.persistence.accessMode "ReadWriteOnce") (gt $replicas 1) }}
{{- fail (printf "persistence.accessMode ReadWriteOnce cannot serve replicaCount %d: a ReadWriteOnce volume attaches to one node, yet every pod must see the received and sent files so that a new leader can take over. Use a ReadWriteMany storage class (NFS, CephFS, EFS, Azure Files...) or replicaCount 1." $replicas) }}
{{- end }}
{{- if and (not .Values.cluster.enabled) (gt $replicas 1) }}
{{- fail (printf "cluster.enabled false runs a single node that is its own leader; replicaCount %d would serve PeSIT from every pod. Set cluster.enabled true (with etcd) or replicaCount 1." $replicas) }}
{{- end }}
{{- if and .Values.cluster.enabled (not .Values.etcd.bundled.enabled) (not .Values.cluster.etcd.endpoints) }}
{{- fail "cluster.etcd.endpoints is required when cluster.enabled is true (or set etcd.bundled.enabled true for development)." }}
{{- end }}
{{- if and .Values.cluster.enabled (not (include "vectis.hasStore" .)) }}
{{- fail "a PostgreSQL store is required when cluster.enabled is true: set store.existingSecret (recommended), store.url, or postgresql.bundled.enabled for development." }}
{{- end }}
{{- if and .Values.pesit.tls.enabled (not .Values.pesit.tls.existingSecret) (not .Values.pesit.tls.selfSigned) }}
{{- fail "pesit.tls.enabled needs pesit.tls.existingSecret (a kubernetes.io/tls Secret) or pesit.tls.selfSigned true." }}
{{- end }}
{{- if and .Values.cluster.etcd.tls.enabled (not .Values.cluster.etcd.tls.existingSecret) }}
{{- fail "cluster.etcd.tls.enabled needs cluster.etcd.tls.existingSecret (ca.crt, tls.crt, tls.key)." }}
{{- end }}
{{- end }}

{{/* Bundled PostgreSQL password: the value, else the one already in the cluster, else a new random one. */}}
{{- define "vectis.postgresql.password" -}}
{{- if .Values.postgresql.bundled.password }}
{{- .Values.postgresql.bundled.password }}
{{- else }}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "vectis.postgresql.fullname" .) }}
{{- if and $existing $existing.data (index $existing.data "password") }}
{{- index $existing.data "password" | b64dec }}
{{- else }}
{{- /* Stable within one render: both Secrets must agree. */}}
{{- if not (hasKey .Values.postgresql.bundled "_generated") }}
{{- $_ := set .Values.postgresql.bundled "_generated" (randAlphaNum 24) }}
{{- end }}
{{- index .Values.postgresql.bundled "_generated" }}
{{- end }}
{{- end }}
{{- end }}
