#!/usr/bin/env bash
# shellcheck disable=SC2016  # checks pass their input to `bash -c` as "$1": the single quotes are intended
# Chart tests for `make test`: `helm lint` and `helm template` for the defaults and every helm/skjold/ci/*.yaml,
# then invariants checked on the rendered YAML with grep/awk (no yq): least-privilege RBAC, restricted pod
# security, resources, probes, HA settings, the value knobs reaching the MeshConfig, and the schema refusing
# bad values with a message that names the field. No cluster needed.
# Also checks that crds/ matches `skjold-operator crd` (helm/sync-crd.sh --check; builds the operator with
# cargo); `helm/test.sh --no-crd-sync` skips that part.
# Ends with the line "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail
crd_sync=1
case "${1:-}" in
  --no-crd-sync) crd_sync=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-crd-sync]" >&2; exit 2 ;;
esac
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
chart="$here/skjold"
# helm is built from its Go module by the e2e tool script (cached), never downloaded.
bin=$("$root/e2e/scripts/build-tools.sh") || { echo "helm/test.sh: e2e/scripts/build-tools.sh failed" >&2; exit 1; }
helm="$bin/helm"
kube_version=1.34.4
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # description, command...
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}

# Prints the YAML document(s) of the given kind (and name, if given) from a rendered file.
doc() { # file kind [name]
  awk -v kind="$2" -v name="${3:-}" '
    function flush() { if (buf != "" && k == kind && (name == "" || n == name)) printf "%s---\n", buf; buf = ""; k = ""; n = ""; meta = 0 }
    /^---/ { flush(); next }
    { buf = buf $0 "\n" }
    /^kind: / { k = $2 }
    /^metadata:/ { meta = 1; next }
    meta && /^  name: / && n == "" { n = $2 }
    /^[a-z]/ && !/^metadata:/ { meta = 0 }
    END { flush() }
  ' "$1"
}
# Prints each RBAC rule of the given documents (stdin) on one line, so a rule's verbs, resources and
# resourceNames can be checked together.
rules() {
  awk '
    /^rules:/ { inrules = 1; next }
    /^[a-z]/ { inrules = 0 }
    /^---/ { if (rule != "") print rule; rule = ""; inrules = 0; next }
    inrules && /^  - / { if (rule != "") print rule; rule = $0; next }
    inrules && /^    / { rule = rule " " $0; next }
    END { if (rule != "") print rule }
  ' | sed -e 's/  */ /g'
}
count() { grep -c -- "$1" || true; } # pattern, reads stdin
has() { grep -q -- "$2" "$1"; }      # file, pattern
lacks() { ! grep -q -- "$2" "$1"; }  # file, pattern

render() { # name, helm template args...
  local name=$1; shift
  "$helm" template skjold "$chart" --namespace istio-system --kube-version "$kube_version" "$@" >"$out/$name.yaml" 2>"$out/$name.err"
}

# --- lint and template every value set -----------------------------------------------------------------
check "helm lint --strict (defaults)" "$helm" lint --strict "$chart" --kube-version "$kube_version" --quiet
check "helm template (defaults)" render default
for f in "$chart"/ci/*.yaml; do
  name=$(basename "$f" .yaml)
  check "helm lint --strict -f ci/$name.yaml" "$helm" lint --strict "$chart" --kube-version "$kube_version" --quiet -f "$f"
  if render "$name" -f "$f"; then pass "helm template -f ci/$name.yaml"; else fail "helm template -f ci/$name.yaml: $(cat "$out/$name.err")"; fi
done

# --- invariants on every rendering -----------------------------------------------------------------------
for file in "$out"/*.yaml; do
  name=$(basename "$file" .yaml)
  rbac=$( { doc "$file" ClusterRole; doc "$file" Role; } )
  check "$name: RBAC has no wildcard verbs, resources or groups" \
    bash -c '! grep -Eq "(\[|, ?|- )\"?\*\"?(\]|,|$)" <<<"$1"' _ "$rbac"
  check "$name: chart never renders a MutatingWebhookConfiguration (the operator owns it)" \
    lacks "$file" '^kind: MutatingWebhookConfiguration'
  pods=$( { doc "$file" Deployment; doc "$file" Job; } )
  n=$(count '^    spec:$' <<<"$pods")
  containers=$(count '^          image: ' <<<"$pods")
  for want in 'runAsNonRoot: true' 'type: RuntimeDefault'; do
    check "$name: $n pod templates have $want" test "$(count "$want" <<<"$pods")" -eq "$n"
  done
  for want in 'readOnlyRootFilesystem: true' 'allowPrivilegeEscalation: false' '- ALL' 'limits:' 'requests:'; do
    check "$name: $containers containers have $want" test "$(count "$want" <<<"$pods")" -eq "$containers"
  done
  check "$name: no privileged container" lacks "$file" 'privileged: true'
  check "$name: no hostPath, hostNetwork or hostPID" bash -c '! grep -Eq "hostPath:|hostNetwork: true|hostPID: true" "$1"' _ "$file"
done

# --- defaults --------------------------------------------------------------------------------------------
f="$out/default.yaml"
webhook=$(doc "$f" Deployment skjold-webhook)
check "default: webhook Deployment has 2 replicas" grep -q '^  replicas: 2$' <<<"$webhook"
check "default: webhook readiness probe on HTTPS /readyz" \
  bash -c 'grep -A3 "readinessProbe:" <<<"$1" | grep -q "path: /readyz" && grep -A5 "readinessProbe:" <<<"$1" | grep -q "scheme: HTTPS"' _ "$webhook"
check "default: webhook pod anti-affinity on hostname" \
  bash -c 'grep -q podAntiAffinity: <<<"$1" && grep -q "topologyKey: kubernetes.io/hostname" <<<"$1"' _ "$webhook"
check "default: webhook mounts Secret skjold-webhook-tls" grep -q 'secretName: skjold-webhook-tls' <<<"$webhook"
check "default: rolling update never drops below the desired replicas" grep -q 'maxUnavailable: 0' <<<"$webhook"
check "default: PodDisruptionBudget for the webhook" has "$f" '^kind: PodDisruptionBudget'
check "default: Service skjold-webhook 443 -> https-webhook" \
  bash -c 'grep -q "port: 443" <<<"$1" && grep -q "targetPort: https-webhook" <<<"$1"' _ "$(doc "$f" Service skjold-webhook)"
operator=$(doc "$f" Deployment skjold-operator)
check "default: operator runs 'run' in the release namespace" \
  bash -c 'grep -q -- "- run$" <<<"$1" && grep -q -- "--namespace=istio-system" <<<"$1"' _ "$operator"
check "default: operator readiness on /readyz" grep -q 'path: /readyz' <<<"$operator"
check "default: operator is not passed --webhook-url" bash -c '! grep -q -- --webhook-url <<<"$1"' _ "$operator"
check "default: ServiceAccounts for operator and webhook" \
  bash -c '[ "$(grep -c "^kind: ServiceAccount" "$1")" -ge 2 ]' _ "$f"
check "default: default MeshConfig named default" has "$f" '^  name: default$'
role=$(doc "$f" ClusterRole skjold-operator)
check "default: operator may patch Istio's CRDs by name (generated list)" \
  bash -c 'grep -q -- "- virtualservices.networking.istio.io" <<<"$1" && grep -q -- "- peerauthentications.security.istio.io" <<<"$1"' _ "$role"
check "default: operator may manage istiod's ValidatingWebhookConfigurations" grep -q 'validatingwebhookconfigurations' <<<"$role"
check "chart crds/ holds Istio's CRDs with every guide's API version" \
  bash -c 'f=$1/crds/istio-crds.gen.yaml; grep -q "name: destinationrules.networking.istio.io" "$f" && grep -q "name: v1alpha3" "$f" && grep -q "name: v1beta1" "$f" && grep -q "\"helm.sh/resource-policy\": keep" "$f"' _ "$chart"
check "default: every pod template opts out of injection by label (not the deprecated annotation)" \
  bash -c '[ "$(grep -c "^        sidecar.istio.io/inject: \"false\"$" "$1")" -eq 3 ] && ! grep -q "^        annotations:\$" "$1"' _ "$f"
check "default: pre-delete cleanup hook Job" \
  bash -c 'grep -q "helm.sh/hook: pre-delete" <<<"$1"' _ "$(doc "$f" Job skjold-cleanup)"
check "default: operator may update its CRD only by name" \
  bash -c 'grep -B1 -A1 "resourceNames: \[\"meshconfigs.skjold.io\"\]" <<<"$1" | grep -q customresourcedefinitions' _ "$(doc "$f" ClusterRole skjold-operator)"
webhook_rules=$( { doc "$f" ClusterRole skjold-webhook; doc "$f" Role skjold-webhook; } | rules)
check "default: webhook RBAC has 4 rules" test "$(count 'verbs:' <<<"$webhook_rules")" -eq 4
check "default: webhook writes nothing but events" \
  bash -c '! grep -E "\"(create|patch|update|delete|escalate|bind)\"" <<<"$1" | grep -qv "\"events\""' _ "$webhook_rules"
check "default: webhook cannot read Secrets" bash -c '! grep -q secrets <<<"$1"' _ "$webhook_rules"
operator_rules=$( { doc "$f" ClusterRole skjold-operator; doc "$f" Role skjold-operator; } | rules)
check "default: operator escalate/bind only with resourceNames" \
  bash -c 'grep -q escalate <<<"$1" && ! grep -E "\"(escalate|bind)\"" <<<"$1" | grep -qv resourceNames' _ "$operator_rules"
check "default: operator never deletes Secrets" \
  bash -c '! grep "\"secrets\"" <<<"$1" | grep -q "\"delete\""' _ "$operator_rules"
check "default: operator deletes only its own Lease" \
  bash -c '! grep "\"leases\"" <<<"$1" | grep "\"delete\"" | grep -qv "resourceNames: \[\"skjold-operator\"\]"' _ "$operator_rules"
cleanup_rules=$(doc "$f" Role skjold-cleanup | rules)
check "default: cleanup hook may only touch MeshConfigs" \
  bash -c '[ "$(wc -l <<<"$1")" -eq 1 ] && grep -q "resources: \[\"meshconfigs\"\]" <<<"$1"' _ "$cleanup_rules"
check "default: no cert-manager objects" lacks "$f" 'cert-manager.io/v1'

# --- out-of-cluster (e2e) mode ----------------------------------------------------------------------------
f="$out/out-of-cluster-values.yaml"
check "out-of-cluster: no Deployment, Service or hook Job (no pods run)" \
  bash -c '! grep -Eq "^kind: (Deployment|Job|Service|PodDisruptionBudget)$" "$1"' _ "$f"
check "out-of-cluster: MeshConfig, RBAC and ServiceAccounts still rendered" \
  bash -c 'grep -q "^kind: MeshConfig" "$1" && grep -q "^kind: ClusterRole$" "$1"' _ "$f"

# --- single replica ---------------------------------------------------------------------------------------
f="$out/single-replica-values.yaml"
check "single-replica: no PodDisruptionBudget that would block drains" lacks "$f" '^kind: PodDisruptionBudget'
check "single-replica: no anti-affinity" lacks "$f" 'podAntiAffinity'
check "single-replica: no MeshConfig when defaultMeshConfig.enabled=false" lacks "$f" '^kind: MeshConfig'

# --- hardened ---------------------------------------------------------------------------------------------
f="$out/hardened-values.yaml"
check "hardened: images pinned by digest" \
  bash -c '[ "$(grep -c "image: registry.example.com/skjold/skjold-[a-z]*@sha256:" "$1")" -eq 2 ]' _ "$f"
check "hardened: required anti-affinity" has "$f" 'requiredDuringSchedulingIgnoredDuringExecution'
check "hardened: imagePullSecrets rendered" has "$f" '- name: regcred'
check "hardened: manageCRD=false drops CRD permissions and passes the flag" \
  bash -c '! grep -q customresourcedefinitions "$1" && grep -q -- "--manage-crd=false" "$1"' _ "$f"

# --- istioctl-style knobs reach the MeshConfig ------------------------------------------------------------
mc=$(doc "$out/revision-demo-values.yaml" MeshConfig)
for want in '^  name: canary$' 'profile: "demo"' 'revision: "canary"' 'accessLogFile: /dev/stdout' \
  'mode: REGISTRY_ONLY' 'cpu: "2"' 'memory: "40Mi"' '^    replicas: 2$' 'hub: "registry.example.com/istio"'; do
  check "revision-demo: MeshConfig has $want" grep -q -- "$want" <<<"$mc"
done

# --- cert-manager -----------------------------------------------------------------------------------------
f="$out/cert-manager-values.yaml"
check "cert-manager: serving Certificate writes skjold-webhook-tls" \
  bash -c 'grep -q "secretName: skjold-webhook-tls" <<<"$1"' _ "$(doc "$f" Certificate skjold-webhook)"
check "cert-manager: Certificate covers the Service DNS names" has "$f" '- skjold-webhook.istio-system.svc$'
check "cert-manager: self-signed CA chain created" has "$f" 'selfSigned: {}'
check "cert-manager: operator told to defer to cert-manager" has "$f" '--cert-manager-certificate=istio-system/skjold-webhook'
f="$out/cert-manager-issuer-values.yaml"
check "cert-manager-issuer: uses the given ClusterIssuer, no self-signed chain" \
  bash -c 'grep -q "kind: ClusterIssuer" "$1" && ! grep -q "selfSigned" "$1"' _ "$f"

# --- the schema and template guards refuse bad values with a clear message --------------------------------
refuses() { # description, expected message fragment, --set ...
  local what=$1 want=$2; shift 2
  if "$helm" template skjold "$chart" --kube-version "$kube_version" "$@" >/dev/null 2>"$out/refuse.err"; then
    fail "$what: was accepted"
  elif grep -q -- "$want" "$out/refuse.err"; then
    pass "$what"
  else
    fail "$what: message lacks '$want': $(cat "$out/refuse.err")"
  fi
}
refuses "schema refuses pilot.replicas=abc" "/pilot/replicas" --set pilot.replicas=abc
refuses "schema refuses webhook.replicas=abc" "/webhook/replicas" --set webhook.replicas=abc
refuses "schema refuses webhook.replicas=0" "/webhook/replicas" --set webhook.replicas=0
refuses "schema refuses an unknown outbound mode" "ALLOW_ANY" --set meshConfig.outboundTrafficPolicy.mode=DENY_ALL
refuses "schema refuses an unknown profile" "/profile" --set profile=huge
refuses "schema refuses revision 'default'" "/revision" --set revision=default
refuses "schema refuses a misspelt top-level key" "replica" --set replica=2
refuses "schema refuses an http:// webhook.url" "/webhook/url" --set webhook.url=http://127.0.0.1:1/inject
refuses "schema refuses a bad quantity" "/global/proxy/resources/limits/cpu" --set global.proxy.resources.limits.cpu=lots
refuses "template refuses 2 operators without leader election" "leaderElection" \
  --set operator.replicas=2 --set operator.leaderElection=false
refuses "template refuses cert-manager with webhook.url" "webhook.url" \
  --set certManager.enabled=true --set webhook.url=https://127.0.0.1:1/inject

# --- the CRD shipped in crds/ --------------------------------------------------------------------------
crd="$chart/crds/meshconfigs.skjold.io.yaml"
check "crds/: MeshConfig CRD present" \
  bash -c 'grep -q "^kind: CustomResourceDefinition" "$1" && grep -q "name: meshconfigs.skjold.io" "$1" && grep -q "kind: MeshConfig" "$1"' _ "$crd"

if [ "$crd_sync" = 1 ]; then
  if "$here/sync-crd.sh" --check >"$out/sync.log" 2>&1; then
    pass "crds/: in sync with skjold-operator crd"
  else
    fail "crds/: stale or not generated (run helm/sync-crd.sh): $(tail -20 "$out/sync.log")"
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
