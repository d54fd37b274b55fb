{{- define "taskorch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "taskorch.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "taskorch.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "taskorch.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels every object carries; `app.kubernetes.io/instance` finds all of a release. */}}
{{- define "taskorch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "taskorch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: taskorch
{{- end -}}

{{- define "taskorch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "taskorch.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "taskorch.image" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag) -}}
{{- end -}}

{{- define "taskorch.operatorServiceAccount" -}}
{{- if .Values.serviceAccount.operator.create -}}
{{- default (printf "%s-operator" (include "taskorch.fullname" .)) .Values.serviceAccount.operator.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.operator.name -}}
{{- end -}}
{{- end -}}

{{- define "taskorch.workerServiceAccount" -}}
{{- if .Values.serviceAccount.worker.create -}}
{{- default (printf "%s-worker" (include "taskorch.fullname" .)) .Values.serviceAccount.worker.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.worker.name -}}
{{- end -}}
{{- end -}}

{{- define "taskorch.redisUrl" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.url -}}
{{- else -}}
{{- printf "redis://%s-redis.%s.svc:6379/0" (include "taskorch.fullname" .) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the Redis password and its key; empty name when there is none. */}}
{{- define "taskorch.redisSecretName" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.existingSecret -}}
{{- else -}}
{{- default (printf "%s-redis" (include "taskorch.fullname" .)) .Values.redis.bundled.existingSecret -}}
{{- end -}}
{{- end -}}

{{- define "taskorch.redisSecretKey" -}}
{{- if eq .Values.redis.mode "external" -}}
{{- .Values.redis.external.passwordKey -}}
{{- else -}}
{{- .Values.redis.bundled.passwordKey -}}
{{- end -}}
{{- end -}}

{{/* Environment the operator and the workers share: where Redis is and how to log in. */}}
{{- define "taskorch.redisEnv" -}}
- name: TASKORCH_REDIS_URL
  value: {{ include "taskorch.redisUrl" . | quote }}
{{- with include "taskorch.redisSecretName" . }}
- name: TASKORCH_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "taskorch.redisSecretKey" $ }}
{{- end }}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: TASKORCH_REDIS_TLS_CA_FILE
  value: /etc/taskorch/redis-ca/{{ .Values.redis.external.tls.caKey }}
{{- end }}
{{- end -}}

{{- /* A worker's Redis settings: the namespace's own ACL user under redis.acl, else the
main credentials. */ -}}
{{- define "taskorch.workerRedisEnv" -}}
{{- if .Values.redis.acl }}
- name: TASKORCH_REDIS_URL
  value: {{ include "taskorch.redisUrl" . | quote }}
- name: TASKORCH_REDIS_USERNAME
  valueFrom:
    secretKeyRef: {name: taskorch-redis-user, key: username}
- name: TASKORCH_REDIS_PASSWORD
  valueFrom:
    secretKeyRef: {name: taskorch-redis-user, key: password}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: TASKORCH_REDIS_TLS_CA_FILE
  value: /etc/taskorch/redis-ca/{{ .Values.redis.external.tls.caKey }}
{{- end }}
{{- else }}
{{- include "taskorch.redisEnv" . }}
{{- end }}
{{- end -}}

{{- define "taskorch.redisCaVolume" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: redis-ca
  secret:
    secretName: {{ .Values.redis.external.tls.caSecret }}
{{- end }}
{{- end -}}

{{- define "taskorch.redisCaMount" -}}
{{- if and (eq .Values.redis.mode "external") .Values.redis.external.tls.caSecret }}
- name: redis-ca
  mountPath: /etc/taskorch/redis-ca
  readOnly: true
{{- end }}
{{- end -}}

{{- define "taskorch.serverServiceAccount" -}}
{{- if .Values.serviceAccount.server.create -}}
{{- default (printf "%s-server" (include "taskorch.fullname" .)) .Values.serviceAccount.server.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.server.name -}}
{{- end -}}
{{- end -}}
