#!/usr/bin/env bash
# Debian packages tokbench needs beyond Python: Tesseract (text task), fonts (built-in
# text suite); for the tests also Chromium (leaderboard browser test) and a PostgreSQL
# server (the leaderboard store's PostgreSQL test starts a throw-away one). Installs what is missing when run as
# root with apt-get; otherwise says what to install and carries on. The faces task needs no
# Debian package: the dlib-bin wheel links only libc/libstdc++ (tokbench[faces] from pip).
set -u
need=()
command -v tesseract >/dev/null 2>&1 || need+=(tesseract-ocr tesseract-ocr-eng)
[ -d /usr/share/fonts/truetype/dejavu ] || need+=(fonts-dejavu-core)
[ -d /usr/share/fonts/truetype/liberation ] || need+=(fonts-liberation)
if [ "${TOKBENCH_FOR_TESTS:-0}" = 1 ]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
fi
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
else
  echo "tokbench: missing system packages: ${need[*]}" >&2
  echo "  install them with: sudo apt-get install ${need[*]}   (tasks that need them will stop with an error)" >&2
fi
