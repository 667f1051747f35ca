{{/*
Names, labels and the pieces every workload shares. Services are rendered from one
definition ("rlhf.service.*") so the five stay identical in shape; each service's own
template file (templates/<service>.yaml) only names it.
*/}}

{{- define "rlhf.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "rlhf.fullname" -}}
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

{{- define "rlhf.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of one component's objects: <fullname>-<component>, at most 63 characters. */}}
{{- define "rlhf.componentName" -}}
{{- printf "%s-%s" (include "rlhf.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels of one component. Call with (dict "root" $ "component" "trainer"). */}}
{{- define "rlhf.selectorLabels" -}}
app.kubernetes.io/name: {{ include "rlhf.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* All labels of one component's objects. */}}
{{- define "rlhf.labels" -}}
{{ include "rlhf.selectorLabels" . }}
helm.sh/chart: {{ include "rlhf.chart" .root }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: rlhf
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "rlhf.annotations" -}}
{{- with .Values.commonAnnotations -}}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end -}}
{{- end -}}

{{/* Label that lets a client pod through the NetworkPolicies when allowExternal=false. */}}
{{- define "rlhf.clientLabel" -}}
{{ include "rlhf.fullname" . | trunc 56 | trimSuffix "-" }}-client
{{- end -}}

{{/*
An image reference. Call with (dict "root" $ "registry" r "repository" repo "tag" t
"digest" d). A digest pins the image: repository@digest (the tag is then dropped).
*/}}
{{- define "rlhf.imageRef" -}}
{{- $registry := default .registry .root.Values.global.imageRegistry -}}
{{- $repo := ternary (printf "%s/%s" $registry .repository) .repository (ne $registry "") -}}
{{- if .digest -}}
{{- printf "%s@%s" $repo .digest -}}
{{- else -}}
{{- printf "%s:%s" $repo (default .root.Chart.AppVersion .tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* Image of one of the five services. Call with (dict "root" $ "name" "trainer"). */}}
{{- define "rlhf.serviceImage" -}}
{{- $svc := index .root.Values.services .name -}}
{{- $repo := default (printf "%s%s" .root.Values.image.repositoryPrefix .name) $svc.image.repository -}}
{{- include "rlhf.imageRef" (dict "root" .root "registry" .root.Values.image.registry "repository" $repo "tag" (default .root.Values.image.tag $svc.image.tag) "digest" $svc.image.digest) -}}
{{- end -}}

{{/* Image of the training Jobs and of the test pod: their own, else the trainer's. */}}
{{- define "rlhf.auxImage" -}}
{{- $img := .image -}}
{{- if $img.repository -}}
{{- include "rlhf.imageRef" (dict "root" .root "registry" .root.Values.image.registry "repository" $img.repository "tag" (default .root.Values.image.tag $img.tag) "digest" $img.digest) -}}
{{- else -}}
{{- include "rlhf.serviceImage" (dict "root" .root "name" "trainer") -}}
{{- end -}}
{{- end -}}

{{- define "rlhf.serviceAccountName" -}}
{{- $svc := index .root.Values.services .name -}}
{{- if $svc.serviceAccount.create -}}
{{- default (include "rlhf.componentName" (dict "root" .root "component" .name)) $svc.serviceAccount.name -}}
{{- else -}}
{{- default "default" $svc.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "rlhf.trainingJobServiceAccountName" -}}
{{- include "rlhf.componentName" (dict "root" . "component" "training-job") -}}
{{- end -}}

{{- define "rlhf.artifactClaimName" -}}
{{- default (include "rlhf.componentName" (dict "root" . "component" "artifacts")) .Values.artifacts.persistence.existingClaim -}}
{{- end -}}

{{/* Headless Service of the Triton pods (one DNS A record per ready pod). */}}
{{- define "rlhf.tritonHeadlessName" -}}
{{- include "rlhf.componentName" (dict "root" . "component" "triton-headless") -}}
{{- end -}}

{{- define "rlhf.modelRepositoryClaimName" -}}
{{- default (include "rlhf.componentName" (dict "root" . "component" "models")) .Values.triton.modelRepository.pvc.existingClaim -}}
{{- end -}}

{{/* Secret with the gRPC bearer tokens: grpc.auth.existingSecret, else <fullname>-grpc-tokens. */}}
{{- define "rlhf.grpcAuthSecretName" -}}
{{- default (include "rlhf.componentName" (dict "root" . "component" "grpc-tokens")) .Values.grpc.auth.existingSecret -}}
{{- end -}}

{{/* Secret with the gRPC server certificate: grpc.tls.existingSecret, else <fullname>-grpc-tls. */}}
{{- define "rlhf.grpcTlsSecretName" -}}
{{- default (include "rlhf.componentName" (dict "root" . "component" "grpc-tls")) .Values.grpc.tls.existingSecret -}}
{{- end -}}

{{/*
Peers of the services' Kafka egress rule (a NetworkPolicyPeer list, or nothing for any
address): networkPolicy.kafkaPeers, else the namespaces of the bootstrap servers when
every one is an in-cluster name (<service>.<namespace>.svc[.<cluster domain>]).
*/}}
{{- define "rlhf.networkPolicy.kafkaPeers" -}}
{{- if .Values.networkPolicy.kafkaPeers -}}
{{- toYaml .Values.networkPolicy.kafkaPeers -}}
{{- else -}}
{{- $namespaces := list -}}
{{- $outside := false -}}
{{- range $server := splitList "," .Values.kafka.bootstrapServers -}}
{{- $host := regexReplaceAll ":[0-9]+$" (trim $server) "" | lower -}}
{{- $suffix := regexFind "\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?\\.svc(\\.[-a-z0-9.]+)?$" $host -}}
{{- if $suffix -}}
{{- $namespaces = append $namespaces (index (splitList "." $suffix) 1) -}}
{{- else -}}
{{- $outside = true -}}
{{- end -}}
{{- end -}}
{{- if not $outside -}}
{{- range $ns := uniq $namespaces }}
- namespaceSelector:
    matchLabels:
      kubernetes.io/metadata.name: {{ $ns }}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when the trainer launches Jobs and so needs API access. */}}
{{- define "rlhf.kubernetesExecutor" -}}
{{- if and .Values.services.trainer.enabled (eq .Values.trainingJobs.executor "kubernetes") -}}true{{- end -}}
{{- end -}}

{{/* Checks that fail the render with a message naming the value to fix. */}}
{{- define "rlhf.validate" -}}
{{- if and .Values.grpc.auth.enabled (not .Values.grpc.tls.enabled) (not .Values.grpc.auth.allowWithoutTLS) -}}
{{- fail "grpc.auth.enabled=true with grpc.tls.enabled=false would send the bearer tokens in clear text: set grpc.tls.enabled=true (Secret grpc.tls.existingSecret), or set grpc.auth.allowWithoutTLS=true to accept plaintext tokens" -}}
{{- end -}}
{{- if and (hasPrefix "SASL" .Values.kafka.securityProtocol) (not .Values.kafka.sasl.mechanism) -}}
{{- fail (printf "kafka.securityProtocol=%s needs kafka.sasl.mechanism" .Values.kafka.securityProtocol) -}}
{{- end -}}
{{- if and .Values.kafka.sasl.mechanism (not .Values.kafka.sasl.existingSecret) -}}
{{- fail "kafka.sasl.mechanism is set: kafka.sasl.existingSecret must name the Secret with the SASL username and password" -}}
{{- end -}}
{{- if and .Values.stateStore.postgres.enabled (not .Values.stateStore.postgres.existingSecret) -}}
{{- fail "stateStore.postgres.enabled=true: stateStore.postgres.existingSecret must name the Secret with the connection URL (key stateStore.postgres.urlKey)" -}}
{{- end -}}
{{- if and .Values.artifacts.objectStorage.enabled (not .Values.artifacts.objectStorage.uri) -}}
{{- fail "artifacts.objectStorage.enabled=true needs artifacts.objectStorage.uri (e.g. s3://bucket/rlhf)" -}}
{{- end -}}
{{- if and .Values.triton.enabled (eq .Values.triton.modelRepository.type "objectStorage") (not .Values.triton.modelRepository.objectStorage.uri) -}}
{{- fail "triton.modelRepository.type=objectStorage needs triton.modelRepository.objectStorage.uri" -}}
{{- end -}}
{{- range $name, $svc := .Values.services -}}
{{- if and $svc.autoscaling.enabled (gt (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) -}}
{{- fail (printf "services.%s.autoscaling: minReplicas (%v) > maxReplicas (%v)" $name $svc.autoscaling.minReplicas $svc.autoscaling.maxReplicas) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Pod-level securityContext (hardened defaults from values). */}}
{{- define "rlhf.podSecurityContext" -}}
{{- toYaml .Values.podSecurityContext -}}
{{- end -}}

{{- define "rlhf.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext -}}
{{- end -}}

{{/* Spread over zones and nodes unless the component brings its own constraints. */}}
{{- define "rlhf.topologySpread" -}}
{{- $own := .own -}}
{{- if $own -}}
topologySpreadConstraints:
  {{- toYaml $own | nindent 2 }}
{{- else if .root.Values.topologySpread.enabled -}}
topologySpreadConstraints:
  {{- range $key := list "topology.kubernetes.io/zone" "kubernetes.io/hostname" }}
  - maxSkew: {{ $.root.Values.topologySpread.maxSkew }}
    topologyKey: {{ $key }}
    whenUnsatisfiable: {{ $.root.Values.topologySpread.whenUnsatisfiable }}
    labelSelector:
      matchLabels:
        {{- include "rlhf.selectorLabels" (dict "root" $.root "component" $.component) | nindent 8 }}
    matchLabelKeys:
      - pod-template-hash
  {{- end }}
{{- end -}}
{{- end -}}

{{/* Scratch volumes that make readOnlyRootFilesystem workable. */}}
{{- define "rlhf.scratchVolumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.scratch.tmpSizeLimit }}
- name: cache
  emptyDir:
    sizeLimit: {{ .Values.scratch.cacheSizeLimit }}
{{- end -}}

{{- define "rlhf.scratchMounts" -}}
- name: tmp
  mountPath: /tmp
- name: cache
  mountPath: /var/cache/rlhf
{{- end -}}

{{/* The chart's grpc.health.v1 checker, used by `helm test` and by TLS exec probes. */}}
{{- define "rlhf.healthCheckArgs" -}}
{{- if .root.Values.grpc.tls.enabled }}
- --ca
- /etc/rlhf/tls/ca.crt
{{- if .root.Values.grpc.tls.requireClientCert }}
- --cert
- /etc/rlhf/tls/tls.crt
- --key
- /etc/rlhf/tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/*
Probes of a service container. Native gRPC probes (grpc.health.v1) unless TLS is on:
kubelet's gRPC probe cannot speak TLS, so then the health-check script runs in the
container against the service's own DNS name.
*/}}
{{- define "rlhf.serviceProbes" -}}
{{- $root := .root -}}
{{- $probes := .probes -}}
{{- range $kind := list "startup" "readiness" "liveness" }}
{{- $p := index $probes $kind }}
{{ $kind }}Probe:
  {{- if $root.Values.grpc.tls.enabled }}
  exec:
    command:
      - python
      - /etc/rlhf/scripts/grpc_health.py
      - --timeout
      - {{ $p.timeoutSeconds | quote }}
      - --server-name
      - {{ printf "%s.%s.svc" (include "rlhf.componentName" (dict "root" $root "component" $.name)) $root.Release.Namespace }}
      {{- include "rlhf.healthCheckArgs" (dict "root" $root) | nindent 6 }}
      - {{ printf "127.0.0.1:%v" $root.Values.grpc.port }}
  {{- else }}
  grpc:
    port: {{ $root.Values.grpc.port }}
  {{- end }}
  periodSeconds: {{ $p.periodSeconds }}
  timeoutSeconds: {{ $p.timeoutSeconds }}
  failureThreshold: {{ $p.failureThreshold }}
  {{- with $p.initialDelaySeconds }}
  initialDelaySeconds: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}

{{/*
"true" when the chart has pipeline specs (pipelines.specs or files/pipelines/*.yaml):
their ConfigMap is mounted and RLHF_PIPELINES_DIR points there, in place of the specs
packaged in the images. Without any, the services use the packaged ones.
*/}}
{{- define "rlhf.hasPipelineSpecs" -}}
{{- if or .Values.pipelines.specs (.Files.Glob "files/pipelines/*.yaml") -}}true{{- end -}}
{{- end -}}
