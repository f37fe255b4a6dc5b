#!/usr/bin/env bash
# Deploy test (`make deploy-test`; tests/deploy/test_deploy.py runs it under pytest):
#   1. ansible-lint (production profile) and --syntax-check of the example inventories
#   2. a real converge of deploy/site.yml on THIS machine (local connection, services run
#      by yv-direct because systemd is not PID 1 here), bound to loopback on free ports;
#      the firewall is only rendered and checked with `nft -c`, never loaded
#      under `umask 077` (the roles set every owner and mode themselves). It installs
#      the PREVIOUS release (v0.1.0 built as `make release` does, install source
#      `release`) over a faked older layout (/opt/yahaml-voice/venv, dist/: migrated)
#   3. the upgrade to the checkout's release (install source wheel) with two clients in an
#      SFU room: seats kept, audio back, the audio gap measured; then a second converge
#      that must report changed=0, then `--check --diff` that must too
#   4. verify.py against what was deployed, plus coturn rendered with the production rules;
#      then a rollback (-e yahaml_voice_rollback=true) to the previous release and the
#      roll forward (the same again) with yahaml_voice_keep_releases=1 (pruned to one)
#   5. deploy/uninstall.yml, then `--check --diff` on the uninstalled host (a fresh host
#      but for the Debian packages), then nothing of the deploy may be left (users,
#      units, directories, configs; the ruleset file back from the firewall's backup)
#   6. teardown (trap): stop every service the converge started, drop the work dir.
# Timings go to tests/artifacts/deploy/timings.json and are printed at the end.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
BIN=$ROOT/.venv/bin
ARTIFACTS=$ROOT/tests/artifacts/deploy

if [ "$(id -u)" != 0 ]; then
  echo "deploy-test: SKIPPED: needs root (it converges this machine: packages, users, services)"
  exit 0
fi
for tool in "$BIN/ansible-playbook" "$BIN/ansible-lint" nft turnserver start-stop-daemon ss; do
  command -v "$tool" >/dev/null || { echo "deploy-test: missing $tool" >&2; exit 1; }
done

# One deploy test at a time on a machine: they share /etc and the service names.
exec 9>/run/yahaml-voice-deploy-test.lock
flock -n 9 || { echo "deploy-test: another deploy test is running" >&2; exit 1; }

WORK=$(mktemp -d /tmp/yv-deploy-test.XXXXXX)
chmod 0711 "$WORK"
mkdir -p "$ARTIFACTS"
export ANSIBLE_CONFIG=$ROOT/deploy/ansible.cfg
export ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0 PY_COLORS=0
export PATH=$BIN:$PATH

declare -a TIMES=() MEASURES=()
T0=$(date +%s.%N)
LAST=$T0
lap() { # name: record the time since the previous lap
  local now
  now=$(date +%s.%N)
  TIMES+=("$1=$(awk -v a="$now" -v b="$LAST" 'BEGIN { printf "%.2f", a - b }')")
  LAST=$now
}

POLICY_RC=/usr/sbin/policy-rc.d
OWN_POLICY=0
# -s (stateless): no packet counters, which change on their own wherever a rule counts.
net_state() { { nft -s list ruleset 2>/dev/null; ip -br addr; ip route; ip -6 route; } | sha256sum; }
NET_BEFORE=$(net_state)

cleanup() {
  local rc=$?
  set +e
  if [ -x /usr/local/sbin/yv-direct ]; then
    echo "--- teardown: stopping what the converge started"
    /usr/local/sbin/yv-direct stop-all
  fi
  [ "$OWN_POLICY" = 1 ] && rm -f "$POLICY_RC"
  local net_after
  net_after=$(net_state)
  if [ "$net_after" != "$NET_BEFORE" ]; then
    echo "FAIL the machine's networking (nft ruleset, addresses, routes) changed" >&2
    rc=1
  else
    echo "ok   the machine's nft ruleset, addresses and routes are unchanged"
  fi
  cp -f "$WORK"/*.log "$ARTIFACTS"/ 2>/dev/null
  for f in /var/log/yahaml-voice/*.log /var/log/turnserver/turnserver.log /var/log/nginx/error.log; do
    [ -f "$f" ] && tail -n 200 "$f" >"$ARTIFACTS/host-$(basename "$f")"
  done
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
  for m in "${MEASURES[@]}"; do
    printf '  %-22s %6s\n' "${m%%=*}" "${m#*=}"
    json+="\"${m%%=*}\": ${m#*=}, "
  done
  echo "{${json}\"total\": $total, \"result\": $rc}" >"$ARTIFACTS/timings.json"
  if [ "$rc" = 0 ]; then echo "deploy-test: PASSED"; else echo "deploy-test: FAILED (logs in $ARTIFACTS)"; fi
  exit "$rc"
}
trap cleanup EXIT

# Debian starts services when their packages are installed; here nothing may start
# behind the test's back (nginx's default site listens on every address).
if [ ! -e "$POLICY_RC" ]; then
  printf '#!/bin/sh\n# deploy test: no service starts on package installation\nexit 101\n' >"$POLICY_RC"
  chmod 0755 "$POLICY_RC"
  OWN_POLICY=1
fi

# The previous release for the upgrade: v0.1.0 built as `make release` builds it (sdist,
# wheel, SHA256SUMS), in the background while the linters run. Without the tag (a shallow
# clone), the checkout itself numbered 0.1.99 stands in for it.
PREV_SRC=$WORK/prev-src
PREV_REL=$WORK/prev-release
mkdir -p "$PREV_SRC" "$PREV_REL"
if git rev-parse -q --verify 'v0.1.0^{commit}' >/dev/null; then
  PREV_VERSION=0.1.0
  git archive v0.1.0 | tar -x -C "$PREV_SRC"
else
  PREV_VERSION=0.1.99
  cp -a pyproject.toml README.md yahaml_voice server sfu client coturn "$PREV_SRC/"
  rm -rf "$PREV_SRC/client/node_modules"
  sed -i 's/^version = .*/version = "0.1.99"/' "$PREV_SRC/pyproject.toml"
fi
(
  umask 022 && cd "$PREV_SRC" && SOURCE_DATE_EPOCH=315532800 "$BIN/python" -m build -q --outdir "$PREV_REL" . \
    && cd "$PREV_REL" \
    && sha256sum "yahaml_voice-$PREV_VERSION.tar.gz" "yahaml_voice-$PREV_VERSION-py3-none-any.whl" >SHA256SUMS
) >"$WORK/prev-build.log" 2>&1 &
PREV_BUILD=$!
CUR_VERSION=$("$BIN/python" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')

echo "--- 1. ansible-lint (production profile) and syntax checks"
(cd deploy && ansible-lint -c .ansible-lint --project-dir . --offline --nocolor -q)
ansible-playbook -i deploy/inventory.example.ini deploy/site.yml --syntax-check >/dev/null
ansible-playbook -i deploy/inventories/multi-host/hosts.ini deploy/site.yml --syntax-check >/dev/null
ansible-playbook -i deploy/inventories/redis-ha/hosts.ini deploy/site.yml --syntax-check >/dev/null
ansible-playbook -i deploy/inventories/example-single/hosts.ini deploy/site.yml --syntax-check >/dev/null
ansible-playbook -i deploy/inventories/multi-host/hosts.ini deploy/uninstall.yml --syntax-check >/dev/null
echo "ok   ansible-lint and --syntax-check"
lap lint+syntax

# Free loopback ports (TCP and UDP free where TURN needs both) and a free relay range.
eval "$("$BIN/python" - <<'EOF'
import random, socket

taken = set()

def free(udp_too=False):
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port in taken:
            continue
        if udp_too:
            try:
                with socket.socket(type=socket.SOCK_DGRAM) as u:
                    u.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port

def relay_range(n=24):
    while True:
        base = random.randrange(20000, 30000)
        socks = []
        try:
            for p in range(base, base + n):
                u = socket.socket(type=socket.SOCK_DGRAM)
                socks.append(u)
                u.bind(("127.0.0.1", p))
            return base, base + n - 1
        except OSError:
            continue
        finally:
            for u in socks:
                u.close()

names = ["SERVER_PORT", "REDIS_PORT", "HTTP_PORT", "HTTPS_PORT", "TURN_TLS_PORT", "PROD_TURN_TLS_PORT",
         "FRONT_WEB_PORT", "FRONT_HOP_PORT"]
for name in names:
    print(f"{name}={free()}")
print(f"TURN_PORT={free(True)}")
print(f"PROD_TURN_PORT={free(True)}")
lo, hi = relay_range()
print(f"RELAY_MIN={lo} RELAY_MAX={hi}")
lo, hi = relay_range()
print(f"PROD_RELAY_MIN={lo} PROD_RELAY_MAX={hi}")
EOF
)"
WORKERS=$(nproc)

# The checkout is shared with people editing it: both converges deploy one snapshot of
# it, so that "nothing changed" means the deploy, not the tree.
mkdir -p "$WORK/src"
cp -a pyproject.toml README.md yahaml_voice server sfu client coturn "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
rm -rf "$WORK/src/client/node_modules"  # TypeScript for `make lint`, not part of a deploy

# coturn gets a "provided" certificate (copied from the controller), the proxy a
# self-signed one it makes itself: both certificate paths of the roles run.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$WORK/turn-key.pem" -out "$WORK/turn-cert.pem" 2>/dev/null

# Test settings: everything on loopback, free ports, yv-direct, firewall rendered only;
# TURN/TLS also on the HTTPS port through nginx's TLS front (alt_tls_443).
cat >"$WORK/vars.json" <<EOF
{
  "yahaml_voice_service_manager": "direct",
  "yahaml_voice_domain": "voice.test",
  "yahaml_voice_turn_domain": "127.0.0.1",
  "yahaml_voice_secrets_dir": "$WORK/secrets",
  "yahaml_voice_source_dir": "$WORK/src",
  "coturn_template": "$WORK/src/coturn/turnserver.conf.j2",
  "yahaml_voice_private_ip": "127.0.0.1",
  "yahaml_voice_public_ip": "127.0.0.1",
  "yahaml_voice_server_port": $SERVER_PORT,
  "yahaml_voice_public_url": "https://voice.test:$HTTPS_PORT",
  "yahaml_voice_redis_port": $REDIS_PORT,
  "yahaml_voice_sfu_ice_addresses": ["127.0.0.1"],
  "yahaml_voice_rooms": [
    {"id": "shack", "name": "Shack", "max_participants": 100},
    {"id": "net", "name": "Club net", "max_participants": 300, "sfu_threshold": 8},
    {"id": "upgrade", "name": "Upgrade test", "sfu_threshold": 2}
  ],
  "yahaml_voice_turn_overrides": {
    "listening_port": $TURN_PORT, "tls_listening_port": $TURN_TLS_PORT,
    "min_port": $RELAY_MIN, "max_port": $RELAY_MAX,
    "allow_loopback_peers": true, "alt_tls_443": true
  },
  "coturn_tls_cert_src": "$WORK/turn-cert.pem",
  "coturn_tls_key_src": "$WORK/turn-key.pem",
  "redis_bind": ["127.0.0.1"],
  "proxy_listen_addresses": ["127.0.0.1"],
  "proxy_http_port": $HTTP_PORT,
  "proxy_https_port": $HTTPS_PORT,
  "proxy_tls_front_web_address": "127.0.0.1:$FRONT_WEB_PORT",
  "proxy_tls_front_turn_hop_address": "127.0.0.1:$FRONT_HOP_PORT",
  "firewall_apply": false,
  "firewall_config_file": "$WORK/nftables.test.conf"
}
EOF

converge() { # log name [playbook [ansible-playbook options...]]
  local name=$1 playbook=${2:-deploy/site.yml}
  shift $(($# < 2 ? $# : 2))
  local log=$WORK/$name.log
  # ANSIBLE_LOG_PATH: the same output with a timestamp per line (where the time goes).
  if ! ANSIBLE_LOG_PATH=$WORK/$name.timed.log \
    ansible-playbook -i tests/deploy/inventory.ini "$playbook" -e "@$WORK/vars.json" "$@" >"$log" 2>&1; then
    tail -n 60 "$log"
    echo "FAIL $name: ansible-playbook failed (full log in $ARTIFACTS/$name.log)" >&2
    exit 1
  fi
  grep -E '^localhost +:' "$log" | tail -n 1 | tee "$WORK/$name.recap"
}
unchanged() { # log name: the run's recap says changed=0
  if ! grep -qE 'changed=0 .*failed=0' "$WORK/$1.recap"; then
    echo "FAIL $1 changed something:" >&2
    grep -E '^(changed|TASK)' "$WORK/$1.log" | grep -B1 '^changed' >&2 || true
    exit 1
  fi
}

# watched PHASE converge-args...: two clients in the `upgrade` room (an SFU room) hear each
# other while the converge switches the release under them; seats must be kept and the
# audio come back; the longest silence goes to MEASURES as <phase>_audio_gap_ms.
watched() {
  local phase=$1
  shift
  cat >"$WORK/$phase.json" <<EOF
{
  "work": "$WORK",
  "phase": "$phase",
  "server_port": $SERVER_PORT,
  "room": "upgrade",
  "cli": "/opt/yahaml-voice/current/venv/bin/yahaml-voice",
  "config_file": "/etc/yahaml-voice/yahaml-voice.yaml"
}
EOF
  "$BIN/python" tests/deploy/verify.py --upgrade-watch "$WORK/$phase.json" >"$WORK/$phase-watch.log" 2>&1 &
  local watch=$! watch_rc=0 gap
  for _ in $(seq 300); do
    { [ -e "$WORK/$phase.ready" ] || ! kill -0 "$watch" 2>/dev/null; } && break
    sleep 0.2
  done
  if [ ! -e "$WORK/$phase.ready" ]; then
    kill "$watch" 2>/dev/null
    cat "$WORK/$phase-watch.log"
    echo "FAIL the clients did not hear each other before the $phase" >&2
    exit 1
  fi
  converge "$@"
  touch "$WORK/$phase.done"
  wait "$watch" || watch_rc=$?
  cat "$WORK/$phase-watch.log"
  gap=$("$BIN/python" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' \
    "$WORK/$phase-result.json" "${phase}_audio_gap_ms" 2>/dev/null || echo -1)
  MEASURES+=("${phase}_audio_gap_ms=$gap")
  [ "$watch_rc" = 0 ] || { echo "FAIL the $phase lost a seat or the audio" >&2; exit 1; }
}


# What the deploy leaves on a host: users, groups, units, directories, configs. After the
# uninstall none of the deploy's own names may be left, and the rest of the listing must
# be as before the converge (an older run may have left the deploy's names: not compared).
# yv-direct itself stays while specs of services other than the deploy's are left in
# /etc/yv-direct; the deploy's own specs must go.
OURS='yahaml-voice|yahaml_voice|/etc/yv-direct/(redis-|nginx|coturn|cron)|/usr/local/sbin/yv-direct|/etc/turnserver\.conf|/etc/coturn|/var/log/turnserver|/etc/nginx/tls|/var/www/acme|before-yahaml-voice'
host_state() {
  {
    getent passwd | cut -d: -f1 | sed 's/^/user /'
    getent group | cut -d: -f1 | sed 's/^/group /'
    ls -1d /etc/systemd/system/* /etc/systemd/system/*.wants/* /etc/nginx/sites-enabled/* \
      /etc/nginx/sites-available/* /etc/nginx/*.conf /etc/logrotate.d/* /etc/cron.d/* \
      /etc/letsencrypt/renewal-hooks/deploy/* /etc/yv-direct/* /usr/local/sbin/* /opt/* \
      /etc/yahaml-voice /var/lib/yahaml-voice /var/log/yahaml-voice /etc/turnserver.conf \
      /etc/coturn /var/log/turnserver /etc/nginx/tls /var/www/* /etc/redis/* 2>/dev/null
    grep -h '^include' /etc/nginx/nginx.conf 2>/dev/null
  } | sort
}
HOST_BEFORE=$(host_state | grep -Ev "$OURS" || true)
# A ruleset file of the host's own where the test's firewall writes: kept and put back.
echo "# the host's own ruleset (deploy test)" >"$WORK/nftables.test.conf"
chmod 0640 "$WORK/nftables.test.conf"

# /healthz's version (v0.1.0 did not say it: "none"), and which release `current` names.
healthz_version() {
  curl -fsS --max-time 5 "http://127.0.0.1:$SERVER_PORT/healthz" \
    | "$BIN/python" -c 'import json, sys; print(json.load(sys.stdin).get("version", "none"))'
}
current_release() { basename "$(readlink /opt/yahaml-voice/current)"; }
expect_release() { # label version-prefix healthz-version
  local release version
  release=$(current_release)
  version=$(healthz_version)
  if [[ $release != "$2"-* ]] || [ "$version" != "$3" ]; then
    echo "FAIL $1: current -> $release, /healthz version $version (wanted $2-*, $3)" >&2
    exit 1
  fi
  echo "ok   $1: current -> $release, /healthz version $version"
}

echo "--- 2. converge this machine under umask 077 with the previous release $PREV_VERSION (loopback, ports $SERVER_PORT/$REDIS_PORT/$HTTPS_PORT/$TURN_PORT)"
wait "$PREV_BUILD" || { cat "$WORK/prev-build.log"; echo "FAIL building release $PREV_VERSION" >&2; exit 1; }
# An older deploy's layout (one venv, wheels in dist/): migrated, then removed.
if [ ! -e /opt/yahaml-voice ]; then
  mkdir -p /opt/yahaml-voice/venv/bin /opt/yahaml-voice/dist
  touch /opt/yahaml-voice/dist/yahaml_voice-0.0.1-py3-none-any.whl
  echo "wheel sha1:0" >/opt/yahaml-voice/INSTALLED
fi
(umask 077 && converge converge1 deploy/site.yml -e yahaml_voice_install_source=release \
  -e "yahaml_voice_release_dir=$PREV_REL" -e "yahaml_voice_version=$PREV_VERSION")
PREV_HEALTH=$([ "$PREV_VERSION" = 0.1.0 ] && echo none || echo "$PREV_VERSION")
expect_release "release $PREV_VERSION installed from $PREV_REL (SHA256SUMS checked)" "$PREV_VERSION" "$PREV_HEALTH"
for old in venv dist INSTALLED; do
  [ ! -e "/opt/yahaml-voice/$old" ] || { echo "FAIL the older layout's $old is still there" >&2; exit 1; }
done
echo "ok   the older layout (venv, dist, INSTALLED) is gone"
lap converge1

echo "--- 3. upgrade to $CUR_VERSION with two clients in a room; second converge and --check --diff: nothing may change"
# Under umask 077 as the first converge (not in a subshell: MEASURES must keep the gap).
saved_umask=$(umask)
umask 077
watched upgrade upgrade
umask "$saved_umask"
expect_release "upgraded" "$CUR_VERSION" "$CUR_VERSION"
lap upgrade

converge converge2
unchanged converge2
echo "ok   idempotent: changed=0"
lap converge2
converge check-converged deploy/site.yml --check --diff
unchanged check-converged
echo "ok   --check --diff on the converged host: changed=0"
lap check-converged

echo "--- 4. verify"
# The production rule set (deploy/group_vars defaults, no loopback peers), rendered by
# the same role tasks; only its address and ports move onto loopback to be probed.
mkdir -p "$WORK/prod-turn"
cat >"$WORK/prod-vars.json" <<EOF
{
  "ansible_become": false,
  "ansible_python_interpreter": "/usr/bin/python3",
  "yahaml_voice_secrets_dir": "$WORK/secrets",
  "yahaml_voice_turn_domain": "127.0.0.1",
  "yahaml_voice_turn_overrides": {
    "listen_ip": "127.0.0.1", "relay_ip": "127.0.0.1",
    "listening_port": $PROD_TURN_PORT, "tls_listening_port": $PROD_TURN_TLS_PORT,
    "min_port": $PROD_RELAY_MIN, "max_port": $PROD_RELAY_MAX
  },
  "firewall_turn_settings": "{{ yahaml_voice_turn_settings }}",
  "coturn_config_file": "$WORK/prod-turn/turnserver.conf",
  "firewall_config_file": "$WORK/nftables.production.conf"
}
EOF
if ! ansible-playbook -i localhost, -c local tests/deploy/render-production.yml \
  -e "@$WORK/prod-vars.json" >"$WORK/render-production.log" 2>&1; then
  tail -n 40 "$WORK/render-production.log"
  echo "FAIL rendering the production rules" >&2
  exit 1
fi

cat >"$WORK/verify.json" <<EOF
{
  "work": "$WORK",
  "domain": "voice.test",
  "http_port": $HTTP_PORT,
  "https_port": $HTTPS_PORT,
  "redis_port": $REDIS_PORT,
  "sfu_workers": $WORKERS,
  "cli": "/opt/yahaml-voice/current/venv/bin/yahaml-voice",
  "config_file": "/etc/yahaml-voice/yahaml-voice.yaml",
  "proxy_cert": "/etc/nginx/tls/voice.test.selfsigned.crt",
  "turn_cert": "/etc/coturn/tls/fullchain.pem",
  "prod_turn_conf": "$WORK/prod-turn/turnserver.conf",
  "prod_turn_port": $PROD_TURN_PORT,
  "turn_tls_port": $TURN_TLS_PORT,
  "secrets_dir": "$WORK/secrets",
  "nft_test": "$WORK/nftables.test.conf",
  "nft_prod": "$WORK/nftables.production.conf",
  "logs": ["$WORK/converge1.log", "$WORK/converge2.log", "$WORK/render-production.log"]
}
EOF
"$BIN/python" tests/deploy/verify.py "$WORK/verify.json"
lap verify

# Nothing left of the deploy's install under umask 077 is unreadable by the service user.
if unreadable=$(find /opt/yahaml-voice ! -perm -o+r -print -quit) && [ -n "$unreadable" ]; then
  echo "FAIL the install is not world-readable under umask 077: $unreadable" >&2
  exit 1
fi
echo "ok   the install is readable (converged under umask 077)"

CUR_RELEASE=$(current_release)
watched rollback rollback deploy/site.yml -e yahaml_voice_rollback=true
grep -qE 'changed=[1-9]' "$WORK/rollback.recap" || { echo "FAIL the rollback reported no change" >&2; exit 1; }
expect_release "rolled back (-e yahaml_voice_rollback=true)" "$PREV_VERSION" "$PREV_HEALTH"
lap rollback
converge rollforward deploy/site.yml -e yahaml_voice_rollback=true -e yahaml_voice_keep_releases=1
expect_release "rolled forward (the same again), keep_releases=1" "$CUR_VERSION" "$CUR_VERSION"
releases=$(cd /opt/yahaml-voice/releases && ls -d -- */ | tr -d / | tr '\n' ' ')
if [ "$releases" != "$CUR_RELEASE " ] || [ "$(current_release)" != "$CUR_RELEASE" ]; then
  echo "FAIL keep_releases=1 left: $releases" >&2
  exit 1
fi
echo "ok   pruned to keep_releases=1: releases/ holds $releases"
lap rollforward

echo "--- 5. uninstall, --check --diff on the uninstalled host, nothing left behind"
converge uninstall deploy/uninstall.yml
lap uninstall
converge check-fresh deploy/site.yml --check --diff
lap check-fresh
HOST_AFTER=$(host_state)
leftover=$(echo "$HOST_AFTER" | grep -E "$OURS" || true)
if compgen -G '/etc/yv-direct/*.conf' >/dev/null; then  # another service's spec: the helper stays
  leftover=$(echo "$leftover" | grep -v '^/usr/local/sbin/yv-direct$' || true)
fi
if [ -n "$leftover" ]; then
  echo "FAIL the uninstall left behind:" >&2
  echo "$leftover" >&2
  exit 1
fi
HOST_AFTER=$(echo "$HOST_AFTER" | grep -Ev "$OURS" || true)
if [ "$HOST_AFTER" != "$HOST_BEFORE" ]; then
  echo "FAIL the uninstall left something behind (or removed something else):" >&2
  diff <(echo "$HOST_BEFORE") <(echo "$HOST_AFTER") >&2 || true
  exit 1
fi
if [ "$(cat "$WORK/nftables.test.conf")" != "# the host's own ruleset (deploy test)" ] \
  || [ -e "$WORK/nftables.test.conf.before-yahaml-voice" ]; then
  echo "FAIL the ruleset file did not come back from the firewall role's backup" >&2
  exit 1
fi
echo "ok   uninstalled: no user, unit, directory or config left; the ruleset file is back"
