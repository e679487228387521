//! Integration tests against a real FreeSWITCH with the freshly built module.
//!
//! Where FreeSWITCH is not installed they are listed as ignored, after one
//! line that says why.

#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

mod audio;
mod calls;
mod hostile;
mod media;
mod operating;
mod ws_server;

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libtest_mimic::{Arguments, Trial};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use test_support::instance::{self, FreeSwitch};
use test_support::{esl, BuildEnv};
use ws_server::Router;

/// Where this crate's build found FreeSWITCH, and where its sources are.
const BUILD: BuildEnv = test_support::build_env!();

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

fn recording_path(name: &str) -> std::path::PathBuf {
    world().dir.join("recordings").join(format!("{name}.wav"))
}

fn main() {
    let arguments = Arguments::from_args();
    let tests: Vec<(&str, fn())> = vec![
        // The longest first, so the rest run beside them.
        ("media_ten_minute_burst_into_a_small_buffer", media::ten_minute_burst_into_a_small_buffer),
        ("hostile_deaf_for_a_minute", hostile::deaf_for_a_minute),
        ("uplink_16k_originate_destination", calls::uplink_16k_originate_destination),
        ("uplink_8k_dial_string_variables", calls::uplink_8k_dial_string_variables),
        ("downlink_burst_bridge_from_dialplan", calls::downlink_burst_bridge_from_dialplan),
        ("sip_call_with_p_wsbridge_headers", calls::sip_call_with_p_wsbridge_headers),
        ("caller_hangup_closes_with_1000", calls::caller_hangup_closes_with_1000),
        ("uplink_wideband_rates", calls::uplink_wideband_rates),
        ("reload_and_unload_and_config_file", calls::reload_and_unload_and_config_file),
        ("connect_refused_is_destination_out_of_order", calls::connect_refused_is_destination_out_of_order),
        ("bad_input_gets_its_hangup_cause", calls::bad_input_gets_its_hangup_cause),
        ("dialplan_samples_reach_their_servers", calls::dialplan_samples_reach_their_servers),
        ("hostile_never_answers_the_upgrade", hostile::never_answers_the_upgrade),
        ("hostile_garbage_or_refusal_instead_of_101", hostile::garbage_or_refusal_instead_of_101),
        ("hostile_sixteen_mib_binary_message", hostile::sixteen_mib_binary_message),
        ("hostile_protocol_violations", hostile::protocol_violations),
        ("hostile_tcp_reset_mid_call", hostile::tcp_reset_mid_call),
        ("hostile_half_close", hostile::half_close),
        ("hostile_text_and_ping_floods", hostile::text_and_ping_floods),
        ("hostile_thousand_calls_churn", hostile::thousand_calls_churn),
        ("wss_with_a_private_ca", hostile::wss_with_a_private_ca),
        ("api_status_list_kill_and_debug", operating::api_status_list_kill_and_debug),
        ("events_and_cdr_variables", operating::events_and_cdr_variables),
        ("demo_server_echoes_and_records", operating::demo_server_echoes_and_records),
        ("media_burst_30s_in_one_message", media::burst_30s_in_one_message),
        ("media_burst_30s_in_1500_messages", media::burst_30s_in_1500_messages),
        ("media_odd_sized_messages_play_continuously", media::odd_sized_messages_play_continuously),
        ("media_clear_stops_playback_within_40ms", media::clear_stops_playback_within_40ms),
        ("media_mark_echo_matches_end_of_audio", media::mark_echo_matches_end_of_audio),
        ("media_comfort_noise_level_and_spectrum", media::comfort_noise_level_and_spectrum),
        ("media_dtmf_both_ways_over_sip", media::dtmf_both_ways_over_sip),
        ("media_server_that_stops_reading_the_uplink", media::server_that_stops_reading_the_uplink),
    ];
    let missing = env!("WSBRIDGE_FS_MISSING");
    if !missing.is_empty() {
        println!("SKIPPED: the mod_wsbridge build and the FreeSWITCH integration tests, because {missing}");
    }
    let trials = tests
        .into_iter()
        .map(|(name, body)| {
            Trial::test(name, move || {
                body();
                Ok(())
            })
            .with_ignored_flag(!missing.is_empty())
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
