//! Turns what freeswitch-sys found into `cfg(freeswitch)` and a few
//! environment values for the module and its integration tests.

use std::env;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(freeswitch)");
    match env::var("DEP_FREESWITCH_FOUND") {
        Ok(_) => {
            println!("cargo::rustc-cfg=freeswitch");
            if let Ok(lib_dir) = env::var("DEP_FREESWITCH_LIB_DIR") {
                // Test binaries link libfreeswitch; let them find it at run time.
                println!("cargo::rustc-link-arg=-Wl,-rpath,{lib_dir}");
            }
            let prefix = env::var("DEP_FREESWITCH_PREFIX").unwrap_or_default();
            println!("cargo::rustc-env=WSBRIDGE_FS_PREFIX={prefix}");
            let modules = env::var("DEP_FREESWITCH_MODULES_DIR").unwrap_or_default();
            println!("cargo::rustc-env=WSBRIDGE_FS_MODULES_DIR={modules}");
            println!("cargo::rustc-env=WSBRIDGE_FS_MISSING=");
        }
        Err(_) => {
            let why = env::var("DEP_FREESWITCH_MISSING").unwrap_or_else(|_| "FreeSWITCH was not found".into());
            println!("cargo::rustc-env=WSBRIDGE_FS_MISSING={why}");
            println!("cargo::rustc-env=WSBRIDGE_FS_PREFIX=");
            println!("cargo::rustc-env=WSBRIDGE_FS_MODULES_DIR=");
            println!(
                "cargo::warning=FreeSWITCH not found, the module build and the FreeSWITCH tests are skipped: {why}"
            );
        }
    }
}
