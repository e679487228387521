//! Micro-benchmark of the per-frame path: what one 20 ms frame costs in the
//! re-framer, the playout buffer, comfort noise and the shared call state.
//! Prints nanoseconds per frame; run with `cargo bench --bench frame_path`.

use std::hint::black_box;
use std::time::Instant;

use mod_wsbridge::audio::comfort_noise::DownlinkMixer;
use mod_wsbridge::audio::media::CallMedia;
use mod_wsbridge::audio::playout::PlayoutBuffer;
use mod_wsbridge::audio::reframe::Reframer;
use mod_wsbridge::settings::options::MediaLimits;
use mod_wsbridge::settings::ContentType;

const FRAMES: usize = 200_000;

fn measure(name: &str, rate: u32, mut per_frame: impl FnMut()) {
    for _ in 0..FRAMES / 10 {
        per_frame();
    }
    let started = Instant::now();
    for _ in 0..FRAMES {
        per_frame();
    }
    let ns = started.elapsed().as_nanos() as f64 / FRAMES as f64;
    println!("{name:<52} {:>6} Hz {ns:>9.1} ns/frame", rate);
}

fn main() {
    println!("per-frame cost, {FRAMES} frames each (20 ms frames; one call needs 50 per second each way)");
    for rate in [8000, 16000, 48000] {
        let format = ContentType::l16(rate);
        let frame_bytes = format.bytes_per_frame();
        let samples = format.samples_per_frame();
        let message = vec![7u8; 333];

        let mut reframer = Reframer::new(frame_bytes);
        let mut pending = 0usize;
        measure("uplink re-framer (333-byte pieces in)", rate, || {
            // About one frame's worth of input per frame out.
            while pending < frame_bytes {
                reframer.push(black_box(&message), |frame| {
                    black_box(frame);
                });
                pending += message.len();
            }
            pending -= frame_bytes;
        });

        let mut playout = PlayoutBuffer::new(frame_bytes, frame_bytes * 3000);
        let mut out = vec![0i16; samples];
        measure("playout: push a frame in 333-byte pieces, pop it", rate, || {
            let mut left = frame_bytes;
            while left > 0 {
                let piece = left.min(message.len());
                playout.push(&message[..piece]);
                left -= piece;
            }
            black_box(playout.pop_frame(&mut out));
        });

        let mut mixer = DownlinkMixer::new(-65.0, rate);
        let mut frame = vec![0i16; samples];
        measure("comfort noise frame", rate, || {
            mixer.finish_frame(black_box(&mut frame), false);
        });
        let mut switch = false;
        measure("audio/noise switch with cross-fade", rate, || {
            switch = !switch;
            mixer.finish_frame(black_box(&mut frame), switch);
        });

        let media = CallMedia::new(format, MediaLimits::default(), None);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let one_frame = vec![1u8; frame_bytes];
        let mut batch = std::collections::VecDeque::new();
        measure("call state: queue+pop downlink, push+take uplink", rate, || {
            rt.block_on(media.queue_playout(&one_frame));
            black_box(media.next_downlink_frame(&mut out));
            media.send_audio(&one_frame);
            rt.block_on(media.next_uplink_batch(&mut batch));
            batch.clear();
        });
    }
}
