#!/bin/sh
# Create the CA on first start, publish its certificate (never its key) for agent
# containers, then run guardproxy with the given arguments.
set -eu
data="${GUARDPROXY_DATA_DIR:?}"
public="${GUARDPROXY_CA_PUBLIC_DIR:?}"
python - "$data" <<'PY'
import sys
from pathlib import Path

from guardproxy.intercept.proxy import ensure_ca
from guardproxy.server import prepare_data_dir

data = Path(sys.argv[1])
prepare_data_dir(data)
ensure_ca(data / "ca")
PY
cp "$data/ca/mitmproxy-ca-cert.pem" "$public/.guardproxy-ca.crt.new"
chmod 0644 "$public/.guardproxy-ca.crt.new"
mv "$public/.guardproxy-ca.crt.new" "$public/guardproxy-ca.crt"
exec guardproxy "$@"
