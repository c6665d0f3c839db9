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

missing=0
command -v temporal >/dev/null 2>&1 || [ -x "$gobin/temporal" ] || { echo "test-deps: the temporal CLI is required" >&2; missing=1; }
command -v git >/dev/null 2>&1 || { echo "test-deps: git is required" >&2; missing=1; }
[ -x /bin/busybox ] || { echo "test-deps: /bin/busybox (busybox-static) is required" >&2; missing=1; }
for prog in svn svnadmin svnserve docker-registry docker-compose; do
  command -v $prog >/dev/null 2>&1 || { echo "test-deps: $prog is required" >&2; missing=1; }
done
if ! docker info >/dev/null 2>&1; then
  echo "test-deps: the Docker engine is required (is the daemon running and /var/run/docker.sock reachable?)" >&2
  missing=1
fi
exit $missing
