#!/usr/bin/env bash
# Installs what the tests need and fails loudly when a required part is missing.
# Tests never skip: a missing program or an unreachable Docker engine stops here.
set -euo pipefail

need=()
command -v git >/dev/null 2>&1 || need+=(git)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v svnserve >/dev/null 2>&1 || need+=(subversion)
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v etcd >/dev/null 2>&1 || need+=(etcd-server)

if [ ${#need[@]} -gt 0 ]; then
  echo "test-deps: installing ${need[*]} from Debian packages"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# The temporal CLI, for the operations test of the README's CLI commands.
gobin="$(go env GOPATH)/bin"
if ! command -v temporal >/dev/null 2>&1 && [ ! -x "$gobin/temporal" ]; then
  echo "test-deps: installing the temporal CLI (go install, takes a few minutes the first time)"
  GOTOOLCHAIN=local go install github.com/temporalio/cli/cmd/temporal@v1.5.1
fi

# The Kubernetes API server, for the kubernetes executor's tests against a real API
# server with Debian's etcd (internal/executor/kubernetes/apiserver_test.go): built
# from the Go module proxy by tools/kube-apiserver, at the version of k8s.io/kubernetes
# that its go.mod requires; rebuilt when that version changes.
root="$(cd "$(dirname "$0")/.." && pwd)"
kube_version="$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$root/tools/kube-apiserver/go.mod")"
kube_apiserver="$gobin/kube-apiserver-cyclone"
if [ -z "$kube_version" ]; then
  echo "test-deps: no k8s.io/kubernetes version in tools/kube-apiserver/go.mod" >&2
  exit 1
fi
if [ ! -x "$kube_apiserver" ] || [ "$("$kube_apiserver" --version 2>/dev/null)" != "Kubernetes $kube_version" ]; then
  echo "test-deps: building kube-apiserver $kube_version into $kube_apiserver (tools/kube-apiserver; takes a few minutes the first time)"
  major="${kube_version#v}"; major="${major%%.*}"
  minor="${kube_version#v*.}"; minor="${minor%%.*}"
  mkdir -p "$gobin"
  if ! (cd "$root/tools/kube-apiserver" && CGO_ENABLED=0 GOTOOLCHAIN=local go build -trimpath \
      -ldflags "-s -w -X k8s.io/component-base/version.gitVersion=$kube_version -X k8s.io/component-base/version.gitMajor=$major -X k8s.io/component-base/version.gitMinor=$minor" \
      -o "$kube_apiserver.tmp" .); then
    rm -f "$kube_apiserver.tmp"
    echo "test-deps: building kube-apiserver (tools/kube-apiserver) failed" >&2
    exit 1
  fi
  mv "$kube_apiserver.tmp" "$kube_apiserver"
fi

missing=0
command -v temporal >/dev/null 2>&1 || [ -x "$gobin/temporal" ] || { echo "test-deps: the temporal CLI is required" >&2; missing=1; }
command -v git >/dev/null 2>&1 || { echo "test-deps: git is required" >&2; missing=1; }
[ -x /bin/busybox ] || { echo "test-deps: /bin/busybox (busybox-static) is required" >&2; missing=1; }
[ -x "$kube_apiserver" ] || { echo "test-deps: $kube_apiserver (built from tools/kube-apiserver) is required" >&2; missing=1; }
for prog in svn svnadmin svnserve docker-registry docker-compose etcd; do
  command -v $prog >/dev/null 2>&1 || { echo "test-deps: $prog is required" >&2; missing=1; }
done
if ! docker info >/dev/null 2>&1; then
  echo "test-deps: the Docker engine is required (is the daemon running and /var/run/docker.sock reachable?)" >&2
  missing=1
fi
exit $missing
