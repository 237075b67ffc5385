# shellcheck shell=bash
# Build: the package from this tree ($deb), and a second one, one patch
# version up, for the upgrade in place ($deb_next, empty when it could not be
# built). Both are copied to $work. Sets $cur_version and $next_version.
# Sourced by .ci/deb-test.sh.

echo "deb-test: building the package (bash packaging/build-deb.sh)"
if ! bash packaging/build-deb.sh </dev/null >"$work/build.log" 2>&1; then
    tail -n 40 "$work/build.log"
    abort "build: packaging/build-deb.sh"
fi
deb=$(tail -n 1 "$work/build.log")
[ -f "$deb" ] || abort "build: no package file (last line of the build: '$deb')"
pass "build: $deb"
# A copy the test uses: the second build below (cargo deb) deletes other
# versions of the package from the target directory's debian/.
cp "$deb" "$work/" || abort "build: cannot copy $deb to $work"
deb=$work/${deb##*/}

# The second package is built the same way from a copy of the source tree
# ($next_src, under target/, removed on exit) whose Cargo.toml, Cargo.lock and
# packaging/changelog say $next_version, so that the binary's own version
# differs too. It shares the target directory, so only the idlereaper crate is
# compiled again; target/release/idlereaper is then the $next_version build
# (any cargo build in the tree rebuilds it).
cur_version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
next_version=${cur_version%.*}.$((${cur_version##*.} + 1))

# bump_version: in the current directory (a copy of the tree), says
# $next_version instead of $cur_version in Cargo.toml, Cargo.lock and on top
# of packaging/changelog.
bump_version() {
    sed -i "0,/^version = \"$cur_version\"\$/s//version = \"$next_version\"/" Cargo.toml || return 1
    sed -i "/^name = \"idlereaper\"\$/{n;s/^version = \"$cur_version\"\$/version = \"$next_version\"/}" Cargo.lock || return 1
    grep -q "^version = \"$next_version\"\$" Cargo.toml || { echo "Cargo.toml: version not bumped"; return 1; }
    grep -A1 '^name = "idlereaper"$' Cargo.lock | grep -q "^version = \"$next_version\"\$" \
        || { echo "Cargo.lock: version not bumped"; return 1; }
    {
        printf 'idlereaper (%s-1) unstable; urgency=medium\n\n' "$next_version"
        printf '  * Test build for the upgrade in place (.ci/deb-test.sh).\n\n'
        printf ' -- %s  %s\n\n' "$(dpkg-parsechangelog -l packaging/changelog -SMaintainer)" "$(date -R)"
        cat packaging/changelog
    } >packaging/changelog.new && mv packaging/changelog.new packaging/changelog
}

build_next() {
    local target_dir=${CARGO_TARGET_DIR:-target} log=$work/build-next.log
    case "$target_dir" in /*) ;; *) target_dir=$PWD/$target_dir ;; esac
    rm -rf "$next_src"
    mkdir -p "$next_src" || return 1
    tar -C . --exclude=./target --exclude=./.git --exclude=./fuzz/target -cf - . | tar -C "$next_src" -xf - || return 1
    (
        cd "$next_src" && bump_version \
            && CARGO_TARGET_DIR=$target_dir bash packaging/build-deb.sh </dev/null
    ) >"$log" 2>&1 || { tail -n 40 "$log"; return 1; }
    deb_next=$next_src/$(tail -n 1 "$log")
    [ -f "$deb_next" ] || { note "no package file (last line of the build: '$(tail -n 1 "$log")')"; return 1; }
    note "$deb_next"
    cp "$deb_next" "$work/" || return 1
    deb_next=$work/${deb_next##*/}
    [ "$(dpkg-deb -f "$deb_next" Version)" = "$next_version-1" ] || { note "its version is $(dpkg-deb -f "$deb_next" Version)"; return 1; }
}
deb_next=
step "build: a second package at $next_version-1 from a copy of the tree" build_next || deb_next=
