#!/usr/bin/env bash
# Installs the system packages Keel's build and tests need, if missing (Debian).
#  - clang, libclang-dev: bindgen for RocksDB's bindings
#  - protobuf-compiler: the etcd-client crate (tests, bench) compiles etcd's protos with protoc
#    (Keel itself compiles its protos in pure Rust with protox)
#  - etcd-server, etcd-client: the real etcd 3.4 and etcdctl for differential tests
#  - openssl: test certificates for the API server's HTTPS
# kubectl (1.32, for the API server tests) is expected on PATH: Debian's own kubernetes-client
# is 1.20, too old to stand for today's kubectl, so it is not installed in its place.
set -euo pipefail
command -v kubectl >/dev/null || echo "warning: kubectl is not on PATH; the API server tests need it" >&2
need=()
command -v clang >/dev/null || need+=(clang)
[ -e /usr/lib/llvm-14/lib/libclang.so ] || ls /usr/lib/llvm-*/lib/libclang*.so >/dev/null 2>&1 || need+=(libclang-dev)
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq || true
  $SUDO apt-get install -y -qq "${need[@]}"
fi
# Debian's etcd-server package may start a system etcd on 2379; tests use their own ports,
# but stop it so `make run` can take the default port.
if command -v systemctl >/dev/null && systemctl is-active --quiet etcd 2>/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO systemctl stop etcd || true
fi
