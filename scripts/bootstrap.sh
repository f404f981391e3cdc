#!/usr/bin/env bash
# Installs everything deployer needs on a Debian 12 machine: system packages for the lab and the
# project's virtualenv (.venv) with its Python dependencies. Safe to run again: it only does
# what is missing. Usage: scripts/bootstrap.sh [--test]   (--test adds the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(python3 python3-venv python3-pip openssh-server openssh-client haproxy supervisor
              nginx-light minisign socat curl iproute2 util-linux procps sqlite3 git prometheus
              systemd sudo tzdata nftables)  # systemd-analyze: the rendered units; sudo: the
                                             # production-like lab; tzdata: release windows in
                                             # their time zones; nftables: game days cut a node off
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: missing system packages (${missing[*]}); run as root or install them with apt-get" >&2
    exit 3
  fi
  echo "bootstrap: installing system packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.deployer-installed${extra}"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "bootstrap: installing Python packages into .venv${extra:+ (with test tools)}"
  .venv/bin/pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  .venv/bin/pip install -q --disable-pip-version-check -e ".${extra}"
  touch "$stamp"
fi
# The project's own Python compiled once, as pip does for the files of an installed wheel: the
# CLI's modules, and the plugins every ansible-playbook worker loads again for each task. An
# editable install leaves that to each first import, which never writes the bytecode where
# PYTHONDONTWRITEBYTECODE is set: every run would compile them again.
.venv/bin/python -m compileall -q -j 0 deployer playbooks roles >/dev/null
