//! Finds the installed FreeSWITCH, generates bindings and builds the C shim.
//!
//! Without FreeSWITCH the crate still builds, empty, and tells dependents why
//! through the `links` metadata (`DEP_FREESWITCH_MISSING`), so that the pure
//! parts of mod_wsbridge can be built and tested anywhere.

use std::env;
use std::path::{Path, PathBuf};

const DEFAULT_PKGCONFIG_DIR: &str = "/usr/local/freeswitch/lib/pkgconfig";

struct Installation {
    include_dirs: Vec<PathBuf>,
    lib_dirs: Vec<PathBuf>,
    defines: Vec<(String, Option<String>)>,
    modules_dir: Option<String>,
    prefix: Option<String>,
}

fn from_prefix(prefix: &str) -> Result<Installation, String> {
    let prefix_path = Path::new(prefix);
    let include = prefix_path.join("include/freeswitch");
    if !include.join("switch.h").exists() {
        return Err(format!("FREESWITCH_PREFIX={prefix} has no include/freeswitch/switch.h"));
    }
    Ok(Installation {
        include_dirs: vec![include],
        lib_dirs: vec![prefix_path.join("lib")],
        defines: Vec::new(),
        modules_dir: Some(prefix_path.join("mod").display().to_string()),
        prefix: Some(prefix.to_string()),
    })
}

fn from_pkg_config() -> Result<Installation, String> {
    let mut search = env::var("PKG_CONFIG_PATH").unwrap_or_default();
    if !search.split(':').any(|dir| dir == DEFAULT_PKGCONFIG_DIR) {
        if !search.is_empty() {
            search.push(':');
        }
        search.push_str(DEFAULT_PKGCONFIG_DIR);
    }
    env::set_var("PKG_CONFIG_PATH", &search);
    let library =
        pkg_config::Config::new().cargo_metadata(false).env_metadata(false).probe("freeswitch").map_err(|error| {
            match error {
                pkg_config::Error::Command { .. } => {
                    "pkg-config is not installed and FREESWITCH_PREFIX is not set".to_string()
                }
                _ => format!(
                "`pkg-config freeswitch` finds no freeswitch.pc (searched {search}) and FREESWITCH_PREFIX is not set"
            ),
            }
        })?;
    let variable = |name: &str| pkg_config::get_variable("freeswitch", name).ok().filter(|v| !v.is_empty());
    Ok(Installation {
        include_dirs: library.include_paths,
        lib_dirs: library.link_paths,
        defines: library.defines.into_iter().collect(),
        modules_dir: variable("modulesdir"),
        prefix: variable("prefix"),
    })
}

fn main() {
    println!("cargo::rustc-check-cfg=cfg(freeswitch)");
    println!("cargo::rerun-if-env-changed=FREESWITCH_PREFIX");
    println!("cargo::rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo::rerun-if-changed=shim/wsb_shim.c");
    println!("cargo::rerun-if-changed=shim/wsb_shim.h");
    println!("cargo::rerun-if-changed={DEFAULT_PKGCONFIG_DIR}/freeswitch.pc");

    let found = match env::var("FREESWITCH_PREFIX") {
        Ok(prefix) if !prefix.is_empty() => from_prefix(&prefix),
        _ => from_pkg_config(),
    };
    let installation = match found {
        Ok(installation) => installation,
        Err(reason) => {
            println!("cargo::metadata=missing={reason}");
            return;
        }
    };

    for dir in &installation.include_dirs {
        println!("cargo::rerun-if-changed={}", dir.join("switch.h").display());
    }
    let mut shim = cc::Build::new();
    shim.file("shim/wsb_shim.c").warnings(false);
    for dir in &installation.include_dirs {
        shim.include(dir);
    }
    for (name, value) in &installation.defines {
        shim.define(name, value.as_deref());
    }
    shim.compile("wsb_shim");

    let mut bindings = bindgen::Builder::default()
        .header("shim/wsb_shim.h")
        .allowlist_function("switch_.*")
        .allowlist_function("wsb_.*")
        .allowlist_type("switch_.*")
        .allowlist_var("SWITCH_.*")
        .default_enum_style(bindgen::EnumVariation::NewType { is_bitfield: false, is_global: false })
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for dir in &installation.include_dirs {
        bindings = bindings.clang_arg(format!("-I{}", dir.display()));
    }
    for (name, value) in &installation.defines {
        bindings = bindings.clang_arg(match value {
            Some(value) => format!("-D{name}={value}"),
            None => format!("-D{name}"),
        });
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR")).join("bindings.rs");
    bindings
        .generate()
        .expect("bindgen failed on the FreeSWITCH headers (is libclang-dev installed?)")
        .write_to_file(&out)
        .expect("writing bindings.rs");

    for dir in &installation.lib_dirs {
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
    println!("cargo::rustc-link-lib=dylib=freeswitch");
    println!("cargo::rustc-cfg=freeswitch");
    println!("cargo::metadata=found=1");
    if let Some(dir) = installation.lib_dirs.first() {
        println!("cargo::metadata=lib_dir={}", dir.display());
    }
    if let Some(dir) = &installation.modules_dir {
        println!("cargo::metadata=modules_dir={dir}");
    }
    if let Some(prefix) = &installation.prefix {
        println!("cargo::metadata=prefix={prefix}");
    }
}
