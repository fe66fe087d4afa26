#!/usr/bin/env bash
# A real S3 server for aof-s3-bridge tests and demos: Ceph's RADOS Gateway on 127.0.0.1.
#
#   rgw.sh install              apt-get the Ceph packages (skipped when already present)
#   rgw.sh start [DIR]          one monitor, one BlueStore OSD on a sparse file, one radosgw;
#                               idempotent: a healthy cluster is left alone, a dead daemon
#                               (e.g. radosgw after kill -9) is started again on its own
#   rgw.sh stop [DIR]           stop the three daemons (data stays; `start` brings it back)
#   rgw.sh status [DIR]         print each daemon's state and the gateway's answer; 0 if healthy
#   rgw.sh env [DIR]            print AOF_S3_* lines (endpoint, keys) for `eval` or `source`
#   rgw.sh gw-pid [DIR]         print the radosgw pid (tests kill -9 it mid-upload)
#   rgw.sh wipe [DIR]           stop and delete DIR
#
# Environment: AOF_RGW_DIR (default /var/tmp/aof-rgw), AOF_RGW_PORT (default 7480),
# AOF_RGW_MON_PORT (default 40330, msgr v2 only), AOF_RGW_BLOCK_GB (sparse OSD size, default 20).
#
# Measured on the 2-core dev VM: `install` ~23 s (with apt-get update), cold `start` ~15 s,
# `start` after `stop` ~5-7 s, `start` of the gateway alone after kill -9 ~0.7-1.8 s.
#
# Facts that cost hours (see issue 5):
# - with cephx off the messenger must be told `crc` mode for clients, or radosgw hangs for
#   minutes negotiating a secure mode nobody can provide;
# - bluestore_block_path must lie outside the OSD data dir (mkfs wipes the dir's contents);
# - a pool of size 1 needs mon_allow_pool_size_one;
# - radosgw answers CompleteMultipartUpload with an empty ETag; HEAD has the right one;
# - a radosgw killed with -9 leaves watches that stall the next one's metadata writes (CreateBucket
#   ~10 s per notify) until they expire: `start` fences them first (see fence_dead_gateway);
# - without `tcp_nodelay=1` on the beast frontend, every small GET (a ranged point read) waits
#   ~40 ms: the gateway writes headers and body separately, Nagle holds the body back until the
#   client's delayed ACK. Measured: 44 ms per 4 KiB ranged GET before, HEAD 2 ms.
set -euo pipefail

DIR_DEFAULT=/var/tmp/aof-rgw
PORT=${AOF_RGW_PORT:-7480}
MON_PORT=${AOF_RGW_MON_PORT:-40330}
BLOCK_GB=${AOF_RGW_BLOCK_GB:-20}
# Fixed test credentials: this gateway only ever listens on loopback.
ACCESS_KEY=AOFTESTACCESSKEY0001
SECRET_KEY=aofTestSecretKeyForLoopbackRgwOnly0001
S3_USER=aof
START_TIMEOUT_S=120

log() { echo "rgw.sh: $*" >&2; }
die() { log "error: $*"; exit 1; }

cmd=${1:-}
DIR=${2:-${AOF_RGW_DIR:-$DIR_DEFAULT}}
CONF=$DIR/ceph.conf
ceph_() { timeout 60 ceph -c "$CONF" "$@"; }

install_pkgs() {
    local missing=()
    command -v radosgw >/dev/null || missing+=(radosgw)
    command -v ceph-mon >/dev/null || missing+=(ceph-mon)
    command -v ceph-osd >/dev/null || missing+=(ceph-osd)
    command -v curl >/dev/null || missing+=(curl)
    command -v uuidgen >/dev/null || missing+=(uuid-runtime)
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages present, nothing to install"
        return
    fi
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_conf() {
    local fsid=$1
    mkdir -p "$DIR"/{run,log,mon/a,osd/0,rgw}
    cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon_host = v2:127.0.0.1:$MON_PORT
auth_cluster_required = none
auth_service_required = none
auth_client_required = none
# With auth off the messenger must not try to negotiate "secure" mode.
ms_mon_client_mode = crc
ms_client_mode = crc
ms_cluster_mode = crc
ms_service_mode = crc
ms_bind_msgr1 = false
ms_bind_ipv4 = true
public_network = 127.0.0.0/8
mon_allow_pool_size_one = true
mon_warn_on_pool_no_redundancy = false
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_num = 8
osd_pool_default_pgp_num = 8
osd_pool_default_pg_autoscale_mode = off
mon_max_pg_per_osd = 1000
# The monitor refuses to start when its filesystem has less than 5% free, and on a CI machine
# the workspace's build artefacts share that filesystem. This cluster holds only test data
# (the OSD's block file is sparse and small), so let it run down to the last byte; a real
# ENOSPC still fails the OSD's writes loudly.
mon_data_avail_crit = 0
mon_data_avail_warn = 0
# One host, one OSD: replicas are placed across OSDs, not hosts.
osd_crush_chooseleaf_type = 0
# A gateway killed with -9 leaves its watches on the control objects; until the OSD expires
# them, every metadata change (e.g. CreateBucket) waits ~10 s per notify for an ack that never
# comes. Expire them after 10 s instead of 30 (librados pings live watches every 5 s).
osd_client_watch_timeout = 10
run_dir = $DIR/run
admin_socket = $DIR/run/\$name.asok
pid_file = $DIR/run/\$name.pid
log_file = $DIR/log/\$name.log
keyring = $DIR/keyring
[mon.a]
mon_data = $DIR/mon/a
[osd.0]
osd_data = $DIR/osd/0
osd_objectstore = bluestore
# Outside osd_data on purpose: mkfs clears that directory.
bluestore_block_path = $DIR/osd-0.block
bluestore_block_size = $((BLOCK_GB * 1024 * 1024 * 1024))
bluestore_block_create = true
osd_memory_target = 1073741824
[client.rgw.a]
rgw_data = $DIR/rgw
rgw_frontends = beast endpoint=127.0.0.1:$PORT tcp_nodelay=1
rgw_thread_pool_size = 64
EOF
}

pid_of() { # daemon name (mon.a, osd.0, client.rgw.a) -> pid if alive
    local f=$DIR/run/$1.pid pid state
    [ -f "$f" ] || return 1
    pid=$(cat "$f")
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    # A daemon killed with -9 stays a zombie until init reaps it, and kill -0 still succeeds
    # on a zombie: read the state instead. The cmdline check guards against pid reuse.
    state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
    [ "$state" != Z ] && [ "$state" != X ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$CONF" || return 1
    echo "$pid"
}

gw_answers() { # any HTTP status from the gateway means it serves requests
    local code
    code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://127.0.0.1:$PORT/" || true)
    [ -n "$code" ] && [ "$code" != "000" ]
}

bootstrap() { # first start only: monitor store, OSD filesystem
    local fsid osd_uuid
    fsid=$(uuidgen)
    osd_uuid=$(uuidgen)
    write_conf "$fsid"
    : >"$DIR/keyring"
    monmaptool --create --clobber --fsid "$fsid" --addv a "[v2:127.0.0.1:$MON_PORT]" "$DIR/monmap" >/dev/null
    ceph-mon -c "$CONF" -i a --mkfs --monmap "$DIR/monmap" >/dev/null
    daemon ceph-mon -c "$CONF" -i a
    ceph_ osd new "$osd_uuid" >/dev/null
    ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$osd_uuid" >/dev/null 2>&1 ||
        die "ceph-osd mkfs failed, see $DIR/log/osd.0.log"
    touch "$DIR/bootstrapped"
}

daemon() { # start a Ceph daemon (they fork into the background themselves)
    if ! "$@" >>"$DIR/log/startup.log" 2>&1; then
        # Show why right here: in CI the log directory is gone when someone reads the output.
        local name
        case $1 in ceph-mon) name=mon.a ;; ceph-osd) name=osd.0 ;; *) name=client.rgw.a ;; esac
        log "last lines of $DIR/log/$name.log and startup.log:"
        tail -n 8 "$DIR/log/$name.log" "$DIR/log/startup.log" >&2 2>/dev/null || true
        log "free space: $(df -h "$DIR" | awk 'NR == 2 {print $4 " of " $2}')"
        die "$1 failed to start, see $DIR/log/"
    fi
}

wait_for() { # description, command...
    local what=$1 t0=$SECONDS
    shift
    until "$@"; do
        [ $((SECONDS - t0)) -lt $START_TIMEOUT_S ] || die "$what not ready after ${START_TIMEOUT_S}s (logs: $DIR/log)"
        sleep 0.3
    done
}

osd_up() { ceph_ osd dump 2>/dev/null | grep -q '^osd.0 up'; }

# A gateway killed with -9 leaves watches on its control objects. Until the OSD expires them
# (osd_client_watch_timeout), every metadata change of the next gateway (CreateBucket, user
# edits) waits ~10 s per cache notify for acks the dead one never sends. No gateway runs when
# this is called, so every watcher is a dead one: blocklist (fence) them and the OSD drops
# their watches at once. The new gateway has a new address nonce and is not affected.
fence_dead_gateway() {
    local objs watchers
    objs=$(timeout 10 rados -c "$CONF" -p default.rgw.control ls 2>/dev/null) || return 0
    watchers=$(for o in $objs; do timeout 10 rados -c "$CONF" -p default.rgw.control listwatchers "$o" 2>/dev/null; done |
        sed -n 's/^watcher=\([^ ]*\) .*/\1/p' | sort -u)
    for w in $watchers; do
        ceph_ osd blocklist add "$w" 600 >/dev/null 2>&1 && log "fenced dead gateway watcher $w"
    done
    return 0
}

ensure_user() {
    if radosgw-admin -c "$CONF" user info --uid="$S3_USER" >/dev/null 2>&1; then return; fi
    radosgw-admin -c "$CONF" user create --uid="$S3_USER" --display-name="aof tests" \
        --access-key="$ACCESS_KEY" --secret-key="$SECRET_KEY" >/dev/null
}

start() {
    command -v radosgw >/dev/null || die "ceph not installed: run '$0 install' first"
    local t0=$SECONDS
    if [ -f "$DIR/bootstrapped" ] && pid_of mon.a >/dev/null && pid_of osd.0 >/dev/null &&
        pid_of client.rgw.a >/dev/null && gw_answers; then
        log "already running and healthy"
        print_env
        return
    fi
    if [ -f "$DIR/bootstrapped" ]; then
        # Rewrite the config (same fsid) so changes to this script reach an existing cluster
        # when its daemons next start.
        write_conf "$(awk '$1 == "fsid" {print $3}' "$CONF")"
    else
        rm -rf "$DIR"
        bootstrap
    fi
    pid_of mon.a >/dev/null || daemon ceph-mon -c "$CONF" -i a
    pid_of osd.0 >/dev/null || daemon ceph-osd -c "$CONF" -i 0
    wait_for "osd.0" osd_up
    if ! pid_of client.rgw.a >/dev/null; then
        fence_dead_gateway
        # A gateway killed with -9 leaves its pid file and socket behind; both are safe to drop.
        rm -f "$DIR/run/client.rgw.a.pid" "$DIR/run/client.rgw.a.asok"
        daemon radosgw -c "$CONF" -n client.rgw.a
    fi
    wait_for "radosgw on 127.0.0.1:$PORT" gw_answers
    ensure_user
    log "ready in $((SECONDS - t0))s"
    print_env
}

stop() {
    local d pid
    for d in client.rgw.a osd.0 mon.a; do
        pid=$(pid_of "$d") || continue
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        log "stopped $d ($pid)"
    done
    return 0
}

status() {
    local d ok=0
    for d in mon.a osd.0 client.rgw.a; do
        if pid=$(pid_of "$d"); then echo "$d: running (pid $pid)"; else echo "$d: stopped"; ok=1; fi
    done
    if gw_answers; then echo "gateway: answering on http://127.0.0.1:$PORT"; else echo "gateway: not answering"; ok=1; fi
    return $ok
}

print_env() {
    cat <<EOF
AOF_S3_ENDPOINT=http://127.0.0.1:$PORT
AOF_S3_ACCESS_KEY=$ACCESS_KEY
AOF_S3_SECRET_KEY=$SECRET_KEY
AOF_S3_REGION=us-east-1
EOF
}

case "$cmd" in
install) install_pkgs ;;
start) start ;;
stop) stop ;;
status) status ;;
env) print_env ;;
gw-pid) pid_of client.rgw.a || die "radosgw not running" ;;
wipe) stop; rm -rf "$DIR"; log "removed $DIR" ;;
*) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
