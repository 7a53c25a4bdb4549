#!/usr/bin/env bash
# A real S3 server on loopback for tests and local runs: Ceph radosgw (Debian packages) over one
# monitor and one memstore OSD, auth off between the daemons, pool size 1, and one S3 user with a
# fixed test key. Everything lives in a state folder (default /tmp/assay-s3); data is in memory and
# is gone after `stop`.
#
#   s3-server.sh start  [DIR]    install the packages if missing, start (or reuse) the server, wait
#                                until S3 answers, print `export ...` lines (timings go to stderr):
#                                    eval "$(cluster/local/s3-server.sh start)"
#   s3-server.sh stop   [DIR]    stop every daemon this folder started (pids in DIR/pids), free ports
#   s3-server.sh status [DIR]    exit 0 iff the S3 endpoint answers
#   s3-server.sh env    [DIR]    print the `export ...` lines again
#   s3-server.sh stop-gateway  [DIR]   stop only radosgw (an S3 outage; the data stays)
#   s3-server.sh start-gateway [DIR]   start radosgw again and wait until S3 answers
#
# Ports (loopback only): ASSAY_S3_PORT (S3, default 7480), ASSAY_S3_MON_PORT (monitor, default
# 3300); the OSD takes free ports in 6800-7300 on 127.0.0.1. The state folder may also be given as
# ASSAY_S3_DIR. `start` is idempotent (a running server is reused) and recovers from a crash
# (stale pids are checked against the process's command line before anything is signalled).
set -euo pipefail

CMD=${1:-}
STATE=${2:-${ASSAY_S3_DIR:-/tmp/assay-s3}}
STATE=$(mkdir -p "$STATE" && cd "$STATE" && pwd)
CONF=$STATE/ceph.conf
PIDS=$STATE/pids
LOGS=$STATE/log
ACCESS_KEY=assay-test-access-key
SECRET_KEY=assay-test-secret-key
RGW_NAME=client.rgw.assay
T0=$(date +%s.%N)
TL=$T0

log() { echo "[s3-server] $*" >&2; }
die() { echo "[s3-server] error: $1" >&2; exit "${2:-1}"; }
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
step() { # prints the time since the previous step and since the command began
    log "$(printf '%-34s %5ss  (total %ss)' "$1" "$(elapsed "$TL")" "$(elapsed "$T0")")"
    TL=$(date +%s.%N)
}

# -- ports -----------------------------------------------------------------------------------------

load_ports() {
    # A running server keeps the ports it was started with; else the environment or defaults.
    if [[ -f $STATE/ports ]]; then
        # shellcheck disable=SC1091
        . "$STATE/ports"
    else
        PORT=${ASSAY_S3_PORT:-7480}
        MON_PORT=${ASSAY_S3_MON_PORT:-3300}
    fi
    ENDPOINT=http://127.0.0.1:$PORT
}

port_busy() { # whether something listens on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

answers() { # whether the S3 endpoint answers HTTP (any status)
    if command -v curl >/dev/null; then
        local code
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$ENDPOINT/" 2>/dev/null || true)
        [[ -n $code && $code != 000 ]]
    else
        python3 - "$ENDPOINT/" <<'EOF' 2>/dev/null
import sys, urllib.error, urllib.request
try:
    urllib.request.urlopen(sys.argv[1], timeout=2)
except urllib.error.HTTPError:
    pass
EOF
    fi
}

# -- processes -------------------------------------------------------------------------------------

pid_of() { # the live pid of daemon $1 started from this folder, or nothing (stale pids ignored)
    local f=$PIDS/$1.pid pid
    [[ -f $f ]] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    [[ -r /proc/$pid/cmdline ]] || return 0
    # the pid must still be our daemon: its command line names this folder's config
    if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$CONF"; then
        echo "$pid"
    fi
}

stop_daemon() { # SIGTERM, wait up to 10 s, then SIGKILL; removes the pid file
    local name=$1 pid i
    pid=$(pid_of "$name")
    if [[ -n $pid ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            [[ -e /proc/$pid ]] || break
            # a zombie (our own child) counts as gone
            [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) == Z ]] && break
            sleep 0.1
        done
        if [[ -e /proc/$pid ]] && [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]; then
            log "$name (pid $pid) did not stop in 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.2
        fi
        log "stopped $name (pid $pid)"
    fi
    rm -f "$PIDS/$name.pid"
}

spawn() { # spawn NAME CMD...: runs a daemon in the foreground of its own session, records its pid
    local name=$1
    shift
    # setsid: the daemon leaves our session, so a caller's Ctrl-C or closed pipe does not reach it
    # (9>&-: the daemon must not inherit the lock on the state folder)
    setsid "$@" </dev/null >>"$LOGS/$name.out" 2>&1 9>&- &
    echo $! >"$PIDS/$name.pid"
}

wait_for() { # wait_for WHAT SECONDS DAEMON CMD...: polls CMD every 0.2 s
    local what=$1 secs=$2 daemon=$3 i
    shift 3
    for ((i = 0; i < secs * 5; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        if [[ -n $daemon && -z $(pid_of "$daemon") ]]; then
            tail -n 20 "$LOGS/$daemon.out" "$LOGS/$daemon.log" >&2 2>/dev/null || true
            die "$daemon exited while waiting for $what (logs in $LOGS)"
        fi
        sleep 0.2
    done
    die "timed out after ${secs}s waiting for $what (logs in $LOGS)"
}

ceph_cli() { timeout 20 ceph -c "$CONF" --connect-timeout 10 "$@"; }

# -- packages --------------------------------------------------------------------------------------

ensure_packages() {
    local missing=() bin
    for bin in ceph-mon ceph-osd radosgw radosgw-admin ceph monmaptool; do
        command -v "$bin" >/dev/null || missing+=("$bin")
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    command -v apt-get >/dev/null \
        || die "${missing[*]} missing and apt-get is not available: install radosgw, ceph-mon, ceph-osd" 3
    log "missing ${missing[*]}: installing radosgw ceph-mon ceph-osd with apt-get"
    local sudo=()
    if [[ $(id -u) != 0 ]]; then
        if ! command -v sudo >/dev/null || ! sudo -n true 2>/dev/null; then
            die "installing the Ceph packages needs root (or password-less sudo)" 3
        fi
        sudo=(sudo -n)
    fi
    local install=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q
        --no-install-recommends -o Dpkg::Options::=--force-confdef
        -o Dpkg::Options::=--force-confold radosgw ceph-mon ceph-osd)
    if ! "${install[@]}" >"$STATE/apt.log" 2>&1; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q >>"$STATE/apt.log" 2>&1 \
            || die "apt-get update failed (see $STATE/apt.log)" 3
        "${install[@]}" >>"$STATE/apt.log" 2>&1 \
            || die "apt-get install radosgw ceph-mon ceph-osd failed (see $STATE/apt.log)" 3
    fi
    step "installed packages"
}

# -- configuration ---------------------------------------------------------------------------------

write_conf() {
    local fsid
    fsid=$(cat /proc/sys/kernel/random/uuid)
    cat >"$CONF" <<EOF
# written by assay cluster/local/s3-server.sh; a throwaway single-node cluster on loopback
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$MON_PORT]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
public network = 127.0.0.1/32
ms bind ipv6 = false
ms bind ipv4 = true
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon pg warn min per osd = 0
run dir = $STATE/run
admin socket = $STATE/run/\$name.asok
log file = $LOGS/\$name.log
log to stderr = false
err to stderr = true
debug ms = 0
keyring = $STATE/keyring

[mon]
mon data = $STATE/mon
# propose map changes at once (default 1 s each): radosgw's pool creation goes ~4x faster
paxos propose interval = 0.05
paxos min wait = 0.01
mon cluster log file = $LOGS/cluster.log

[osd]
osd data = $STATE/osd
osd objectstore = memstore
memstore device bytes = 2147483648
osd crush update on start = true
osd max object name len = 256
osd max object namespace len = 64

[$RGW_NAME]
rgw frontends = beast endpoint=127.0.0.1:$PORT
rgw data = $STATE/rgw
rgw enable usage log = false
rgw dns name = 127.0.0.1
debug rgw = 1
# radosgw defaults to a "secure" (encrypted) monitor session, which needs cephx
ms mon client mode = crc
EOF
    printf 'PORT=%s\nMON_PORT=%s\n' "$PORT" "$MON_PORT" >"$STATE/ports"
}

print_env() {
    cat <<EOF
export AWS_ENDPOINT_URL=$ENDPOINT
export AWS_ACCESS_KEY_ID=$ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$SECRET_KEY
export AWS_REQUEST_CHECKSUM_CALCULATION=WHEN_REQUIRED
export AWS_RESPONSE_CHECKSUM_VALIDATION=WHEN_REQUIRED
export AWS_EC2_METADATA_DISABLED=true
export ASSAY_S3_DIR=$STATE
EOF
}

# -- commands --------------------------------------------------------------------------------------

start_gateway() {
    spawn rgw radosgw -f -c "$CONF" -n "$RGW_NAME"
    wait_for "S3 on $ENDPOINT" 120 rgw answers
    step "radosgw answers on $ENDPOINT"
}

cmd_start() {
    ensure_packages
    load_ports
    if [[ -f $STATE/ports && -n $(pid_of mon) && -n $(pid_of osd) ]] && ceph_cli mon stat >/dev/null 2>&1; then
        if [[ -n $(pid_of rgw) ]] && answers; then
            log "already running on $ENDPOINT (state in $STATE)"
        else # monitor and OSD are fine (the data too): only the gateway is missing
            stop_daemon rgw
            start_gateway
        fi
        print_env
        return 0
    fi
    # anything left from an earlier start (a crash, a half-started server) goes first
    local d
    for d in rgw osd mon; do stop_daemon "$d"; done
    rm -rf "$STATE/mon" "$STATE/osd" "$STATE/rgw" "$STATE/run" "$STATE/ports" "$LOGS"
    PORT=${ASSAY_S3_PORT:-7480}
    MON_PORT=${ASSAY_S3_MON_PORT:-3300}
    ENDPOINT=http://127.0.0.1:$PORT
    for d in "$PORT" "$MON_PORT"; do
        port_busy "$d" && die "port $d on 127.0.0.1 is in use by another program (set ASSAY_S3_PORT / ASSAY_S3_MON_PORT)" 2
    done
    mkdir -p "$STATE/mon" "$STATE/osd" "$STATE/rgw" "$STATE/run" "$PIDS" "$LOGS"
    write_conf
    step "config written"

    # monitor: a monmap with one loopback address, mkfs, start
    monmaptool --create --clobber --fsid "$(awk '/^fsid/ {print $3}' "$CONF")" \
        --addv a "[v2:127.0.0.1:$MON_PORT]" "$STATE/monmap" >/dev/null
    ceph-authtool --create-keyring "$STATE/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
    ceph-mon -c "$CONF" --mkfs -i a --monmap "$STATE/monmap" --keyring "$STATE/keyring" \
        >>"$LOGS/mon.out" 2>&1 || die "ceph-mon --mkfs failed (see $LOGS)"
    spawn mon ceph-mon -f -c "$CONF" -i a
    wait_for "the monitor" 60 mon ceph_cli mon stat
    step "monitor up"

    # one memstore OSD
    local uuid id
    uuid=$(cat /proc/sys/kernel/random/uuid)
    id=$(ceph_cli osd new "$uuid")
    [[ $id == 0 ]] || die "unexpected OSD id $id"
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >>"$LOGS/osd.out" 2>&1 \
        || die "ceph-osd --mkfs failed (see $LOGS)"
    spawn osd ceph-osd -f -c "$CONF" -i 0
    wait_for "the OSD" 60 osd osd_up
    step "OSD up"

    start_gateway
    # the S3 user with the fixed test key (radosgw-admin talks to RADOS, not to the gateway)
    if ! timeout 60 radosgw-admin -c "$CONF" -n "$RGW_NAME" user info --uid=assay >/dev/null 2>&1; then
        timeout 60 radosgw-admin -c "$CONF" -n "$RGW_NAME" user create --uid=assay \
            --display-name="assay tests" --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" \
            >>"$LOGS/rgw-admin.out" 2>&1 || die "radosgw-admin user create failed (see $LOGS)"
    fi
    step "S3 user created"
    log "ready on $ENDPOINT in $(elapsed "$T0")s (state in $STATE)"
    print_env
}

osd_up() { ceph_cli osd dump 2>/dev/null | grep -qE '^osd\.0 up'; }

cmd_stop() {
    local d
    load_ports
    for d in rgw osd mon; do stop_daemon "$d"; done
    local i
    for ((i = 0; i < 50; i++)); do
        port_busy "$PORT" || port_busy "$MON_PORT" || break
        sleep 0.1
    done
    rm -rf "$STATE/mon" "$STATE/osd" "$STATE/rgw" "$STATE/run" "$STATE/ports"
    step "stopped"
}

cmd_stop_gateway() {
    load_ports
    stop_daemon rgw
    local i
    for ((i = 0; i < 50; i++)); do
        port_busy "$PORT" || break
        sleep 0.1
    done
    step "radosgw stopped ($ENDPOINT refuses)"
}

cmd_start_gateway() {
    load_ports
    [[ -n $(pid_of mon) && -n $(pid_of osd) ]] || die "the server is not running (run start first)"
    if [[ -n $(pid_of rgw) ]] && answers; then
        log "radosgw already answers on $ENDPOINT"
        return 0
    fi
    stop_daemon rgw
    start_gateway
}

# one command at a time per state folder (two `start`s at once would race)
mkdir -p "$STATE"
exec 9>"$STATE/.lock"
flock -w 300 9 || die "another s3-server.sh holds $STATE/.lock"

case $CMD in
start) cmd_start ;;
stop) cmd_stop ;;
status)
    load_ports
    if answers; then log "S3 answers on $ENDPOINT"; exit 0; fi
    log "no S3 server answers on $ENDPOINT"
    exit 1
    ;;
env)
    load_ports
    [[ -f $STATE/ports ]] || die "no server state in $STATE (run start)"
    print_env
    ;;
stop-gateway) cmd_stop_gateway ;;
start-gateway) cmd_start_gateway ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
    ;;
esac
