# The ingress (sourced by e2e/up): Traefik on the node, a third-party controller that
# users run, watching Ingresses, Services and EndpointSlices through its own
# least-privilege identity and sending to pod IPs (no kube-proxy in between), with a
# JSON access log that keeps lameduck load's sequence header so every request can be
# followed to the pod it went to. A smoke Deployment then proves a pod serves through
# it before e2e/up returns.
INGRESS_ADDR="$NODE_IP:80"
INGRESS_ACCESS_LOG="$LOGS/ingress-access.json"

ingress_rbac() {
  kubectl --kubeconfig="$STATE/kubeconfig" apply --server-side -f - >/dev/null <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "lameduck-e2e:ingress"}
rules:
- apiGroups: [""]
  resources: [services, secrets, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses, ingressclasses]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [ingresses/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "lameduck-e2e:ingress"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "lameduck-e2e:ingress"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "lameduck-e2e:ingress"}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: traefik
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: traefik.io/ingress-controller}
YAML
}

ingress() {
  local traefik
  traefik=$("$E2E/ingress/build.sh")/traefik
  ingress_rbac
  # Traefik's defaults otherwise: no retries, keep-alive to the pods, endpoints that
  # are serving but terminating kept only for sticky sessions.
  KUBECONFIG="$STATE/ingress.kubeconfig" start ingress "$traefik" \
    --global.checknewversion=false --global.sendanonymoususage=false \
    --entrypoints.web.address="$INGRESS_ADDR" \
    --entrypoints.traefik.address=127.0.0.1:8082 --ping=true \
    --providers.kubernetesingress=true \
    --accesslog=true --accesslog.format=json --accesslog.filepath="$INGRESS_ACCESS_LOG" \
    --accesslog.fields.headers.defaultmode=drop \
    --accesslog.fields.headers.names.X-Lameduck-Seq=keep \
    --log.level=INFO --log.nocolor=true
  wait_for "the ingress (traefik) answering its ping" 30 curl -fsS http://127.0.0.1:8082/ping
}

# A pod of the demo, Ready, answering 200 through the ingress; its namespace is
# deleted afterwards so the tests find the ingress's one path free.
ingress_smoke() {
  local version=$1 ns=lameduck-smoke
  local k=(kubectl --kubeconfig="$STATE/kubeconfig")
  "${k[@]}" get namespace "$ns" >/dev/null 2>&1 || "${k[@]}" create namespace "$ns" >/dev/null
  "${k[@]}" label --overwrite namespace "$ns" pod-security.kubernetes.io/enforce=restricted >/dev/null
  sed -e 's/^  replicas: 5$/  replicas: 1/' "$E2E/../k8s/rendered/fixed.yaml" \
    | sed -e "s#lameduck/demo-app:[0-9.]*#lameduck/demo-app:$version#" \
    | "${k[@]}" apply -n "$ns" --server-side -f - >/dev/null
  "${k[@]}" rollout status -n "$ns" deploy/demo-app --timeout=180s >/dev/null \
    || die "the smoke pod did not become Ready"
  wait_for "the smoke pod answering through the ingress" 60 curl -fsS -X POST "http://$INGRESS_ADDR/"
  log "a pod serves through the ingress at http://$INGRESS_ADDR/"
  "${k[@]}" delete namespace "$ns" --wait=false >/dev/null
}
