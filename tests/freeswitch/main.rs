//! Integration tests against a real FreeSWITCH with the freshly built module.
//!
//! Where FreeSWITCH is not installed they are listed as ignored, after one
//! line that says why.

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

/// One integration test: the name `cargo test` shows and filters by, and its body.
#[derive(Clone, Copy)]
struct Test {
    name: &'static str,
    body: fn(),
    shape: Shape,
}

#[derive(Clone, Copy)]
struct Shape {
    /// About how long the test runs, where that is long enough to matter:
    /// such tests start first, longest first, so that the rest run beside
    /// them. The others start in the order they are declared.
    runs_seconds: u32,
    sharing: Sharing,
}

/// Which tests a test may run beside.
#[derive(Clone, Copy, PartialEq)]
enum Sharing {
    /// Beside any test but one that runs `Alone`.
    Shares,
    /// The test loads the machine with a hundred calls or more, so it runs
    /// with no other test beside it: their timing and frame counts would
    /// otherwise be judged on a saturated machine, and the test's own
    /// senders stalled.
    Alone,
    /// The test judges nothing that load could upset, so it also runs
    /// beside a test that runs alone (which would otherwise wait for it).
    BesideLoad,
}

/// Declares the tests of one file as its `TESTS`, which `main` runs:
///
/// ```text
/// crate::tests! {
///     hostile::half_close,                        // runs as hostile_half_close
///     hostile::deaf_for_a_minute (runs 60 s),     // started ahead of the rest
///     fork::load_100_calls (runs 60 s, alone),    // with no other test beside it
///     media::ten_minute_burst (runs 600 s, beside load), // even beside those
///     wss_with_a_private_ca,                      // runs as wss_with_a_private_ca
/// }
/// ```
///
/// Each entry names a function of that file; a `prefix::` before it is
/// joined to the function's name with `_` to make the test's name.
macro_rules! tests {
    ($($($part:ident)::+ $(($($attribute:tt)*))?),* $(,)?) => {
        pub const TESTS: &[$crate::Test] = &[$($crate::tests!(@test [$($part)::+] $($($attribute)*)?)),*];
    };
    (@test [$prefix:ident :: $function:ident] $($attribute:tt)*) => {
        $crate::Test {
            name: concat!(stringify!($prefix), "_", stringify!($function)),
            body: $function,
            shape: $crate::tests!(@shape [0, Shares] $($attribute)*),
        }
    };
    (@test [$function:ident] $($attribute:tt)*) => {
        $crate::Test { name: stringify!($function), body: $function, shape: $crate::tests!(@shape [0, Shares] $($attribute)*) }
    };
    (@shape [$seconds:expr, $sharing:ident]) => {
        $crate::Shape { runs_seconds: $seconds, sharing: $crate::Sharing::$sharing }
    };
    (@shape [$old:expr, $sharing:ident] runs $seconds:literal s $(, $($rest:tt)*)?) => {
        $crate::tests!(@shape [$seconds, $sharing] $($($rest)*)?)
    };
    (@shape [$seconds:expr, $old:ident] alone $(, $($rest:tt)*)?) => {
        $crate::tests!(@shape [$seconds, Alone] $($($rest)*)?)
    };
    (@shape [$seconds:expr, $old:ident] beside load $(, $($rest:tt)*)?) => {
        $crate::tests!(@shape [$seconds, BesideLoad] $($($rest)*)?)
    };
}
use tests;

mod audio;
mod calls;
mod drain;
mod exposed;
mod fork;
mod g711;
mod hostile;
mod listener;
mod media;
mod operating;
mod package;
mod playout;
mod protocols;
mod realtime_server;
mod reconnect;
mod scale_out;
mod secrets;
mod ssrf;
mod trust;
mod ws_server;

use std::sync::{Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use test_support::instance::{self, FreeSwitch};
use test_support::{esl, BuildEnv};
use ws_server::Router;

/// Where this crate's build found FreeSWITCH, and where its sources are.
pub(crate) const BUILD: BuildEnv = test_support::build_env!();

struct World {
    freeswitch: Mutex<Option<FreeSwitch>>,
    router: Router,
    esl_port: u16,
    sip_port: u16,
    pid: u32,
    dir: std::path::PathBuf,
}

static WORLD: OnceLock<Result<World, String>> = OnceLock::new();

/// The one FreeSWITCH all tests share, started by the first test that needs it.
fn world() -> &'static World {
    let world = WORLD.get_or_init(|| {
        std::panic::catch_unwind(|| {
            let router = Router::start();
            let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 0);
            World {
                esl_port: freeswitch.esl_port,
                sip_port: freeswitch.sip_port,
                pid: freeswitch.pid(),
                dir: freeswitch.dir.clone(),
                freeswitch: Mutex::new(Some(freeswitch)),
                router,
            }
        })
        .map_err(|panic| {
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        })
    });
    match world {
        Ok(world) => world,
        Err(why) => panic!("FreeSWITCH could not be started: {why}"),
    }
}

fn esl() -> esl::Esl {
    esl::Esl::connect(world().esl_port, instance::PASSWORD).expect("event socket")
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
}

fn uri(path: &str) -> String {
    format!("{}{path}", world().router.base())
}

fn ok_uuid(reply: &str) -> String {
    reply.trim().strip_prefix("+OK ").unwrap_or_else(|| panic!("originate failed: {reply}")).to_string()
}

fn wait_gone(uuid: &str, limit: Duration) {
    wait_gone_on(&mut esl(), uuid, limit)
}

fn wait_gone_on(esl: &mut esl::Esl, uuid: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while esl.api(&format!("uuid_exists {uuid}")).trim() == "true" {
        assert!(Instant::now() < deadline, "channel {uuid} still up after {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// FreeSWITCH's log once it holds every one of `wanted`: its log thread
/// writes a moment after the API reply, later still on a loaded machine.
fn log_showing(path: &std::path::Path, wanted: &[&str]) -> String {
    log_when(path, &format!("{wanted:?} in the log"), |log| wanted.iter().all(|text| log.contains(text)))
}

/// FreeSWITCH's log once `ready` holds for it (within 10 s), as for [`log_showing`].
fn log_when(path: &std::path::Path, what: &str, ready: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(path).unwrap_or_default();
        if ready(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "not after 10 s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn recording_path(name: &str) -> std::path::PathBuf {
    world().dir.join("recordings").join(format!("{name}.wav"))
}

fn main() {
    let arguments = Arguments::from_args();
    // Each file declares its own tests with tests!; a new file needs its
    // `mod` line above and its TESTS here.
    let mut tests = [
        calls::TESTS,
        drain::TESTS,
        exposed::TESTS,
        fork::TESTS,
        hostile::TESTS,
        listener::TESTS,
        operating::TESTS,
        package::TESTS,
        media::TESTS,
        playout::TESTS,
        protocols::TESTS,
        realtime_server::TESTS,
        reconnect::TESTS,
        scale_out::TESTS,
        secrets::TESTS,
        ssrf::TESTS,
        trust::TESTS,
    ]
    .concat();
    // The longest first, so the rest run beside them (a stable sort: the
    // others keep their order).
    tests.sort_by_key(|test| std::cmp::Reverse(test.shape.runs_seconds));
    let missing = env!("WSBRIDGE_FS_MISSING");
    if !missing.is_empty() {
        println!("SKIPPED: the mod_wsbridge build and the FreeSWITCH integration tests, because {missing}");
    }
    let kamailio_missing = scale_out::missing();
    if let (Some(why), true) = (&kamailio_missing, missing.is_empty()) {
        println!("SKIPPED: the Kamailio scale-out test, because {why}");
    }
    let needs_kamailio = |name: &str| scale_out::TESTS.iter().any(|test| test.name == name);
    let trials = tests
        .into_iter()
        .map(|Test { name, body, shape }| {
            Trial::test(name, move || {
                // Every test shares the machine, but one that runs alone holds it.
                static MACHINE: RwLock<()> = RwLock::new(());
                let _shared =
                    (shape.sharing == Sharing::Shares).then(|| MACHINE.read().unwrap_or_else(|e| e.into_inner()));
                let _alone =
                    (shape.sharing == Sharing::Alone).then(|| MACHINE.write().unwrap_or_else(|e| e.into_inner()));
                body();
                Ok(())
            })
            .with_ignored_flag(!missing.is_empty() || (kamailio_missing.is_some() && needs_kamailio(name)))
        })
        .collect();
    let conclusion = libtest_mimic::run(&arguments, trials);

    if let Some(Ok(world)) = WORLD.get() {
        let freeswitch = world.freeswitch.lock().unwrap().take().expect("FreeSWITCH instance");
        let version = freeswitch.version();
        let log = freeswitch.log_path();
        let clean = freeswitch.stop();
        println!(
            "integration summary: {} passed, {} failed against {version}; FreeSWITCH {} (log: {})",
            conclusion.num_passed,
            conclusion.num_failed,
            if clean { "shut down cleanly" } else { "did NOT shut down cleanly" },
            log.display()
        );
        if !clean {
            std::process::exit(101);
        }
    }
    conclusion.exit();
}
