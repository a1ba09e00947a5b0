#!/usr/bin/env bash
# Installs city-edge-agent as a systemd service on a gateway (Raspberry Pi OS / Debian bookworm).
# Run as root from a checkout of the project:
#
#   systemd/install.sh                      install, or upgrade in place (config and queue kept)
#   systemd/install.sh --uninstall          remove everything but the queue (and its owner)
#   systemd/install.sh --uninstall --purge  remove the queue and the edge-agent user too
#   systemd/install.sh --root DIR           lay the files out under DIR instead of / (building
#                                           an image, tests): no systemctl, no apt
#   --python PY                             the interpreter for the venv (default python3)
#
# What goes where: the agent in a virtual environment /opt/edge-agent/venv (pip-installed from
# this checkout) with `edge-agent` linked into /usr/local/bin; the user `edge-agent` (in dialout,
# from /usr/lib/sysusers.d/edge-agent.conf); the config in /etc/edge-agent (the example site
# config if there is none yet); the unit /etc/systemd/system/edge-agent.service, enabled. The
# queue lives in /var/lib/edge-agent, which systemd creates (StateDirectory=).
set -euo pipefail

usage() { sed -n '2,10s/^# \{0,1\}//p' "$0"; }

ROOT="" UNINSTALL=0 PURGE=0 PYTHON=python3
while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$(realpath -m "${2:?--root needs a directory}"); shift 2 ;;
    --root=*) ROOT=$(realpath -m "${1#--root=}"); shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    --python) PYTHON=${2:?--python needs an interpreter}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ "$ROOT" = / ] && ROOT=""

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OPT=$ROOT/opt/edge-agent
VENV=$OPT/venv
ETC=$ROOT/etc/edge-agent
STATE=$ROOT/var/lib/edge-agent
UNITS=$ROOT/etc/systemd/system
UNIT=$UNITS/edge-agent.service
WANTS=$UNITS/multi-user.target.wants/edge-agent.service
SYSUSERS=$ROOT/usr/lib/sysusers.d/edge-agent.conf
BIN=$ROOT/usr/local/bin/edge-agent

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
live() { [ -z "$ROOT" ]; }

if live && [ "$(id -u)" -ne 0 ]; then
  die "run as root: sudo $0"
fi

uninstall() {
  if live && command -v systemctl >/dev/null; then
    systemctl disable --now edge-agent.service 2>/dev/null || true
  fi
  rm -f "$UNIT" "$WANTS" "$BIN" "$SYSUSERS"
  rm -rf "$UNITS/edge-agent.service.d" "$OPT" "$ETC"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$STATE"
    if grep -q '^edge-agent:' "$ROOT/etc/passwd" 2>/dev/null; then
      userdel ${ROOT:+--prefix "$ROOT"} edge-agent
    fi
    if grep -q '^edge-agent:' "$ROOT/etc/group" 2>/dev/null; then
      groupdel ${ROOT:+--prefix "$ROOT"} edge-agent
    fi
    say "removed, with the queue and the edge-agent user"
  else
    say "removed; kept the queue in /var/lib/edge-agent and the edge-agent user who owns it" \
        "(--uninstall --purge removes them)"
  fi
  if live && command -v systemctl >/dev/null; then
    systemctl daemon-reload
  fi
}

need_python() {
  if "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
      2>/dev/null; then
    return
  fi
  if live && command -v apt-get >/dev/null; then
    say "installing python3-venv with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
  fi
  "$PYTHON" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' \
    || die "$PYTHON must be Python >= 3.11 with venv (apt-get install python3-venv)"
}

install_user() {
  command -v systemd-sysusers >/dev/null || die "systemd-sysusers not found (apt-get install systemd)"
  install -D -m 0644 "$SRC/systemd/edge-agent.sysusers" "$SYSUSERS"
  systemd-sysusers ${ROOT:+--root="$ROOT"} "$SYSUSERS"
}

install_venv() {
  # A venv whose interpreter went away (a distribution upgrade) is made anew.
  if [ -e "$VENV" ] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
    say "the virtual environment in $VENV is broken: making it anew"
    rm -rf "$VENV"
  fi
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  # Built from a copy of the sources, so the build leaves nothing in the checkout. pip
  # reinstalls the agent even at the same version (an upgrade in place) and leaves the
  # dependencies alone unless the new version needs others.
  local log=$OPT/pip-install.log stage
  stage=$(mktemp -d)
  cp -r "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/agent" "$SRC/drivers" "$SRC/config" \
    "$stage/"  # config/: its profiles and schemas are package data
  find "$stage" -name __pycache__ -prune -exec rm -rf {} +
  say "installing the agent from $SRC into $VENV (log: $log)"
  if ! "$VENV/bin/python" -m pip install "$stage" >"$log" 2>&1; then
    rm -rf "$stage"
    tail -n 30 "$log" >&2
    die "pip install failed; full log in $log"
  fi
  rm -rf "$stage"
  install -m 0644 "$SRC/README.md" "$OPT/README.md"
  rm -rf "$OPT/config"
  cp -r "$SRC/config" "$OPT/config"  # examples, JSON Schemas, shipped profiles
  # The shipped sensor profiles are package data: the installed agent must find them.
  local shipped
  shipped=$("$VENV/bin/python" -I -c 'from agent.config.profiles import SHIPPED; print(SHIPPED)')
  compgen -G "$shipped/*.yaml" >/dev/null \
    || die "the installed agent finds no shipped profiles in $shipped"
  install -d "$(dirname "$BIN")"
  ln -sfn /opt/edge-agent/venv/bin/edge-agent "$BIN"
}

install_config() {
  local gid
  gid=$(awk -F: '$1 == "edge-agent" { print $3 }' "$ROOT/etc/group")
  install -d -m 0750 -o 0 -g "$gid" "$ETC"
  if [ -e "$ETC/agent.yaml" ]; then
    say "kept your config in /etc/edge-agent"
    return
  fi
  NEW_CONFIG=1
  cp -r "$SRC/config/site/." "$ETC/"
  chown -R "0:$gid" "$ETC"
  find "$ETC" -type d -exec chmod 0750 {} + && find "$ETC" -type f -exec chmod 0640 {} +
  say "installed the example site config in /etc/edge-agent: edit agent.yaml and devices.d/"
}

install_unit() {
  install -D -m 0644 "$SRC/systemd/edge-agent.service" "$UNIT"
  if live; then
    systemctl daemon-reload
    systemctl enable edge-agent.service
  else  # what `systemctl enable` does, without a running systemd
    install -d "$(dirname "$WANTS")"
    ln -sfn /etc/systemd/system/edge-agent.service "$WANTS"
  fi
}

if [ "$UNINSTALL" = 1 ]; then
  uninstall
  exit 0
fi
[ "$PURGE" = 1 ] && die "--purge goes with --uninstall"

need_python
install_user
install_venv
NEW_CONFIG=0
install_config
install_unit
if ! live; then
  say "installed under $ROOT"
elif systemctl is-active --quiet edge-agent.service; then
  systemctl restart edge-agent.service
  say "upgraded and restarted; journalctl -u edge-agent -f shows it running"
elif [ "$NEW_CONFIG" = 1 ]; then
  say "enabled; now: edit /etc/edge-agent/agent.yaml, check it with" \
      "'edge-agent check -c /etc/edge-agent/agent.yaml', then 'systemctl start edge-agent'"
else
  systemctl start edge-agent.service
  say "started; journalctl -u edge-agent -f shows it running"
fi
