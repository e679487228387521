//! The audio of a call, as samples and frames: what a call's FreeSWITCH
//! thread and its task share ([`media`]), the downlink's [`playout`] with its
//! [`jitter`] buffer, [`concealment`] and [`comfort_noise`], re-framing
//! ([`reframe`]), the [`replies`] of a speech-to-speech model, the [`uplink`] queue with its [`uplink_pump`], and for
//! forks the [`mixing`] of a call's two directions and [`g711`] μ-law.

pub mod comfort_noise;
pub mod concealment;
pub mod g711;
pub mod jitter;
pub mod media;
pub mod mixing;
pub mod playout;
pub mod reframe;
pub mod replies;
pub mod uplink;
pub mod uplink_pump;
pub mod uplink_writer;
