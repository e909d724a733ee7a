#!/usr/bin/env bash
# The tests, as the README's test command and CI (.ci/run) run them:
#
#   tools/test.sh            every stage below, in turn
#   tools/test.sh suite      every test, in a release build (.build)
#   tools/test.sh thread     the concurrency, crash and differential suites under
#                            ThreadSanitizer, in a debug build, invariant checks on (.build-tsan)
#   tools/test.sh address    the same suites and the corruption tests under AddressSanitizer,
#                            in the fuzz build (.build-fuzz)
#   tools/test.sh fuzz       every fuzz target for FUZZ_SECONDS (10), from its seeds
#   tools/test.sh python     the Python package (python/): installed with pip into the
#                            setup's virtual environment, then its pytest suites, with real
#                            NumPy and PyTorch (CPU), and strata.h compiled against the library
#
# A stage fails on the first failing test, sanitizer report or fuzz finding.
set -euo pipefail
cd "$(dirname "$0")/.."

# What the sanitizers run: threads inside one store (differential with checkpoints in
# flight, background checkpoints, the journal, parallel training), processes beside it
# (readers while it writes, kills) and, for AddressSanitizer, damaged files.
sanitized='DifferentialTests|BackgroundCheckpointTests|CheckpointJournalTests|ReadWhileWritingTests|CrashTests|ParallelTests|TrainingDeterminismTests'

suite() {
    swift build -c release --build-tests
    swift test -c release --skip-build
}

thread() {
    swift build --build-tests --sanitize=thread --scratch-path .build-tsan
    # The differential stream is halved: under ThreadSanitizer it is the longest suite.
    STRATA_DIFFERENTIAL_OPERATIONS=${STRATA_DIFFERENTIAL_OPERATIONS:-2000} \
    TSAN_OPTIONS="halt_on_error=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}" \
        swift test --skip-build --sanitize=thread --scratch-path .build-tsan --filter "$sanitized"
}

address() {
    tools/fuzz.sh build-tests
    # The LMDB guard turns a fault on a damaged page into an error: AddressSanitizer must let
    # the store's own SIGSEGV and SIGBUS handlers run.
    ASAN_OPTIONS="allow_user_segv_handler=1:handle_segv=0:handle_sigbus=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
    LSAN_OPTIONS="suppressions=$PWD/Tests/Fuzz/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}" \
        swift test -c release --skip-build --scratch-path .build-fuzz --filter "$sanitized|CorruptionTests"
}

fuzz() { tools/fuzz.sh all "${FUZZ_SECONDS:-10}"; }

python() {
    local venv="${STRATA_PYTHON_VENV:-$HOME/.cache/strata/python}"
    # Builds libStrataC.so in release (.build, as the suite did) and bundles it, as a user's install does.
    "$venv/bin/pip" install -q --disable-pip-version-check ./python
    # From outside the source tree, so that the tests import the installed package.
    (cd python/tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider .)
}

case "${1:-all}" in
    all) suite; python; thread; address; fuzz ;;
    suite|thread|address|fuzz|python) "$1" ;;
    *) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 64 ;;
esac
