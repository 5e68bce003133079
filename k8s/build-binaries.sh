#!/bin/sh
# Builds the binaries of jetq's container images and copies them into OUT.
#
#   sh k8s/build-binaries.sh [PROFILE] [OUT]      # defaults: release /out
#
# The Dockerfile's build stage runs exactly this (profile release); scripts/test.sh runs it
# too (profile dev), so the binaries the images ship are the ones the test command builds.
set -eu
profile="${1:-release}"
out="${2:-/out}"
bins="worker web jetq-scheduler jetq jetq-provision jetq-push jetq-relay"

cargo build --locked --profile "$profile" \
  -p jetq-examples --bin worker --bin web \
  -p jetq-scheduler --bin jetq-scheduler \
  -p jetq-cli --bin jetq \
  -p jetq-k8s --bin jetq-provision \
  -p jetq-push --bin jetq-push \
  -p jetq-outbox --bin jetq-relay

case "$profile" in
  dev | test) dir=debug ;;
  bench) dir=release ;;
  *) dir="$profile" ;;
esac
target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$out"
for bin in $bins; do
  # A hard link where possible (same file system), a copy otherwise.
  ln -f "$target/$dir/$bin" "$out/$bin" 2>/dev/null || cp "$target/$dir/$bin" "$out/$bin"
done
echo "build-binaries.sh: $bins -> $out ($profile)" >&2
