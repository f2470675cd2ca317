#!/usr/bin/env bash
# The transport ceiling comparison: wrk against the webhook (a typical pod AdmissionReview) and,
# in the same run, against nginx serving a fixed reply over TLS on the same machine.
# Needs wrk and nginx (Debian packages; installed here when missing and running as root).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
dur=${WRK_DURATION:-10s}
conns=${WRK_CONNECTIONS:-"16 64"}
for p in wrk nginx; do
  command -v "$p" >/dev/null || command -v "/usr/sbin/$p" >/dev/null || {
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
    else echo "wrk-vs-nginx: install wrk and nginx to run this comparison" >&2; exit 0; fi; }
done
work=$(mktemp -d); trap 'kill $(jobs -p) 2>/dev/null || true; [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null; rm -rf "$work"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -addext subjectAltName=IP:127.0.0.1,DNS:localhost -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
cargo build -q --release -p skjold-webhook --bin skjold-webhook
port_w=$((20000 + RANDOM % 20000)); port_n=$((port_w + 1))
./target/release/skjold-webhook --listen 127.0.0.1:$port_w --tls-cert-file "$work/tls.crt" \
  --tls-key-file "$work/tls.key" --kubernetes off >"$work/webhook.log" 2>&1 &
wpid=$!
cat >"$work/nginx.conf" <<NGX
worker_processes 2; pid $work/nginx.pid; error_log $work/nginx-error.log; daemon on;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $work; proxy_temp_path $work; fastcgi_temp_path $work; uwsgi_temp_path $work; scgi_temp_path $work;
  server { listen 127.0.0.1:$port_n ssl; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key; ssl_protocols TLSv1.2 TLSv1.3;
    location / { default_type application/json; return 200 '{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"x","allowed":true}}'; } } }
NGX
/usr/sbin/nginx -c "$work/nginx.conf"
for _ in $(seq 50); do curl -skf "https://127.0.0.1:$port_w/healthz" >/dev/null && break; sleep 0.1; done
echo "== wrk: webhook vs nginx fixed reply over TLS (same machine, $(nproc) cores, $dur per run)"
for c in $conns; do
  for target in "webhook https://127.0.0.1:$port_w/inject" "nginx https://127.0.0.1:$port_n/"; do
    set -- $target
    out=$(BODY="$root/scripts/bench/admission-review.json" wrk -t2 -c"$c" -d"$dur" --latency -s scripts/bench/post.lua "$2")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out"); p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    errs=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' ' | tr '\n' ' ' || true)
    printf "  %-8s c=%-4s %10s req/s  p50 %-9s p99 %-9s %s\n" "$1" "$c" "$rps" "$p50" "$p99" "$errs"
  done
done
echo "  webhook peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$wpid/status)"
