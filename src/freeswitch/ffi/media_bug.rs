//! Media bugs: a [`MediaBugHandler`] sees what a channel reads and may change
//! what it writes (FreeSWITCH's read and write replace), on the channel's
//! media threads.

use std::ffi::c_void;
use std::sync::Arc;

use freeswitch_sys as fs;

use super::guard::guard;
use super::{c_string, Channel, Session, SUCCESS};
use crate::settings::FRAME_MS;

/// What a media bug does with the audio of the channel it is attached to.
/// Called on the channel's media threads (read and write may be different
/// threads): it must never block.
pub trait MediaBugHandler: Send + Sync + 'static {
    /// A frame the channel read (the caller): host-order L16, mono, at `rate`. False removes the bug.
    fn on_read(&self, samples: &[i16], rate: u32) -> bool;
    /// A frame about to be written to the channel (what the caller hears),
    /// which may be changed in place. False removes the bug.
    fn on_write(&self, samples: &mut [i16], rate: u32) -> bool;
    /// The bug is gone: removed, or the channel hung up. The channel is
    /// still there to take variables.
    fn on_close(&self, channel: Option<Channel<'_>>);
}

/// Attaches a bug that sees what `session` reads and may change what it
/// writes (FreeSWITCH's read and write replace). `handler` is dropped when
/// the bug closes, or here if it cannot be attached.
pub fn add_media_bug<H: MediaBugHandler>(session: Session<'_>, function: &str, handler: Arc<H>) -> Result<(), String> {
    let user_data = Box::into_raw(Box::new(handler)) as *mut c_void;
    let flags =
        fs::switch_media_bug_flag_enum_t::SMBF_READ_REPLACE.0 | fs::switch_media_bug_flag_enum_t::SMBF_WRITE_REPLACE.0;
    let function = c_string(function);
    let mut bug: *mut fs::switch_media_bug_t = std::ptr::null_mut();
    // SAFETY: live session; FreeSWITCH copies the strings; the callback owns
    // user_data from now on and frees it on SWITCH_ABC_TYPE_CLOSE.
    let status = unsafe {
        fs::switch_core_media_bug_add(
            session.as_ptr(),
            function.as_ptr(),
            std::ptr::null(),
            Some(media_bug_callback::<H>),
            user_data,
            0,
            flags as fs::switch_media_bug_flag_t,
            &mut bug,
        )
    };
    if status != SUCCESS {
        // SAFETY: not attached, so no callback saw or will see it (INIT always accepts).
        drop(unsafe { Box::from_raw(user_data as *mut Arc<H>) });
        return Err("FreeSWITCH could not attach the media bug".into());
    }
    Ok(())
}

/// The samples of a bug's frame, when it holds mono L16 audio.
///
/// # Safety
/// `frame` is null or a frame FreeSWITCH hands the callback, live for it.
unsafe fn frame_samples<'f>(frame: *mut fs::switch_frame_t) -> Option<(&'f mut [i16], u32)> {
    // SAFETY: as the caller promises.
    let frame = unsafe { frame.as_mut() }?;
    if frame.data.is_null() || frame.datalen < 2 || frame.channels > 1 || frame.data as usize % 2 != 0 {
        return None;
    }
    let samples = frame.datalen as usize / 2;
    let rate = if frame.rate > 0 { frame.rate } else { (samples * 1000 / FRAME_MS as usize) as u32 };
    // SAFETY: FreeSWITCH's frame holds datalen bytes of host-order L16, aligned (checked above).
    Some((unsafe { std::slice::from_raw_parts_mut(frame.data as *mut i16, samples) }, rate))
}

unsafe extern "C" fn media_bug_callback<H: MediaBugHandler>(
    bug: *mut fs::switch_media_bug_t,
    user_data: *mut c_void,
    kind: fs::switch_abc_type_t,
) -> fs::switch_bool_t {
    const KEEP: fs::switch_bool_t = fs::switch_bool_t::SWITCH_TRUE;
    guard("media bug", KEEP, || {
        if user_data.is_null() {
            return KEEP;
        }
        let keep = match kind {
            fs::switch_abc_type_t::SWITCH_ABC_TYPE_READ_REPLACE => {
                // SAFETY: user_data is the handler add_media_bug stored, live until CLOSE.
                let handler = unsafe { &*(user_data as *const Arc<H>) };
                // SAFETY: FreeSWITCH's bug, live for the callback; its read frame likewise.
                let frame = unsafe { fs::switch_core_media_bug_get_read_replace_frame(bug) };
                // SAFETY: as above.
                let keep = match unsafe { frame_samples(frame) } {
                    Some((samples, rate)) => handler.on_read(samples, rate),
                    None => true,
                };
                // SAFETY: the frame is handed back unchanged.
                unsafe { fs::switch_core_media_bug_set_read_replace_frame(bug, frame) };
                keep
            }
            fs::switch_abc_type_t::SWITCH_ABC_TYPE_WRITE_REPLACE => {
                // SAFETY: as for READ_REPLACE.
                let handler = unsafe { &*(user_data as *const Arc<H>) };
                // SAFETY: FreeSWITCH's bug and its write frame, live for the callback.
                let frame = unsafe { fs::switch_core_media_bug_get_write_replace_frame(bug) };
                // SAFETY: as above; the frame's data is ours to change for the callback.
                let keep = match unsafe { frame_samples(frame) } {
                    Some((samples, rate)) => handler.on_write(samples, rate),
                    None => true,
                };
                // SAFETY: the same frame, changed in place.
                unsafe { fs::switch_core_media_bug_set_write_replace_frame(bug, frame) };
                keep
            }
            fs::switch_abc_type_t::SWITCH_ABC_TYPE_CLOSE => {
                // SAFETY: made by Box::into_raw in add_media_bug; CLOSE comes once, last.
                let handler = unsafe { Box::from_raw(user_data as *mut Arc<H>) };
                // SAFETY: the bug's session, live while its bugs close.
                let session = unsafe { Session::from_raw(fs::switch_core_media_bug_get_session(bug)) };
                handler.on_close(session.map(Session::channel));
                true
            }
            _ => true,
        };
        if keep {
            KEEP
        } else {
            fs::switch_bool_t::SWITCH_FALSE
        }
    })
}
