//! `make deb`'s packaging: the .deb's control fields and files, checked with
//! dpkg-deb, and its module loaded into FreeSWITCH from the extracted tree.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use test_support::instance::FreeSwitch;

use crate::ws_server::{runtime, Router};
use crate::{ok_uuid, wait_gone_on, BUILD};

crate::tests! {
    deb_package_layout_and_load,
}

fn output(command: &mut Command) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{command:?}: {text}{}", String::from_utf8_lossy(&output.stderr));
    text
}

/// `make package-deb` packs the freshly built module: the step `make deb`
/// runs after its release build (which the suite does not repeat).
fn package(out_dir: &Path) -> PathBuf {
    let text = output(
        Command::new("make")
            .current_dir(BUILD.manifest_dir)
            .env_remove("MAKEFLAGS")
            .args(["-s", "package-deb"])
            .arg(format!("MODULE_SO={}", BUILD.built_module().display()))
            .arg(format!("DEB_DIR={}", out_dir.display())),
    );
    PathBuf::from(text.trim().strip_prefix("built ").unwrap_or_else(|| panic!("make package-deb said: {text}")))
}

pub fn deb_package_layout_and_load() {
    let dir = std::env::temp_dir().join(format!("wsbridge-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let deb = package(&dir);
    let arch = output(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(deb.file_name().unwrap().to_string_lossy(), format!("mod-wsbridge_{version}_{arch}.deb"));

    let field = |name: &str| output(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).trim().to_string();
    assert_eq!(field("Package"), "mod-wsbridge");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch);
    let depends = field("Depends");
    assert!(depends.contains("libfreeswitch1 (>= 1.10)"), "Depends: {depends}");

    let listing = output(Command::new("dpkg-deb").arg("-c").arg(&deb));
    let files: Vec<&str> =
        listing.lines().filter_map(|line| line.split_whitespace().last()).filter(|path| !path.ends_with('/')).collect();
    println!("{} holds:\n  {}\nDepends: {depends}", deb.display(), files.join("\n  "));
    for expected in [
        "./usr/lib/freeswitch/mod/mod_wsbridge.so",
        "./usr/share/doc/mod-wsbridge/README.md",
        "./usr/share/doc/mod-wsbridge/copyright",
        "./usr/share/doc/mod-wsbridge/examples/wsbridge.conf.xml",
        "./usr/share/doc/mod-wsbridge/examples/wsbridge.xml",
        "./usr/share/doc/mod-wsbridge/examples/modules.conf.xml",
    ] {
        assert!(files.contains(&expected), "{expected} is not in the package: {files:?}");
    }
    assert!(listing.lines().all(|line| line.contains("root/root")), "files not owned by root: {listing}");

    // Extracted into a temporary root, its module loads and takes a call.
    let root = dir.join("root");
    output(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let module = root.join("usr/lib/freeswitch/mod/mod_wsbridge.so");
    let router = Router::start();
    let freeswitch = FreeSwitch::start_with_module(&BUILD, &router.base(), 6, &module);
    let mut esl = freeswitch.esl();
    let status = esl.api("wsbridge status");
    assert!(status.starts_with(&format!("mod_wsbridge {version}\n")), "{status}");
    let mut incoming = router.expect("/deb");
    let uuid = ok_uuid(&esl.api(&format!("originate wsbridge/{}/deb tone_1000ms XML wsbridge-test", router.base())));
    let mut connection = incoming.next(Duration::from_secs(5));
    assert_eq!(runtime().block_on(connection.first_text()), r#" {"content-type":"audio/l16;rate=16000"}"#);
    wait_gone_on(&mut esl, &uuid, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
    std::fs::remove_dir_all(&dir).unwrap();
}
