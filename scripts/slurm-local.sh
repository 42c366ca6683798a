#!/usr/bin/env bash
# A one-node SLURM cluster on this machine (slurmctld + slurmd on localhost), for the tests of
# `microscale sweep --slurm` and for trying it out. Real SLURM (Debian's slurmctld, slurmd and
# slurm-client, 22.05 on bookworm), no munge and no systemd: auth/none, one node with the CPUs
# and memory `slurmd -C` reports.
#
#   scripts/slurm-local.sh start   # install if missing (apt-get, as root), configure, start, wait
#                                  # until the node is idle; prints the SLURM_CONF to export
#   scripts/slurm-local.sh stop    # scontrol shutdown, wait for both daemons to exit
#   scripts/slurm-local.sh conf    # print the SLURM_CONF path
#
# Everything lives under $MICROSCALE_SLURM_DIR (default /var/tmp/microscale-slurm): slurm.conf,
# state, spool, logs, pid files. No system file is touched, so a machine with a real
# /etc/slurm/slurm.conf keeps it: commands reach this cluster only with SLURM_CONF set to ours.
set -euo pipefail

dir=${MICROSCALE_SLURM_DIR:-/var/tmp/microscale-slurm}
conf=$dir/slurm.conf
export SLURM_CONF=$conf
# How long the daemons get to come up and go down (seconds).
wait_s=${MICROSCALE_SLURM_WAIT:-60}

die() { echo "error: slurm-local: $*" >&2; exit 1; }

install_slurm() {
  local missing=()
  command -v slurmctld >/dev/null 2>&1 || missing+=(slurmctld)
  command -v slurmd >/dev/null 2>&1 || missing+=(slurmd)
  command -v sbatch >/dev/null 2>&1 || missing+=(slurm-client)
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "slurm-local: installing ${missing[*]} with apt-get" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
      || die "apt-get could not install ${missing[*]}"
    return 0
  fi
  die "the SLURM tests need ${missing[*]}: run \`sudo apt-get install -y --no-install-recommends ${missing[*]}\` (Debian/Ubuntu), then run this command again"
}

# The node as slurmd sees it: CPUs and RealMemory must not exceed what `slurmd -C` reports.
write_conf() {
  local probe cpus mem user
  probe=$(slurmd -C 2>/dev/null | head -n1) || die "\`slurmd -C\` failed: cannot read this machine's CPUs and memory"
  cpus=$(sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' <<<"$probe")
  mem=$(sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' <<<"$probe")
  [ -n "$cpus" ] && [ -n "$mem" ] || die "cannot parse \`slurmd -C\`: $probe"
  user=$(id -un)
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat >"$conf.tmp" <<EOF
# Written by microscale's scripts/slurm-local.sh: a one-node cluster on localhost.
ClusterName=microscale-local
SlurmctldHost=localhost
SlurmctldPort=${MICROSCALE_SLURMCTLD_PORT:-6817}
SlurmdPort=${MICROSCALE_SLURMD_PORT:-6818}
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/none
CredType=cred/none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MinJobAge=600
MailProg=/bin/true
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  mv "$conf.tmp" "$conf"
}

node_state() { timeout 10 sinfo -h -o %T 2>/dev/null | head -n1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

start() {
  install_slurm
  if alive "$dir/slurmctld.pid" && alive "$dir/slurmd.pid"; then
    case "$(node_state)" in idle* | mixed* | alloc*) echo "$conf"; return 0 ;; esac
  fi
  stop >/dev/null 2>&1 || true
  write_conf
  slurmctld -i -f "$conf" || die "slurmctld did not start: see $dir/log/slurmctld.log"
  slurmd -f "$conf" -N localhost || die "slurmd did not start: see $dir/log/slurmd.log"
  local state=""
  for _ in $(seq "$wait_s"); do
    state=$(node_state)
    case "$state" in idle* | mixed* | alloc*) echo "$conf"; return 0 ;; esac
    sleep 1
  done
  echo "slurm-local: the node is not idle after ${wait_s}s (state: ${state:-no answer}); last log lines:" >&2
  tail -n 5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 2>/dev/null || true
  stop >/dev/null 2>&1 || true
  die "the local cluster did not come up"
}

stop() {
  [ -f "$conf" ] || return 0
  timeout 10 scontrol shutdown >/dev/null 2>&1 || true
  for _ in $(seq "$wait_s"); do
    alive "$dir/slurmctld.pid" || alive "$dir/slurmd.pid" || { rm -f "$dir"/*.pid; return 0; }
    sleep 1
  done
  # Still up after a shutdown request: end the daemons this script started, by their pids.
  for p in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do
    alive "$p" && kill -9 "$(cat "$p")" 2>/dev/null || true
  done
  rm -f "$dir"/*.pid
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  conf) echo "$conf" ;;
  *) die "usage: scripts/slurm-local.sh start|stop|conf" ;;
esac
