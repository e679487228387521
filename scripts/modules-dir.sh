#!/bin/sh
# Prints the directory FreeSWITCH loads modules from, for `make install`.
# Order: $FREESWITCH_PREFIX; `pkg-config freeswitch` (also searching
# /usr/local/freeswitch/lib/pkgconfig, where a source install puts it); then
# the usual layouts: a source install with --disable-fhs (mod/) or FHS
# (lib/freeswitch/mod), and SignalWire's packages (/usr/lib/freeswitch/mod).
# FS_ROOT, for tests only, looks for all of them under another root.
root="${FS_ROOT:-}"

if [ -n "${FREESWITCH_PREFIX:-}" ]; then
    for dir in "$FREESWITCH_PREFIX/mod" "$FREESWITCH_PREFIX/lib/freeswitch/mod"; do
        if [ -d "$root$dir" ]; then echo "$dir"; exit 0; fi
    done
    echo "$FREESWITCH_PREFIX/mod"
    exit 0
fi

if [ -n "$root" ]; then
    PKG_CONFIG_LIBDIR="$root/usr/local/freeswitch/lib/pkgconfig:$root/usr/lib/pkgconfig:$root/usr/lib/x86_64-linux-gnu/pkgconfig:$root/usr/lib/aarch64-linux-gnu/pkgconfig"
    export PKG_CONFIG_LIBDIR
    unset PKG_CONFIG_PATH
else
    PKG_CONFIG_PATH="${PKG_CONFIG_PATH:+$PKG_CONFIG_PATH:}/usr/local/freeswitch/lib/pkgconfig"
    export PKG_CONFIG_PATH
fi
dir=$(pkg-config --variable=modulesdir freeswitch 2>/dev/null)
if [ -n "$dir" ]; then echo "$dir"; exit 0; fi

for dir in /usr/local/freeswitch/mod /usr/local/freeswitch/lib/freeswitch/mod /usr/lib/freeswitch/mod; do
    if [ -d "$root$dir" ]; then echo "$dir"; exit 0; fi
done
exit 1
