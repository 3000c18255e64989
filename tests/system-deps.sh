#!/usr/bin/env bash
# Debian packages some tests drive for real: chromium + chromium-driver (browser tests of
# the MLflow and Prefect UIs) and postgresql (the PostgreSQL-backed MLflow test).
# `make test` runs this first. It installs only what is missing and only where it can
# (root with apt-get); otherwise it says so and those tests skip, each naming the reason.
set -u
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
  || need+=(postgresql)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "system-deps: missing ${need[*]} (install them as root: apt-get install ${need[*]});" \
       "the tests that need them will skip" >&2
  exit 0
fi
echo "system-deps: apt-get install ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"; } \
  >/tmp/visiongate-system-deps.log 2>&1 \
  || echo "system-deps: apt-get failed (see /tmp/visiongate-system-deps.log); the tests" \
          "that need ${need[*]} will skip" >&2
exit 0
