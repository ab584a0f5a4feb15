#!/usr/bin/env bash
# A real SLURM cluster on this machine, for the tests: munge, MariaDB, slurmdbd, slurmctld and two
# slurmd nodes (n1, n2) on loopback, everything under one folder and stopped by PID.
#
#   tests/slurm/cluster.sh start DIR    # prints "export SLURM_CONF=DIR/slurm.conf" last
#   tests/slurm/cluster.sh stop DIR
#
# Installs Debian's packages when missing (needs root). See ../shared/reference/slurm-facts.md.
set -euo pipefail

cmd=${1:?usage: cluster.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: cluster.sh start|stop DIR}")
hosts_line="127.0.0.1 n1 n2 # ftlaunch-test-cluster $dir"  # each cluster removes only its own line
munge=""
db_port=""  # MariaDB's, set with the others in write_configs
packages=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)

log() { echo "cluster.sh: $*" >&2; }

install_packages() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null &&
        command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && command -v munged >/dev/null; then
        return
    fi
    [ "$(id -u)" = 0 ] || { log "SLURM is not installed and installing it needs root"; exit 3; }
    log "installing ${packages[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

alive() {  # a zombie (exited, not yet reaped by this sandbox's init) counts as gone
    [ -n "$1" ] && [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

stop() {
    # TERM every daemon at once, then wait for all of them, then KILL what is left: by PID only.
    local pids=() file pid
    [ -f "$dir/munge.path" ] && munge=$(cat "$dir/munge.path")
    if [ -f "$dir/run/slurmctld.pid" ] && alive "$(cat "$dir/run/slurmctld.pid")"; then
        # Jobs still running (a test that was interrupted) would outlive slurmd in their slurmstepd.
        SLURM_CONF="$dir/slurm.conf" scancel --quiet --user=root 2>/dev/null || true
        for _ in $(seq 50); do
            [ -z "$(SLURM_CONF="$dir/slurm.conf" squeue -h 2>/dev/null)" ] && break
            sleep 0.2
        done
    fi
    for file in "$dir"/run/*.pid ${munge:+"$munge/munged.pid"}; do
        [ -f "$file" ] || continue
        pid=$(cat "$file" 2>/dev/null || true)
        rm -f "$file"
        alive "$pid" && pids+=("$pid") && kill -TERM "$pid" 2>/dev/null || true
    done
    for _ in $(seq 100); do
        local left=0
        for pid in "${pids[@]}"; do alive "$pid" && left=1; done
        [ $left = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do alive "$pid" && kill -KILL "$pid" 2>/dev/null || true; done
    case "$munge" in /tmp/ftlaunch-munge.*) rm -rf "$munge" ;; esac
    rm -f "$dir/munge.path"
    if grep -qF "$hosts_line" /etc/hosts 2>/dev/null; then
        grep -vF "$hosts_line" /etc/hosts >"$dir/hosts.new" || true
        cat "$dir/hosts.new" >/etc/hosts  # /etc/hosts may be a bind mount: rewrite, never replace
        rm -f "$dir/hosts.new"
    fi
}

free_ports() {  # free_ports N: N free TCP ports on loopback, one a line
    python3 - "$1" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
}

wait_until() {  # wait_until SECONDS WHAT COMMAND...
    local seconds=$1 what=$2
    shift 2
    for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    log "timed out waiting for $what; last log lines:"
    tail -n 20 "$dir"/log/*.log ${munge:+"$munge/munged.log"} >&2 || true
    exit 1
}

write_configs() {
    local cpus ctld_port dbd_port n1_port n2_port
    cpus=$(nproc)
    # Ports picked free at start, so a second cluster (another session, a leftover) cannot clash.
    { read -r ctld_port; read -r dbd_port; read -r n1_port; read -r n2_port; read -r db_port; } < <(free_ports 5)
    cat >"$dir/slurm.conf" <<CONF
ClusterName=ftlaunch
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge/munge.socket,cred_expire=10
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,sched_interval=2,bf_interval=1
ReturnToService=2
JobRequeue=1
KillWait=2
MinJobAge=300
MpiDefault=none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd-%n.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd-%n.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$dbd_port
AccountingStoragePass=$munge/munge.socket
JobAcctGatherType=jobacct_gather/none
NodeName=n1 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$n1_port CPUs=$cpus RealMemory=4000 State=UNKNOWN
NodeName=n2 NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=$n2_port CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    cat >"$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$dbd_port
SlurmUser=root
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$db_port
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
CONF
    chmod 600 "$dir/slurmdbd.conf"
}

start_munge() {
    # munged runs as user munge, which cannot enter a private DIR (pytest's are 0700): its key,
    # socket, pid and log live in a folder of its own under /tmp, recorded in DIR/munge.path.
    [ -f "$munge/munge.key" ] || mungekey -c -k "$munge/munge.key" >/dev/null
    chown -R munge "$munge"
    chmod 755 "$munge"
    chmod 400 "$munge/munge.key"
    runuser -u munge -- munged --socket="$munge/munge.socket" --key-file="$munge/munge.key" \
        --pid-file="$munge/munged.pid" --log-file="$munge/munged.log" --seed-file="$munge/seed" --force
    wait_until 10 munged test -S "$munge/munge.socket"
}

start_mariadb() {
    if [ ! -d "$dir/db/mysql" ]; then
        mariadb-install-db --user=root --datadir="$dir/db" --auth-root-authentication-method=normal \
            >"$dir/log/mariadb-install.log" 2>&1
    fi
    mariadbd --user=root --datadir="$dir/db" --socket="$dir/run/mysql.sock" --port="$db_port" \
        --bind-address=127.0.0.1 --pid-file="$dir/run/mariadb.pid" --log-error="$dir/log/mariadb.log" \
        --skip-grant-tables=0 >/dev/null 2>&1 &
    wait_until 30 mariadb mariadb --socket="$dir/run/mysql.sock" -uroot -e "select 1"
    mariadb --socket="$dir/run/mysql.sock" -uroot -e \
        "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
         CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
         GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
}

start() {
    install_packages
    if [ -f "$dir/run/slurmctld.pid" ] && kill -0 "$(cat "$dir/run/slurmctld.pid")" 2>/dev/null; then
        log "a cluster is already running in $dir; stop it first"
        exit 1
    fi
    mkdir -p "$dir"/{state,spool/n1,spool/n2,run,log,db}
    munge=$(mktemp -d /tmp/ftlaunch-munge.XXXXXX)
    echo "$munge" >"$dir/munge.path"
    export SLURM_CONF="$dir/slurm.conf"
    write_configs
    grep -qF "$hosts_line" /etc/hosts || echo "$hosts_line" >>/etc/hosts
    start_munge
    start_mariadb
    slurmdbd
    wait_until 30 slurmdbd sacctmgr -n list cluster
    sacctmgr -i add cluster ftlaunch >/dev/null 2>&1 || true
    slurmctld -i
    wait_until 30 slurmctld scontrol ping
    slurmd -N n1
    slurmd -N n2
    wait_until 60 "both nodes idle" bash -c '[ "$(sinfo -h -N -o %T | grep -c "^idle")" = 2 ]'
    log "cluster up in $dir (partition debug, nodes n1 n2)"
    echo "export SLURM_CONF=$dir/slurm.conf"
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: cluster.sh start|stop DIR" >&2; exit 2 ;;
esac
