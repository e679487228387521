# Builds mod_wsbridge and installs it into FreeSWITCH's modules directory,
# found by scripts/modules-dir.sh (set MODULES_DIR to choose another).
# GNU Make does not pass exported variables to $(shell), so the script gets
# what it needs on its own command line.
MODULES_DIR ?= $(shell FREESWITCH_PREFIX='$(FREESWITCH_PREFIX)' PKG_CONFIG_PATH='$(PKG_CONFIG_PATH)' FS_ROOT='$(FS_ROOT)' sh scripts/modules-dir.sh)
MODULE_SO ?= $(or $(CARGO_TARGET_DIR),target)/release/libmod_wsbridge.so
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
DEB_DIR ?= $(or $(CARGO_TARGET_DIR),target)/deb
# The oldest FreeSWITCH the module is built for (module API version 5).
DEB_FREESWITCH_FLOOR ?= 1.10
DEB_MAINTAINER ?= mod_wsbridge maintainers <mod-wsbridge@invalid>

.PHONY: all build install install-module modules-dir demo test clean deb package-deb

FS_PKG_CONFIG_PATH := $(if $(PKG_CONFIG_PATH),$(PKG_CONFIG_PATH):)/usr/local/freeswitch/lib/pkgconfig

all: build

build:
	PKG_CONFIG_PATH='$(FS_PKG_CONFIG_PATH)' cargo build --release

install: build install-module

# Installs an already built module (what `install` does after building).
install-module:
	@test -n "$(MODULES_DIR)" || { echo "FreeSWITCH's modules directory was not found (no freeswitch.pc, no /usr/local/freeswitch/mod, /usr/local/freeswitch/lib/freeswitch/mod or /usr/lib/freeswitch/mod): set FREESWITCH_PREFIX or MODULES_DIR"; exit 1; }
	install -d $(DESTDIR)$(MODULES_DIR)
	install -m 0755 $(MODULE_SO) $(DESTDIR)$(MODULES_DIR)/mod_wsbridge.so
	@echo "installed $(DESTDIR)$(MODULES_DIR)/mod_wsbridge.so"

# mod-wsbridge_<version>_<arch>.deb in DEB_DIR, for SignalWire's FreeSWITCH packages.
deb: build package-deb

# Packs an already built module (what `deb` does after building).
package-deb:
	sh scripts/package-deb.sh '$(MODULE_SO)' '$(VERSION)' '$(DEB_DIR)' '$(DEB_FREESWITCH_FLOOR)' '$(DEB_MAINTAINER)'

# One call through a private FreeSWITCH on 127.0.0.1 to wsbridge-demo in echo mode.
demo:
	@if [ -z "$(FREESWITCH_PREFIX)" ] && ! PKG_CONFIG_PATH='$(FS_PKG_CONFIG_PATH)' pkg-config --exists freeswitch 2>/dev/null; then \
		echo "make demo needs FreeSWITCH 1.10 with its headers: install it from source into /usr/local/freeswitch (or set FREESWITCH_PREFIX), and pkg-config"; exit 1; fi
	PKG_CONFIG_PATH='$(FS_PKG_CONFIG_PATH)' cargo build --release -p wsbridge-demo
	PKG_CONFIG_PATH='$(FS_PKG_CONFIG_PATH)' cargo run --release --example demo -- target/release/wsbridge-demo target/demo

modules-dir:
	@echo "$(MODULES_DIR)"

test:
	cargo test

clean:
	cargo clean
