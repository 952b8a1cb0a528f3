#!/usr/bin/env bash
# Base images for the Containerfile made from Debian's packages, for a machine that reaches no
# container registry (only Debian's mirror, PyPI and crates.io): docs/deploy.md, "Building the
# image without a registry".
#
#   deploy/container/debootstrap-bases.sh [WORKDIR]      (as root; needs debootstrap and podman)
#
# Makes two images:
#   localhost/edgeproxy-runtime-base:bookworm  Debian 12 minbase + python3 (3.11) + python3-venv
#   localhost/edgeproxy-build-base:bookworm    the same + gcc, and the Rust toolchain of this
#                                              machine's rustup (Debian 12's rustc is older than
#                                              the crates' rust-version), copied in
# and prints the `podman build` line that uses them.
set -euo pipefail
work=${1:-target/container}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$work"

rootfs() {  # rootfs NAME PACKAGES
  local dir="$work/rootfs-$1"
  if [ ! -x "$dir/usr/bin/python3" ]; then
    rm -rf "$dir"
    debootstrap --variant=minbase --include="$2" "$suite" "$dir" "$mirror" >&2
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
  fi
  echo "$dir"
}

runtime=$(rootfs runtime python3,python3-venv,ca-certificates)
tar -C "$runtime" -c . | podman import - localhost/edgeproxy-runtime-base:$suite

build=$(rootfs build python3,python3-venv,ca-certificates,gcc,libc6-dev)
toolchain=$(rustup toolchain list | awk '/default/ {print $1; exit}')
[ -n "$toolchain" ] || { echo "no default rustup toolchain" >&2; exit 1; }
src=$(readlink -f "${RUSTUP_HOME:-$HOME/.rustup}/toolchains/$toolchain")
rm -rf "$build/usr/local/rust"
mkdir -p "$build/usr/local/rust"
cp -a "$src/." "$build/usr/local/rust/"
for tool in cargo rustc rustdoc; do ln -sf ../rust/bin/$tool "$build/usr/local/bin/$tool"; done
tar -C "$build" -c . | podman import - localhost/edgeproxy-build-base:$suite

cat <<EOT
Base images ready. Build the image with them (podman as root; see docs/deploy.md for the flags):
  podman build --format docker -f Containerfile -t localhost/edgeproxy:dev \\
    --build-arg BUILD_IMAGE=localhost/edgeproxy-build-base:$suite \\
    --build-arg RUNTIME_IMAGE=localhost/edgeproxy-runtime-base:$suite .
EOT
