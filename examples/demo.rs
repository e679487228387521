//! `make demo`: see the module work before reading further.
//!
//! cargo run --release --example demo -- <path of wsbridge-demo> [output dir]

fn main() {
    let missing = env!("WSBRIDGE_FS_MISSING");
    if !missing.is_empty() {
        eprintln!("make demo needs FreeSWITCH 1.10 with its headers (a source install in /usr/local/freeswitch, or set FREESWITCH_PREFIX): {missing}");
        std::process::exit(1);
    }
    let mut arguments = std::env::args().skip(1);
    let Some(demo_server) = arguments.next() else {
        eprintln!("usage: demo <path of wsbridge-demo> [output dir]");
        std::process::exit(2);
    };
    let out_dir = arguments.next().unwrap_or_else(|| "target/demo".to_string());
    let build = test_support::build_env!();
    match test_support::demo::run(&build, demo_server.as_ref(), out_dir.as_ref(), &mut std::io::stdout()) {
        Ok(report) if report.clean_shutdown && (report.heard_hz - test_support::demo::TONE_HZ).abs() < 20.0 => {}
        Ok(report) => {
            eprintln!("the demo ran, but not as it should: {report:?}");
            std::process::exit(1);
        }
        Err(why) => {
            eprintln!("the demo failed: {why}");
            std::process::exit(1);
        }
    }
}
