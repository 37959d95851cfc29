# The node (sourced by e2e/up): containerd from Debian with its own root and socket
# under the state directory, the bridge CNI network for pods, the kubelet (cgroupfs,
# as containerd), and kube-proxy in iptables mode.
CONTAINERD_SOCK="$STATE/containerd/containerd.sock"
CNI_CONF="$STATE/cni"
SANDBOX_IMAGE="registry.k8s.io/pause:3.6"

containerd_config() {
  mkdir -p "$STATE/containerd" "$CNI_CONF"
  cat > "$STATE/containerd/config.toml" <<TOML
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
[grpc]
  address = "$CONTAINERD_SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # Without CAP_SYS_RESOURCE a negative oom_score_adj is refused; every sandbox asks for one.
  restrict_oom_score_adj = true
  tolerate_missing_hugetlb_controller = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CNI_CONF"
TOML
  cat > "$CNI_CONF/10-lameduck.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "lameduck-e2e",
  "plugins": [
    {"type": "bridge", "bridge": "ldcni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
              "dataDir": "$STATE/cni-ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
JSON
}

kubelet_config() {
  mkdir -p "$STATE/kubelet"
  cat > "$STATE/kubelet/config.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
failSwapOn: false
failCgroupV1: false
# Image GC off: containerd 1.6.20 does not pin the sandbox image.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {}
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: "$PKI/ca.crt"}
authorization: {mode: Webhook}
tlsCertFile: "$PKI/kubelet.crt"
tlsPrivateKeyFile: "$PKI/kubelet.key"
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
serializeImagePulls: false
YAML
}

node() {
  containerd_config
  kubelet_config
  start containerd containerd --config "$STATE/containerd/config.toml"
  wait_for "containerd" 30 ctr --address "$CONTAINERD_SOCK" version
  start kubelet "$BIN/kubelet" --config="$STATE/kubelet/config.yaml" \
    --kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$NODE" --node-ip="$NODE_IP" \
    --root-dir="$STATE/kubelet/root"
  start kube-proxy "$BIN/kube-proxy" --kubeconfig="$STATE/kube-proxy.kubeconfig" \
    --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --hostname-override="$NODE" \
    --conntrack-max-per-core=0 --metrics-bind-address=127.0.0.1:10249
  wait_for "node $NODE Ready" 120 kubectl --kubeconfig="$STATE/kubeconfig" wait \
    --for=condition=Ready "node/$NODE" --timeout=5s
}
