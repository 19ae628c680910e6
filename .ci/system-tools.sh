#!/usr/bin/env bash
# System tools the tests drive for real, from Debian's packages: chromium (the browser tests, through
# Playwright's executable_path, as Playwright's own browser download needs the internet) and rclone
# (the remote-cohort tests copy a cohort with it, as the layout spec's users do). Installed only when
# missing, so a second run costs nothing. `make test`, `make test-py312` and `make test-unconstrained`
# call this, so the README's `make test` is all the set-up on a fresh machine.
set -euo pipefail
missing=""
command -v chromium >/dev/null || missing="$missing chromium"
command -v rclone >/dev/null || missing="$missing rclone"
if [ -n "$missing" ]; then
  sudo_=""
  if [ "$(id -u)" -ne 0 ]; then sudo_="sudo"; fi
  echo "installing from Debian's packages:$missing"
  $sudo_ apt-get update -q
  $sudo_ env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
fi
