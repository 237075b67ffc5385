# shellcheck shell=bash
# Lint: lintian on the package, installed first when the machine lacks it;
# its every line shown, no error and no warning allowed. Sourced by
# .ci/deb-test.sh.

if ! command -v lintian >/dev/null; then
    echo "deb-test: installing lintian"
    apt_install lintian "$work/apt.log"
fi
if command -v lintian >/dev/null; then
    timeout 600 lintian --display-info "$deb" >"$work/lintian.log" 2>&1
    lintian_status=$?
    show "$work/lintian.log" lintian
    if [ "$lintian_status" -le 2 ] && ! grep -q '^[EW]: ' "$work/lintian.log"; then
        pass "lintian: no errors, no warnings"
    else
        fail "lintian: errors or warnings (status $lintian_status)"
    fi
else
    fail "lintian: not installed and could not be installed"
fi
