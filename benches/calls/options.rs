//! The benchmark's command line: the endpoints it can run, and its options.

use std::path::PathBuf;

use crate::echo_server::Echo;
use crate::{FRAME_BYTES, LIVE_MAX_DELAY_MS, RATE, TONE_HZ};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Endpoint {
    Null,
    /// No FreeSWITCH: the same frames from a minimal epoll loop, the kernel's share.
    SocketFloor,
    Wsbridge,
    /// wsbridge with a server that echoes each frame after a random 0–40 ms.
    WsbridgeLive,
    /// wsbridge speaking Twilio Media Streams (JSON, base64 μ-law) to an echo
    /// server that answers in kind: the cost of the protocol next to the native one.
    WsbridgeTwilio,
    /// The native protocol with G.711 μ-law on the wire: the same audio as Twilio's, in binary.
    WsbridgePcmu,
    /// wsbridge speaking OpenAI's Realtime API (JSON, base64 L16 at 24 kHz) to
    /// a server that answers each frame as a model's reply audio.
    WsbridgeOpenai,
    /// The null endpoint's calls, each streamed by a listen-only fork (a
    /// media bug, both directions mixed, 16 kHz) to the echo server.
    WsbridgeFork,
    /// The same calls as `WsbridgeFork`, each streamed by a peer's fork module.
    PeerFork(&'static PeerFork),
}

impl Endpoint {
    pub const ALL: [Endpoint; 8] = [
        Endpoint::Null,
        Endpoint::SocketFloor,
        Endpoint::Wsbridge,
        Endpoint::WsbridgeLive,
        Endpoint::WsbridgePcmu,
        Endpoint::WsbridgeTwilio,
        Endpoint::WsbridgeOpenai,
        Endpoint::WsbridgeFork,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Null => "null",
            Endpoint::SocketFloor => "socket-floor",
            Endpoint::Wsbridge => "wsbridge",
            Endpoint::WsbridgeLive => "wsbridge-live",
            Endpoint::WsbridgeTwilio => "wsbridge-twilio",
            Endpoint::WsbridgePcmu => "wsbridge-pcmu",
            Endpoint::WsbridgeOpenai => "wsbridge-openai",
            Endpoint::WsbridgeFork => "wsbridge-fork",
            Endpoint::PeerFork(peer) => peer.name,
        }
    }

    pub fn from_name(name: &str) -> Result<Endpoint, String> {
        Endpoint::ALL.into_iter().find(|endpoint| endpoint.name() == name).ok_or(format!("unknown endpoint '{name}'"))
    }

    /// How its echo server echoes; `None` for the endpoint with no server.
    pub fn echo(self) -> Option<Echo> {
        let echo = Echo {
            frame_bytes: FRAME_BYTES,
            tone_hz: TONE_HZ,
            rate: RATE,
            max_delay_ms: 0,
            mulaw: false,
            twilio: false,
            openai: false,
            listen_only: false,
        };
        match self {
            Endpoint::Null => None,
            Endpoint::Wsbridge | Endpoint::SocketFloor => Some(echo),
            Endpoint::WsbridgeLive => Some(Echo { max_delay_ms: LIVE_MAX_DELAY_MS, ..echo }),
            // Twilio's 20 ms of μ-law at 8 kHz.
            Endpoint::WsbridgeTwilio => Some(Echo { frame_bytes: 160, rate: 8000, mulaw: true, twilio: true, ..echo }),
            Endpoint::WsbridgePcmu => Some(Echo { frame_bytes: 160, rate: 8000, mulaw: true, ..echo }),
            // The Realtime API's 24 kHz L16.
            Endpoint::WsbridgeOpenai => Some(Echo { frame_bytes: 960, rate: 24000, openai: true, ..echo }),
            // Listen-only, as a fork's server is: nothing comes back for any module to read.
            Endpoint::WsbridgeFork | Endpoint::PeerFork(_) => Some(Echo { listen_only: true, ..echo }),
        }
    }
}

pub struct Options {
    pub calls: Vec<usize>,
    pub seconds: u64,
    pub rate: f64,
    pub endpoints: Vec<Endpoint>,
    pub out: PathBuf,
    /// wsbridge.conf's `uplink-batch-ms`; None: the module's default.
    pub uplink_batch_ms: Option<u64>,
    /// wsbridge.conf's `uplink-direct`; None: the module's default.
    pub uplink_direct: Option<bool>,
    /// wsbridge.conf's `downlink-batch-ms`; None: the module's default.
    pub downlink_batch_ms: Option<u64>,
    /// wsbridge.conf's `downlink-reactor`; None: the module's default.
    pub downlink_reactor: Option<bool>,
    /// `--capacity FROM,STEP,MAX`: wsbridge calls stepped up until a step
    /// loses a frame or its uplink jitter p99 reaches 5 ms.
    pub capacity: Option<(usize, usize, usize)>,
    /// `--fork-module PATH:COMMAND`: a row each beside `wsbridge-fork`.
    pub peer_forks: Vec<&'static PeerFork>,
    /// `--module PATH`: loaded as mod_wsbridge instead of the freshly built one.
    pub module: Option<PathBuf>,
}

impl Options {
    /// The runs at each number of calls: the endpoints, then the peers' forks.
    pub fn runs(&self) -> impl Iterator<Item = Endpoint> + '_ {
        self.endpoints.iter().copied().chain(self.peer_forks.iter().map(|peer| Endpoint::PeerFork(peer)))
    }
}

/// A peer's fork module, loaded into each of its runs' FreeSWITCH; its
/// `command` starts a call's fork as `<command> <uuid> start <url> mixed 16k`.
#[derive(Debug, PartialEq)]
pub struct PeerFork {
    pub path: PathBuf,
    /// The API command: `uuid_audio_fork`, `uuid_audio_stream`.
    pub command: String,
    /// The module's file name less `.so`: `load`'s argument and the row's name.
    pub name: &'static str,
}

impl PeerFork {
    /// `PATH:COMMAND`. Leaked: a row's name is `&'static`, and there are a few, once.
    fn parse(spec: &str) -> Result<&'static PeerFork, String> {
        let bad = || format!("bad --fork-module '{spec}': PATH.so:COMMAND");
        let (path, command) = spec.rsplit_once(':').ok_or_else(bad)?;
        let path = PathBuf::from(path);
        let name = path.file_name().and_then(|n| n.to_str()).and_then(|n| n.strip_suffix(".so")).ok_or_else(bad)?;
        if command.is_empty() || !path.is_file() {
            return Err(bad());
        }
        let name = Box::leak(name.to_string().into_boxed_str());
        Ok(Box::leak(Box::new(PeerFork { path, command: command.to_string(), name })))
    }
}

pub const USAGE: &str = "usage: cargo bench --bench calls -- [--calls 50,200,500] [--seconds 60] [--rate 50] \
                     [--endpoints null,socket-floor,wsbridge,wsbridge-live,wsbridge-pcmu,wsbridge-twilio,wsbridge-openai,wsbridge-fork] \
                     [--out target/calls-bench] [--uplink-batch-ms N] [--uplink-direct false] [--downlink-reactor false] [--downlink-batch-ms N] [--capacity FROM,STEP,MAX] \
                     [--fork-module PATH.so:COMMAND]... [--module PATH.so]";

pub fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        calls: vec![50, 200, 500],
        seconds: 60,
        rate: 50.0,
        endpoints: Endpoint::ALL.to_vec(),
        out: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/calls-bench"),
        uplink_batch_ms: None,
        uplink_direct: None,
        downlink_reactor: None,
        downlink_batch_ms: None,
        capacity: None,
        peer_forks: Vec::new(),
        module: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            // cargo bench passes this to every bench binary.
            "--bench" => {}
            "--calls" => {
                options.calls = value()?
                    .split(',')
                    .map(|n| n.trim().parse().ok().filter(|n| *n > 0).ok_or(format!("bad call count '{n}'")))
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => options.seconds = value()?.parse().map_err(|_| "bad --seconds")?,
            "--rate" => options.rate = value()?.parse().ok().filter(|r: &f64| *r > 0.0).ok_or("bad --rate")?,
            "--endpoints" => {
                options.endpoints =
                    value()?.split(',').map(|name| Endpoint::from_name(name.trim())).collect::<Result<_, _>>()?
            }
            "--out" => options.out = PathBuf::from(value()?),
            "--capacity" => {
                let steps: Vec<usize> = value()?.split(',').map(|n| n.trim().parse().unwrap_or(0)).collect();
                match steps[..] {
                    [from, step, max] if from > 0 && step > 0 && max >= from => {
                        options.capacity = Some((from, step, max))
                    }
                    _ => return Err("bad --capacity: FROM,STEP,MAX".into()),
                }
            }
            "--uplink-batch-ms" => {
                options.uplink_batch_ms = Some(value()?.parse().map_err(|_| "bad --uplink-batch-ms")?)
            }
            "--uplink-direct" => {
                options.uplink_direct = Some(value()?.parse().map_err(|_| "bad --uplink-direct: true or false")?)
            }
            "--downlink-batch-ms" => {
                options.downlink_batch_ms = Some(value()?.parse().map_err(|_| "bad --downlink-batch-ms")?)
            }
            "--downlink-reactor" => {
                options.downlink_reactor = Some(value()?.parse().map_err(|_| "bad --downlink-reactor: true or false")?)
            }
            "--fork-module" => options.peer_forks.push(PeerFork::parse(&value()?)?),
            "--module" => {
                let module = PathBuf::from(value()?);
                options.module = Some(module.is_file().then_some(module).ok_or("--module: no such file")?)
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(options)
}
