#![allow(clippy::result_large_err)] // tungstenite's handshake callback type

//! A WebSocket server to try mod_wsbridge with: records each call's audio
//! to a WAV file and echoes the caller, or plays a tone or a WAV file.
//!
//! cargo run --release -p wsbridge-demo -- --listen 127.0.0.1:8080 [--mode echo|tone|wav]
//!     [--tone-hz 440] [--wav FILE] [--record-dir DIR]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use mod_wsbridge::settings::ContentType;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const USAGE: &str = "usage: wsbridge-demo [--listen 127.0.0.1:8080] [--mode echo|tone|wav] [--tone-hz 440] [--wav FILE] [--record-dir DIR]";

#[derive(Clone, Debug)]
enum Mode {
    Echo,
    Tone(f64),
    Wav(PathBuf),
}

#[derive(Clone, Debug)]
struct Options {
    listen: String,
    mode: Mode,
    record_dir: PathBuf,
}

fn parse_options() -> Result<Options, String> {
    let mut listen = "127.0.0.1:8080".to_string();
    let mut mode = "echo".to_string();
    let mut tone_hz = 440.0;
    let mut wav = None;
    let mut record_dir = PathBuf::from(".");
    let mut arguments = std::env::args().skip(1);
    while let Some(flag) = arguments.next() {
        let mut value = || arguments.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"));
        match flag.as_str() {
            "--listen" => listen = value()?,
            "--mode" => mode = value()?,
            "--tone-hz" => tone_hz = value()?.parse().map_err(|_| format!("--tone-hz takes a number\n{USAGE}"))?,
            "--wav" => wav = Some(PathBuf::from(value()?)),
            "--record-dir" => record_dir = PathBuf::from(value()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    let mode = match (mode.as_str(), wav) {
        ("echo", _) => Mode::Echo,
        ("tone", _) => Mode::Tone(tone_hz),
        ("wav", Some(path)) => Mode::Wav(path),
        ("wav", None) => return Err(format!("--mode wav needs --wav FILE\n{USAGE}")),
        (other, _) => return Err(format!("unknown mode {other}\n{USAGE}")),
    };
    Ok(Options { listen, mode, record_dir })
}

/// The rate named by the first message's content-type, or 16 kHz.
fn rate_of(first_message: &str) -> u32 {
    serde_json::from_str::<serde_json::Value>(first_message.trim())
        .ok()
        .and_then(|value| value["content-type"].as_str().and_then(ContentType::parse))
        .unwrap_or_default()
        .rate
}

fn wav_samples(path: &Path, rate: u32) -> Result<Vec<i16>, String> {
    let mut reader = hound::WavReader::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let spec = reader.spec();
    if spec.channels != 1 || spec.bits_per_sample != 16 || spec.sample_rate != rate {
        return Err(format!("{} must be 16-bit mono at {rate} Hz (the call's rate)", path.display()));
    }
    reader.samples::<i16>().collect::<Result<_, _>>().map_err(|e| e.to_string())
}

fn bytes_of(samples: &[i16]) -> Vec<u8> {
    samples.iter().flat_map(|s| s.to_le_bytes()).collect()
}

/// What the server plays besides the echo: a tone, or a WAV file then a mark.
fn start_playing(mode: &Mode, rate: u32, outgoing: &tokio::sync::mpsc::UnboundedSender<Message>, call_number: u64) {
    match mode {
        Mode::Echo => {}
        Mode::Tone(hz) => {
            let outgoing = outgoing.clone();
            let step = 2.0 * std::f64::consts::PI * hz / rate as f64;
            tokio::spawn(async move {
                // The module paces playout: keep about a second queued ahead.
                let mut phase = 0.0f64;
                let mut ticker = tokio::time::interval(Duration::from_secs(1));
                loop {
                    ticker.tick().await;
                    let second: Vec<i16> = (0..rate)
                        .map(|_| {
                            phase = (phase + step) % (2.0 * std::f64::consts::PI);
                            (phase.sin() * 8000.0) as i16
                        })
                        .collect();
                    if outgoing.send(Message::Binary(bytes_of(&second).into())).is_err() {
                        break;
                    }
                }
            });
        }
        Mode::Wav(path) => match wav_samples(path, rate) {
            Ok(samples) => {
                let _ = outgoing.send(Message::Binary(bytes_of(&samples).into()));
                let _ = outgoing.send(Message::text(r#"{"action":"mark","name":"wav-done"}"#));
            }
            Err(error) => eprintln!("call {call_number}: {error}"),
        },
    }
}

/// Records the caller's audio (echoing it back when `echo`) until the call closes.
async fn record_and_echo(
    stream: &mut futures_util::stream::SplitStream<tokio_tungstenite::WebSocketStream<TcpStream>>,
    recorder: &mut hound::WavWriter<std::io::BufWriter<std::fs::File>>,
    outgoing: &tokio::sync::mpsc::UnboundedSender<Message>,
    echo: bool,
    call_number: u64,
) {
    while let Some(message) = stream.next().await {
        match message {
            Ok(Message::Binary(data)) => {
                for sample in data.chunks_exact(2) {
                    let _ = recorder.write_sample(i16::from_le_bytes([sample[0], sample[1]]));
                }
                if echo {
                    let _ = outgoing.send(Message::Binary(data));
                }
            }
            Ok(Message::Text(text)) => println!("call {call_number}: {text}"),
            Ok(Message::Close(frame)) => {
                println!(
                    "call {call_number}: closed {}",
                    frame.map(|f| format!("with {}", u16::from(f.code))).unwrap_or_default()
                );
                break;
            }
            Ok(_) => {}
            Err(error) => {
                println!("call {call_number}: {error}");
                break;
            }
        }
    }
}

async fn serve(tcp: TcpStream, options: Options) -> Result<(), String> {
    let peer = tcp.peer_addr().map(|a| a.to_string()).unwrap_or_default();
    let mut path = String::new();
    let ws = tokio_tungstenite::accept_hdr_async(tcp, |request: &Request, mut response: Response| {
        path = request.uri().path().to_string();
        if request.headers().get("Sec-WebSocket-Protocol").is_some_and(|p| p == "WSBRIDGE") {
            response.headers_mut().insert("Sec-WebSocket-Protocol", "WSBRIDGE".parse().unwrap());
        }
        Ok(response)
    })
    .await;
    let ws = match ws {
        Ok(ws) => ws,
        // A client that closed before asking for anything: a port probe (make demo's own readiness check), not a call.
        Err(WsError::Protocol(ProtocolError::HandshakeIncomplete)) => return Ok(()),
        Err(e) => return Err(format!("handshake with {peer}: {e}")),
    };
    // Counted once the handshake is done, so port probes are not calls.
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call_number = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
    let (mut sink, mut stream) = ws.split();
    let first = match stream.next().await {
        Some(Ok(Message::Text(text))) => text.to_string(),
        other => return Err(format!("{peer}: expected the first text message, got {other:?}")),
    };
    let rate = rate_of(&first);
    println!("call {call_number} from {peer} on {path}: first message {first}");
    let file = options.record_dir.join(format!("call-{call_number}-{}.wav", path.trim_matches('/').replace('/', "_")));
    let spec =
        hound::WavSpec { channels: 1, sample_rate: rate, bits_per_sample: 16, sample_format: hound::SampleFormat::Int };
    let mut recorder = hound::WavWriter::create(&file, spec).map_err(|e| format!("{}: {e}", file.display()))?;

    // One writer owns the socket's sending half; everything to send goes through it.
    let (outgoing, mut to_send) = tokio::sync::mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(message) = to_send.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    start_playing(&options.mode, rate, &outgoing, call_number);
    record_and_echo(&mut stream, &mut recorder, &outgoing, matches!(options.mode, Mode::Echo), call_number).await;
    drop(outgoing);
    writer.abort();
    recorder.finalize().map_err(|e| e.to_string())?;
    println!("call {call_number}: recorded {}", file.display());
    Ok(())
}

#[tokio::main]
async fn main() {
    let options = match parse_options() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let listener = TcpListener::bind(&options.listen).await.unwrap_or_else(|e| {
        eprintln!("cannot listen on {}: {e}", options.listen);
        std::process::exit(1);
    });
    println!(
        "wsbridge-demo listening on ws://{} ({:?}), recording to {}",
        options.listen,
        options.mode,
        options.record_dir.display()
    );
    loop {
        let Ok((tcp, _)) = listener.accept().await else { continue };
        let options = options.clone();
        tokio::spawn(async move {
            if let Err(error) = serve(tcp, options).await {
                eprintln!("{error}");
            }
        });
    }
}
