{{/*
Everything one platform service needs: ServiceAccount, Deployment, Service and, when
enabled, PodDisruptionBudget, HorizontalPodAutoscaler, ServiceMonitor and
NetworkPolicy. Call with (dict "root" $ "name" "<service>").
*/}}

{{/* RLHF_* settings (src/rlhf/runtime/settings.py) and the service's own extras. */}}
{{- define "rlhf.service.env" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $v := $root.Values -}}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: HOME
  value: /tmp
- name: TMPDIR
  value: /tmp
- name: XDG_CACHE_HOME
  value: /var/cache/rlhf
- name: HF_HOME
  value: /var/cache/rlhf/huggingface
- name: RLHF_BUS
  value: kafka
- name: RLHF_KAFKA__BOOTSTRAP_SERVERS
  value: {{ $v.kafka.bootstrapServers | quote }}
- name: RLHF_KAFKA__CLIENT_ID
  value: {{ printf "rlhf-%s" $name | quote }}
- name: RLHF_KAFKA__SECURITY_PROTOCOL
  value: {{ $v.kafka.securityProtocol | quote }}
- name: RLHF_KAFKA__TOPIC_PARTITIONS
  value: {{ $v.kafka.topics.partitions | quote }}
- name: RLHF_KAFKA__TOPIC_REPLICATION
  value: {{ $v.kafka.topics.replicationFactor | quote }}
{{- if $v.kafka.sasl.mechanism }}
- name: RLHF_KAFKA__SASL_MECHANISM
  value: {{ $v.kafka.sasl.mechanism | quote }}
- name: RLHF_KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret }}
      key: {{ $v.kafka.sasl.usernameKey }}
- name: RLHF_KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $v.kafka.sasl.existingSecret }}
      key: {{ $v.kafka.sasl.passwordKey }}
{{- end }}
{{- if $v.stateStore.postgres.enabled }}
- name: RLHF_STORE__URL
  valueFrom:
    secretKeyRef:
      name: {{ $v.stateStore.postgres.existingSecret }}
      key: {{ $v.stateStore.postgres.urlKey }}
{{- end }}
{{- if $v.kafka.tls.caSecret }}
- name: RLHF_KAFKA__SSL_CAFILE
  value: {{ printf "/etc/rlhf/kafka/ca/%s" $v.kafka.tls.caKey | quote }}
{{- end }}
{{- if $v.kafka.tls.clientCertSecret }}
- name: RLHF_KAFKA__SSL_CERTFILE
  value: /etc/rlhf/kafka/client/tls.crt
- name: RLHF_KAFKA__SSL_KEYFILE
  value: /etc/rlhf/kafka/client/tls.key
{{- end }}
- name: RLHF_GRPC__HOST
  value: "0.0.0.0"
- name: RLHF_GRPC__PORT
  value: {{ $v.grpc.port | quote }}
{{- if $v.grpc.auth.enabled }}
- name: RLHF_GRPC__AUTH_ENABLED
  value: "true"
- name: RLHF_GRPC__AUTH_TOKENS_FILE
  value: {{ printf "/etc/rlhf/auth/%s" $v.grpc.auth.tokensKey | quote }}
{{- end }}
{{- if $v.grpc.tls.enabled }}
- name: RLHF_GRPC__TLS_CERT_FILE
  value: /etc/rlhf/tls/tls.crt
- name: RLHF_GRPC__TLS_KEY_FILE
  value: /etc/rlhf/tls/tls.key
{{- if $v.grpc.tls.requireClientCert }}
- name: RLHF_GRPC__TLS_CLIENT_CA_FILE
  value: /etc/rlhf/tls/ca.crt
{{- end }}
{{- end }}
- name: RLHF_TELEMETRY__METRICS_PORT
  value: {{ $v.metrics.port | quote }}
- name: RLHF_TELEMETRY__SERVICE_NAME
  value: {{ printf "rlhf-%s" $name | quote }}
- name: RLHF_TELEMETRY__LOG_LEVEL
  value: {{ $v.config.logLevel | quote }}
- name: RLHF_TELEMETRY__LOG_FORMAT
  value: {{ $v.config.logFormat | quote }}
- name: RLHF_TELEMETRY__TRACES_EXPORTER
  value: {{ $v.config.tracesExporter | quote }}
- name: RLHF_ARTIFACT_DIR
  value: {{ ternary $v.artifacts.mountPath "/var/cache/rlhf/artifacts" $v.artifacts.persistence.enabled | quote }}
{{- if $v.artifacts.objectStorage.enabled }}
- name: RLHF_ARTIFACT_URI
  value: {{ $v.artifacts.objectStorage.uri | quote }}
{{- end }}
{{- if include "rlhf.hasPipelineSpecs" $root }}
- name: RLHF_PIPELINES_DIR
  value: {{ $v.pipelines.mountPath | quote }}
{{- end }}
{{- if and (eq $name "inference") $v.triton.enabled }}
{{- /* services/inference/settings.py: ServingSettings (RLHF_SERVING__*) */}}
- name: RLHF_SERVING__TRITON_URL
  value: {{ printf "%s:8001" (include "rlhf.componentName" (dict "root" $root "component" "triton")) | quote }}
{{- /* Model control reaches every Triton pod through the headless Service (docs/deploy.md). */}}
- name: RLHF_SERVING__TRITON_REPLICAS
  value: {{ printf "%s.%s.svc:8001" (include "rlhf.tritonHeadlessName" $root) $root.Release.Namespace | quote }}
- name: RLHF_SERVING__MODEL_CONTROL
  value: {{ $v.triton.modelControlMode | quote }}
- name: RLHF_SERVING__REPLICA_RESYNC_S
  value: {{ $v.triton.replicaResyncSeconds | quote }}
{{- if eq $v.triton.modelRepository.type "pvc" }}
- name: RLHF_SERVING__MODEL_REPOSITORY
  value: {{ $v.triton.modelRepository.mountPath | quote }}
{{- else }}
{{- /* Triton reads the object store itself; versions are published there by the trainer. */}}
- name: RLHF_SERVING__WRITE_REPOSITORY
  value: "false"
{{- end }}
{{- end }}
{{- if eq $name "trainer" }}
{{- $jobs := $v.trainingJobs }}
{{- if eq $jobs.executor "kubernetes" }}
{{- /* src/rlhf/executors/kubernetes.py: KubernetesExecutorSettings */}}
- name: RLHF_KUBERNETES__NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: RLHF_KUBERNETES__IMAGE
  value: {{ include "rlhf.auxImage" (dict "root" $root "image" $jobs.image) | quote }}
- name: RLHF_KUBERNETES__SERVICE_ACCOUNT
  value: {{ include "rlhf.trainingJobServiceAccountName" $root | quote }}
- name: RLHF_KUBERNETES__JOB_NAME_PREFIX
  value: {{ printf "%s-run" (include "rlhf.fullname" $root | trunc 30 | trimSuffix "-") | quote }}
- name: RLHF_KUBERNETES__LABELS
  value: {{ dict "app.kubernetes.io/name" (include "rlhf.name" $root) "app.kubernetes.io/instance" $root.Release.Name "app.kubernetes.io/component" "training-job" "app.kubernetes.io/part-of" "rlhf" | toJson | quote }}
{{- if $v.artifacts.persistence.enabled }}
- name: RLHF_KUBERNETES__ARTIFACT_CLAIM
  value: {{ include "rlhf.artifactClaimName" $root | quote }}
{{- end }}
- name: RLHF_KUBERNETES__ARTIFACT_MOUNT_PATH
  value: {{ $v.artifacts.mountPath | quote }}
- name: RLHF_KUBERNETES__RESOURCES
  value: {{ $jobs.resources | toJson | quote }}
- name: RLHF_KUBERNETES__GPU_RESOURCE_NAME
  value: {{ $jobs.gpuResourceName | quote }}
- name: RLHF_KUBERNETES__NODE_SELECTOR
  value: {{ $jobs.nodeSelector | toJson | quote }}
- name: RLHF_KUBERNETES__TOLERATIONS
  value: {{ $jobs.tolerations | toJson | quote }}
- name: RLHF_KUBERNETES__IMAGE_PULL_SECRETS
  value: {{ $v.global.imagePullSecrets | toJson | quote }}
- name: RLHF_KUBERNETES__TTL_SECONDS_AFTER_FINISHED
  value: {{ $jobs.ttlSecondsAfterFinished | quote }}
- name: RLHF_KUBERNETES__BACKOFF_LIMIT
  value: {{ $jobs.backoffLimit | quote }}
- name: RLHF_KUBERNETES__ACTIVE_DEADLINE_SECONDS
  value: {{ $jobs.activeDeadlineSeconds | quote }}
- name: RLHF_KUBERNETES__PYTORCH_JOB
  value: {{ $jobs.pytorchJob.enabled | quote }}
- name: RLHF_KUBERNETES__RUN_AS_USER
  value: {{ $v.containerSecurityContext.runAsUser | default 10001 | quote }}
{{- end }}
{{- end }}
{{- with $v.config.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- with (index $v.services $name).env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "rlhf.service" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $v := $root.Values -}}
{{- $svc := index $v.services $name -}}
{{- if $svc.enabled -}}
{{- include "rlhf.validate" $root -}}
{{- $fullName := include "rlhf.componentName" (dict "root" $root "component" $name) -}}
{{- $ctx := dict "root" $root "component" $name -}}
{{- $apiAccess := and (eq $name "trainer") (eq (include "rlhf.kubernetesExecutor" $root) "true") -}}
{{- if $svc.serviceAccount.create }}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "rlhf.serviceAccountName" $ }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
  {{- with $svc.serviceAccount.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: false
---
{{- end }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
  {{- with (include "rlhf.annotations" $root) }}{{ . | nindent 2 }}{{- end }}
spec:
  {{- if not $svc.autoscaling.enabled }}
  replicas: {{ $svc.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxSurge: 1
      maxUnavailable: 0
  selector:
    matchLabels:
      {{- include "rlhf.selectorLabels" $ctx | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "rlhf.labels" $ctx | nindent 8 }}
        {{- with $svc.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $svc.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "rlhf.serviceAccountName" $ }}
      automountServiceAccountToken: {{ $apiAccess }}
      enableServiceLinks: false
      {{- with $v.global.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.priorityClassName }}
      priorityClassName: {{ . }}
      {{- end }}
      terminationGracePeriodSeconds: {{ $svc.terminationGracePeriodSeconds }}
      securityContext:
        {{- include "rlhf.podSecurityContext" $root | nindent 8 }}
      {{- with $svc.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $svc.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- include "rlhf.topologySpread" (dict "root" $root "component" $name "own" $svc.topologySpreadConstraints) | nindent 6 }}
      containers:
        - name: {{ $name }}
          image: {{ include "rlhf.serviceImage" $ | quote }}
          imagePullPolicy: {{ default $v.image.pullPolicy $svc.image.pullPolicy }}
          args: ["serve", {{ $name | quote }}]
          ports:
            - name: grpc
              containerPort: {{ $v.grpc.port }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $v.metrics.port }}
              protocol: TCP
          env:
            {{- include "rlhf.service.env" $ | nindent 12 }}
          {{- if or $svc.envFrom $v.artifacts.objectStorage.enabled }}
          envFrom:
            {{- if $v.artifacts.objectStorage.enabled }}
            - secretRef:
                name: {{ $v.artifacts.objectStorage.existingSecret }}
            {{- end }}
            {{- with $svc.envFrom }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          {{- include "rlhf.serviceProbes" (dict "root" $root "name" $name "probes" $svc.probes) | nindent 10 }}
          resources:
            {{- toYaml $svc.resources | nindent 12 }}
          securityContext:
            {{- include "rlhf.containerSecurityContext" $root | nindent 12 }}
          volumeMounts:
            {{- include "rlhf.scratchMounts" $root | nindent 12 }}
            - name: artifacts
              mountPath: {{ $v.artifacts.mountPath }}
            {{- if include "rlhf.hasPipelineSpecs" $root }}
            - name: pipelines
              mountPath: {{ $v.pipelines.mountPath }}
              readOnly: true
            {{- end }}
            - name: scripts
              mountPath: /etc/rlhf/scripts
              readOnly: true
            {{- if $v.grpc.auth.enabled }}
            - name: auth-tokens
              mountPath: /etc/rlhf/auth
              readOnly: true
            {{- end }}
            {{- if $v.grpc.tls.enabled }}
            - name: grpc-tls
              mountPath: /etc/rlhf/tls
              readOnly: true
            {{- end }}
            {{- if $v.kafka.tls.caSecret }}
            - name: kafka-ca
              mountPath: /etc/rlhf/kafka/ca
              readOnly: true
            {{- end }}
            {{- if $v.kafka.tls.clientCertSecret }}
            - name: kafka-client-cert
              mountPath: /etc/rlhf/kafka/client
              readOnly: true
            {{- end }}
            {{- if and (eq $name "inference") $v.triton.enabled (eq $v.triton.modelRepository.type "pvc") }}
            - name: model-repository
              mountPath: {{ $v.triton.modelRepository.mountPath }}
            {{- end }}
            {{- with $svc.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        {{- include "rlhf.scratchVolumes" $root | nindent 8 }}
        - name: artifacts
          {{- if $v.artifacts.persistence.enabled }}
          persistentVolumeClaim:
            claimName: {{ include "rlhf.artifactClaimName" $root }}
          {{- else }}
          emptyDir: {}
          {{- end }}
        {{- if include "rlhf.hasPipelineSpecs" $root }}
        - name: pipelines
          configMap:
            name: {{ include "rlhf.componentName" (dict "root" $root "component" "pipelines") }}
        {{- end }}
        - name: scripts
          configMap:
            name: {{ include "rlhf.componentName" (dict "root" $root "component" "scripts") }}
            defaultMode: 0444
        {{- if $v.grpc.auth.enabled }}
        - name: auth-tokens
          secret:
            secretName: {{ include "rlhf.grpcAuthSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $v.grpc.tls.enabled }}
        - name: grpc-tls
          secret:
            secretName: {{ include "rlhf.grpcTlsSecretName" $root }}
            defaultMode: 0440
        {{- end }}
        {{- if $v.kafka.tls.caSecret }}
        - name: kafka-ca
          secret:
            secretName: {{ $v.kafka.tls.caSecret }}
            defaultMode: 0444
        {{- end }}
        {{- if $v.kafka.tls.clientCertSecret }}
        - name: kafka-client-cert
          secret:
            secretName: {{ $v.kafka.tls.clientCertSecret }}
            defaultMode: 0440
        {{- end }}
        {{- if and (eq $name "inference") $v.triton.enabled (eq $v.triton.modelRepository.type "pvc") }}
        - name: model-repository
          persistentVolumeClaim:
            claimName: {{ include "rlhf.modelRepositoryClaimName" $root }}
        {{- end }}
        {{- with $svc.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
---
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
  {{- with $svc.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $svc.service.type }}
  selector:
    {{- include "rlhf.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.grpc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
    - name: metrics
      port: {{ $v.metrics.port }}
      targetPort: metrics
      protocol: TCP
      appProtocol: http
---
# Headless: one DNS record per ready pod, for gRPC clients that balance calls over the
# replicas themselves (dns:///<name>-headless...:50051 with round_robin, see docs/grpc.md)
# instead of pinning one long-lived connection to the ClusterIP.
apiVersion: v1
kind: Service
metadata:
  name: {{ $fullName }}-headless
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
spec:
  clusterIP: None
  selector:
    {{- include "rlhf.selectorLabels" $ctx | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.grpc.port }}
      targetPort: grpc
      protocol: TCP
      appProtocol: grpc
{{- if $svc.pdb.enabled }}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
spec:
  {{- if hasKey $svc.pdb "minAvailable" }}
  minAvailable: {{ $svc.pdb.minAvailable }}
  {{- else }}
  maxUnavailable: {{ $svc.pdb.maxUnavailable }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "rlhf.selectorLabels" $ctx | nindent 6 }}
{{- end }}
{{- if $svc.autoscaling.enabled }}
{{- $as := $svc.autoscaling }}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ $fullName }}
  minReplicas: {{ $as.minReplicas }}
  maxReplicas: {{ $as.maxReplicas }}
  metrics:
    {{- if $as.targetCPUUtilizationPercentage }}
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $as.targetCPUUtilizationPercentage }}
    {{- end }}
    {{- if $as.targetMemoryUtilizationPercentage }}
    - type: Resource
      resource:
        name: memory
        target:
          type: Utilization
          averageUtilization: {{ $as.targetMemoryUtilizationPercentage }}
    {{- end }}
    {{- if $as.kafkaLag.enabled }}
    - type: External
      external:
        metric:
          name: {{ $as.kafkaLag.metricName }}
          selector:
            matchLabels:
              {{- toYaml (default (dict "consumergroup" (printf "rlhf-%s" $name)) $as.kafkaLag.selector) | nindent 14 }}
        target:
          type: AverageValue
          averageValue: {{ $as.kafkaLag.averageValue | quote }}
    {{- end }}
    {{- with $as.extraMetrics }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- with $as.behavior }}
  behavior:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end }}
{{- if $v.metrics.serviceMonitor.enabled }}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
    {{- with $v.metrics.serviceMonitor.labels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  selector:
    matchLabels:
      {{- include "rlhf.selectorLabels" $ctx | nindent 6 }}
  endpoints:
    - port: metrics
      path: /metrics
      interval: {{ $v.metrics.serviceMonitor.interval }}
      scrapeTimeout: {{ $v.metrics.serviceMonitor.scrapeTimeout }}
{{- end }}
{{- if $v.networkPolicy.enabled }}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ $fullName }}
  labels:
    {{- include "rlhf.labels" $ctx | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "rlhf.selectorLabels" $ctx | nindent 6 }}
  policyTypes: ["Ingress", "Egress"]
  ingress:
    # gRPC clients.
    - ports:
        - port: {{ $v.grpc.port }}
          protocol: TCP
      {{- if not $v.networkPolicy.allowExternal }}
      from:
        - podSelector:
            matchLabels:
              {{ include "rlhf.clientLabel" $root }}: "true"
        - podSelector:
            matchLabels:
              {{- include "rlhf.selectorLabels" (dict "root" $root "component" "test") | nindent 14 }}
      {{- end }}
    # Prometheus scrapes (ingress only: the services push nothing).
    - ports:
        - port: {{ $v.metrics.port }}
          protocol: TCP
      {{- with $v.networkPolicy.metricsFrom }}
      from:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  egress:
    {{- include "rlhf.networkPolicy.dnsEgress" $root | nindent 4 }}
    # Kafka brokers.
    - ports:
        {{- range $v.networkPolicy.kafkaPorts }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with (include "rlhf.networkPolicy.kafkaPeers" $root | trim) }}
      to:
        {{- . | nindent 8 }}
      {{- end }}
    {{- if $v.stateStore.postgres.enabled }}
    # The PostgreSQL state store.
    - ports:
        {{- range $v.stateStore.postgres.ports }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $v.stateStore.postgres.peers }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- if and (eq $name "inference") $v.triton.enabled }}
    # Triton: HTTP and gRPC.
    - to:
        - podSelector:
            matchLabels:
              {{- include "rlhf.selectorLabels" (dict "root" $root "component" "triton") | nindent 14 }}
      ports:
        - port: 8000
          protocol: TCP
        - port: 8001
          protocol: TCP
    {{- end }}
    {{- if $apiAccess }}
    # Kubernetes API: the trainer creates, watches and deletes training Jobs.
    - ports:
        {{- range $v.networkPolicy.kubeApiPorts }}
        - port: {{ . }}
          protocol: TCP
        {{- end }}
      {{- with $v.networkPolicy.kubeApiPeers }}
      to:
        {{- toYaml . | nindent 8 }}
      {{- end }}
    {{- end }}
    {{- with $v.networkPolicy.extraEgress }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}
{{- end -}}
{{- end -}}

{{- define "rlhf.networkPolicy.dnsEgress" -}}
# Cluster DNS.
- to:
    - namespaceSelector:
        matchLabels:
          kubernetes.io/metadata.name: {{ .Values.networkPolicy.dns.namespace }}
      podSelector:
        matchLabels:
          {{- toYaml .Values.networkPolicy.dns.podLabels | nindent 10 }}
  ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
{{- end -}}
