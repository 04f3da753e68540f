#!/usr/bin/env bash
# A real, single-machine SLURM cluster for testing the cluster path (launch.py --launcher slurm):
# slurmctld, two slurmd (a node with fake GPUs and a CPU-only node), munge, and accounting through
# slurmdbd + MariaDB, all from Debian's packages, started without systemd. Root only.
#
#   scripts/local_slurm.sh install    apt-get install the packages (slurmctld slurmd slurm-client
#                                     munge slurmdbd mariadb-server)
#   scripts/local_slurm.sh up         write the configuration under $LOCAL_SLURM_DIR and start the
#                                     daemons (idempotent: a running cluster is left as it is)
#   scripts/local_slurm.sh down       stop the daemons this script started
#   scripts/local_slurm.sh env        print `export SLURM_CONF=...` for the shell that uses it
#
# The cluster (ClusterName avatar-test):
#   node gpunode: 4 CPUs, gres gpu:2 (counted, no device files: jobs that ask for GPUs are
#                 scheduled, and SLURM sets CUDA_VISIBLE_DEVICES, but there is no GPU behind it)
#   node cpunode: 2 CPUs, no GPU
#   partitions:   gpu (gpunode, default), cpu (cpunode), urgent (gpunode, PriorityTier 10: a job there
#                 preempts gpu jobs, which SLURM requeues: PreemptMode=REQUEUE)
# The nodes claim more CPUs than the machine may have (SlurmdParameters=config_overrides): it is a
# scheduler for tests, not a way to share the machine.
#
# Nothing outside $LOCAL_SLURM_DIR (default /tmp/avatar-slurm) is written, apart from MariaDB's own
# data directory, which runs from a private copy under $LOCAL_SLURM_DIR too. Exit status: 0 up and
# answering, 1 a daemon did not come up (its log is printed), 3 cannot run here (not root, or a
# package missing): the reason is the one line on stderr.
set -euo pipefail

DIR="${LOCAL_SLURM_DIR:-/tmp/avatar-slurm}"
CLUSTER=avatar-test
HOST="$(hostname -s)"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
CTLD_PORT=6817
DBD_PORT=6819
NODE_PORTS=(gpunode:6831 cpunode:6832)

cannot() { echo "local_slurm: $*" >&2; exit 3; }

need_root() {
    [[ $(id -u) -eq 0 ]] || cannot "needs root (it starts slurmctld, slurmd, munged and MariaDB as system daemons)"
}

need_packages() {
    local tool
    for tool in slurmctld slurmd slurmdbd munged mariadbd mariadb-install-db sbatch sacct; do
        command -v "$tool" >/dev/null 2>&1 || PATH="$PATH:/usr/sbin" command -v "$tool" >/dev/null 2>&1 \
            || cannot "$tool not found: run 'scripts/local_slurm.sh install' (apt-get install ${PACKAGES[*]})"
    done
}

write_configs() {
    mkdir -p "$DIR"/{state,spool,log,run,munge}
    cat > "$DIR/slurm.conf" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$HOST
SlurmctldPort=$CTLD_PORT
SlurmdPort=${NODE_PORTS[0]#*:}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
ReturnToService=2
SlurmdParameters=config_overrides
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# Quick turnaround for tests: short waits between SIGTERM and SIGKILL, and between a job's end and
# its record leaving slurmctld (sacct keeps it).
KillWait=10
MinJobAge=60
SchedulerParameters=bf_interval=5
MessageTimeout=20
# Jobs in partition urgent requeue those in gpu (partition priority tiers).
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
JobRequeue=1
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=$HOST
AccountingStoragePort=$DBD_PORT
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
NodeName=gpunode NodeHostname=$HOST NodeAddr=127.0.0.1 Port=${NODE_PORTS[0]#*:} CPUs=4 RealMemory=4000 Gres=gpu:2 State=UNKNOWN
NodeName=cpunode NodeHostname=$HOST NodeAddr=127.0.0.1 Port=${NODE_PORTS[1]#*:} CPUs=2 RealMemory=4000 State=UNKNOWN
PartitionName=gpu Nodes=gpunode Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=cpu Nodes=cpunode MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=gpunode MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF
EOF
    # SLURM counts a GPU only with a device file: two character devices that are /dev/null's twins.
    mkdir -p "$DIR/dev"
    local i
    for i in 0 1; do [[ -c "$DIR/dev/gpu$i" ]] || mknod "$DIR/dev/gpu$i" c 1 3; done
    cat > "$DIR/gres.conf" <<EOF
NodeName=gpunode Name=gpu File=$DIR/dev/gpu[0-1]
EOF
    cat > "$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$HOST
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StoragePort=3306
StorageLoc=slurm_acct_db
StorageUser=root
EOF
    # slurmdbd refuses a configuration others can read (it may hold the database password).
    chmod 600 "$DIR/slurmdbd.conf"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND... : poll until COMMAND succeeds
    local seconds=$1 what=$2; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        if (( SECONDS > deadline )); then
            echo "local_slurm: $what did not come up within ${seconds} s" >&2
            return 1
        fi
        sleep 0.5
    done
}

start_munge() {
    if pgrep -x munged >/dev/null; then return; fi
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- /usr/sbin/munged
    wait_for 20 munged munge -n
}

start_mariadb() {
    local sock="$DIR/run/mysqld.sock"
    if [[ -S "$sock" ]] && mariadb --socket="$sock" -e 'select 1' >/dev/null 2>&1; then return; fi
    if [[ ! -d "$DIR/mysql/mysql" ]]; then
        mkdir -p "$DIR/mysql"; chown mysql:mysql "$DIR/mysql"
        mariadb-install-db --user=mysql --datadir="$DIR/mysql" --auth-root-authentication-method=socket \
            >"$DIR/log/mariadb-install.log" 2>&1 || { cat "$DIR/log/mariadb-install.log" >&2; return 1; }
    fi
    chown mysql:mysql "$DIR/run"
    (setsid mariadbd --user=mysql --datadir="$DIR/mysql" --socket="$sock" --skip-networking \
        --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" </dev/null >/dev/null 2>&1 &)
    wait_for 60 MariaDB mariadb --socket="$sock" -e 'select 1' || { tail -20 "$DIR/log/mariadb.log" >&2; return 1; }
    # slurmdbd talks to it as root over the socket (root authenticates by its Unix user).
    mkdir -p /run/mysqld; ln -sf "$sock" /run/mysqld/mysqld.sock
}

daemon_running() {  # daemon_running PIDFILE
    [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

start_slurm() {
    export SLURM_CONF="$DIR/slurm.conf"
    if ! daemon_running "$DIR/run/slurmdbd.pid"; then
        slurmdbd </dev/null  # reads slurmdbd.conf beside $SLURM_CONF
        wait_for 30 slurmdbd sacctmgr -i -n list cluster \
            || { tail -20 "$DIR/log/slurmdbd.log" >&2; return 1; }
    fi
    sacctmgr -i -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
    if ! daemon_running "$DIR/run/slurmctld.pid"; then
        # -c: a clean start (no jobs or node states kept from an earlier run of the test cluster)
        slurmctld -c -f "$SLURM_CONF" </dev/null
    fi
    wait_for 30 slurmctld scontrol ping || { tail -20 "$DIR/log/slurmctld.log" >&2; return 1; }
    local node
    for node in "${NODE_PORTS[@]}"; do
        node=${node%%:*}
        daemon_running "$DIR/run/slurmd-$node.pid" || slurmd -f "$SLURM_CONF" -N "$node" </dev/null
    done
    wait_for 30 "the nodes" nodes_idle || { sinfo >&2; tail -n 20 "$DIR"/log/slurmd-*.log >&2; return 1; }
}

nodes_idle() {  # every node answers (idle, mixed or allocated; not down or unknown)
    local states
    states=$(sinfo -h -N -o '%t' 2>/dev/null) || return 1
    [[ -n "$states" ]] && ! grep -qvE '^(idle|mix|alloc)$' <<<"$states"
}

stop_all() {  # in reverse order of start, each waited for (a restart must not find it half down)
    local pidfile pid
    for pidfile in "$DIR"/run/slurmd-*.pid "$DIR/run/slurmctld.pid" "$DIR/run/slurmdbd.pid" "$DIR/run/mariadb.pid"; do
        daemon_running "$pidfile" || continue
        pid=$(cat "$pidfile")
        kill "$pid" 2>/dev/null || true
        wait_for 30 "the end of pid $pid ($pidfile)" bash -c "! kill -0 $pid" || kill -9 "$pid" 2>/dev/null || true
    done
}

case "${1:-}" in
    install)
        need_root
        command -v apt-get >/dev/null || cannot "apt-get not found (install ${PACKAGES[*]} with this system's package manager)"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}" >/dev/null 2>&1 \
            || { DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${PACKAGES[@]}" >/dev/null 2>&1; } \
            || cannot "apt-get install ${PACKAGES[*]} failed"
        ;;
    up)
        need_root; need_packages
        write_configs
        start_munge
        start_mariadb
        start_slurm
        echo "local_slurm: up (cluster $CLUSTER: partitions gpu, cpu, urgent); export SLURM_CONF=$DIR/slurm.conf"
        ;;
    down)
        stop_all
        echo "local_slurm: stopped"
        ;;
    env)
        echo "export SLURM_CONF=$DIR/slurm.conf"
        ;;
    *)
        echo "usage: scripts/local_slurm.sh install|up|down|env  (see the top of this file)" >&2
        exit 2
        ;;
esac
