# Certificates and kubeconfigs for the node, made locally with openssl and kubectl
# (sourced by e2e/up; idempotent: what exists is kept).
pki() {
  mkdir -p "$PKI"
  [ -f "$PKI/ca.crt" ] || openssl req -x509 -newkey rsa:2048 -nodes -days 3650 \
    -subj "/CN=lameduck-e2e-ca" -keyout "$PKI/ca.key" -out "$PKI/ca.crt" 2>/dev/null
  [ -f "$PKI/sa.key" ] || {
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  }
  cert apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$NODE_IP,IP:$API_SERVICE_IP"
  cert admin "/O=system:masters/CN=admin"
  cert kubelet "/O=system:nodes/CN=system:node:$NODE" "DNS:$NODE,IP:$NODE_IP,IP:127.0.0.1"
  cert kube-proxy "/CN=system:kube-proxy"
  cert controller-manager "/CN=system:kube-controller-manager"
  cert scheduler "/CN=system:kube-scheduler"
  cert ingress "/CN=lameduck-e2e:ingress"
  kubeconfig admin
  kubeconfig kubelet
  kubeconfig kube-proxy
  kubeconfig controller-manager
  kubeconfig scheduler
  kubeconfig ingress
  cp "$STATE/admin.kubeconfig" "$STATE/kubeconfig"
}

# cert NAME SUBJECT [SANS]: a key and a certificate signed by the CA.
cert() {
  local name=$1 subject=$2 sans=${3:-}
  [ -f "$PKI/$name.crt" ] && return 0
  openssl req -newkey rsa:2048 -nodes -subj "$subject" \
    -keyout "$PKI/$name.key" -out "$PKI/$name.csr" 2>/dev/null
  local ext="$PKI/$name.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -z "$sans" ] || echo "subjectAltName=$sans"
  } > "$ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" \
    -CAcreateserial -days 3650 -extfile "$ext" -out "$PKI/$name.crt" 2>/dev/null
}

# kubeconfig NAME: $STATE/NAME.kubeconfig with NAME's client certificate.
kubeconfig() {
  local name=$1 file="$STATE/$1.kubeconfig"
  [ -f "$file" ] && return 0
  kubectl config --kubeconfig="$file" set-cluster e2e --server="$API" \
    --certificate-authority="$PKI/ca.crt" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$file" set-credentials "$name" \
    --client-certificate="$PKI/$name.crt" --client-key="$PKI/$name.key" --embed-certs=true >/dev/null
  kubectl config --kubeconfig="$file" set-context e2e --cluster=e2e --user="$name" >/dev/null
  kubectl config --kubeconfig="$file" use-context e2e >/dev/null
}
