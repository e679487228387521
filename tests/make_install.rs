//! `make install` finds FreeSWITCH's modules directory with no variables
//! set, for each usual layout, each built in a temporary root (FS_ROOT) and
//! installed there (DESTDIR), with PKG_CONFIG_PATH unset.

use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_root(name: &str) -> PathBuf {
    let root = std::env::temp_dir().join(format!("wsbridge-make-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    root
}

fn pc_file(root: &Path, pc_dir: &str, modules_dir: &str) {
    let dir = root.join(pc_dir.trim_start_matches('/'));
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "prefix=/usr/local/freeswitch\nmodulesdir={modules_dir}\n\nName: FreeSWITCH\nDescription: test\nVersion: 1.10.12\nLibs: -lfreeswitch\nCflags: -I/x\n"
    );
    std::fs::write(dir.join("freeswitch.pc"), text).unwrap();
}

/// Runs `make install-module` into `root`; returns where it put the module, or its output on failure.
fn install(root: &Path) -> Result<PathBuf, String> {
    let module = root.join("built.so");
    std::fs::write(&module, b"not really a module").unwrap();
    let output = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PKG_CONFIG_PATH")
        .env_remove("FREESWITCH_PREFIX")
        .env_remove("MODULES_DIR")
        .env_remove("MAKEFLAGS")
        .arg("-s")
        .arg("install-module")
        .arg(format!("FS_ROOT={}", root.display()))
        .arg(format!("DESTDIR={}", root.display()))
        .arg(format!("MODULE_SO={}", module.display()))
        .output()
        .expect("running make");
    let text = String::from_utf8_lossy(&output.stdout).to_string() + &String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(text);
    }
    let installed = text.trim().strip_prefix("installed ").unwrap_or_else(|| panic!("unexpected output: {text}"));
    Ok(PathBuf::from(installed))
}

fn expect_installed(root: &Path, modules_dir: &str) {
    let installed = install(root).unwrap_or_else(|why| panic!("make install-module failed: {why}"));
    let expected = root.join(modules_dir.trim_start_matches('/')).join("mod_wsbridge.so");
    assert_eq!(installed, expected);
    assert_eq!(std::fs::read(&expected).unwrap(), b"not really a module");
    std::fs::remove_dir_all(root).unwrap();
}

fn tools_missing() -> Option<&'static str> {
    ["make", "pkg-config"].into_iter().find(|tool| Command::new(tool).arg("--version").output().is_err())
}

#[test]
fn make_install_finds_the_modules_directory_of_each_layout() {
    if let Some(tool) = tools_missing() {
        println!("SKIPPED: the make install layouts, because {tool} is not installed");
        return;
    }
    // A source install with --disable-fhs, as this project's tests use.
    let root = temp_root("disable-fhs");
    pc_file(&root, "/usr/local/freeswitch/lib/pkgconfig", "/usr/local/freeswitch/mod");
    expect_installed(&root, "/usr/local/freeswitch/mod");

    // A source install in the FHS layout, with its freeswitch.pc.
    let root = temp_root("fhs");
    pc_file(&root, "/usr/local/freeswitch/lib/pkgconfig", "/usr/local/freeswitch/lib/freeswitch/mod");
    expect_installed(&root, "/usr/local/freeswitch/lib/freeswitch/mod");

    // The same layouts found by their directories alone, without a freeswitch.pc.
    for modules_dir in ["/usr/local/freeswitch/mod", "/usr/local/freeswitch/lib/freeswitch/mod"] {
        let root = temp_root("dirs");
        std::fs::create_dir_all(root.join(modules_dir.trim_start_matches('/'))).unwrap();
        expect_installed(&root, modules_dir);
    }

    // SignalWire's packages: modules in /usr/lib/freeswitch/mod, with or without a .pc.
    let root = temp_root("signalwire");
    std::fs::create_dir_all(root.join("usr/lib/freeswitch/mod")).unwrap();
    expect_installed(&root, "/usr/lib/freeswitch/mod");
    let root = temp_root("signalwire-pc");
    pc_file(&root, "/usr/lib/pkgconfig", "/usr/lib/freeswitch/mod");
    expect_installed(&root, "/usr/lib/freeswitch/mod");

    // Nothing to find: a clear line, not a guess.
    let root = temp_root("none");
    let why = install(&root).expect_err("nothing should be found");
    assert!(why.contains("modules directory was not found"), "{why}");
    std::fs::remove_dir_all(&root).unwrap();
}
