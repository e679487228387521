//! The listener exposed to the internet: scoped tokens against toll fraud,
//! no dialplan injection, and a listener that survives a flood. Each test
//! has a FreeSWITCH of its own, and prints its figures.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{header, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::MaybeTlsStream;

use crate::listener::{call, channel_of, free_port, inbound_channels, wait_no_inbound, Socket};
use crate::ws_server::runtime;
use crate::{log_showing, ok_uuid, wait_gone, world, BUILD};
use test_support::esl::Esl;
use test_support::instance::FreeSwitch;

crate::tests! {
    listener::scoped_tokens (runs 25 s),
    listener::max_seconds (runs 15 s),
    listener::calls_per_second (runs 15 s),
    listener::revocation (runs 20 s),
    listener::injection (runs 10 s),
    dialplan::sample_injection,
    listener::acl (runs 10 s),
    listener::flood (runs 15 s),
    listener::auth_backoff (runs 15 s),
    listener::plaintext_beyond_loopback (runs 10 s),
}

const BOT_A: &str = "bot-a-secret-0123456789";
const BOT_B: &str = "bot-b-secret-0123456789";
const LOCAL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 1);

/// A context of the tokens' own: 9NNN answers and plays a tone for 6 s.
const BOTS_CONTEXT: &str = r#"<context name="wsbridge-bots">
      <extension name="bots_hold">
        <condition field="destination_number" expression="^9\d{3}$">
          <action application="answer"/>
          <action application="playback" data="tone_stream://%(6000,0,1000)"/>
          <action application="hangup"/>
        </condition>
      </extension>
    </context>"#;

fn sha256_hex(text: &str) -> String {
    ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// The params that turn the listener on at `port`, plus `extra`.
fn params(port: u16, extra: &str) -> String {
    format!(
        r#"<param name="listen" value="127.0.0.1:{port}"/><param name="listen-context" value="wsbridge-test"/>{extra}"#
    )
}

/// A FreeSWITCH of its own with the bots context and wsbridge.conf's
/// `params` and `<listen-tokens>` entries, the listener bound.
fn freeswitch_with(instance: u16, params: &str, tokens: &str) -> (FreeSwitch, Esl) {
    let freeswitch = FreeSwitch::start(&BUILD, &world().router.base(), instance);
    let mut esl = freeswitch.esl();
    freeswitch.add_to_config(r#"<context name="wsbridge-examples">"#, BOTS_CONTEXT);
    freeswitch.set_wsbridge_conf_sections(params, &format!("<listen-tokens>{tokens}</listen-tokens>"));
    assert!(esl.api("reloadxml").contains("+OK"));
    let reply = esl.api("reload mod_wsbridge");
    assert!(reply.contains("+OK"), "reload mod_wsbridge: {reply}");
    (freeswitch, esl)
}

/// How a listener refused an upgrade: the HTTP status (0: closed without
/// an answer) and its Retry-After.
#[derive(Debug, PartialEq)]
pub(crate) struct Refusal {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<String>,
}

/// Opens a WebSocket from `source` (any of 127.0.0.0/8) with `token`.
pub(crate) async fn connect_from(port: u16, token: Option<&str>, source: Ipv4Addr) -> Result<Socket, Refusal> {
    let mut request = format!("ws://127.0.0.1:{port}/call").into_client_request().unwrap();
    request.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("WSBRIDGE"));
    if let Some(token) = token {
        request.headers_mut().insert(header::AUTHORIZATION, format!("Bearer {token}").parse().unwrap());
    }
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).unwrap();
    let tcp = socket
        .connect(SocketAddr::new(IpAddr::V4(LOCAL), port))
        .await
        .map_err(|_| Refusal { status: 0, retry_after: None })?;
    match tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await {
        Ok((socket, _)) => Ok(socket),
        Err(WsError::Http(response)) => Err(Refusal {
            status: response.status().as_u16(),
            retry_after: response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_string()),
        }),
        Err(_) => Err(Refusal { status: 0, retry_after: None }),
    }
}

async fn connect(port: u16, token: &str) -> Result<Socket, Refusal> {
    connect_from(port, Some(token), LOCAL).await
}

/// The client's local port.
pub(crate) fn client_port(socket: &Socket) -> u16 {
    match socket.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().unwrap().port(),
        _ => unreachable!(),
    }
}

/// Sends `first` and waits (5 s at most) for the listener's close: its code and reason.
pub(crate) async fn close_after(mut socket: Socket, first: serde_json::Value) -> Option<(u16, String)> {
    socket.send(Message::text(first.to_string())).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match socket.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await;
    closed.ok().flatten()
}

/// The UUID of the inbound channel of the client on `client_port`, within 3 s.
fn wait_channel(esl: &mut Esl, client_port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        if let Some(uuid) = channel_of(esl, client_port) {
            return uuid;
        }
        assert!(Instant::now() < deadline, "no inbound channel for the client on port {client_port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn var(esl: &mut Esl, uuid: &str, name: &str) -> String {
    esl.api(&format!("uuid_getvar {uuid} {name}")).trim().to_string()
}

/// Two scoped tokens, a refused one and an unscoped param: destinations,
/// contexts, the caller-ID rule, `accountcode`, `max-calls`.
pub fn scoped_tokens() {
    let port = free_port();
    let tokens = format!(
        r#"<token name="bot-a" sha256="{}" context="wsbridge-bots" destinations="^9\d{{3}}$" caller-id-numbers="^\+1555\d{{7}}$" max-calls="2"/>
           <token name="bot-b" secret="{BOT_B}" destinations="^listener_hold_\d+$"/>
           <token name="bot-c" secret="too-short-secret" destinations=".*"/>"#,
        sha256_hex(BOT_A)
    );
    let extra = r#"<param name="listen-tokens" value="legacy-unscoped-token"/>"#;
    let (freeswitch, mut esl) = freeswitch_with(31, &params(port, extra), &tokens);
    let log = log_showing(&freeswitch.log_path(), &["token 'bot-c' refused", "1 unscoped token(s)"]);
    assert!(log.contains("its secret is shorter than 20 characters"));
    assert!(!log.contains("too-short-secret"), "a secret never reaches the log");
    out_of_scope(&freeswitch, &mut esl, port);
    in_scope(&mut esl, port);
    wait_no_inbound(&mut esl, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// A destination and a caller ID outside the tokens' scopes: 1008 with the reason, no channel.
fn out_of_scope(freeswitch: &FreeSwitch, esl: &mut Esl, port: u16) {
    let rt = runtime();
    let socket = rt.block_on(connect(port, BOT_A)).expect("bot-a upgrades");
    let client = client_port(&socket);
    let first = json!({"destination": "1000", "caller_id_number": "+15551234567"});
    let closed = rt.block_on(close_after(socket, first));
    println!("bot-a to 1000: closed {closed:?}");
    assert_eq!(closed, Some((1008, "destination not allowed for this token".to_string())));
    let line = format!("WebSocket client 127.0.0.1:{client} refused: token bot-a: destination not allowed");
    log_showing(&freeswitch.log_path(), &[&line]);
    let socket = rt.block_on(connect(port, BOT_A)).unwrap();
    let closed = rt.block_on(close_after(socket, json!({"destination": "9001", "caller_id_number": "+442079460000"})));
    println!("bot-a with caller ID +442079460000: closed {closed:?}");
    assert_eq!(closed, Some((1008, "caller ID number not allowed for this token".to_string())));
    let socket = rt.block_on(connect(port, BOT_B)).unwrap();
    let closed = rt.block_on(close_after(socket, json!({"destination": "9001"})));
    assert_eq!(closed, Some((1008, "destination not allowed for this token".to_string())));
    assert_eq!(inbound_channels(esl), 0, "no channel for a call out of scope");
}

/// A client of `token` calling with `first`, held for at most `limit`; its channel's UUID.
fn call_up(
    esl: &mut Esl,
    port: u16,
    token: &str,
    first: serde_json::Value,
    limit: Duration,
) -> (tokio::task::JoinHandle<crate::listener::Heard>, String) {
    let socket = runtime().block_on(connect(port, token)).expect("admitted");
    let client = client_port(&socket);
    let task = runtime().spawn(call(socket, first, 16000, false, limit));
    (task, wait_channel(esl, client))
}

/// Calls within the scopes: their context, accountcode, token and caller ID; bot-a's max-calls.
fn in_scope(esl: &mut Esl, port: u16) {
    let rt = runtime();
    let seconds = Duration::from_secs(10);
    let (a_call, a_uuid) =
        call_up(esl, port, BOT_A, json!({"destination": "9006", "caller_id_number": "+15551234567"}), seconds);
    let first = json!({"destination": "listener_hold_3000", "caller_id_number": "+15550000000"});
    let (b_call, b_uuid) = call_up(esl, port, BOT_B, first, seconds);
    let first = json!({"destination": "listener_hold_2000", "caller_id_number": "bot7"});
    let (legacy, legacy_uuid) = call_up(esl, port, "legacy-unscoped-token", first, seconds);
    let names = ["context", "accountcode", "wsbridge_in_token", "caller_id_number"];
    let mut vars = |uuid: &str| names.iter().map(|name| var(esl, uuid, name)).collect::<Vec<String>>();
    let (a_vars, b_vars, legacy_vars) = (vars(&a_uuid), vars(&b_uuid), vars(&legacy_uuid));
    println!("bot-a's call {names:?}: {a_vars:?}; bot-b's: {b_vars:?}; the unscoped token's: {legacy_vars:?}");
    assert_eq!(a_vars, ["wsbridge-bots", "bot-a", "bot-a", "+15551234567"]);
    assert_eq!(b_vars, ["wsbridge-test", "bot-b", "bot-b", "bot-b"], "the caller ID number is the token's name");
    assert_eq!(legacy_vars, ["wsbridge-test", "unscoped-1", "unscoped-1", "bot7"], "unscoped: as before");

    // bot-a's max-calls is 2: a second call gets in, a third gets 503.
    let (second, _) =
        call_up(esl, port, BOT_A, json!({"destination": "9002", "caller_id_number": "+15551234567"}), seconds);
    let third = rt.block_on(connect(port, BOT_A)).err();
    println!("bot-a's third call at once: {third:?}");
    assert_eq!(third.map(|refusal| refusal.status), Some(503));
    for (what, task) in [("bot-a", a_call), ("bot-b", b_call), ("bot-a 2", second), ("unscoped", legacy)] {
        let heard = rt.block_on(task).unwrap();
        assert_eq!(heard.hangup_cause().as_deref(), Some("NORMAL_CLEARING"), "{what}: {:?}", heard.events);
    }
}

/// The time from `answered` to `hangup`, and the hangup's cause.
async fn answered_to_hangup(
    mut socket: Socket,
    first: serde_json::Value,
    limit: Duration,
) -> (Option<Duration>, String) {
    socket.send(Message::text(first.to_string())).await.unwrap();
    let mut answered = None;
    let result = tokio::time::timeout(limit, async {
        while let Some(Ok(message)) = socket.next().await {
            let Message::Text(text) = message else { continue };
            let event: serde_json::Value = serde_json::from_str(&text).unwrap();
            match event["event"].as_str() {
                Some("answered") => answered = Some(Instant::now()),
                Some("hangup") => {
                    return (answered.map(|at| at.elapsed()), event["cause"].as_str().unwrap_or("").to_string())
                }
                _ => {}
            }
        }
        (None, "no hangup".to_string())
    })
    .await;
    result.unwrap_or((None, "no hangup in time".to_string()))
}

/// A token's `max-seconds`: the call is hung up that long after its answer, with ALLOTTED_TIMEOUT.
pub fn max_seconds() {
    let port = free_port();
    let tokens =
        format!(r#"<token name="short-calls" secret="{BOT_A}" destinations="^listener_hold_\d+$" max-seconds="3"/>"#);
    let (freeswitch, mut esl) = freeswitch_with(32, &params(port, ""), &tokens);
    let rt = runtime();
    let socket = rt.block_on(connect(port, BOT_A)).unwrap();
    let first = json!({"destination": "listener_hold_20000"});
    let (took, cause) = rt.block_on(answered_to_hangup(socket, first, Duration::from_secs(15)));
    println!("max-seconds 3: the call to a 20 s extension hung up {took:?} after its answer, cause {cause}");
    assert_eq!(cause, "ALLOTTED_TIMEOUT");
    let took = took.expect("answered");
    assert!(took >= Duration::from_millis(2000) && took < Duration::from_millis(4500), "{took:?}");
    wait_no_inbound(&mut esl, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// A token's `calls-per-second`: 429 with Retry-After beyond it; another token is not held back.
pub fn calls_per_second() {
    let port = free_port();
    let tokens = format!(
        r#"<token name="rate-2" secret="{BOT_A}" destinations=".*" calls-per-second="2"/>
           <token name="free" secret="{BOT_B}" destinations=".*"/>"#
    );
    let (freeswitch, mut esl) = freeswitch_with(33, &params(port, ""), &tokens);
    let rt = runtime();
    let started = Instant::now();
    let (mut admitted, mut refused, mut retry_after) = (0, 0, Vec::new());
    let mut held = Vec::new();
    for attempt in 0..20u32 {
        let due = started + Duration::from_millis(100 * u64::from(attempt));
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        match rt.block_on(connect(port, BOT_A)) {
            Ok(socket) => {
                admitted += 1;
                held.push(socket);
            }
            Err(refusal) => {
                assert_eq!(refusal.status, 429, "{refusal:?}");
                refused += 1;
                retry_after.push(refusal.retry_after.expect("Retry-After"));
            }
        }
    }
    let over = started.elapsed();
    let other = rt.block_on(connect(port, BOT_B)).is_ok();
    retry_after.dedup();
    println!(
        "calls-per-second 2: 20 upgrades in {over:.2?}: {admitted} admitted, {refused} answered 429 (Retry-After {retry_after:?}); another token meanwhile admitted: {other}"
    );
    assert!((4..=7).contains(&admitted), "{admitted} admitted in {over:?} at 2 a second");
    assert_eq!(retry_after, ["1"]);
    assert!(other, "another token is not held back");
    drop(held);
    std::thread::sleep(Duration::from_millis(1100));
    assert!(rt.block_on(connect(port, BOT_A)).is_ok(), "admitted again after the wait");
    wait_no_inbound(&mut esl, Duration::from_secs(6));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// `reloadxml` revokes: a removed token and a changed secret are refused from
/// the next connection on, while the call already up goes on.
pub fn revocation() {
    let port = free_port();
    let token = |name: &str, secret: &str| format!(r#"<token name="{name}" secret="{secret}" destinations=".*"/>"#);
    let before = format!("{}{}", token("rev-a", BOT_A), token("rev-b", BOT_B));
    let (freeswitch, mut esl) = freeswitch_with(34, &params(port, ""), &before);
    let rt = runtime();
    let socket = rt.block_on(connect(port, BOT_A)).unwrap();
    let up = rt.spawn(call(socket, json!({"destination": "listener_hold_8000"}), 16000, true, Duration::from_secs(15)));
    std::thread::sleep(Duration::from_secs(2));

    let renewed = "bot-b-renewed-secret-0123456789";
    freeswitch.set_wsbridge_conf_sections(
        &params(port, ""),
        &format!("<listen-tokens>{}</listen-tokens>", token("rev-b", renewed)),
    );
    let reloaded = Instant::now();
    assert!(esl.api("reloadxml").contains("+OK"));
    // FreeSWITCH tells the module of the reload on its event thread, a moment after the API's answer.
    let removed = loop {
        let removed = rt.block_on(connect(port, BOT_A)).err().map(|refusal| refusal.status);
        if removed.is_some() || reloaded.elapsed() > Duration::from_secs(3) {
            break removed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    println!("the removed token was refused {:.0?} after reloadxml was sent", reloaded.elapsed());
    let old_secret = rt.block_on(connect(port, BOT_B)).err().map(|refusal| refusal.status);
    let new_secret = rt.block_on(connect(port, renewed)).is_ok();
    println!(
        "after reloadxml: removed token {removed:?}, old secret {old_secret:?}, new secret admitted: {new_secret}"
    );
    assert_eq!((removed, old_secret, new_secret), (Some(401), Some(401), true));

    let heard = rt.block_on(up).unwrap();
    println!(
        "the call up during the reload: {:?}, {} samples heard, close {:?} after {:.2?}",
        heard.events,
        heard.audio.len(),
        heard.close,
        heard.took
    );
    assert_eq!(heard.hangup_cause().as_deref(), Some("NORMAL_CLEARING"));
    assert!(heard.took >= Duration::from_millis(7800), "{:?}", heard.took);
    assert!(heard.audio.len() >= 16000 * 7, "{} samples", heard.audio.len());
    wait_no_inbound(&mut esl, Duration::from_secs(6));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// Injection attempts in every field of the first message: each closed
/// with 1007 and its reason, no channel created; a call with every field
/// set in the characters allowed goes through, as sent.
pub fn injection() {
    let port = free_port();
    let tokens = format!(r#"<token name="inject" secret="{BOT_A}" destinations=".*" caller-id-numbers=".*"/>"#);
    let (freeswitch, mut esl) = freeswitch_with(35, &params(port, ""), &tokens);
    let rt = runtime();
    let touched = freeswitch.dir.join("injected");
    let system = format!("${{system(touch {})}}", touched.display());
    let attempts = [
        json!({"destination": format!("listener_hold_500{system}")}),
        json!({"destination": "{absolute_codec_string=PCMU}listener_hold_500"}),
        json!({"destination": "listener_hold_500 XML default"}),
        json!({"destination": "user/1000@default"}),
        json!({"destination": "listener_hold_500", "caller_id_number": "${hangup(CALL_REJECTED)}"}),
        json!({"destination": "listener_hold_500", "caller_id_number": "1000,user/1001"}),
        json!({"destination": "listener_hold_500", "caller_id_number": "1000%22"}),
        json!({"destination": "listener_hold_500", "caller_id_name": system}),
        json!({"destination": "listener_hold_500", "caller_id_name": "{ignore_early_media=true}"}),
        json!({"destination": "listener_hold_500", "variables": {"x": system}}),
        json!({"destination": "listener_hold_500", "variables": {"x": "$${hostname}"}}),
        json!({"destination": "listener_hold_500", "variables": {"x": "a}b"}}),
    ];
    for first in attempts {
        let socket = rt.block_on(connect(port, BOT_A)).unwrap();
        let closed = rt.block_on(close_after(socket, first.clone()));
        println!("{first} -> {closed:?}");
        let (code, reason) = closed.expect("closed");
        assert_eq!(code, 1007, "{first}");
        assert!(reason.contains(" holds "), "{reason}");
    }
    assert_eq!(inbound_channels(&mut esl), 0, "no channel for an injection attempt");
    assert!(!touched.exists(), "nothing a client sent was run");

    let name = "Sales bot (EU) & co: 'x' \"y\" 100%";
    let first = json!({
        "destination": "listener_hold_3000", "caller_id_number": "+44*1#2.3_4-5", "caller_id_name": name,
        "variables": {"note": "50% off, \"quoted\", (brackets)"}
    });
    let socket = rt.block_on(connect(port, BOT_A)).unwrap();
    let client = client_port(&socket);
    let up = rt.spawn(call(socket, first, 16000, false, Duration::from_secs(8)));
    let uuid = wait_channel(&mut esl, client);
    let fields = ["destination_number", "caller_id_number", "caller_id_name", "wsbridge_in_note"];
    let seen: Vec<String> = fields.iter().map(|field| var(&mut esl, &uuid, field)).collect();
    println!("a call with every field in the characters allowed: {fields:?} = {seen:?}");
    assert_eq!(seen, ["listener_hold_3000", "+44*1#2.3_4-5", name, "50% off, \"quoted\", (brackets)"]);
    assert_eq!(rt.block_on(up).unwrap().hangup_cause().as_deref(), Some("NORMAL_CLEARING"));
    wait_no_inbound(&mut esl, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// The shipped dialplan's headers carry the caller's number only when it
/// holds nothing JSON or URL encoding reads: a caller cannot add keys.
pub fn sample_injection() {
    let mut bot = world().router.expect("/bot");
    for (number, expected) in [
        ("+15551234567", r#" {"caller":"+15551234567","called":"wsbridge","content-type":"audio/l16;rate=16000"}"#),
        ("x%22%2C%22admin%22%3A%22true", r#" {"called":"wsbridge","content-type":"audio/l16;rate=16000"}"#),
        (r#"x","admin":"true"#, r#" {"called":"wsbridge","content-type":"audio/l16;rate=16000"}"#),
    ] {
        let dial = format!("originate null/sample wsbridge XML wsbridge-examples '{number}' '{number}'");
        let a_leg = ok_uuid(&crate::esl().api(&dial));
        let mut connection = bot.next(Duration::from_secs(5));
        let first = runtime().block_on(connection.first_text());
        println!("caller {number}: the server's first message {first}");
        assert_eq!(first, expected, "{number}");
        runtime().block_on(connection.close());
        wait_gone(&a_leg, Duration::from_secs(5));
    }
}

/// An ACL list of acl.conf that lets 127.0.0.3 alone in.
const ACL_CONF: &str = r#"<configuration name="acl.conf" description="network lists">
      <network-lists>
        <list name="wsbridge-clients" default="deny">
          <node type="allow" cidr="127.0.0.3/32"/>
        </list>
      </network-lists>
    </configuration>"#;

/// `listen-acl`: an address outside the list gets 403 before the upgrade,
/// whatever its token; a list FreeSWITCH does not know lets nobody in.
pub fn acl() {
    let port = free_port();
    let tokens = format!(r#"<token name="acl" secret="{BOT_A}" destinations=".*"/>"#);
    let (freeswitch, mut esl) =
        freeswitch_with(36, &params(port, r#"<param name="listen-acl" value="wsbridge-clients"/>"#), &tokens);
    freeswitch.add_to_config("<!-- wsbridge.conf begin -->", ACL_CONF);
    assert!(esl.api("reloadxml").contains("+OK"));
    let reply = esl.api("reloadacl");
    assert!(reply.contains("+OK"), "reloadacl: {reply}");
    let rt = runtime();
    let outside = rt.block_on(connect_from(port, Some(BOT_A), LOCAL)).err();
    let inside = rt.block_on(connect_from(port, Some(BOT_A), Ipv4Addr::new(127, 0, 0, 3)));
    println!(
        "listen-acl wsbridge-clients (127.0.0.3/32): 127.0.0.1 got {outside:?}; 127.0.0.3 admitted: {}",
        inside.is_ok()
    );
    assert_eq!(outside, Some(Refusal { status: 403, retry_after: None }));
    let socket = inside.expect("127.0.0.3 is in the list");
    let heard =
        rt.block_on(call(socket, json!({"destination": "listener_hold_500"}), 16000, false, Duration::from_secs(5)));
    assert_eq!(heard.hangup_cause().as_deref(), Some("NORMAL_CLEARING"));
    log_showing(&freeswitch.log_path(), &["WebSocket client 127.0.0.1:", "outside listen-acl; answered 403"]);

    // The ACL is read for each connection: a name FreeSWITCH does not know fails closed.
    let acl = r#"<param name="listen-acl" value="no-such-list"/>"#;
    freeswitch.set_wsbridge_conf_sections(&params(port, acl), &format!("<listen-tokens>{tokens}</listen-tokens>"));
    assert!(esl.api("reloadxml").contains("+OK"));
    let deadline = Instant::now() + Duration::from_secs(3);
    let unknown = loop {
        let refused = rt.block_on(connect_from(port, Some(BOT_A), Ipv4Addr::new(127, 0, 0, 3))).err();
        if refused.is_some() || Instant::now() > deadline {
            break refused;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    println!("listen-acl naming no list: 127.0.0.3 got {unknown:?}");
    assert_eq!(unknown.map(|refusal| refusal.status), Some(403));
    wait_no_inbound(&mut esl, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// How long a client from `source` takes from TCP connect to an upgraded WebSocket.
fn time_to_upgrade(port: u16, source: Ipv4Addr) -> Duration {
    let started = Instant::now();
    let socket = runtime().block_on(connect_from(port, Some(BOT_A), source)).expect("upgraded");
    let took = started.elapsed();
    drop(socket);
    took
}

/// 500 idle TCP connections from 127.0.0.2 while a client from 127.0.0.3
/// gets in: 8 are held in the handshake, until the 2 s upgrade timeout,
/// the rest are closed at once, and the other client is not held up.
pub fn flood() {
    const IDLE: usize = 500;
    let port = free_port();
    let tokens = format!(r#"<token name="flood" secret="{BOT_A}" destinations=".*"/>"#);
    let (freeswitch, mut esl) = freeswitch_with(37, &params(port, ""), &tokens);
    let (attacker, client) = (Ipv4Addr::new(127, 0, 0, 2), Ipv4Addr::new(127, 0, 0, 3));
    let rt = runtime();
    let quiet: Vec<Duration> = (0..5).map(|_| time_to_upgrade(port, client)).collect();

    let flood_started = Instant::now();
    let connecting = rt.spawn(async move {
        let mut idle = Vec::new();
        for _ in 0..IDLE {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(SocketAddr::new(IpAddr::V4(attacker), 0)).unwrap();
            idle.push(socket.connect(SocketAddr::new(IpAddr::V4(LOCAL), port)).await.unwrap());
        }
        (idle, flood_started.elapsed())
    });
    // While the idle connections come in, then while they are all open.
    std::thread::sleep(Duration::from_millis(5));
    let mut during: Vec<Duration> = (0..5).map(|_| time_to_upgrade(port, client)).collect();
    let (idle, connected) = rt.block_on(connecting).unwrap();
    during.extend((0..5).map(|_| time_to_upgrade(port, client)));
    // When the listener closed each idle connection.
    let closed_after: Vec<Option<Duration>> = rt.block_on(async {
        let waits = idle.into_iter().map(|mut tcp| async move {
            use tokio::io::AsyncReadExt;
            let mut byte = [0u8; 1];
            let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
            matches!(read, Ok(Ok(0)) | Ok(Err(_))).then(|| flood_started.elapsed())
        });
        futures_util::future::join_all(waits).await
    });
    let at_once = closed_after.iter().filter(|at| at.is_some_and(|at| at < Duration::from_millis(1000))).count();
    let held: Vec<Duration> =
        closed_after.iter().flatten().copied().filter(|at| *at >= Duration::from_millis(1000)).collect();
    let still_open = closed_after.iter().filter(|at| at.is_none()).count();
    let worst = |times: &[Duration]| times.iter().max().copied().unwrap_or_default();
    println!(
        "flood: {IDLE} idle connections from {attacker} in {connected:.0?}: {at_once} closed at once, {} held until {:.2?} (the upgrade timeout), {still_open} still open after 5 s",
        held.len(),
        worst(&held)
    );
    println!(
        "flood: a client from {client} upgraded in at most {:.1?} during the flood, {:.1?} without it",
        worst(&during),
        worst(&quiet)
    );
    assert_eq!((at_once, held.len(), still_open), (IDLE - 8, 8, 0));
    assert!(worst(&held) < Duration::from_millis(2600), "held {:?}", worst(&held));
    assert!(worst(&during) < worst(&quiet) + Duration::from_millis(200), "{during:?} against {quiet:?}");
    let log = std::fs::read_to_string(freeswitch.log_path()).unwrap();
    let lines = log.lines().filter(|line| line.contains("WebSocket client 127.0.0.2:")).count();
    println!("flood: {lines} log line(s) for {} refusals of {attacker}", IDLE);
    assert_eq!(lines, 1, "refusals of one address are logged once a minute");
    wait_no_inbound(&mut esl, Duration::from_secs(5));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// Ten failed authentications from one address within a minute: it gets
/// 429 (with Retry-After) for listen-auth-backoff-ms, even with a good
/// token; another address is untouched.
pub fn auth_backoff() {
    let port = free_port();
    let tokens = format!(r#"<token name="backoff" secret="{BOT_A}" destinations=".*"/>"#);
    let extra = r#"<param name="listen-auth-backoff-ms" value="3000"/>"#;
    let (freeswitch, mut esl) = freeswitch_with(38, &params(port, extra), &tokens);
    let (guesser, other) = (Ipv4Addr::new(127, 0, 0, 4), Ipv4Addr::new(127, 0, 0, 5));
    let rt = runtime();
    let statuses: Vec<u16> = (0..10)
        .map(|index| rt.block_on(connect_from(port, Some(&format!("guess-{index}")), guesser)).err().unwrap().status)
        .collect();
    let backed_off = rt.block_on(connect_from(port, Some(BOT_A), guesser)).err();
    let elsewhere = rt.block_on(connect_from(port, Some(BOT_A), other)).is_ok();
    println!("auth back-off: 10 wrong tokens from {guesser} got {statuses:?}; then the right token got {backed_off:?}; {other} meanwhile admitted: {elsewhere}");
    assert_eq!(statuses, [401; 10]);
    assert_eq!(backed_off, Some(Refusal { status: 429, retry_after: Some("3".into()) }));
    assert!(elsewhere, "another address is untouched");
    std::thread::sleep(Duration::from_millis(3100));
    let after = rt.block_on(connect_from(port, Some(BOT_A), guesser)).is_ok();
    println!("auth back-off: {guesser} admitted again 3.1 s later: {after}");
    assert!(after);
    let log = log_showing(
        &freeswitch.log_path(),
        &["WebSocket clients from 127.0.0.4: 10 failed authentications; HTTP 429 for 3 s"],
    );
    let lines = log.lines().filter(|line| line.contains("WebSocket client 127.0.0.4:")).count();
    println!("auth back-off: {lines} refusal line(s) logged for 11 refusals of {guesser}");
    assert_eq!(lines, 1);
    wait_no_inbound(&mut esl, Duration::from_secs(6));
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}

/// A plain ws listener outside 127.0.0.0/8 and ::1 refuses to start unless
/// listen-allow-plaintext says so.
pub fn plaintext_beyond_loopback() {
    let port = free_port();
    let tokens = format!(r#"<token name="plain" secret="{BOT_A}" destinations=".*"/>"#);
    let everywhere = format!(r#"<param name="listen" value="0.0.0.0:{port}"/>"#);
    let (freeswitch, mut esl) = freeswitch_with(39, &everywhere, &tokens);
    let log = log_showing(&freeswitch.log_path(), &["not listening for calls from the WebSocket side: 0.0.0.0:"]);
    let line = log.lines().find(|line| line.contains("not listening for calls from the WebSocket side")).unwrap();
    println!("plain ws on 0.0.0.0: {}", line.split("] ").last().unwrap_or(line));
    assert!(line.contains("listen-allow-plaintext=true"));
    assert!(!crate::listener::listening(port), "nothing listens");
    let allowed = format!(r#"{everywhere}<param name="listen-allow-plaintext" value="true"/>"#);
    freeswitch.set_wsbridge_conf_sections(&allowed, &format!("<listen-tokens>{tokens}</listen-tokens>"));
    assert!(esl.api("reloadxml").contains("+OK"));
    assert!(esl.api("reload mod_wsbridge").contains("+OK"));
    let listening = crate::listener::listening(port);
    println!("with listen-allow-plaintext=true: listening on 0.0.0.0:{port}: {listening}");
    assert!(listening);
    assert!(freeswitch.stop(), "FreeSWITCH did not shut down cleanly");
}
