# Shell helpers shared by scripts/build-deb and scripts/test-debian
# (sourced, bash).

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" = 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

# True when we may install packages (root, or password-less sudo).
can_be_root() {
    [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null
}

# Runs apt-get/dpkg with package services kept stopped: Debian's nginx
# package starts nginx on port 80 when it is installed, and reloads it
# whenever a module package is (un)installed. A policy-rc.d that denies
# every start is put in place for the command (unless one already exists)
# and removed after it; the system's own policy is left alone.
no_service_start() {
    local policy=/usr/sbin/policy-rc.d ours=
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\n# temporary: zone_sync packaging scripts\nexit 101\n' > $policy && chmod 755 $policy"
        ours=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive "$@" || rc=$?
    if [ -n "$ours" ]; then
        as_root rm -f "$policy"
    fi
    return $rc
}

pkg_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

# Installs the named packages that are missing (no recommends).
deb_install() {
    local missing= p
    for p in "$@"; do
        pkg_installed "$p" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0
    echo "installing:$missing"
    # shellcheck disable=SC2086
    no_service_start apt-get install -y -qq --no-install-recommends $missing \
        || { no_service_start apt-get update -qq \
             && no_service_start apt-get install -y -qq --no-install-recommends $missing; }
}

# Empty when nginx-dev can be installed without touching the installed
# nginx (nginx-dev requires exactly its own nginx version); else says why.
# Installing it must never upgrade, downgrade or replace an nginx that is
# already there (say, nginx.org's package, or a running service).
nginx_dev_conflict() {
    pkg_installed nginx-dev && return 0
    pkg_installed nginx || return 0
    local have want
    have=$(dpkg-query -W -f='${Version}' nginx)
    want=$(apt-cache policy nginx-dev 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -z "$want" ] || [ "$want" = "(none)" ]; then
        echo "no nginx-dev package for the installed nginx $have"
    elif [ "$want" != "$have" ]; then
        echo "nginx $have is installed but nginx-dev is at $want:" \
             "install nginx-dev=$have (or upgrade nginx) first"
    fi
}
