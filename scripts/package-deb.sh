#!/bin/sh
# Packs an already built module as mod-wsbridge_<version>_<arch>.deb, laid out
# as SignalWire's FreeSWITCH packages expect: modules in /usr/lib/freeswitch/mod,
# the FreeSWITCH library in the package libfreeswitch1.
# Usage: package-deb.sh <module .so> <version> <output dir> <libfreeswitch1 floor> <maintainer>
set -eu
module=$1 version=$2 out_dir=$3 floor=$4 maintainer=$5
[ -f "$module" ] || { echo "$module is missing: build the module first (make build)" >&2; exit 1; }
command -v dpkg-deb >/dev/null || { echo "dpkg-deb is missing (apt-get install dpkg-dev)" >&2; exit 1; }
repo=$(cd "$(dirname "$0")/.." && pwd)
arch=$(dpkg --print-architecture)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"

docs=$root/usr/share/doc/mod-wsbridge
install -d "$root/DEBIAN" "$root/usr/lib/freeswitch/mod" "$docs/examples"
install -m 0644 "$module" "$root/usr/lib/freeswitch/mod/mod_wsbridge.so"
# Without debug info (the release profile keeps it); the dynamic symbols FreeSWITCH looks up stay.
if command -v strip >/dev/null; then strip --strip-unneeded "$root/usr/lib/freeswitch/mod/mod_wsbridge.so"; fi
install -m 0644 "$repo/README.md" "$docs/README.md"
install -m 0644 "$repo/autoload_configs/wsbridge.conf.xml" "$repo/autoload_configs/modules.conf.xml" \
    "$repo/dialplan/wsbridge.xml" "$docs/examples/"
cat >"$docs/copyright" <<COPYRIGHT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: mod_wsbridge

Files: *
License: MPL-2.0
 This Source Code Form is subject to the terms of the Mozilla Public License,
 v. 2.0. You can obtain a copy of the MPL at https://mozilla.org/MPL/2.0/.
COPYRIGHT

cat >"$root/DEBIAN/control" <<CONTROL
Package: mod-wsbridge
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Depends: libfreeswitch1 (>= $floor), libc6
Section: comm
Priority: optional
Description: FreeSWITCH endpoint that bridges calls to WebSocket audio servers
 mod_wsbridge bridges live calls to a WebSocket audio server, speaking the
 wire protocol of the original C mod_wsbridge. Load it with "load mod_wsbridge";
 example configuration is in /usr/share/doc/mod-wsbridge/examples.
CONTROL

mkdir -p "$out_dir"
deb=$out_dir/mod-wsbridge_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "built $deb"
