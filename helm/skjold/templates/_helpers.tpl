{{/* Names are fixed by docs/architecture.md (the operator and webhook look them up), so they are not
     derived from the release name: one Skjold install per control-plane namespace. */}}

{{- define "skjold.labels" -}}
app.kubernetes.io/part-of: skjold
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "skjold.operator.selectorLabels" -}}
app.kubernetes.io/name: skjold-operator
app.kubernetes.io/component: operator
{{- end -}}

{{- define "skjold.webhook.selectorLabels" -}}
app.kubernetes.io/name: skjold-webhook
app.kubernetes.io/component: webhook
{{- end -}}

{{/* Image reference: repository (default <registry>/<name>) plus digest, else tag (default appVersion). */}}
{{- define "skjold.image" -}}
{{- $root := index . 0 -}}
{{- $component := index . 1 -}}
{{- $name := index . 2 -}}
{{- $repo := $component.image.repository | default (printf "%s/%s" $root.Values.image.registry $name) -}}
{{- if $component.image.digest -}}
{{- printf "%s@%s" $repo $component.image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repo ($root.Values.image.tag | default $root.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* The MeshConfig the chart creates: `default` for the default revision, else the revision name. */}}
{{- define "skjold.meshConfigName" -}}
{{- .Values.revision | default "default" -}}
{{- end -}}

{{- define "skjold.certSecret" -}}skjold-webhook-tls{{- end -}}
{{- define "skjold.webhookService" -}}skjold-webhook{{- end -}}

{{- define "skjold.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext }}
{{- end -}}

{{- define "skjold.securityContext" -}}
{{- toYaml .Values.securityContext }}
{{- end -}}

{{/* Fail early on combinations the schema cannot express. */}}
{{- define "skjold.validate" -}}
{{- if and (gt (int .Values.operator.replicas) 1) (not .Values.operator.leaderElection) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection=true: two active operators would fight over the same objects" -}}
{{- end -}}
{{- if and .Values.webhook.url (not (hasPrefix "https://" .Values.webhook.url)) -}}
{{- fail (printf "webhook.url %q must start with https:// (the API server only calls webhooks over TLS)" .Values.webhook.url) -}}
{{- end -}}
{{- if and .Values.certManager.enabled .Values.webhook.url -}}
{{- fail "certManager.enabled=true cannot be combined with webhook.url: the cert-manager Certificate covers the Service DNS names only" -}}
{{- end -}}
{{- end -}}
