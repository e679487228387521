//! Draining a node, in a FreeSWITCH of its own (a drain refuses every new
//! call, so it must not share one with other tests).

use std::time::{Duration, Instant};

use serde_json::Value;
use test_support::esl::Esl;
use test_support::instance::FreeSwitch;

use crate::ws_server::{runtime, Connection, Router};
use crate::{ok_uuid, wait_gone_on, BUILD};

crate::tests! {
    drain::api_and_shutdown (runs 20 s),
}

fn status(esl: &mut Esl) -> Value {
    let text = esl.api("wsbridge status json");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("status json: {e}: {text}"))
}

fn call(esl: &mut Esl, router: &Router, path: &str) -> (String, Connection) {
    let mut incoming = router.expect(path);
    let uuid = ok_uuid(&esl.api(&format!("originate wsbridge/{}{path} tone_60000ms XML wsbridge-test", router.base())));
    let mut connection = incoming.next(Duration::from_secs(5));
    runtime().block_on(connection.first_text());
    (uuid, connection)
}

fn drained_event(events: &mut Esl, limit: Duration) -> Option<test_support::esl::Headers> {
    events.wait_event(limit, |event| event.get("Event-Subclass").map(String::as_str) == Some("wsbridge::drained"))
}

/// `wsbridge drain on` refuses new calls and forks (calls with
/// NORMAL_TEMPORARY_FAILURE) while the calls and forks up go on;
/// `wsbridge::drained` fires when the last of them ends, not before; `drain off` takes calls again; `fsctl shutdown elegant` drains by itself.
pub fn api_and_shutdown() {
    let router = Router::start();
    let freeswitch = FreeSwitch::start(&BUILD, &router.base(), 5);
    let mut esl = freeswitch.esl();
    let mut events = freeswitch.esl();
    events.subscribe("CUSTOM wsbridge::drained");

    let (first, mut first_connection) = call(&mut esl, &router, "/drain-1");
    let (second, _second_connection) = call(&mut esl, &router, "/drain-2");
    // A fork on a call of another endpoint: the node is not drained while it streams.
    let mut fork_incoming = router.expect("/drain-fork");
    let forked = ok_uuid(&esl.api("originate null/drain-fork tone_60000ms XML wsbridge-test"));
    let reply = esl.api(&format!("uuid_wsbridge_fork {forked} start {}/drain-fork mono 8000", router.base()));
    assert!(reply.starts_with("+OK"), "fork start: {reply}");
    let mut fork_connection = fork_incoming.next(Duration::from_secs(5));
    runtime().block_on(fork_connection.first_text());
    assert_eq!(status(&mut esl)["draining"], false);
    assert_eq!(esl.api("wsbridge drain on").trim(), "+OK draining on");
    let began = Instant::now();
    let draining = status(&mut esl);
    assert_eq!((draining["draining"].as_bool(), draining["drain_reason"].as_str()), (Some(true), Some("api")));
    assert_eq!((draining["active_calls"].as_u64(), draining["active_forks"].as_u64()), (Some(2), Some(1)));
    assert!(esl.api("wsbridge status").contains("draining: yes, for "), "status text");

    let refused = esl.api(&format!("originate wsbridge/{}/drain-3 &park", router.base()));
    assert_eq!(refused.trim(), "-ERR NORMAL_TEMPORARY_FAILURE", "a new call while draining");
    assert_eq!(status(&mut esl)["refused_draining"], 1);

    // The calls up go on: the first still sends the caller's audio.
    let received = runtime().block_on(first_connection.receive_all(Duration::from_secs(1)));
    assert!(received.frames.len() >= 40, "a call up while draining sent {} frames in 1 s", received.frames.len());

    assert!(esl.api(&format!("uuid_kill {first}")).starts_with("+OK"));
    wait_gone_on(&mut esl, &first, Duration::from_secs(5));
    assert!(drained_event(&mut events, Duration::from_secs(1)).is_none(), "drained with a call still up");
    assert!(esl.api(&format!("uuid_kill {second}")).starts_with("+OK"));
    wait_gone_on(&mut esl, &second, Duration::from_secs(5));
    assert!(drained_event(&mut events, Duration::from_secs(1)).is_none(), "drained with a fork still streaming");
    let refused_fork =
        esl.api(&format!("uuid_wsbridge_fork {forked} start name=b {}/drain-fork mono 8000", router.base()));
    assert!(refused_fork.starts_with("-ERR"), "a new fork while draining: {refused_fork}");
    assert!(esl.api(&format!("uuid_wsbridge_fork {forked} stop")).starts_with("+OK"));
    let drained = drained_event(&mut events, Duration::from_secs(5)).expect("no wsbridge::drained after the last call");
    let took: f64 = drained["WSBridge-Drain-Seconds"].parse().unwrap();
    assert!(took > 0.9 && took <= began.elapsed().as_secs_f64() + 0.1, "drain took {took} s");
    assert_eq!(drained["WSBridge-Drain-Reason"], "api");
    assert!(esl.api(&format!("uuid_kill {forked}")).starts_with("+OK"));
    println!("drain: refused 1 new call and 1 new fork; the last of 2 calls and 1 fork ended {took:.2} s after drain on, then wsbridge::drained");

    assert_eq!(esl.api("wsbridge drain off").trim(), "+OK draining off");
    assert_eq!(status(&mut esl)["draining"], false);
    let (third, _third_connection) = call(&mut esl, &router, "/drain-4");

    // Shutting down elegantly waits for the calls: the module drains meanwhile.
    assert!(esl.command("bgapi fsctl shutdown elegant").unwrap().starts_with("+OK"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while status(&mut esl)["drain_reason"] != "shutdown" {
        assert!(Instant::now() < deadline, "no drain 5 s after fsctl shutdown elegant: {}", status(&mut esl));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(esl.api(&format!("uuid_kill {third}")).starts_with("+OK"));
    let drained = drained_event(&mut events, Duration::from_secs(5)).expect("no wsbridge::drained during shutdown");
    assert_eq!(drained["WSBridge-Drain-Reason"], "shutdown");
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}
