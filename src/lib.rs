//! mod_wsbridge: a FreeSWITCH endpoint that bridges calls to WebSocket audio
//! servers.
//!
//! The code is in rooms, each importing only from the rooms below it
//! (`tests/architecture.rs` checks it, and that no file imports itself back):
//!
//! - [`support`]: `logging` into FreeSWITCH's log; `poll_watch`, the
//!   runtime's heartbeat and slow polls; `sync`, locks that outlive a panic.
//! - [`settings`]: plain data every room reads: the `TABLE` of settings and
//!   `tuning` per call, `module_conf` (wsbridge.conf) with `listener_conf`
//!   (its `listen*` params), `server` (the
//!   `P-wsbridge-websocket-*` values), `options` (the option structs),
//!   `security` (allow-list, headers), `redact` (what may be shown of a
//!   secret), `address` (a URI's host, special address ranges, CIDR blocks,
//!   odd IPv4 forms), `tokens`, `agent` (a model's session and functions), `cause`.
//! - [`audio`]: samples and frames: `media` (what a call's FreeSWITCH thread
//!   and its task share), `playout` with its `jitter` buffer, `concealment`
//!   and `comfort_noise`, `reframe`, the `uplink` with its `uplink_pump` and
//!   `uplink_writer` (the one lock of the queue and a socket's writes), a
//!   model's `replies`, and
//!   for forks `mixing` and `g711`.
//! - [`wire`]: what crosses the network: the `connection` (a `websocket`
//!   over `tcp`, `tls` with `tls_trust` and `tls_errors` (and `tls_tests`),
//!   and the `upgrade`; a plain one's socket, `shared_tcp`, with caller
//!   audio written into it as a `frame` by the session thread, or `direct`,
//!   read as well by the module's one `reactor` thread; a listener's
//!   client read through a `read_budget`;
//!   or AudioSocket's TCP) and the `protocol` spoken on it, one file each:
//!   `wsbridge`, `twilio`, `vonage`, `audiosocket`, `openai`.
//! - [`call`]: one call's life: its `plan`, its `conversation` with the
//!   server (`connect`, `exchange`, `close`, and a model's `agent`), `admission` of calls from the
//!   WebSocket side (with the client's `first_message`, each token's
//!   `token_usage` and each address's `address_guard`), `fork_plan`, `drain_state` and the `api`'s text.
//! - `freeswitch` (built only where FreeSWITCH was found): the module's
//!   entry points (its `mod.rs`) and the glue: the `endpoint` leg, each
//!   `fork` with its `fork_stream`, the `listener`, the `registry` of what
//!   runs on a channel, the API's `commands`, `events`, `config_store` and
//!   its `reload`, `drain`, the tokio `runtime`. Its `ffi` is the one unsafe
//!   layer: `session`, `codec`, the `endpoint_interface` and its
//!   `leg_request`, `media_bug`, `module`, `event_bus`, and `guard`, which
//!   stops panics at it.
//!

pub mod audio;
pub mod call;
pub mod settings;
pub mod support;
pub mod wire;

#[cfg(freeswitch)]
pub mod freeswitch;
