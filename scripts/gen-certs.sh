#!/usr/bin/env bash
# Creates a development CA and node certificates (rcgen, in revokd-testkit's revokd-devca) for
# a local TLS cluster. Not for production: keys are written unencrypted.
#
#   scripts/gen-certs.sh [DIR] [NODE...]     default DIR=certs, nodes node1 node2 node3
#
# Each node certificate is valid for its name, localhost and 127.0.0.1 (add more with
# REVOKD_CERT_SANS="revokd-1 10.0.0.5 ..."), for serving and for dialing peers. Start nodes
# with --tls-cert DIR/nodeN.pem --tls-key DIR/nodeN-key.pem --tls-ca DIR/ca.pem; clients trust
# DIR/ca.pem (revokctl --tls-ca). The CA must issue node certificates only: any holder of one
# can send Raft messages.
#
# REVOKD_CERT_ADMINS="alice bob" also writes DIR/admin-ca.pem, a separate CA for admins (start
# nodes with --admin-client-ca DIR/admin-ca.pem), and a client certificate per admin
# (revokctl --tls-cert DIR/alice.pem --tls-key DIR/alice-key.pem revokes without a token).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-certs}
shift || true
args=(--out "$dir")
for n in "$@"; do args+=(--node "$n"); done
for s in ${REVOKD_CERT_SANS:-}; do args+=(--san "$s"); done
for a in ${REVOKD_CERT_ADMINS:-}; do args+=(--admin "$a"); done
bin=${REVOKD_DEVCA_BIN:-$root/target/release/revokd-devca}
if [ -z "${REVOKD_DEVCA_BIN:-}" ]; then
    (cd "$root" && cargo build --release -p revokd-testkit --bin revokd-devca --quiet)
fi
"$bin" "${args[@]}"
