#!/usr/bin/env bash
# Install what mujun needs on a fresh Debian/Ubuntu machine. Idempotent and quick when done.
#
#   scripts/bootstrap.sh          PostgreSQL + PostGIS (OS packages), .venv, mujun and its pinned deps
#   scripts/bootstrap.sh --test   also what the tests drive: GDAL's ogrinfo, PyQGIS, Chromium,
#                                 playwright-core (npm), pytest and hypothesis
#
# As root it installs OS packages itself (apt-get update first); otherwise it prints the exact
# command to run and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }

# ---- OS packages -------------------------------------------------------------------------------
# pango + harfbuzz + fonts: WeasyPrint's renderer for the 体检表 and report PDFs
apt_pkgs=(postgresql postgresql-contrib postgis python3-venv python3-dev libpq-dev
          libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-noto-cjk)
if [ "$want_test" = 1 ]; then
  apt_pkgs+=(gdal-bin python3-qgis qgis-providers chromium poppler-utils)  # poppler: pdftoppm/pdftotext
  # Node.js may come from elsewhere (NodeSource); Debian's npm would conflict with it.
  command -v npm >/dev/null 2>&1 || apt_pkgs+=(nodejs npm)
fi

missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The PostGIS extension must exist for the PostgreSQL server that is installed.
pg_ver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1 || true)
if [ -n "$pg_ver" ] && [ ! -f "/usr/share/postgresql/$pg_ver/extension/postgis.control" ]; then
  missing+=("postgresql-$pg_ver-postgis-3")
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing OS packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postgresql package would start a system cluster on 5432; mujun runs its own.
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    pg_ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
    if [ ! -f "/usr/share/postgresql/$pg_ver/extension/postgis.control" ]; then
      apt-get install -y -qq --no-install-recommends "postgresql-$pg_ver-postgis-3" >/dev/null
    fi
  else
    echo "Missing OS packages: ${missing[*]}"
    echo "Run as root:  sudo apt-get update && sudo apt-get install -y ${missing[*]}"
    echo "then run this script again."
    exit 1
  fi
else
  say "OS packages present"
fi

# ---- Python environment ------------------------------------------------------------------------
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=.venv/.mujun-installed
extras=""
[ "$want_test" = 1 ] && extras="[test]"
hash=$(cat pyproject.toml | sha256sum | cut -c1-16)$extras
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$hash" ]; then
  say "installing mujun$extras and its pinned dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".$extras"
  echo "$hash" > "$stamp"
else
  say "python environment up to date"
fi

# ---- Browser-test driver (npm), only for the tests ---------------------------------------------
if [ "$want_test" = 1 ] && [ -f tests/browser/package.json ]; then
  if [ ! -d tests/browser/node_modules/playwright-core ] || [ ! -d tests/browser/node_modules/@maplibre/maplibre-gl-style-spec ]; then
    say "installing playwright-core and the MapLibre style validator (npm) for the tests"
    (cd tests/browser && npm ci --silent --no-audit --no-fund)
  fi
fi

say "ready"
