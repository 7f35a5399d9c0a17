#!/usr/bin/env bash
# The command-line tools tests/deploy runs, installed into .cache/tools/bin (git-ignored) and
# skipped when already there, so `make test` works on a fresh machine and costs nothing after:
#   kustomize  sigs.k8s.io/kustomize/kustomize/v5, built by `go install` from the Go module proxy
#              (~90 s cold, the longest step; v5.8.2 is the newest whose go.mod accepts the
#              machine's Go 1.26; v5.8.3 wants Go 1.27)
#   promtool   from Debian's `prometheus` package, unpacked with dpkg-deb rather than installed,
#              so no Prometheus server is set up, started or left listening on :9090
#   chromium   Debian's package at /usr/bin/chromium, for tests/integration/test_console.py (the
#              console in a real browser, driven by Playwright from the `dev` extra, which is
#              pointed at it: Playwright's own browser download is never used). Installed with
#              apt-get only when missing, which needs root (or sudo without a password).
# A promtool or kustomize already on PATH at the pinned version is used as it is.
# Python checkers (kubernetes-validate, check-jsonschema, hadolint) come from the `dev` extra.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/.cache/tools/bin"
KUSTOMIZE_VERSION=v5.8.2
mkdir -p "$bin"

say() { printf 'tools: %s\n' "$*" >&2; }

install_kustomize() {
  if [[ -x "$bin/kustomize" ]] && [[ "$("$bin/kustomize" version)" == "$KUSTOMIZE_VERSION" ]]; then
    return
  fi
  command -v go >/dev/null || { say "go is required to build kustomize"; exit 1; }
  say "building kustomize $KUSTOMIZE_VERSION (go install, about 90 s the first time)"
  GOBIN="$bin" GOTOOLCHAIN=local GOFLAGS=-mod=mod \
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
}

install_promtool() {
  [[ -x "$bin/promtool" ]] && return
  if command -v promtool >/dev/null; then
    ln -sf "$(command -v promtool)" "$bin/promtool"
    return
  fi
  say "unpacking promtool from Debian's prometheus package"
  local work
  work=$(mktemp -d)
  # _apt cannot write into a private mktemp directory; apt then downloads as root and says so.
  if ! (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1); then
    apt-get update -q >/dev/null
    (cd "$work" && apt-get download -q prometheus >/dev/null 2>&1)
  fi
  dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb | tar -x -C "$work" ./usr/bin/promtool
  mv "$work/usr/bin/promtool" "$bin/promtool"
  rm -rf "$work"
}

install_chromium() {
  [[ -x /usr/bin/chromium ]] && return
  local as_root=()
  if [[ $(id -u) -ne 0 ]]; then
    sudo -n true 2>/dev/null || {
      say "chromium is missing: run 'apt-get install -y --no-install-recommends chromium' as root"
      exit 1
    }
    as_root=(sudo -n)
  fi
  say "installing Debian's chromium (apt-get, once)"
  local install=("${as_root[@]}" env DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends chromium)
  if ! "${install[@]}" >/dev/null 2>&1; then
    "${as_root[@]}" apt-get update -q >/dev/null
    "${install[@]}" >/dev/null
  fi
}

install_kustomize
install_promtool
install_chromium
"$bin/promtool" --version 2>&1 | head -1 | sed 's/^/tools: /' >&2
say "kustomize $("$bin/kustomize" version)"
say "$(/usr/bin/chromium --version 2>/dev/null | head -1)"
