//! What FreeSWITCH points into while it uses it: [`Codec`], [`Timer`], the
//! frame handed to it ([`PcmFrame`]) and the [`Resampler`]; each on the
//! heap, released on `Drop`. And [`FreeSwitchDecoder`], FreeSWITCH's codec
//! as a playout's wire decoder (a call's or a fork's).

use std::cell::UnsafeCell;
use std::ffi::{c_int, c_void, CString};
use std::ptr::NonNull;

use freeswitch_sys as fs;

use super::{Session, SUCCESS};
use crate::audio::media::WireDecoder;
use crate::settings::{ContentType, Encoding, FRAME_MS};

impl Session<'_> {
    /// Sets the session's read and write codecs; both must belong to its call (see [`Codec`]).
    pub fn use_codecs(self, read: &Codec, write: &Codec) {
        // SAFETY: both codecs are on the heap and outlive the session's use of them (see Codec).
        unsafe {
            fs::switch_core_session_set_read_codec(self.as_ptr(), read.as_ptr());
            fs::switch_core_session_set_write_codec(self.as_ptr(), write.as_ptr());
        }
    }
}

/// A codec FreeSWITCH points into; on the heap so its address never
/// changes, and destroyed on drop. A session's codec must outlive the
/// session's use of it, which holds when it belongs to the call: calls are
/// dropped in on_destroy. A [`Codec::standalone`] one has its own pool.
pub struct Codec(Box<UnsafeCell<fs::switch_codec_t>>);

// SAFETY: FreeSWITCH uses the codec under its own locking (decode takes the
// codec's mutex); Rust code initialises it, decodes through FreeSWITCH, and
// destroys it on drop.
unsafe impl Send for Codec {}
// SAFETY: as above; no Rust code reads or writes it through a shared reference.
unsafe impl Sync for Codec {}

impl Codec {
    /// L16 mono at `rate` Hz, `ms` per frame, from the session's pool.
    pub fn l16(session: Session<'_>, rate: u32, ms: u32) -> Result<Codec, String> {
        Codec::named(session, "L16", rate, ms)
    }

    /// FreeSWITCH's codec `name` (L16, PCMU, PCMA), mono, from the session's pool.
    pub fn named(session: Session<'_>, name: &str, rate: u32, ms: u32) -> Result<Codec, String> {
        // SAFETY: the pool is the session's, alive while the session is.
        unsafe { Codec::init(name, rate, ms, session.pool()) }
    }

    /// As [`Codec::named`], with a pool of its own, so that it may outlive the session.
    pub fn standalone(name: &str, rate: u32, ms: u32) -> Result<Codec, String> {
        // SAFETY: a null pool makes FreeSWITCH create one for the codec, freed with it.
        unsafe { Codec::init(name, rate, ms, std::ptr::null_mut()) }
    }

    /// # Safety
    /// `pool` is null or a live pool that outlives the codec.
    unsafe fn init(name: &str, rate: u32, ms: u32, pool: *mut fs::switch_memory_pool_t) -> Result<Codec, String> {
        let codec = Codec(Box::default());
        let c_name = CString::new(name).map_err(|_| format!("bad codec name {name:?}"))?;
        // SAFETY: the codec is on the heap and zeroed; the pool is as the caller promised.
        let status = unsafe { fs::wsb_codec_init(codec.as_ptr(), c_name.as_ptr(), rate, ms as c_int, pool) };
        if status != SUCCESS {
            return Err(format!("FreeSWITCH has no {name} codec at {rate} Hz, {ms} ms"));
        }
        Ok(codec)
    }

    /// Decodes `encoded` to 16-bit samples in host order, appended to `samples`.
    pub fn decode(&self, encoded: &[u8], samples: &mut Vec<i16>) {
        if encoded.is_empty() {
            return;
        }
        let start = samples.len();
        // G.711 gives two bytes per byte; room for more covers any codec used here.
        samples.resize(start + encoded.len() * 2, 0);
        let mut decoded_bytes = ((samples.len() - start) * 2) as u32;
        let mut decoded_rate = 0u32;
        let mut flags = 0u32;
        // SAFETY: the codec is ready (init succeeded); both buffers are valid for the lengths given,
        // and FreeSWITCH writes at most decoded_bytes; the codec's mutex serialises users.
        let status = unsafe {
            fs::switch_core_codec_decode(
                self.as_ptr(),
                std::ptr::null_mut(),
                encoded.as_ptr() as *mut c_void,
                encoded.len() as u32,
                0,
                samples[start..].as_mut_ptr() as *mut c_void,
                &mut decoded_bytes,
                &mut decoded_rate,
                &mut flags,
            )
        };
        let decoded = if status == SUCCESS { (decoded_bytes as usize / 2).min(encoded.len() * 2) } else { 0 };
        samples.truncate(start + decoded);
    }

    fn as_ptr(&self) -> *mut fs::switch_codec_t {
        self.0.get()
    }
}

impl Drop for Codec {
    fn drop(&mut self) {
        // SAFETY: a zeroed or destroyed codec reads as not ready; a ready one is ours to destroy.
        unsafe {
            if fs::wsb_codec_ready(self.as_ptr()) != 0 {
                fs::switch_core_codec_destroy(self.as_ptr());
            }
        }
    }
}

/// A soft timer that paces one session's reads; destroyed on drop.
pub struct Timer(Box<fs::switch_timer_t>);

// SAFETY: the timer is driven by one thread at a time (`next` takes &mut).
unsafe impl Send for Timer {}

impl Timer {
    pub fn soft(session: Session<'_>, ms: u32, samples: u32) -> Result<Timer, String> {
        let mut raw: Box<fs::switch_timer_t> = Box::default();
        // SAFETY: the timer is on the heap; the pool is the session's.
        let status = unsafe {
            fs::switch_core_timer_init(&mut *raw, c"soft".as_ptr(), ms as c_int, samples as c_int, session.pool())
        };
        if status != SUCCESS {
            return Err("cannot start the soft timer".into());
        }
        Ok(Timer(raw))
    }

    /// Sleeps until the next tick.
    pub fn next(&mut self) {
        // SAFETY: initialised in soft().
        unsafe { fs::switch_core_timer_next(&mut *self.0) };
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: initialised in soft() and destroyed only here.
        unsafe { fs::switch_core_timer_destroy(&mut *self.0) };
    }
}

/// The frame `read_frame` hands FreeSWITCH, which reads it until the next read.
pub struct PcmFrame {
    frame: Box<fs::switch_frame_t>,
    samples: Box<[i16]>,
    rate: u32,
}

// SAFETY: used by the session's read thread only (behind the call's lock).
unsafe impl Send for PcmFrame {}

/// A frame ready for FreeSWITCH, produced by [`PcmFrame::publish`].
pub struct PublishedFrame(NonNull<fs::switch_frame_t>);

impl PublishedFrame {
    pub(super) fn as_ptr(&self) -> *mut fs::switch_frame_t {
        self.0.as_ptr()
    }
}

impl PcmFrame {
    pub fn new(samples: usize, rate: u32) -> PcmFrame {
        PcmFrame { frame: Box::default(), samples: vec![0; samples].into_boxed_slice(), rate }
    }

    pub fn samples_mut(&mut self) -> &mut [i16] {
        &mut self.samples
    }

    /// Points the frame at the samples, in `codec`'s format; `comfort_noise` flags it SFF_CNG.
    pub fn publish(&mut self, codec: &Codec, comfort_noise: bool) -> PublishedFrame {
        let bytes = (self.samples.len() * 2) as u32;
        *self.frame = fs::switch_frame_t {
            codec: codec.as_ptr(),
            data: self.samples.as_mut_ptr() as *mut c_void,
            datalen: bytes,
            buflen: bytes,
            samples: self.samples.len() as u32,
            rate: self.rate,
            channels: 1,
            flags: if comfort_noise { fs::switch_frame_flag_enum_t::SFF_CNG.0 } else { 0 },
            ..Default::default()
        };
        PublishedFrame(NonNull::from(&mut *self.frame))
    }
}

/// FreeSWITCH's (speex) resampler for mono L16; destroyed on drop.
pub struct Resampler {
    raw: NonNull<fs::switch_audio_resampler_t>,
    pub from_rate: u32,
    pub to_rate: u32,
}

// SAFETY: used by one thread at a time (`process` takes &mut).
unsafe impl Send for Resampler {}

impl Resampler {
    pub fn new(from_rate: u32, to_rate: u32) -> Result<Resampler, String> {
        let mut raw: *mut fs::switch_audio_resampler_t = std::ptr::null_mut();
        // SAFETY: FreeSWITCH allocates the resampler into `raw`; the strings are static.
        let status = unsafe {
            fs::switch_resample_perform_create(
                &mut raw,
                from_rate,
                to_rate,
                (to_rate / 50).max(160) * 4,
                2,
                1,
                c"fork".as_ptr(),
                c"Resampler::new".as_ptr(),
                0,
            )
        };
        match NonNull::new(raw) {
            Some(raw) if status == SUCCESS => Ok(Resampler { raw, from_rate, to_rate }),
            _ => Err(format!("FreeSWITCH cannot resample {from_rate} Hz to {to_rate} Hz")),
        }
    }

    /// Appends `input` at the source rate to `out`, at the target rate.
    pub fn process(&mut self, input: &[i16], out: &mut Vec<i16>) {
        if input.is_empty() {
            return;
        }
        // SAFETY: a live resampler; speex only reads the input; `to` holds to_len samples after the call.
        unsafe {
            let raw = self.raw.as_ptr();
            let produced = fs::switch_resample_process(raw, input.as_ptr() as *mut i16, input.len() as u32);
            let to = (*raw).to;
            if !to.is_null() {
                out.extend_from_slice(std::slice::from_raw_parts(to, produced as usize));
            }
        }
    }
}

impl Drop for Resampler {
    fn drop(&mut self) {
        let mut raw = self.raw.as_ptr();
        // SAFETY: created in new() and destroyed only here.
        unsafe { fs::switch_resample_destroy(&mut raw) };
    }
}

/// The server's G.711, decoded by FreeSWITCH's own codec for the playout
/// (a call's, or a fork's).
pub struct FreeSwitchDecoder(Codec);

impl FreeSwitchDecoder {
    /// The decoder a wire format needs: none for L16.
    pub fn for_wire(format: ContentType) -> Result<Option<Box<dyn WireDecoder>>, String> {
        Ok(match format.encoding {
            Encoding::L16 => None,
            encoding => {
                Some(Box::new(FreeSwitchDecoder(Codec::standalone(encoding.codec_name(), format.rate, FRAME_MS)?)))
            }
        })
    }
}

impl WireDecoder for FreeSwitchDecoder {
    fn decode(&self, wire: &[u8], linear: &mut Vec<u8>) {
        let mut samples = Vec::with_capacity(wire.len());
        self.0.decode(wire, &mut samples);
        linear.extend(samples.iter().flat_map(|sample| sample.to_le_bytes()));
    }
}
