#!/usr/bin/env bash
# Machine setup for xdplab (called by `make setup`), idempotent: checks first
# that /usr/bin/python3 is >= 3.11 (and warns unless Debian >= 12 or Ubuntu >=
# 24.04), then installs the Debian packages in envs/debian-packages.txt, makes
# kernel headers visible to BCC, builds the controller venv .venv/ from
# envs/controller.txt and installs xdplab itself into it, editable (pyproject.toml).
# When everything is already there it prints nothing and takes well under a second.
#
# Overrides, meant for testing the headers logic without touching the real
# /lib/modules: XDPLAB_KERNEL_RELEASE (default `uname -r`) and
# XDPLAB_MODULES_DIR (default /lib/modules); and for testing the checks of the
# distribution and Python without another OS: XDPLAB_OS_RELEASE (default
# /etc/os-release) and XDPLAB_SYSTEM_PYTHON (default /usr/bin/python3).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PACKAGES_FILE="$REPO/envs/debian-packages.txt"
REQUIREMENTS_FILE="$REPO/envs/controller.txt"
LOCK_FILE="$REPO/envs/controller.lock"   # every resolved version, used as constraints
VENV="$REPO/.venv"
STAMP="$VENV/.xdplab-requirements.sha256"
SYSTEM_PYTHON="${XDPLAB_SYSTEM_PYTHON:-/usr/bin/python3}"
OS_RELEASE="${XDPLAB_OS_RELEASE:-/etc/os-release}"
KREL="${XDPLAB_KERNEL_RELEASE:-$(uname -r)}"
MODULES_DIR="${XDPLAB_MODULES_DIR:-/lib/modules}"

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }
version_at_least() { printf '%s\n' "$2" "$1" | sort -V -C; }  # $1 >= $2

# --- 0. what this machine is, before anything is installed -----------------------
SUPPORTED="Debian 12 or later, Ubuntu 24.04 or later"
os_id="" os_version="" os_name="an unknown system (no $OS_RELEASE)"
if [ -r "$OS_RELEASE" ]; then
    os_id="$(. "$OS_RELEASE"; echo "${ID:-}")"
    os_version="$(. "$OS_RELEASE"; echo "${VERSION_ID:-}")"
    os_name="$(. "$OS_RELEASE"; echo "${PRETTY_NAME:-${ID:-unknown} ${VERSION_ID:-}}")"
fi
case "$os_id" in
    debian) version_at_least "${os_version:-0}" 12 && known=1 || known=0 ;;
    ubuntu) version_at_least "${os_version:-0}" 24.04 && known=1 || known=0 ;;
    *) known=0 ;;
esac
[ "$known" -eq 1 ] || echo "setup: warning: this is $os_name; xdplab is known to work on $SUPPORTED (trying anyway)" >&2
# The pins of envs/controller.txt need Python >= 3.11, and .venv must be made from
# the distribution's own python3: BCC (python3-bpfcc) is built for that one.
py_version="$("$SYSTEM_PYTHON" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" \
    || die "$SYSTEM_PYTHON does not run; xdplab needs the distribution's python3 >= 3.11 ($SUPPORTED have it): apt-get install python3"
version_at_least "$py_version" 3.11 \
    || die "$SYSTEM_PYTHON is Python $py_version; the controller's pinned packages (envs/controller.txt) need Python >= 3.11 from the distribution itself (BCC's python3-bpfcc is built for it), which $SUPPORTED have: upgrade $os_name, or run xdplab on one of these"

[ "$(id -u)" -eq 0 ] || die "must run as root (it installs Debian packages and kernel headers); try: sudo make setup"
command -v apt-get >/dev/null 2>&1 && command -v dpkg-query >/dev/null 2>&1 \
    || die "needs an apt-based system (Debian or Ubuntu): apt-get/dpkg-query not found"

export DEBIAN_FRONTEND=noninteractive
APT_LOG="$(mktemp -t xdplab-setup-apt.XXXXXX)"
trap 'rm -f "$APT_LOG"' EXIT
APT_UPDATED=0

apt_run() {  # run an apt command quietly; on failure show its output
    if ! "$@" >>"$APT_LOG" 2>&1; then
        tail -n 30 "$APT_LOG" >&2
        die "'$*' failed (output above)"
    fi
}
apt_update_once() {
    [ "$APT_UPDATED" -eq 1 ] && return 0
    say "apt-get update"
    apt_run apt-get update -q
    APT_UPDATED=1
}
apt_install() {
    apt_update_once
    say "installing Debian packages: $*"
    apt_run apt-get install -y -q --no-install-recommends "$@"
}
is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | cut -c1-2)" = "ii" ]
}
apt_candidate() {  # prints the candidate version of a package, or nothing
    apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { if ($2 != "(none)") print $2 }'
}

# --- 1. Debian packages ------------------------------------------------------
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]\+//g' -e '/^$/d' "$PACKAGES_FILE")
MISSING=()
for p in "${PACKAGES[@]}"; do
    is_installed "$p" || MISSING+=("$p")
done
if [ "${#MISSING[@]}" -gt 0 ]; then
    apt_install "${MISSING[@]}"
fi

# --- 2. kernel headers for BCC -----------------------------------------------
# BCC compiles against /lib/modules/$(uname -r)/build (generated headers,
# arch tree) and .../source (the rest); Debian splits these into an -arch and
# a -common directory.
headers_usable() {  # $1: /lib/modules/<release>
    local b="$1/build" s="$1/source"
    [ -f "$b/include/generated/autoconf.h" ] || return 1
    [ -d "$b/arch" ] || [ -d "$s/arch" ] || return 1
    [ -f "$b/include/linux/kconfig.h" ] || [ -f "$s/include/linux/kconfig.h" ] || return 1
}
link_headers() {  # $1: arch headers dir, $2: common dir (may be empty)
    local kdir="$MODULES_DIR/$KREL" name
    mkdir -p "$kdir"
    for name in build source; do
        if [ -e "$kdir/$name" ] && [ ! -L "$kdir/$name" ]; then
            die "$kdir/$name exists and is not a symlink; refusing to replace it (remove it or install matching headers yourself)"
        fi
    done
    ln -sfn "$1" "$kdir/build"
    say "linked $kdir/build -> $1"
    if [ -n "$2" ]; then
        ln -sfn "$2" "$kdir/source"
        say "linked $kdir/source -> $2"
    fi
}
generic_headers_package() {
    local id="" id_like="" arch
    if [ -r "$OS_RELEASE" ]; then
        id="$(. "$OS_RELEASE"; echo "${ID:-}")"
        id_like="$(. "$OS_RELEASE"; echo "${ID_LIKE:-}")"
    fi
    arch="$(dpkg --print-architecture)"
    case " $id $id_like " in
        *" ubuntu "*) echo linux-headers-generic; return ;;
    esac
    case "$arch" in
        amd64) echo linux-headers-amd64 ;;
        arm64) echo linux-headers-arm64 ;;
        i386) echo linux-headers-686-pae ;;
        armhf) echo linux-headers-armmp ;;
        ppc64el) echo linux-headers-powerpc64le ;;
        s390x) echo linux-headers-s390x ;;
        *) die "no known generic kernel headers package for architecture $arch; install headers for $KREL by hand" ;;
    esac
}

link_release_headers() {  # $1: headers release (e.g. 6.1.0-56-amd64) to link for $KREL
    local hrel="$1" arch_dir common_dir c
    arch_dir="$(readlink -f "/lib/modules/$hrel/build" 2>/dev/null || true)"
    [ -n "$arch_dir" ] && [ -d "$arch_dir" ] || arch_dir="/usr/src/linux-headers-$hrel"
    [ -d "$arch_dir" ] || die "headers for $hrel are installed but $arch_dir is missing"
    common_dir="$(readlink -f "/lib/modules/$hrel/source" 2>/dev/null || true)"
    if [ -z "$common_dir" ] || [ ! -d "$common_dir" ] || [ "$common_dir" = "$arch_dir" ]; then
        common_dir=""
        for c in "/usr/src/linux-headers-${hrel%-*}-common" "/usr/src/linux-headers-${hrel%-*}"; do
            if [ -d "$c" ] && [ "$c" != "$arch_dir" ]; then common_dir="$c"; break; fi
        done
    fi
    link_headers "$arch_dir" "$common_dir"
    headers_usable "$MODULES_DIR/$KREL" \
        || die "linked headers $hrel, but $MODULES_DIR/$KREL/build still lacks include/generated/autoconf.h, arch/ or include/linux/kconfig.h"
}

if ! headers_usable "$MODULES_DIR/$KREL"; then
    say "no usable kernel headers at $MODULES_DIR/$KREL/build"
    apt_update_once
    own="linux-headers-$KREL"
    if [ -n "$(apt_candidate "$own")" ] || is_installed "$own"; then
        is_installed "$own" || apt_install "$own"
        headers_usable "$MODULES_DIR/$KREL" || link_release_headers "$KREL"
        say "kernel headers: using $own, the running kernel's own"
    else
        generic="$(generic_headers_package)"
        [ -n "$(apt_candidate "$generic")" ] || is_installed "$generic" \
            || die "apt has neither $own nor $generic; install kernel headers for $KREL by hand"
        is_installed "$generic" || apt_install "$generic"
        # The metapackage depends on the versioned package first, e.g.
        # linux-headers-6.1.0-56-amd64 or linux-headers-6.8.0-49-generic.
        versioned="$(dpkg-query -W -f='${Depends}' "$generic" | tr ',' '\n' \
            | sed -n 's/^[[:space:]]*\(linux-headers-[^[:space:]|]*\).*/\1/p' | head -n 1)"
        [ -n "$versioned" ] || die "cannot tell which headers $generic installed"
        hrel="${versioned#linux-headers-}"
        link_release_headers "$hrel"
        say "kernel headers: apt has no $own; using the distribution's generic headers $hrel AS A STAND-IN for the running kernel $KREL"
        say "  (BCC compiles XDP programs against them; kernel structures that differ between $hrel and $KREL would not match)"
    fi
fi

"$SYSTEM_PYTHON" -c 'import bcc' 2>/dev/null \
    || die "$SYSTEM_PYTHON cannot import bcc (python3-bpfcc is installed?); try: $SYSTEM_PYTHON -c 'import bcc'"

# --- 3. controller venv --------------------------------------------------------
venv_ok() {
    [ -x "$VENV/bin/python" ] || return 1
    grep -qiE '^include-system-site-packages *= *true' "$VENV/pyvenv.cfg" 2>/dev/null || return 1
    "$VENV/bin/python" -c '' 2>/dev/null
}
if ! venv_ok; then
    if [ -e "$VENV" ]; then
        say "recreating .venv (broken or made without --system-site-packages)"
        "$SYSTEM_PYTHON" -m venv --clear --system-site-packages "$VENV"
    else
        say "creating .venv"
        "$SYSTEM_PYTHON" -m venv --system-site-packages "$VENV"
    fi
    rm -f "$STAMP"
fi
want="$(cat "$REQUIREMENTS_FILE" "$LOCK_FILE" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$want" ] || [ ! -x "$VENV/bin/snakemake" ]; then
    say "installing controller packages into .venv from envs/controller.txt"
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -qq -r "$REQUIREMENTS_FILE" \
        -c "$LOCK_FILE" || die "pip install -r envs/controller.txt -c envs/controller.lock failed (output above)"
    echo "$want" >"$STAMP"
fi
"$VENV/bin/python" -c 'import bcc' 2>/dev/null \
    || die ".venv cannot import bcc; it must be made with --system-site-packages from $SYSTEM_PYTHON (remove .venv and rerun)"

# --- 4. xdplab itself, editable ---------------------------------------------------
# `import xdplab` in .venv without PYTHONPATH (a notebook, a script): pip install -e
# points .venv's site-packages at workflow/ of the clone the venv lives in (OWNER; a
# .venv that is a symlink to another clone's, as the tests make, stays that clone's).
# Done when .venv's python, outside any PYTHONPATH and working directory, imports
# xdplab from there and OWNER's pyproject.toml is the one it was installed from: one
# start of python, a few tens of ms.  setuptools >= 64 builds it: .venv's own when it
# has one (Debian 12's venv has 66), else pip fetches it for the build.
OWNER="$(dirname "$(readlink -f "$VENV")")"
PACKAGE_STAMP="$VENV/.xdplab-package.sha256"
want_package="$(sha256sum <"$OWNER/pyproject.toml" | cut -d' ' -f1)"
imported_from() {
    (cd / && env -u PYTHONPATH "$VENV/bin/python" -c 'import xdplab; print(xdplab.__file__)' 2>/dev/null) || true
}
if [ "$(cat "$PACKAGE_STAMP" 2>/dev/null || true)" != "$want_package" ] \
        || [ "$(imported_from)" != "$OWNER/workflow/xdplab/__init__.py" ]; then
    say "installing xdplab into .venv (editable: pip install -e $OWNER)"
    isolation=()
    "$VENV/bin/python" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 64)' \
        2>/dev/null && isolation=(--no-build-isolation)
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -qq --no-deps \
        "${isolation[@]}" -e "$OWNER" || die "pip install -e $OWNER failed (output above)"
    [ "$(imported_from)" = "$OWNER/workflow/xdplab/__init__.py" ] \
        || die ".venv still does not import xdplab from $OWNER/workflow after pip install -e (it imports: $(imported_from))"
    echo "$want_package" >"$PACKAGE_STAMP"
fi

# The workflow's modules compiled once (workflow/xdplab/**/__pycache__): every rule's job
# is a new Python process that imports them, and where PYTHONDONTWRITEBYTECODE is set
# (containers, CI images; this machine) Python compiles them from source in every job,
# about 0.1 s each (benchmarks/README.md).  compileall writes only what is missing or
# stale, in a few tens of ms; a module edited later is read from source until the next
# setup (Python checks each .pyc against its source).
"$VENV/bin/python" -m compileall -q -j 0 "$OWNER/workflow/xdplab" >/dev/null \
    || say "compiling workflow/xdplab failed; the jobs compile it from source instead"
