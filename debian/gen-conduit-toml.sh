#!/bin/sh
# Regenerates debian/conduit.toml (the packaged /etc/conduit/conduit.toml) from
# conduit.toml.example: same keys and comments, the database in /var/lib/conduit.
# Usage: debian/gen-conduit-toml.sh [OUTPUT]   (default debian/conduit.toml)
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/debian/conduit.toml}
{
    printf '%s\n' \
        '# /etc/conduit/conduit.toml: installed by the conduit Debian package (a conffile:' \
        '# your changes are kept on upgrade). Restart after editing: systemctl restart conduit' \
        '# The service runs as the user "conduit"; see /usr/share/doc/conduit/.' \
        '#'
    sed -e 's|^database_path = "./conduit-db"$|database_path = "/var/lib/conduit"|' \
        -e 's|^# docs/operators-guide.md). The Debian package uses /var/lib/conduit.$|# /usr/share/doc/conduit/operators-guide.md). Owned by the conduit user.|' \
        "$root/conduit.toml.example"
} >"$out"
grep -q '^database_path = "/var/lib/conduit"$' "$out"
