//! Calls from the WebSocket side: clients open a WebSocket to the module's
//! listener and call into FreeSWITCH's dialplan. Each test has a FreeSWITCH
//! of its own, whose wsbridge.conf turns the listener on.

use std::net::TcpListener as StdListener;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::audio::{assert_tone, read_wav, tone};
use crate::ws_server::runtime;
use crate::{world, BUILD};
use test_support::esl::Esl;
use test_support::instance::FreeSwitch;
use test_support::proc_stats;

crate::tests! {
    listener::calls (runs 30 s),
    listener::load (runs 40 s, alone),
}

const TOKEN: &str = "listener-test-token";
/// The client's tone, told apart from the dialplan's 1 kHz.
const CLIENT_HZ: f64 = 700.0;
const DIALPLAN_HZ: f64 = 1000.0;

pub(crate) type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// All clients come from 127.0.0.1, up to `max_calls` at once: as many may be in the handshake.
fn listener_conf(port: u16, token: &str, max_calls: usize) -> String {
    format!(
        r#"<param name="listen" value="127.0.0.1:{port}"/><param name="listen-tokens" value="other-token {token}"/><param name="listen-context" value="wsbridge-test"/><param name="listen-max-calls" value="{max_calls}"/><param name="listen-handshakes-per-address" value="{max_calls}"/>"#
    )
}

/// A FreeSWITCH of its own with the listener on `port`.
fn freeswitch_listening(instance: u16, port: u16, max_calls: usize) -> (FreeSwitch, Esl) {
    let freeswitch = FreeSwitch::start(&BUILD, &world().router.base(), instance);
    let mut esl = freeswitch.esl();
    freeswitch.set_wsbridge_conf(&listener_conf(port, TOKEN, max_calls));
    assert!(esl.api("reloadxml").contains("+OK"));
    let reply = esl.api("reload mod_wsbridge");
    assert!(reply.contains("+OK"), "reload mod_wsbridge: {reply}");
    (freeswitch, esl)
}

/// Opens a WebSocket with `token`; Err(HTTP status) when refused.
async fn open(port: u16, token: Option<&str>) -> Result<Socket, u16> {
    let mut request = format!("ws://127.0.0.1:{port}/call").into_client_request().unwrap();
    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("WSBRIDGE"));
    if let Some(token) = token {
        request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            assert_eq!(response.headers().get(header::SEC_WEBSOCKET_PROTOCOL).unwrap(), "WSBRIDGE");
            Ok(socket)
        }
        Err(WsError::Http(response)) => Err(response.status().as_u16()),
        Err(other) => panic!("connecting to the listener: {other}"),
    }
}

/// What a client heard during its call.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    pub(crate) events: Vec<String>,
    pub(crate) audio: Vec<i16>,
    pub(crate) close: Option<u16>,
    /// When the first audio message arrived and when the close did.
    pub(crate) took: Duration,
}

impl Heard {
    pub(crate) fn event_names(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .filter_map(|value| value["event"].as_str().map(str::to_string))
            .collect()
    }

    pub(crate) fn hangup_cause(&self) -> Option<String> {
        self.events
            .iter()
            .filter_map(|text| serde_json::from_str::<serde_json::Value>(text).ok())
            .find(|value| value["event"] == "hangup")
            .and_then(|value| value["cause"].as_str().map(str::to_string))
    }
}

/// Sends `first`, then the client's tone in real-time 20 ms frames (when
/// `talk`) until the module closes, or `limit`.
pub(crate) async fn call(
    mut socket: Socket,
    first: serde_json::Value,
    rate: u32,
    talk: bool,
    limit: Duration,
) -> Heard {
    socket.send(Message::text(first.to_string())).await.unwrap();
    let samples = tone(CLIENT_HZ, rate, 30.0, 8000.0);
    let frame = (rate / 50) as usize;
    let mut sent = 0;
    let mut ticks = tokio::time::interval(Duration::from_millis(20));
    let started = Instant::now();
    let mut heard = Heard::default();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = ticks.tick(), if talk => {
                let chunk: Vec<u8> = samples[sent..sent + frame].iter().flat_map(|s| s.to_le_bytes()).collect();
                sent = (sent + frame) % (samples.len() - frame);
                // A send after the module closed fails; the close is read next.
                let _ = socket.send(Message::binary(chunk)).await;
            }
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => heard.events.push(text.to_string()),
                Some(Ok(Message::Binary(data))) => {
                    heard.audio.extend(data.chunks_exact(2).map(|pair| i16::from_le_bytes([pair[0], pair[1]])))
                }
                Some(Ok(Message::Close(frame))) => {
                    heard.close = frame.map(|frame| u16::from(frame.code));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
    }
    heard.took = started.elapsed();
    // Let the module's close handshake complete.
    let _ = tokio::time::timeout(Duration::from_secs(1), async { while socket.next().await.is_some() {} }).await;
    heard
}

/// The UUID of the inbound channel of the client on local `port`.
pub(crate) fn channel_of(esl: &mut Esl, client_port: u16) -> Option<String> {
    let wanted = format!("wsbridge/inbound/127.0.0.1:{client_port}");
    esl.api("show channels")
        .lines()
        .find(|line| line.contains(&wanted))
        .map(|line| line.split(',').next().unwrap().to_string())
}

pub(crate) fn inbound_channels(esl: &mut Esl) -> usize {
    esl.api("show channels").lines().filter(|line| line.contains("wsbridge/inbound/")).count()
}

pub(crate) fn wait_no_inbound(esl: &mut Esl, limit: Duration) {
    let deadline = Instant::now() + limit;
    while inbound_channels(esl) > 0 {
        assert!(Instant::now() < deadline, "inbound channels still up after {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A middle second of what was heard holds `frequency`.
fn assert_heard_tone(audio: &[i16], rate: u32, frequency: f64, what: &str) {
    let second = rate as usize;
    assert!(audio.len() >= 2 * second, "{what}: only {} samples heard", audio.len());
    // Skip the start (comfort noise before the answer) and find a loud second.
    let start = audio
        .chunks(second / 10)
        .position(|chunk| crate::audio::rms(chunk) > 1000.0)
        .map(|index| index * second / 10)
        .unwrap_or_else(|| panic!("{what}: nothing loud heard"));
    let end = (start + second + second / 5).min(audio.len());
    assert_tone(&audio[start + second / 5..end], rate, frequency, what);
}

/// Tone both ways, into SIP, every refusal, then reload and unload: in that order, on one FreeSWITCH.
pub fn calls() {
    let port = free_port();
    let (freeswitch, mut esl) = freeswitch_listening(11, port, 2);
    let rt = runtime();

    // Tone both ways: the extension answers, records the client and plays 1 kHz for 3 s, then hangs up.
    let socket = rt.block_on(open(port, Some(TOKEN))).expect("admitted");
    let first = json!({"destination": "listener_tone", "caller_id_number": "bot7", "variables": {"tag": "t1"}});
    let heard = rt.block_on(call(socket, first, 16000, true, Duration::from_secs(10)));
    println!(
        "tone both ways: events {:?}, {} samples heard, close {:?} after {:?}",
        heard.events,
        heard.audio.len(),
        heard.close,
        heard.took
    );
    assert!(heard.event_names().contains(&"answered".to_string()), "{:?}", heard.events);
    assert_eq!(heard.event_names().last().map(String::as_str), Some("hangup"), "{:?}", heard.events);
    assert_eq!(heard.hangup_cause().as_deref(), Some("NORMAL_CLEARING"));
    assert_eq!(heard.close, Some(1000));
    assert!(heard.took >= Duration::from_millis(2800) && heard.took < Duration::from_secs(6), "{:?}", heard.took);
    assert_heard_tone(&heard.audio, 16000, DIALPLAN_HZ, "the client hears the dialplan's tone");
    let (recorded, rate) = read_wav(&freeswitch.dir.join("recordings/listener_t1.wav"));
    assert_heard_tone(&recorded, rate, CLIENT_HZ, "the channel records the client's tone");

    // Into SIP: the dialplan bridges to FreeSWITCH's own SIP profile, whose leg rings, answers,
    // records what reaches it over RTP and plays 1 kHz. Meanwhile the channel is checked.
    let socket = rt.block_on(open(port, Some(TOKEN))).expect("admitted");
    let client_port = match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!(),
    };
    let first = json!({
        "destination": "listener_sip_s1", "caller_id_number": "bot7", "caller_id_name": "Sales bot",
        "variables": {"campaign": "x1", "hangup_after_bridge": "false", "context": "default"}
    });
    let talking = rt.spawn(call(socket, first, 16000, true, Duration::from_secs(12)));
    let deadline = Instant::now() + Duration::from_secs(3);
    let uuid = loop {
        if let Some(uuid) = channel_of(&mut esl, client_port) {
            break uuid;
        }
        assert!(Instant::now() < deadline, "no inbound channel for the client");
        std::thread::sleep(Duration::from_millis(50));
    };
    let var = |esl: &mut Esl, name: &str| esl.api(&format!("uuid_getvar {uuid} {name}")).trim().to_string();
    assert_eq!(var(&mut esl, "wsbridge_in_campaign"), "x1");
    assert_eq!(var(&mut esl, "wsbridge_in_hangup_after_bridge"), "false");
    assert_eq!(var(&mut esl, "hangup_after_bridge"), "_undef_", "a client sets only wsbridge_in_ variables");
    assert_eq!(var(&mut esl, "caller_id_number"), "bot7");
    assert_eq!(var(&mut esl, "caller_id_name"), "Sales bot");
    assert_eq!(var(&mut esl, "network_addr"), "127.0.0.1");
    assert_eq!(var(&mut esl, "context"), "wsbridge-test", "the context is the config's, never the client's");
    assert_eq!(var(&mut esl, "direction"), "inbound");
    let list = esl.api("wsbridge list");
    assert!(list.contains(&format!("{uuid},inbound:127.0.0.1:{client_port},")), "wsbridge list: {list}");
    let heard = rt.block_on(talking).unwrap();
    println!("into SIP: events {:?}, {} samples heard, close {:?}", heard.events, heard.audio.len(), heard.close);
    let names = heard.event_names();
    let answered = names.iter().position(|name| name == "answered").expect("answered");
    assert!(names[..answered].iter().any(|name| name == "ringing" || name == "progress"), "{names:?}");
    assert_eq!(heard.close, Some(1000));
    assert_heard_tone(&heard.audio, 16000, DIALPLAN_HZ, "the client hears the SIP leg's tone");
    let (recorded, rate) = read_wav(&freeswitch.dir.join("recordings/listener_sip_s1.wav"));
    assert_heard_tone(&recorded, rate, CLIENT_HZ, "the SIP leg hears the client's tone over RTP");

    refusals(&freeswitch, &mut esl, port);
    reload_and_unload(&freeswitch, &mut esl, port);
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

fn refusals(_freeswitch: &FreeSwitch, esl: &mut Esl, port: u16) {
    let rt = runtime();
    wait_no_inbound(esl, Duration::from_secs(5));
    // A wrong or missing token: 401, and no channel.
    assert_eq!(rt.block_on(open(port, Some("wrong"))).err(), Some(401));
    assert_eq!(rt.block_on(open(port, None)).err(), Some(401));
    assert_eq!(inbound_channels(esl), 0, "refused clients create no channel");

    // An unknown destination: the dialplan's cause, then 1000.
    let socket = rt.block_on(open(port, Some(TOKEN))).unwrap();
    let heard = rt.block_on(call(socket, json!({"destination": "nowhere"}), 16000, false, Duration::from_secs(5)));
    println!("unknown destination: {:?}, close {:?}", heard.events, heard.close);
    assert_eq!(heard.hangup_cause().as_deref(), Some("NO_ROUTE_DESTINATION"));
    assert_eq!(heard.close, Some(1000));

    // No first message within 5 s: 1008.
    let mut socket = rt.block_on(open(port, Some(TOKEN))).unwrap();
    let started = Instant::now();
    let close = rt.block_on(async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|frame| u16::from(frame.code)),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    });
    assert_eq!(close, Some(1008));
    drop(socket);
    assert!(started.elapsed() >= Duration::from_millis(4900) && started.elapsed() < Duration::from_secs(7));

    // A malformed first message (a variable name outside [A-Za-z0-9_]): 1007, and no channel.
    let socket = rt.block_on(open(port, Some(TOKEN))).unwrap();
    let first = json!({"destination": "listener_tone", "variables": {"${x}": "1"}});
    let heard = rt.block_on(call(socket, first, 16000, false, Duration::from_secs(3)));
    assert_eq!(heard.close, Some(1007));
    assert!(heard.events.is_empty());
    assert_eq!(inbound_channels(esl), 0);

    // Over listen-max-calls (2 here): 503.
    let held: Vec<_> = (0..2)
        .map(|_| {
            let socket = rt.block_on(open(port, Some(TOKEN))).unwrap();
            rt.spawn(call(socket, json!({"destination": "listener_hold_3000"}), 16000, false, Duration::from_secs(8)))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rt.block_on(open(port, Some(TOKEN))).err(), Some(503));
    for call in held {
        let heard = rt.block_on(call).unwrap();
        assert_eq!(heard.hangup_cause().as_deref(), Some("NORMAL_CLEARING"));
    }
    wait_no_inbound(esl, Duration::from_secs(5));
    let socket = rt.block_on(open(port, Some(TOKEN)));
    assert!(socket.is_ok(), "a place is free again once the calls ended");
}

/// Whether anything accepts TCP on `port`.
pub(crate) fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
}

fn reload_and_unload(freeswitch: &FreeSwitch, esl: &mut Esl, port: u16) {
    let rt = runtime();
    wait_no_inbound(esl, Duration::from_secs(5));
    let new_port = free_port();
    freeswitch.set_wsbridge_conf(&listener_conf(new_port, "second-token", 5));
    assert!(esl.api("reloadxml").contains("+OK"));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = esl.api("reload mod_wsbridge");
        if !reply.contains("in use") {
            assert!(reply.contains("+OK"), "reload: {reply}");
            break;
        }
        assert!(Instant::now() < deadline, "still in use: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!listening(port), "the old port is closed after reload");
    assert_eq!(rt.block_on(open(new_port, Some(TOKEN))).err(), Some(401), "the old token is gone");
    let socket = rt.block_on(open(new_port, Some("second-token"))).expect("the new token on the new port");
    let heard =
        rt.block_on(call(socket, json!({"destination": "listener_hold_500"}), 8000, false, Duration::from_secs(5)));
    assert_eq!(heard.hangup_cause().as_deref(), Some("NORMAL_CLEARING"), "{:?}", heard.events);
    wait_no_inbound(esl, Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reply = esl.api("unload mod_wsbridge");
        if !reply.contains("in use") {
            assert!(reply.contains("+OK"), "unload: {reply}");
            break;
        }
        assert!(Instant::now() < deadline, "still in use: {reply}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!listening(new_port), "unload frees the port");
    let reply = esl.api("load mod_wsbridge");
    assert!(reply.contains("+OK"), "load: {reply}");
    assert!(listening(new_port), "load listens again");
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|dir| dir.count()).unwrap_or(0)
}

/// 100 clients at once, 10 s each, two rounds: all answered, audio both ways,
/// and FreeSWITCH's RSS and file descriptors back where they were after the first.
pub fn load() {
    const CLIENTS: usize = 100;
    let port = free_port();
    let (freeswitch, mut esl) = freeswitch_listening(13, port, CLIENTS);
    let pid = freeswitch.pid();
    let rt = runtime();
    let round = |esl: &mut Esl| {
        let calls: Vec<_> = (0..CLIENTS)
            .map(|_| {
                rt.spawn(async move {
                    let socket = open(port, Some(TOKEN)).await.expect("admitted");
                    call(socket, json!({"destination": "listener_hold_10000"}), 16000, true, Duration::from_secs(20))
                        .await
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(5));
        let up = inbound_channels(esl);
        let heard: Vec<Heard> = calls.into_iter().map(|call| rt.block_on(call).unwrap()).collect();
        wait_no_inbound(esl, Duration::from_secs(10));
        (up, heard)
    };
    let before_first = (proc_stats::rss_kib(pid), open_fds(pid));
    let (up, heard) = round(&mut esl);
    std::thread::sleep(Duration::from_secs(2));
    let after_first = (proc_stats::rss_kib(pid), open_fds(pid));
    let check = |heard: &[Heard], up: usize| {
        assert_eq!(up, CLIENTS, "all {CLIENTS} calls up at once");
        for (index, call) in heard.iter().enumerate() {
            let what = format!("client {index}");
            assert!(call.event_names().contains(&"answered".to_string()), "{what}: {:?}", call.events);
            assert_eq!(call.hangup_cause().as_deref(), Some("NORMAL_CLEARING"), "{what}: {:?}", call.events);
            assert_eq!(call.close, Some(1000), "{what}");
            assert_heard_tone(&call.audio, 16000, DIALPLAN_HZ, &what);
            assert!(call.audio.len() >= 16000 * 9, "{what}: {} samples heard in 10 s", call.audio.len());
        }
    };
    check(&heard, up);
    let (up, heard) = round(&mut esl);
    std::thread::sleep(Duration::from_secs(2));
    let after_second = (proc_stats::rss_kib(pid), open_fds(pid));
    check(&heard, up);
    let status = esl.api("wsbridge status");
    println!(
        "load: {CLIENTS} clients x 10 s, two rounds; FreeSWITCH RSS {} KiB and {} fds before, {} KiB and {} fds after round 1, {} KiB and {} fds after round 2",
        before_first.0, before_first.1, after_first.0, after_first.1, after_second.0, after_second.1
    );
    println!("{}", status.lines().filter(|line| line.contains("calls")).collect::<Vec<_>>().join("\n"));
    assert!(after_second.1 <= after_first.1 + 2, "file descriptors come back after a round of {CLIENTS} calls");
    let growth = after_second.0.saturating_sub(after_first.0);
    assert!(growth < 8 * 1024, "RSS grew {growth} KiB over the second round of {CLIENTS} calls");
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}
