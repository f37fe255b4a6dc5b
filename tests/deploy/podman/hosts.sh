# The container "hosts" of the multi-host test: two podman networks laid out as the
# multi-host example describes them (public 198.51.100.0/24, private 10.0.0.0/24) and one
# container per inventory host at the example's own addresses. Sourced by multihost.sh.
# shellcheck shell=bash
HERE_HOSTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=common.sh
. "$HERE_HOSTS/common.sh"

NET_PUBLIC=yvmh-public
NET_PRIVATE=yvmh-private
SUBNET_PUBLIC=198.51.100.0/24   # the example's "public" addresses (TEST-NET-2)
GATEWAY_PUBLIC=198.51.100.1     # this machine, as the clients' internet
SUBNET_PRIVATE=10.0.0.0/24      # the example's private network (internal: no route out)
# container name, hostname, public address, private address (as in hosts.ini)
HOSTS=(
  "yvmh-signal signal.club.example.org 198.51.100.10 10.0.0.10"
  "yvmh-sfu1 sfu1.club.example.org 198.51.100.11 10.0.0.11"
  "yvmh-sfu2 sfu2.club.example.org 198.51.100.12 10.0.0.12"
  "yvmh-turn turn.club.example.org 198.51.100.20 10.0.0.20"
)

subnet_free() { # subnet: refuse one this machine routes anywhere but its default route
  local subnet=$1 probe default_dev default_via got
  probe=$(python3 -c "import ipaddress,sys; print(ipaddress.ip_network(sys.argv[1])[10])" "$subnet")
  case $subnet in 203.0.113.*) echo "subnet $subnet is forbidden here" >&2; return 1 ;; esac
  read -r default_via default_dev < <(ip route show default | awk '{print $3, $5; exit}')
  got=$(ip route get "$probe" | head -n 1)
  if ! echo "$got" | grep -qE "^$probe via $default_via dev $default_dev "; then
    echo "subnet $subnet is routed specially here: $got" >&2
    return 1
  fi
  if ip -br addr | python3 -c "
import ipaddress, sys
net = ipaddress.ip_network(sys.argv[1])
for line in sys.stdin:
    for word in line.split()[2:]:
        if ipaddress.ip_interface(word).network.overlaps(net):
            sys.exit(0)
sys.exit(1)" "$subnet"; then
    echo "subnet $subnet overlaps an address of this machine" >&2
    return 1
  fi
}

hosts_up() { # work dir (CA certificate in $1/tls/ca.crt)
  local work=$1 entry name hostname public private
  subnet_free "$SUBNET_PUBLIC" && subnet_free "$SUBNET_PRIVATE"
  "${PODMAN[@]}" network create --subnet "$SUBNET_PUBLIC" --gateway "$GATEWAY_PUBLIC" "$NET_PUBLIC" >/dev/null
  "${PODMAN[@]}" network create --internal --subnet "$SUBNET_PRIVATE" "$NET_PRIVATE" >/dev/null
  mkdir -p "$YV_CACHE/pip"
  # PID 1 reaps orphans as a host's init does: yv-direct's services are daemons (their
  # parent is PID 1), and with `sleep infinity` there a stopped worker stayed a zombie, so
  # `yv-direct stop` waited out its whole TERM/KILL schedule and failed.
  local REAPER='import os, signal, time
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
while True:
    try:
        os.wait()
    except ChildProcessError:
        time.sleep(1)'
  for entry in "${HOSTS[@]}"; do
    read -r name hostname public private <<<"$entry"
    # apt's archive lock is not shared between hosts: one archive directory per host.
    mkdir -p "$YV_CACHE/apt-$name/partial"
    # NET_ADMIN: the firewall role loads its ruleset into the container's own network
    # namespace (never this machine's).
    "${PODMAN[@]}" run -d --name "$name" --hostname "$hostname" "${RUN_LIMITS[@]}" \
      --cap-add NET_ADMIN \
      --network "$NET_PUBLIC:ip=$public" --network "$NET_PRIVATE:ip=$private" \
      -v "$YV_CACHE/apt-$name:/var/cache/apt/archives" -v "$YV_CACHE/pip:/root/.cache/pip" \
      "$YV_IMAGE" python3 -c "$REAPER" >/dev/null
    # What the site's hosts have before the playbook: the site CA in the trust store (a
    # real site's certificates come from a public CA), apt that may write the shared cache.
    "${PODMAN[@]}" cp "$work/tls/ca.crt" "$name:/usr/local/share/ca-certificates/yvmh-test-ca.crt"
    # This machine's own extra CAs (an egress proxy's) too, for pip and apt through it;
    # pip uses the system store, as this machine's does.
    for ca in /usr/local/share/ca-certificates/*.crt; do
      [ -f "$ca" ] && "${PODMAN[@]}" cp "$ca" "$name:/usr/local/share/ca-certificates/host-$(basename "$ca")"
    done
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$work/pip.conf"
    "${PODMAN[@]}" cp "$work/pip.conf" "$name:/etc/pip.conf"
    # and package lists as fresh as a new cloud host's.
    "${PODMAN[@]}" exec "$name" sh -c \
      'echo "APT::Sandbox::User \"root\";" >/etc/apt/apt.conf.d/90sandbox
       update-ca-certificates >/dev/null 2>&1 && apt-get update -qq' &
  done
  local pid failed=0
  for pid in $(jobs -p); do wait "$pid" || failed=1; done
  [ "$failed" = 0 ] || { echo "preparing the hosts failed" >&2; return 1; }
}

hosts_down() { # everything hosts_up made, whatever state it is in
  local entry name
  for entry in "${HOSTS[@]}"; do
    read -r name _ <<<"$entry"
    "${PODMAN[@]}" rm -f -t 2 "$name" >/dev/null 2>&1 || true
  done
  "${PODMAN[@]}" network rm -f "$NET_PUBLIC" >/dev/null 2>&1 || true
  "${PODMAN[@]}" network rm -f "$NET_PRIVATE" >/dev/null 2>&1 || true
}
