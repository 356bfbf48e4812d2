{{/* Names and labels shared by every template. */}}

{{- define "modeldeploy.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already contains the chart name. */}}
{{- define "modeldeploy.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "modeldeploy.serviceAccountName" -}}
{{- default (include "modeldeploy.fullname" .) .Values.serviceAccount.name }}
{{- end }}

{{- define "modeldeploy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modeldeploy.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "modeldeploy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: modeldeploy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Lease: leaderElection.leaseName, else one per shard (the release's), else the operator's default. */}}
{{- define "modeldeploy.leaseName" -}}
{{- if .Values.leaderElection.leaseName }}
{{- .Values.leaderElection.leaseName }}
{{- else if .Values.shard.selector }}
{{- include "modeldeploy.fullname" . }}
{{- else -}}
modeldeploy-operator
{{- end }}
{{- end }}

{{/*
shard.selector (a LabelSelector) in the text syntax of --shard-selector and `kubectl -l`: matchLabels as key=value,
then each expression, all joined by commas. Empty when there is no selector.
*/}}
{{- define "modeldeploy.shardSelector" -}}
{{- $requirements := list }}
{{- range $key, $value := .Values.shard.selector.matchLabels }}
{{- $requirements = append $requirements (printf "%s=%s" $key $value) }}
{{- end }}
{{- range .Values.shard.selector.matchExpressions }}
{{- if eq .operator "In" }}
{{- $requirements = append $requirements (printf "%s in (%s)" .key (join "," .values)) }}
{{- else if eq .operator "NotIn" }}
{{- $requirements = append $requirements (printf "%s notin (%s)" .key (join "," .values)) }}
{{- else if eq .operator "Exists" }}
{{- $requirements = append $requirements .key }}
{{- else }}
{{- $requirements = append $requirements (printf "!%s" .key) }}
{{- end }}
{{- end }}
{{- join "," $requirements }}
{{- end }}

{{- define "modeldeploy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The operator's permissions: exactly the verbs and resources it uses. One list for the ClusterRole and for each
namespaced Role, so the two modes can never grant different things.
*/}}
{{- define "modeldeploy.rules" -}}
# Its own resources: watched, never written but for status.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments]
  verbs: [get, list, watch]
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/status]
  verbs: [get, patch]
# Children carry an owner reference with blockOwnerDeletion; the OwnerReferencesPermissionEnforcement admission
# plugin (OpenShift, hardened clusters) lets only who may update the owner's finalizers set it.
- apiGroups: [modeldeploy.io]
  resources: [modeldeployments/finalizers]
  verbs: [update]
# The children: server-side apply creates and updates (create + patch); old revisions are deleted, and so are the
# Services <name>-stable and <name>-canary when a rollout ends (only the resource's own: the operator checks the
# owner's uid, and deletes under a precondition on the Service's uid).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Children garbage collection missed after a watch gap (an owner gone, or deleted and created again) are deleted
# by the operator: only its own kinds' children whose owner no list shows, under a precondition on their uid.
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
# The pods of a canary, listed (never watched, never written) when its smoke test runs: their IPs are asked; and
# the ConfigMap its cases may come from (spec.rollout.smokeTest.casesFrom), read then.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get]
# The capacity children named like the resource, owned by it: its PodDisruptionBudget (spec.disruptionBudget, or
# maxUnavailable 1 by default) and the HorizontalPodAutoscaler of spec.autoscaling; deleted when no longer asked for.
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
# Events for every transition; a repeat is counted on the Event it repeats (a patch of its count).
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.trafficRouting.gatewayAPI }}
# spec.trafficRouting.gatewayAPI: the HTTPRoute named like the resource, owned by it; weights set on it, deleted
# when the spec stops asking for it.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
{{- if .Values.trafficRouting.istio }}
# spec.trafficRouting.istio: the VirtualService named like the resource, owned by it.
- apiGroups: [networking.istio.io]
  resources: [virtualservices]
  verbs: [get, list, watch, create, patch, delete]
{{- end }}
{{- end }}
