# Builds mod_wsbridge and installs it into FreeSWITCH's modules directory.
export PKG_CONFIG_PATH := $(if $(PKG_CONFIG_PATH),$(PKG_CONFIG_PATH):)/usr/local/freeswitch/lib/pkgconfig

ifdef FREESWITCH_PREFIX
MODULES_DIR ?= $(FREESWITCH_PREFIX)/mod
else
MODULES_DIR ?= $(shell pkg-config --variable=modulesdir freeswitch 2>/dev/null)
endif

.PHONY: all build install test clean

all: build

build:
	cargo build --release

install: build
	@test -n "$(MODULES_DIR)" || { echo "FreeSWITCH's modules directory is unknown: set FREESWITCH_PREFIX or MODULES_DIR"; exit 1; }
	install -d $(DESTDIR)$(MODULES_DIR)
	install -m 0755 target/release/libmod_wsbridge.so $(DESTDIR)$(MODULES_DIR)/mod_wsbridge.so
	@echo "installed $(DESTDIR)$(MODULES_DIR)/mod_wsbridge.so"

test:
	cargo test

clean:
	cargo clean
