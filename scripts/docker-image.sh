#!/usr/bin/env bash
# Build the revokd container image from binaries already built on this host, for machines
# that cannot pull images (no registry reachable): the base image is made from Debian's own
# packages with debootstrap and imported into Docker.
#
#   scripts/docker-image.sh            build revokd-base:bookworm if missing, then revokd:local
#   scripts/docker-image.sh --rebuild  rebuild the base image too
#
# Steps:
#   1. revokd-base:bookworm: `debootstrap --variant=minbase bookworm` into a temporary
#      directory, from the Debian mirror apt on this host uses, then `docker import`. Skipped
#      when the image exists (unless --rebuild). Needs root; installs debootstrap with apt-get
#      if it is missing.
#   2. revokd:local: deploy/docker/Dockerfile with BASE=revokd-base:bookworm and a build
#      context holding only the two binaries (revokd, revokctl).
# An image a rebuild replaces is removed unless a container still uses it or another tag
# names it.
#
# The binaries must run on Debian bookworm's glibc: a release build on a bookworm host (or
# older) does. Where images can be pulled, skip this script and use debian:bookworm-slim as
# the base, or deploy/docker/Dockerfile.build, which compiles inside the image.
#
# Environment:
#   REVOKD_BIN      the revokd binary      (default target/release/revokd)
#   REVOKCTL_BIN    the revokctl binary    (default target/release/revokctl)
#   REVOKD_IMAGE    the image to build     (default revokd:local)
#   REVOKD_BASE     the base image name    (default revokd-base:bookworm)
#   DEBIAN_MIRROR   where debootstrap downloads from (default: the first deb.debian.org-style
#                   URI of the bookworm suite in /etc/apt/sources.list*, else deb.debian.org)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
revokd_bin=${REVOKD_BIN:-$root/target/release/revokd}
revokctl_bin=${REVOKCTL_BIN:-$root/target/release/revokctl}
image=${REVOKD_IMAGE:-revokd:local}
base=${REVOKD_BASE:-revokd-base:bookworm}
rebuild=0

for arg in "$@"; do
    case "$arg" in
        --rebuild) rebuild=1 ;;
        -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "docker-image: unknown argument $arg (try --help)" >&2; exit 2 ;;
    esac
done

say() { echo "docker-image: $*"; }
die() { echo "docker-image: $*" >&2; exit 1; }

command -v docker >/dev/null || die "docker is not installed"
docker info >/dev/null 2>&1 || die "the docker daemon does not answer (is it running? are you allowed to use it?)"
for b in "$revokd_bin" "$revokctl_bin"; do
    [ -x "$b" ] || die "$b is missing: run 'cargo build --release -p revokd -p revokctl' first (or set REVOKD_BIN / REVOKCTL_BIN)"
done

# The mirror apt already uses here: the URIs of a source that carries the bookworm suite,
# in either the deb822 (.sources) or the one-line (.list) format.
apt_mirror() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk '
            /^$/ { if (uri != "" && suite ~ /(^| )bookworm( |$)/) { print uri; exit } uri = ""; suite = "" }
            /^URIs:/ { uri = $2 }
            /^Suites:/ { $1 = ""; suite = $0 " " }
            END { if (uri != "" && suite ~ /(^| )bookworm( |$)/) print uri }
        ' "$f"
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/) { if ($(i+1) == "bookworm") print $i; break } }' "$f"
    done
}

# Removes the image a rebuild replaced, if nothing else refers to it: docker refuses (and we
# let it) when a container still uses it or another tag names it.
forget() { # previous-id name
    local now
    now=$(docker image inspect --format '{{.Id}}' "$2" 2>/dev/null || true)
    if [ -n "$1" ] && [ "$1" != "$now" ]; then
        if docker rmi "$1" >/dev/null 2>&1; then
            say "removed the image $2 replaced (${1#sha256:})"
        fi
    fi
}

build_base() {
    [ "$(id -u)" -eq 0 ] || die "building $base with debootstrap needs root"
    if ! command -v debootstrap >/dev/null; then
        say "installing debootstrap (apt-get)"
        apt-get install -y debootstrap >/dev/null || {
            apt-get update >/dev/null
            apt-get install -y debootstrap >/dev/null
        }
    fi
    local mirror=${DEBIAN_MIRROR:-$(apt_mirror | head -n 1)}
    mirror=${mirror:-http://deb.debian.org/debian}
    local dir
    dir=$(mktemp -d /var/tmp/revokd-rootfs.XXXXXX)
    # Removed however the build ends.
    trap 'rm -rf "$dir"' EXIT
    say "debootstrap --variant=minbase bookworm $dir $mirror (a minute or two)"
    debootstrap --variant=minbase bookworm "$dir" "$mirror" > "$dir.log" 2>&1 || {
        tail -n 20 "$dir.log" >&2
        rm -f "$dir.log"
        die "debootstrap failed"
    }
    rm -f "$dir.log"
    # Trim what a container does not need: package lists and caches.
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
    say "docker import -> $base"
    local previous
    previous=$(docker image inspect --format '{{.Id}}' "$base" 2>/dev/null || true)
    tar --numeric-owner -C "$dir" -c . | docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --message "debootstrap --variant=minbase bookworm $mirror" \
        - "$base" >/dev/null
    forget "$previous" "$base"
    rm -rf "$dir"
    trap - EXIT
}

if [ "$rebuild" -eq 0 ] && docker image inspect "$base" >/dev/null 2>&1; then
    say "base image $base exists (--rebuild to make it again)"
else
    build_base
fi

# A context with only the binaries: the repository (and target/) never goes to the daemon.
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$revokd_bin" "$ctx/revokd"
cp "$revokctl_bin" "$ctx/revokctl"
cp "$root/deploy/docker/Dockerfile" "$ctx/Dockerfile"
say "docker build -t $image --build-arg BASE=$base (binaries: $revokd_bin, $revokctl_bin)"
# The legacy builder is enough for this Dockerfile and is all a daemon without the buildx
# plugin offers; with buildx installed, BuildKit is used as usual.
if ! docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=0
fi
previous=$(docker image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
log=$(mktemp)
trap 'rm -rf "$ctx" "$log"' EXIT
if ! docker build --build-arg "BASE=$base" -t "$image" "$ctx" > "$log" 2>&1; then
    cat "$log" >&2
    die "docker build failed"
fi
forget "$previous" "$image"
say "built $image ($(docker image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
say "run one node: docker run --rm -p 127.0.0.1:7000:7000 $image --advertise 127.0.0.1:7000"
