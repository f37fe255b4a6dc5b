#!/usr/bin/env bash
# Multi-host deploy test (`make deploy-test-multihost`, also run by `make deploy-test`;
# tests/deploy/test_multihost.py runs it under pytest):
#   1. the hosts' base image (debootstrap + podman import; cached by tag) and the podman
#      connection plugin (from the `ansible` wheel; cached)
#   2. four containers as the hosts of deploy/inventories/multi-host, at the example's own
#      addresses on two podman networks (public 198.51.100.0/24, private 10.0.0.0/24)
#   3. the example copied out as an operator would, the hosts pointed at the containers,
#      a few test values (addresses for names, the test CA's certificates, yv-direct)
#   4. converge deploy/site.yml, then a second converge that must report changed=0 on every host
#   5. verify from this machine (tests/deploy/podman/verify_multihost.py)
#   6. teardown (trap): containers, networks, what netavark left in the ruleset; this
#      machine's ruleset, addresses and routes must be as before.
# Timings go to tests/artifacts/deploy/multihost-timings.json and are printed at the end.
set -euo pipefail
# The whole script is one compound command: bash reads it before running any of it, so an
# edit of this file during a run does not change the run.
{
cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
ARTIFACTS=$ROOT/tests/artifacts/deploy

if [ "$(id -u)" != 0 ]; then
  echo "deploy-test-multihost: SKIPPED: needs root (podman networks and containers)"
  exit 0
fi
for tool in podman debootstrap runc nft "$BIN/ansible-playbook"; do
  command -v "$tool" >/dev/null || { echo "deploy-test-multihost: SKIPPED: missing $tool"; exit 0; }
done
# shellcheck source=podman/hosts.sh
. tests/deploy/podman/hosts.sh

# Podman networks change this machine's ruleset and addresses: the same lock as run.sh,
# which compares them before and after (waits while another deploy test runs).
exec 9>/run/yahaml-voice-deploy-test.lock
flock -n 9 || { echo "deploy-test-multihost: waiting for another deploy test"; flock 9; }

WORK=$(mktemp -d /tmp/yv-multihost.XXXXXX)
mkdir -p "$ARTIFACTS"
export ANSIBLE_CONFIG=$ROOT/deploy/ansible.cfg
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
export PATH=$BIN:$PATH

declare -a TIMES=()
T0=$(date +%s.%N)
LAST=$T0
lap() { # name: record the time since the previous lap
  local now
  now=$(date +%s.%N)
  TIMES+=("$1=$(awk -v a="$now" -v b="$LAST" 'BEGIN { printf "%.2f", a - b }')")
  LAST=$now
}

net_state() { nft -s list ruleset 2>/dev/null; ip -br addr; ip route; ip -6 route; }
net_tables() { nft list tables 2>/dev/null | sort; }
NET_BEFORE=$(net_state | sha256sum)
TABLES_BEFORE=$(net_tables)
FORWARD_BEFORE=$(sysctl -n net.ipv4.ip_forward)

cleanup() {
  local rc=$?
  set +e
  LAST=$(date +%s.%N)
  for entry in "${HOSTS[@]}"; do  # the hosts' service logs, for a failed run
    read -r name _ <<<"$entry"
    "${PODMAN[@]}" exec "$name" sh -c 'tail -n 200 /var/log/yahaml-voice/*.log /var/log/turnserver/*.log /var/log/nginx/error.log 2>/dev/null' \
      >"$ARTIFACTS/multihost-$name.log" 2>&1
  done
  hosts_down
  # netavark leaves its (empty) iptables-nft tables behind: drop the ones it added.
  comm -13 <(echo "$TABLES_BEFORE") <(net_tables) | while read -r _ family name; do
    nft delete table "$family" "$name"
  done
  sysctl -qw net.ipv4.ip_forward="$FORWARD_BEFORE"
  if [ "$(net_state | sha256sum)" != "$NET_BEFORE" ]; then
    echo "FAIL the machine's networking (nft ruleset, addresses, routes) changed" >&2
    rc=1
  else
    echo "ok   the machine's nft ruleset, addresses and routes are unchanged"
  fi
  cp -f "$WORK"/*.log "$ARTIFACTS"/ 2>/dev/null
  rm -rf "$WORK"
  lap teardown
  local total json=""
  total=$(awk -v a="$(date +%s.%N)" -v b="$T0" 'BEGIN { printf "%.2f", a - b }')
  echo "--- timings (s):"
  for t in "${TIMES[@]}"; do
    printf '  %-22s %6.1f\n' "${t%%=*}" "${t#*=}"
    json+="\"${t%%=*}\": ${t#*=}, "
  done
  printf '  %-22s %6.1f\n' total "$total"
  echo "{${json}\"total\": $total, \"result\": $rc}" >"$ARTIFACTS/multihost-timings.json"
  if [ "$rc" = 0 ]; then echo "deploy-test-multihost: PASSED"; else echo "deploy-test-multihost: FAILED (logs in $ARTIFACTS)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 143' TERM INT  # a stopped run still tears the hosts and networks down
# Left over from an interrupted run: containers and networks of this test only.
hosts_down

echo "--- 1. base image and the podman connection plugin"
bash tests/deploy/podman/image.sh
ANSIBLE_COLLECTIONS_PATH=$(PY=$BIN/python bash tests/deploy/podman/collection.sh)
export ANSIBLE_COLLECTIONS_PATH
lap image

echo "--- 2. the site's CA and certificates, the containers as hosts"
mkdir -p "$WORK/tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=yahaml-voice multihost test CA" -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.crt" 2>/dev/null
issue() { # name address: a certificate of the test CA for the address
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$2" \
    -keyout "$WORK/tls/$1.key" -out "$WORK/tls/$1.csr" 2>/dev/null
  openssl x509 -req -in "$WORK/tls/$1.csr" -CA "$WORK/tls/ca.crt" -CAkey "$WORK/tls/ca.key" \
    -CAcreateserial -days 2 -extfile <(printf 'subjectAltName=IP:%s\n' "$2") \
    -out "$WORK/tls/$1.crt" 2>/dev/null
}
issue proxy 198.51.100.10
issue turn 198.51.100.20
hosts_up "$WORK"
lap hosts

echo "--- 3. the example inventory, copied out and pointed at the containers"
cp -r deploy/inventories/multi-host "$WORK/inventory"
# An operator's edit: each host is its container, reached by podman as root (not by
# ssh as admin). In hosts.ini, not in -e: extra vars would send the playbook's
# delegate_to: localhost tasks into a container too.
for entry in "${HOSTS[@]}"; do
  read -r name hostname public _ <<<"$entry"
  sed -i "s/^$hostname ansible_host=$public /$hostname ansible_host=$name ansible_connection=containers.podman.podman /" \
    "$WORK/inventory/hosts.ini"
done
sed -i 's/^ansible_user=admin$/ansible_user=root/' "$WORK/inventory/hosts.ini"
if grep -q 'ansible_host=198' "$WORK/inventory/hosts.ini" || ! grep -q '^ansible_user=root$' "$WORK/inventory/hosts.ini"; then
  echo "FAIL hosts.ini of the example does not list the hosts as expected" >&2
  exit 1
fi
mkdir -p "$WORK/src"
cp -a pyproject.toml README.md yahaml_voice server sfu client coturn "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$WORK/src/client/node_modules"
# The test's values: containers reached by podman as root, services by yv-direct, names
# replaced by addresses (no DNS here), the test CA's certificates instead of Let's
# Encrypt, and a room that goes SFU with two people. The TURN host is not behind NAT here:
# no external_ip mapping.
cat >"$WORK/vars.json" <<JSON
{
  "ansible_become": false,
  "ansible_python_interpreter": "/usr/bin/python3",
  "yahaml_voice_service_manager": "direct",
  "yahaml_voice_domain": "198.51.100.10",
  "yahaml_voice_turn_domain": "198.51.100.20",
  "yahaml_voice_letsencrypt_email": "",
  "yahaml_voice_turn_host_overrides": {},
  "yahaml_voice_secrets_dir": "$WORK/secrets",
  "yahaml_voice_source_dir": "$WORK/src",
  "coturn_template": "$WORK/src/coturn/turnserver.conf.j2",
  "proxy_tls_cert_src": "$WORK/tls/proxy.crt",
  "proxy_tls_key_src": "$WORK/tls/proxy.key",
  "coturn_tls_cert_src": "$WORK/tls/turn.crt",
  "coturn_tls_key_src": "$WORK/tls/turn.key",
  "yahaml_voice_rooms": [
    {"id": "shack", "name": "Shack", "max_participants": 100},
    {"id": "net", "name": "Club net", "max_participants": 300, "sfu_threshold": 2}
  ]
}
JSON

converge() { # log name
  local log=$WORK/$1.log
  if ! ANSIBLE_LOG_PATH=$WORK/$1.timed.log ansible-playbook -i "$WORK/inventory/hosts.ini" \
    deploy/site.yml -e "@$WORK/vars.json" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "FAIL $1: ansible-playbook failed (full log in $ARTIFACTS/$1.log)" >&2
    exit 1
  fi
  sed -n '/PLAY RECAP/,$p' "$log" | grep -E ' : ok=' | tee "$WORK/$1.recap"
}

echo "--- 4. converge the four hosts"
converge multihost-converge1
lap converge1
converge multihost-converge2
if grep -vqE 'changed=0 .*failed=0' "$WORK/multihost-converge2.recap" \
  || [ "$(wc -l <"$WORK/multihost-converge2.recap")" != 4 ]; then
  echo "FAIL the second converge changed something:" >&2
  grep -B1 '^changed' "$WORK/multihost-converge2.log" >&2 || true
  exit 1
fi
echo "ok   idempotent: changed=0 on every host"
lap converge2

echo "--- 5. verify from this machine"
cat >"$WORK/verify.json" <<JSON
{
  "ca": "$WORK/tls/ca.crt",
  "secrets_dir": "$WORK/secrets",
  "podman": ["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"],
  "signal": "yvmh-signal",
  "sfu_hosts": {"yvmh-sfu1": ["198.51.100.11", "10.0.0.11"], "yvmh-sfu2": ["198.51.100.12", "10.0.0.12"]},
  "proxy": "198.51.100.10",
  "turn": "198.51.100.20",
  "redis": "10.0.0.10",
  "client_ip": "$GATEWAY_PUBLIC",
  "private_peer": "10.0.0.11"
}
JSON
VERIFIED=0
"$BIN/python" tests/deploy/podman/verify_multihost.py "$WORK/verify.json" || VERIFIED=$?
lap verify
# Debugging: YVMH_HOLD=<file> keeps the hosts (and the lock) after a failed verify while
# the file exists: `python tests/deploy/podman/verify_multihost.py <work>/verify.json`.
while [ "$VERIFIED" != 0 ] && [ -n "${YVMH_HOLD:-}" ] && [ -e "$YVMH_HOLD" ]; do sleep 5; done
[ "$VERIFIED" = 0 ] || exit 1
exit
}
