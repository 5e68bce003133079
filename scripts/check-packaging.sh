#!/usr/bin/env bash
# Proves the Rust crates meant for users can be published and used as a new user would:
#  1. `cargo package` of every publishable crate of the workspace (those without
#     `publish = false`), verified: each .crate is unpacked and built against the others as a
#     registry would serve them, offline (dependencies come from the local registry cache);
#  2. the README example of the facade crate `jetq` (jetq/README.md, identical to
#     jetq/examples/readme.rs) built as the main.rs of a fresh project that depends on
#     `jetq = { version = "0.1", features = ["worker"] }`, patched to the packaged crates in
#     target/package, offline.
# Reuses the workspace's target directory, so third-party crates are built once.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { echo "check-packaging: $*" >&2; }
target="${CARGO_TARGET_DIR:-$repo/target}"
export CARGO_TARGET_DIR="$target"

# The README's example is the compiled one (examples/readme.rs, also the crate's doc test).
readme_block() { # the first ```rust block of a markdown file
  awk '/^```rust$/ {on=1; next} on && /^```$/ {exit} on {print}' "$1"
}
if ! diff -u jetq/examples/readme.rs <(readme_block jetq/README.md) >&2; then
  log "jetq/README.md's example differs from jetq/examples/readme.rs (keep them identical)"
  exit 1
fi

# 1. Package and verify every publishable crate.
mapfile -t publishable < <(cargo metadata --no-deps --offline --format-version 1 | python3 -c '
import json, sys
for package in json.load(sys.stdin)["packages"]:
    if package["publish"] is None:
        print(package["name"])')
[ "${#publishable[@]}" -gt 0 ] || { log "no publishable crate found"; exit 1; }
log "cargo package: ${publishable[*]}"
args=()
for name in "${publishable[@]}"; do args+=(-p "$name"); done
# --allow-dirty: CI's checkout may hold build outputs; what is packaged is what git tracks.
cargo package "${args[@]}" --offline --allow-dirty

# 2. The README example against the packaged facade, in a project of its own.
version="$(cargo metadata --no-deps --offline --format-version 1 | python3 -c '
import json, sys
print(next(p["version"] for p in json.load(sys.stdin)["packages"] if p["name"] == "jetq"))')"
project="$target/readme-example"
rm -rf "$project"
mkdir -p "$project/src"
{
  cat <<TOML
[package]
name = "readme-example"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
jetq = { version = "$version", features = ["worker"] }
serde = { version = "1", features = ["derive"] }
tokio = { version = "1", features = ["macros", "rt-multi-thread"] }

[patch.crates-io]
TOML
  for name in "${publishable[@]}"; do
    dir="$target/package/$name-$version"
    [ -f "$dir/Cargo.toml" ] || { log "missing packaged crate $dir"; exit 1; }
    echo "$name = { path = \"$dir\" }"
  done
} >"$project/Cargo.toml"
readme_block "$target/package/jetq-$version/README.md" >"$project/src/main.rs"
# The workspace's lock file pins the same third-party versions (all in the local cache).
cp Cargo.lock "$project/Cargo.lock"
log "building the README example against the packaged jetq $version"
cargo build --offline --manifest-path "$project/Cargo.toml"
log "ok: ${#publishable[@]} crates packaged; the README example builds against the packaged jetq"
