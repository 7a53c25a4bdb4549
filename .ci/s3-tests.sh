#!/usr/bin/env bash
# CI: the tests against a real S3 server (Ceph radosgw on loopback, cluster/local/s3-server.sh).
# Starts the server (installing its Debian packages if needed), runs `pytest tests/s3` with the
# server required (a server that cannot start fails the job instead of skipping), and stops the
# server afterwards whatever happened. A server already running in the state folder is reused and
# left running. Extra arguments go to pytest. Run it in the environment that has assay[test]
# installed (pytest from PATH, else .venv/bin/pytest).
set -euo pipefail
cd "$(dirname "$0")/.."

export ASSAY_S3_DIR=${ASSAY_S3_DIR:-/tmp/assay-s3}
SERVER=(bash cluster/local/s3-server.sh)
PYTEST=${PYTEST:-$(command -v pytest || echo .venv/bin/pytest)}

if "${SERVER[@]}" status "$ASSAY_S3_DIR" 2>/dev/null; then
    echo "s3-tests: reusing the S3 server in $ASSAY_S3_DIR" >&2
    eval "$("${SERVER[@]}" env "$ASSAY_S3_DIR")"
else
    trap '"${SERVER[@]}" stop "$ASSAY_S3_DIR" || true' EXIT
    eval "$("${SERVER[@]}" start "$ASSAY_S3_DIR")"
fi

ASSAY_S3_REQUIRED=1 "$PYTEST" tests/s3 -p no:cacheprovider "$@"
