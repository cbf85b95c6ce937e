#!/usr/bin/env bash
# The tensorhub test command:   bash tests/run.sh [pytest arguments...]
#
# Needs only python3 (3.11), pip and Go (>= 1.24) on the machine, plus
# PostgreSQL's server programs, which it installs itself on Debian when run as
# root. It
#   1. creates the virtualenv .venv in the repository root (or reuses it) and
#      installs tensorhub into it in editable mode with the "tensorflow" and
#      "test" extras (skipped while pyproject.toml is unchanged since the last
#      successful install);
#   2. finds a working FerretDB binary (the test server for the "ferretdb" and
#      "ferretdb_pg" backends), building FerretDB from source into
#      .cache/ferretdb/ if none is found, and exports its path as
#      TENSORHUB_FERRETDB;
#   3. finds PostgreSQL's server programs (initdb, postgres, pg_isready,
#      createdb) for the "ferretdb_pg" backend, installing Debian's
#      "postgresql" package with apt-get if they are missing, and exports their
#      directory as TENSORHUB_POSTGRES_BINDIR (pytest itself starts and removes
#      a throw-away cluster: see tests/postgres.py); skipped when
#      TENSORHUB_TEST_BACKENDS leaves out ferretdb_pg;
#   4. finds Debian's Chromium (/usr/bin/chromium) for the dashboard's browser
#      tests (Playwright drives it; Playwright's own browser download is never
#      used), installing Debian's "chromium" package with apt-get if it is
#      missing, and exports its path as TENSORHUB_CHROMIUM; skipped when
#      TENSORHUB_TEST_BACKENDS leaves out ferretdb, where those tests run;
#   5. runs the quality gates, `ruff check tensorhub tests` and `mypy` (both
#      configured in pyproject.toml), and stops if either fails;
#   6. runs `python -m pytest -n 2 --dist worksteal "$@"` from the repository
#      root (the docstring examples run as doctests, and the index-coverage
#      check judges every query the library sent to a real server). Two
#      pytest-xdist workers, each starting its own servers: with FerretDB on
#      both SQLite and PostgreSQL the suite is too long for one process, and
#      it is CPU-bound, so more workers than a 2-core machine's cores only
#      slow the timing-sensitive runner tests. Your own -n/--dist arguments
#      come later and win.
# The exit status is pytest's, except that "no tests were collected" (pytest's
# exit status 5) is reported as a failure (1).
#
# Environment variables:
#   TENSORHUB_FERRETDB       ferretdb binary to use; it must work, no search is made
#   TENSORHUB_POSTGRES_BINDIR directory of initdb, postgres, pg_isready and createdb;
#                            it must hold them, no search is made
#   TENSORHUB_CHROMIUM       chromium binary for the dashboard's browser tests; it must
#                            work, no search is made
#   TENSORHUB_PYTHON         interpreter that creates .venv (default: python3)
#   TENSORHUB_REINSTALL=1    reinstall into .venv even if pyproject.toml is unchanged
#   TENSORHUB_TEST_NO_VENV=1 use the current `python3` as it is: no virtualenv, no pip
#   TENSORHUB_TEST_WORKERS   pytest-xdist workers (default 2); 0 runs the tests in the
#                            pytest process itself, with no xdist arguments at all
#   TENSORHUB_TEST_URI, TENSORHUB_TEST_BACKENDS: see tests/conftest.py
set -euo pipefail

readonly FERRETDB_MODULE="github.com/FerretDB/FerretDB"
readonly FERRETDB_VERSION="v1.24.2"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly REPO_ROOT
readonly VENV_DIR="$REPO_ROOT/.venv"
readonly FERRETDB_CACHE_DIR="$REPO_ROOT/.cache/ferretdb"
readonly FERRETDB_CACHED_BIN="$FERRETDB_CACHE_DIR/ferretdb"

log() { printf '[tests/run.sh] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cd "$REPO_ROOT"

# --- 1. Python environment ---------------------------------------------------

# Prints the python interpreter to use, creating and filling .venv if needed.
setup_python() {
    if [[ "${TENSORHUB_TEST_NO_VENV:-}" == "1" ]]; then
        command -v python3 >/dev/null || die "TENSORHUB_TEST_NO_VENV=1 but python3 is not on PATH"
        log "TENSORHUB_TEST_NO_VENV=1: using $(command -v python3) as it is"
        command -v python3
        return
    fi

    local base_python="${TENSORHUB_PYTHON:-python3}"
    local py="$VENV_DIR/bin/python"
    if [[ ! -x "$py" ]]; then
        command -v "$base_python" >/dev/null || die "$base_python not found (set TENSORHUB_PYTHON)"
        log "creating virtualenv $VENV_DIR with $base_python"
        "$base_python" -m venv "$VENV_DIR"
    fi

    # The install is redone only when pyproject.toml (dependencies, extras,
    # entry points) or the interpreter changed; the editable install picks up
    # source changes by itself.
    local stamp_file="$VENV_DIR/.tensorhub-install-stamp" stamp
    stamp="$("$py" -c 'import hashlib, sys; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest(), sys.version.split()[0])')"
    if [[ "${TENSORHUB_REINSTALL:-}" != "1" && -f "$stamp_file" && "$(<"$stamp_file")" == "$stamp" ]]; then
        log "tensorhub already installed in .venv (pyproject.toml unchanged)"
    else
        log "installing tensorhub[tensorflow,test] into .venv (editable)"
        rm -f "$stamp_file"
        "$py" -m pip install --disable-pip-version-check -e ".[tensorflow,test]" >&2
        printf '%s\n' "$stamp" >"$stamp_file"
    fi
    printf '%s\n' "$py"
}

# --- 2. FerretDB ---------------------------------------------------------------

# True if $1 is an executable that starts as a FerretDB binary. (A FerretDB
# built straight from the module source, as `go install` does, panics at start
# because the generated build/version/version.txt is missing.)
ferretdb_works() {
    [[ -f "$1" && -x "$1" ]] && "$1" --version >/dev/null 2>&1
}

# Builds FerretDB $FERRETDB_VERSION from source into $FERRETDB_CACHED_BIN.
#
# `go install github.com/FerretDB/FerretDB/cmd/ferretdb@VERSION` is not used:
# it fails behind a module proxy that refuses the module's version list (which
# go install reads for its deprecation check), and even where it succeeds the
# binary cannot start, because the published module lacks the generated file
# build/version/version.txt. So the module is downloaded with
# `go mod download` (which works outside any module), copied to a scratch
# directory, the missing version.txt is written, and cmd/ferretdb is built.
build_ferretdb() {
    command -v go >/dev/null || die "FerretDB is needed for the tests but was not found, and Go is not installed to build it. Install Go >= 1.24, or put a ferretdb $FERRETDB_VERSION binary on PATH or in TENSORHUB_FERRETDB."

    # Global, so that the EXIT trap still sees it. This function runs in the
    # command substitution of find_or_build_ferretdb, so the trap fires when
    # that subshell ends, on success and on failure alike.
    BUILD_SCRATCH="$(mktemp -d "${TMPDIR:-/tmp}/tensorhub-ferretdb-build.XXXXXX")"
    trap 'rm -rf "$BUILD_SCRATCH"' EXIT
    local scratch="$BUILD_SCRATCH"

    log "downloading $FERRETDB_MODULE@$FERRETDB_VERSION with go mod download"
    local json module_dir
    # Run outside the repository so that no go.mod or go.work is picked up.
    if ! json="$(cd "$scratch" && GOFLAGS=-mod=mod go mod download -json "$FERRETDB_MODULE@$FERRETDB_VERSION")"; then
        printf '%s\n' "$json" >&2
        die "go mod download $FERRETDB_MODULE@$FERRETDB_VERSION failed"
    fi
    module_dir="$(printf '%s' "$json" | python3 -c '
import json, sys
info = json.load(sys.stdin)
if info.get("Error") or not info.get("Dir"):
    sys.exit("go mod download: " + (info.get("Error") or "no Dir in its output"))
print(info["Dir"])
')"

    log "building ferretdb from $module_dir (takes a minute or two the first time)"
    cp -R "$module_dir" "$scratch/src"
    chmod -R u+w "$scratch/src" # the module cache is read-only
    printf '%s\n' "$FERRETDB_VERSION" >"$scratch/src/build/version/version.txt"
    mkdir -p "$FERRETDB_CACHE_DIR"
    (cd "$scratch/src" && CGO_ENABLED=0 go build -buildvcs=false -trimpath -o "$scratch/ferretdb" ./cmd/ferretdb)
    ferretdb_works "$scratch/ferretdb" || die "the freshly built $scratch/ferretdb does not start (ferretdb --version failed)"
    mv -f "$scratch/ferretdb" "$FERRETDB_CACHED_BIN" # same name: atomic replace
    log "built $FERRETDB_CACHED_BIN"
}

# Prints the path of a working ferretdb: $TENSORHUB_FERRETDB, then PATH, then
# the cached build, else builds one. Same order as tests/ferretdb.py.
find_or_build_ferretdb() {
    if [[ -n "${TENSORHUB_FERRETDB:-}" ]]; then
        ferretdb_works "$TENSORHUB_FERRETDB" || die "TENSORHUB_FERRETDB=$TENSORHUB_FERRETDB is not a working ferretdb binary ('--version' failed)"
        printf '%s\n' "$TENSORHUB_FERRETDB"
        return
    fi
    local on_path
    if on_path="$(command -v ferretdb)"; then
        if ferretdb_works "$on_path"; then
            printf '%s\n' "$on_path"
            return
        fi
        log "ignoring $on_path: 'ferretdb --version' failed"
    fi
    if ! ferretdb_works "$FERRETDB_CACHED_BIN"; then
        build_ferretdb
    fi
    printf '%s\n' "$FERRETDB_CACHED_BIN"
}

# --- 3. PostgreSQL ----------------------------------------------------------------

readonly POSTGRES_PROGRAMS=(initdb postgres pg_isready createdb)

# True if directory $1 holds every program the ferretdb_pg backend needs, and
# its server starts (`postgres --version`).
postgres_bindir_works() {
    local program
    for program in "${POSTGRES_PROGRAMS[@]}"; do
        [[ -f "$1/$program" && -x "$1/$program" ]] || return 1
    done
    "$1/postgres" --version >/dev/null 2>&1
}

# Prints a directory holding the PostgreSQL programs, or nothing: the one that
# initdb on PATH really lives in (Debian keeps them in
# /usr/lib/postgresql/<version>/bin, off PATH, but a symlink may be on PATH),
# else the newest /usr/lib/postgresql/<version>/bin. Same order as
# tests/postgres.py.
search_postgres_bindir() {
    local on_path dir
    if on_path="$(command -v initdb)"; then
        dir="$(dirname "$(readlink -f "$on_path")")"
        if postgres_bindir_works "$dir"; then
            printf '%s\n' "$dir"
            return
        fi
    fi
    # `sort -V` puts 9.6 before 15; reversed, the newest comes first.
    while IFS= read -r dir; do
        if postgres_bindir_works "$dir"; then
            printf '%s\n' "$dir"
            return
        fi
    done < <(compgen -G '/usr/lib/postgresql/*/bin' | sort -V -r)
}

# Installs Debian's postgresql package (server programs only: pytest starts
# its own cluster, the package's own service is never used).
install_postgres() {
    if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null; then
        die "PostgreSQL is needed for the ferretdb_pg test backend but its server programs (${POSTGRES_PROGRAMS[*]}) were not found. Install Debian's postgresql package (apt-get install -y postgresql) or set TENSORHUB_POSTGRES_BINDIR; or leave ferretdb_pg out of TENSORHUB_TEST_BACKENDS."
    fi
    log "PostgreSQL not found: installing Debian's postgresql package with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet; then install once more after an update.
    if ! apt-get install -y --no-install-recommends postgresql >&2; then
        apt-get update >&2 || die "apt-get update failed"
        apt-get install -y --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
    fi
}

# Prints the directory of the PostgreSQL programs: $TENSORHUB_POSTGRES_BINDIR,
# else a search, else installs the package and searches again.
find_or_install_postgres() {
    if [[ -n "${TENSORHUB_POSTGRES_BINDIR:-}" ]]; then
        postgres_bindir_works "$TENSORHUB_POSTGRES_BINDIR" || die "TENSORHUB_POSTGRES_BINDIR=$TENSORHUB_POSTGRES_BINDIR does not hold working ${POSTGRES_PROGRAMS[*]}"
        printf '%s\n' "$TENSORHUB_POSTGRES_BINDIR"
        return
    fi
    local dir
    dir="$(search_postgres_bindir)"
    if [[ -z "$dir" ]]; then
        install_postgres
        dir="$(search_postgres_bindir)"
        [[ -n "$dir" ]] || die "installed postgresql, but found no working ${POSTGRES_PROGRAMS[*]} in /usr/lib/postgresql/*/bin"
    fi
    printf '%s\n' "$dir"
}

# True unless TENSORHUB_TEST_BACKENDS is set and leaves out backend $1
# (tests/conftest.py validates the names; this only avoids needless setup).
backend_selected() {
    local requested="${TENSORHUB_TEST_BACKENDS:-}" name
    requested="${requested//[[:space:]]/}"
    [[ -z "$requested" ]] && return 0
    local IFS=,
    for name in ${requested,,}; do
        [[ "$name" == "$1" ]] && return 0
    done
    return 1
}

# --- 4. Chromium (the dashboard's browser tests) ---------------------------------------

# True if $1 is an executable Chromium that starts (`chromium --version`).
chromium_works() {
    [[ -f "$1" && -x "$1" ]] && "$1" --version >/dev/null 2>&1
}

# Installs Debian's chromium package (the browser tests start it headless, with Playwright).
install_chromium() {
    if [[ "$(id -u)" != "0" ]] || ! command -v apt-get >/dev/null; then
        die "Chromium is needed for the dashboard's browser tests but was not found. Install Debian's chromium package (apt-get install -y chromium) or set TENSORHUB_CHROMIUM; or leave ferretdb out of TENSORHUB_TEST_BACKENDS."
    fi
    log "Chromium not found: installing Debian's chromium package with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet; then install once more after an update.
    if ! apt-get install -y --no-install-recommends chromium >&2; then
        apt-get update >&2 || die "apt-get update failed"
        apt-get install -y --no-install-recommends chromium >&2 || die "apt-get install chromium failed"
    fi
}

# Prints the path of a working chromium: $TENSORHUB_CHROMIUM, then /usr/bin/chromium,
# then PATH, else installs the package. Same order as tests/test_dashboard_browser.py.
find_or_install_chromium() {
    if [[ -n "${TENSORHUB_CHROMIUM:-}" ]]; then
        chromium_works "$TENSORHUB_CHROMIUM" || die "TENSORHUB_CHROMIUM=$TENSORHUB_CHROMIUM is not a working chromium ('--version' failed)"
        printf '%s\n' "$TENSORHUB_CHROMIUM"
        return
    fi
    local candidate
    for candidate in /usr/bin/chromium "$(command -v chromium || true)"; do
        if [[ -n "$candidate" ]] && chromium_works "$candidate"; then
            printf '%s\n' "$candidate"
            return
        fi
    done
    install_chromium
    chromium_works /usr/bin/chromium || die "installed chromium, but /usr/bin/chromium does not start"
    printf '%s\n' /usr/bin/chromium
}

# --- 5. quality gates and pytest ---------------------------------------------------

PYTHON="$(setup_python)"
TENSORHUB_FERRETDB="$(find_or_build_ferretdb)"
export TENSORHUB_FERRETDB
log "python: $PYTHON"
log "ferretdb: $TENSORHUB_FERRETDB"
if backend_selected ferretdb_pg; then
    TENSORHUB_POSTGRES_BINDIR="$(find_or_install_postgres)"
    export TENSORHUB_POSTGRES_BINDIR
    log "postgresql: $TENSORHUB_POSTGRES_BINDIR"
fi
if backend_selected ferretdb; then
    TENSORHUB_CHROMIUM="$(find_or_install_chromium)"
    export TENSORHUB_CHROMIUM
    log "chromium: $TENSORHUB_CHROMIUM"
fi

# Quality gates first (configured in pyproject.toml): lint, then types. A failure stops the run.
log "ruff check tensorhub tests"
"$PYTHON" -m ruff check --quiet tensorhub tests
log "mypy (tensorhub, strict on definitions)"
"$PYTHON" -m mypy --no-error-summary

workers="${TENSORHUB_TEST_WORKERS:-2}"
[[ "$workers" =~ ^[0-9]+$ ]] || die "TENSORHUB_TEST_WORKERS=$workers is not a whole number"
xdist_args=()
if [[ "$workers" != "0" ]]; then
    xdist_args=(-n "$workers" --dist worksteal)
fi

status=0
"$PYTHON" -m pytest ${xdist_args[@]+"${xdist_args[@]}"} "$@" || status=$?
if [[ $status -eq 5 ]]; then
    log "pytest collected no tests: failing the run"
    exit 1
fi
exit "$status"
