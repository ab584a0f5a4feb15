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
hosts_line="127.0.0.1 n1 n2 # ftlaunch-test-cluster"
munge=""
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

stop_pidfile() {
    local file=$1 pid
    [ -f "$file" ] || return 0
    pid=$(cat "$file" 2>/dev/null || true)
    rm -f "$file"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
}

stop() {
    for daemon in slurmd-n2 slurmd-n1 slurmctld slurmdbd mariadb; do
        stop_pidfile "$dir/run/$daemon.pid"
    done
    if [ -f "$dir/munge.path" ]; then
        munge=$(cat "$dir/munge.path")
        stop_pidfile "$munge/munged.pid"
        case "$munge" in /tmp/ftlaunch-munge.*) rm -rf "$munge" ;; esac
        rm -f "$dir/munge.path"
    fi
    if grep -qF "$hosts_line" /etc/hosts 2>/dev/null; then
        grep -vF "$hosts_line" /etc/hosts >"$dir/hosts.new" || true
        cat "$dir/hosts.new" >/etc/hosts  # /etc/hosts may be a bind mount: rewrite, never replace
        rm -f "$dir/hosts.new"
    fi
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
    local cpus
    cpus=$(nproc)
    cat >"$dir/slurm.conf" <<CONF
ClusterName=ftlaunch
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
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
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,bf_interval=1
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
AccountingStoragePort=16819
AccountingStoragePass=$munge/munge.socket
JobAcctGatherType=jobacct_gather/none
NodeName=n[1-2] NodeHostname=$(hostname) NodeAddr=127.0.0.1 Port=[17001-17002] CPUs=$cpus RealMemory=4000 State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    cat >"$dir/slurmdbd.conf" <<CONF
AuthType=auth/munge
AuthInfo=socket=$munge/munge.socket
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=16819
SlurmUser=root
PidFile=$dir/run/slurmdbd.pid
LogFile=$dir/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=16820
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
    mariadbd --user=root --datadir="$dir/db" --socket="$dir/run/mysql.sock" --port=16820 \
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
