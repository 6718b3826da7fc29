#!/usr/bin/env bash
# The Debian packages the tests need, installed once (README command 1 and .ci/run both run this).
# As root on Debian/Ubuntu it installs what is missing; anywhere else it changes nothing, says
# what is missing and which tests will skip (under CI=true those tests fail instead), and exits 0.
#
#   package         tool(s)                 tests
#   openssh-server  sshd                    tests/device/test_bench.py: edgekit bench --host against a real sshd on loopback
#   openssh-client  ssh, ssh-keygen         tests/device/test_bench.py (same)
#   debootstrap     debootstrap             tests/device/test_emulate.py: builds the arm64 userland once (needs root once)
#   wget            wget                    tests/device/test_emulate.py: debootstrap downloads with it
#   time            /usr/bin/time (GNU)     benchmarks/runner_overhead.py: the runner's peak RSS cross-check
#   qemu-user       qemu-x86_64             the AVX2-only CPU class: qemu-x86_64 -cpu Haswell (no VNNI)
#   chromium        chromium                tests/search/test_report_browser.py: report.html in a real headless browser
#
# The table is also edgekit.doctor.TEST_TOOLS (`edgekit doctor` lists what is present);
# tests/test_doctor.py checks the two agree.
set -uo pipefail

# tool:package pairs; a tool is found on PATH or in the sbin folders a non-root PATH may lack
TOOLS="sshd:openssh-server ssh:openssh-client ssh-keygen:openssh-client debootstrap:debootstrap wget:wget time:time qemu-x86_64:qemu-user chromium:chromium"

have() { [ -n "$(type -P "$1")" ] || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing_packages() {
    local pair pkgs=""
    for pair in $TOOLS; do
        have "${pair%%:*}" || case " $pkgs " in *" ${pair#*:} "*) ;; *) pkgs="$pkgs ${pair#*:}" ;; esac
    done
    echo $pkgs
}

finish() {  # $1: why what is still missing was not installed; exits
    local pkgs; pkgs="$(missing_packages)"
    if [ -z "$pkgs" ]; then
        echo "setup-system: every system tool the tests need is present"
        exit 0
    fi
    echo "setup-system: not installed ($1): $pkgs"
    echo "setup-system: the tests that need them will skip (fail under CI=true); fix: sudo scripts/setup-system.sh"
    # CI must have them all (.ci/run): stop here, before a long test run that would fail anyway
    case "${CI:-}" in true|1|yes) exit 1 ;; esac
    exit 0
}

need="$(missing_packages)"
[ -n "$need" ] || finish ""
command -v apt-get >/dev/null 2>&1 || finish "no apt-get: not Debian or Ubuntu; install the equivalents with your package manager"
[ "$(id -u)" = 0 ] || finish "not root"

# No service may start from the install: the tests run their own sshd on a loopback port, and a
# system sshd on port 22 is not something a test set-up should switch on. policy-rc.d is the
# Debian hook invoke-rc.d and deb-systemd-invoke ask; a pre-existing one is left alone.
policy=/usr/sbin/policy-rc.d
ours="" log="$(mktemp -t setup-system.XXXXXX.log)" keep_log=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours="$policy"
fi
trap '[ -z "$ours" ] || rm -f "$ours"; [ -n "$keep_log" ] || rm -f "$log"' EXIT
echo "setup-system: apt-get install $need"
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086  # $need is a word list on purpose
if ! apt-get install -y -q --no-install-recommends $need >"$log" 2>&1; then
    # a fresh machine or container often has no package lists yet
    apt-get update -q >>"$log" 2>&1 && apt-get install -y -q --no-install-recommends $need >>"$log" 2>&1 \
        || { tail -n 5 "$log"; keep_log=1; finish "apt-get failed; its output: $log"; }
fi
case " $need " in *" openssh-server "*)
    echo "setup-system: openssh-server's system service was not started (on systemd it is enabled at boot: systemctl disable --now ssh)" ;;
esac
finish "apt-get did not provide them"
