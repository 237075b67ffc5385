#!/usr/bin/env bash
# Build the idlereaper Debian package: THE one command.
#
#   bash packaging/build-deb.sh [extra cargo-deb options]
#
# Output: target/debian/idlereaper_<version>-<revision>_<arch>.deb (its path is
# printed on the last line). Run from anywhere inside the repository.
#
# What it does:
#   1. installs cargo-deb from crates.io if it is missing, and dpkg-dev
#      (dpkg-shlibdeps, for the computed Depends) if that is missing;
#   2. derives the packaged /etc/idlereaper.toml from the repository sample
#      etc/idlereaper.toml by uncommenting exactly its two lines
#      `#user = "_idlereaper"` and `#group = "_idlereaper"`, and fails loudly
#      if they are not there, or if `idlereaper --check` rejects the result;
#   3. compresses the man pages and the Debian changelog with gzip -9n
#      (maximum compression, no name or timestamp: what lintian expects);
#   4. runs `cargo deb`, which builds the release binary, strips it, computes
#      the shared-library dependencies and assembles the package from
#      [package.metadata.deb] in Cargo.toml.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

die() {
    echo "build-deb: error: $*" >&2
    exit 1
}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

command -v cargo >/dev/null || die "cargo not found; install Rust (rustup) first"

if ! cargo deb --version >/dev/null 2>&1; then
    echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION from crates.io"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

if ! command -v dpkg-shlibdeps >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        echo "build-deb: installing dpkg-dev (dpkg-shlibdeps computes Depends)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q dpkg-dev </dev/null \
            || { apt-get update -q </dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dpkg-dev </dev/null; } \
            || die "could not install dpkg-dev"
    else
        die "dpkg-shlibdeps not found: run 'sudo apt-get install dpkg-dev' first"
    fi
fi

# The changelog's newest entry names the package version: its upstream part
# must be the crate's version, and its Debian revision is the package's.
crate_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
changelog_version=$(dpkg-parsechangelog -l packaging/changelog -SVersion)
revision=${changelog_version##*-}
if [ "${changelog_version%-*}" != "$crate_version" ] || [ "$revision" = "$changelog_version" ]; then
    die "packaging/changelog is at $changelog_version but Cargo.toml is at $crate_version: add a changelog entry for $crate_version-1"
fi

out=target/packaging
rm -rf "$out"
mkdir -p "$out"

# --- 2. the packaged config ------------------------------------------------
sample=etc/idlereaper.toml
[ -f "$sample" ] || die "$sample not found: the packaged config is derived from it"
for key in user group; do
    n=$(grep -c "^#${key} = \"_idlereaper\"" "$sample" || true)
    [ "$n" -eq 1 ] || die "$sample must contain exactly one line starting with '#${key} = \"_idlereaper\"' (found $n); the packaged config is derived by uncommenting it"
done
for line in '[control]' 'socket = "/run/idlereaper/control.sock"'; do
    n=$(grep -cxF "#$line" "$sample" || true)
    [ "$n" -eq 1 ] || die "$sample must contain exactly one line '#$line' (found $n); the packaged config turns the control socket on by uncommenting it"
done
sed -e 's/^#\(user = "_idlereaper"\)$/\1/' \
    -e 's/^#\(group = "_idlereaper"\)$/\1/' \
    -e 's/^#\(\[control\]\)$/\1/' \
    -e 's|^#\(socket = "/run/idlereaper/control.sock"\)$|\1|' \
    "$sample" >"$out/idlereaper.toml"
# Exactly those four lines differ, nothing else.
changed=$(diff "$sample" "$out/idlereaper.toml" | grep -c '^>' || true)
[ "$changed" -eq 4 ] || die "deriving the packaged config changed $changed lines, expected 4"
grep -q '^\[control\]$' "$out/idlereaper.toml" || die "packaged config has no [control] table"
grep -q '^user = "_idlereaper"' "$out/idlereaper.toml" || die "packaged config has no user line"
grep -q '^group = "_idlereaper"' "$out/idlereaper.toml" || die "packaged config has no group line"

# The daemon itself must accept it (this builds the release binary, which
# cargo deb then reuses). `--check` also checks that daemon.user and
# daemon.group exist, and _idlereaper exists only once the package is
# installed (postinst creates it): the copy checked here names root instead,
# so that everything else is checked as the target machine will check it.
sed 's/^\(user\|group\) = "_idlereaper"$/\1 = "root"/' "$out/idlereaper.toml" >"$out/idlereaper-check.toml"
if ! check=$(cargo run --release --locked --quiet --bin idlereaper -- --check --config "$out/idlereaper-check.toml" 2>&1); then
    echo "$check" >&2
    die "the packaged config $out/idlereaper.toml does not pass idlereaper --check"
fi

# --- 3. man pages and changelog, compressed as Debian Policy wants ----------
gzip -9n -c packaging/idlereaper.8 >"$out/idlereaper.8.gz"
gzip -9n -c packaging/idlereaperctl.8 >"$out/idlereaperctl.8.gz"
gzip -9n -c packaging/idlereaper.toml.5 >"$out/idlereaper.toml.5.gz"
gzip -9n -c packaging/changelog >"$out/changelog.Debian.gz"

# Reproducible timestamps inside the package: the date of the changelog entry.
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l packaging/changelog -STimestamp)
    export SOURCE_DATE_EPOCH
fi

# --- 4. the package ---------------------------------------------------------
# --strip: the release profile keeps debug info (debug = 1) for profiling;
# the package ships a stripped binary.
deb=$(cargo deb --locked --strip --deb-revision "$revision" --output target/debian/ "$@" | tail -n 1)
[ -f "$deb" ] || die "cargo deb did not report a package file (got '$deb')"
echo "build-deb: built $deb"
echo "$deb"
