//! `--capacity FROM,STEP,MAX`: the node's call capacity, the most wsbridge
//! calls that lose no frame and keep uplink jitter p99 under a bound.

use crate::options::{Endpoint, Options};
use crate::{cores, run};

/// What a node's call capacity must keep: no frame lost, jitter p99 under this.
const CAPACITY_JITTER_P99_MS: f64 = 5.0;

/// Steps wsbridge calls up from `from` until a step loses a frame or its
/// uplink jitter p99 reaches the bound; the last step that kept both is the
/// node's call capacity.
pub fn capacity_search(options: &Options, (from, step, max): (usize, usize, usize), server: &tokio::runtime::Handle) {
    let mut capacity = None;
    let mut calls = from;
    let mut run_number = 0;
    while calls <= max {
        let row = run(options, Endpoint::Wsbridge, calls, run_number, server);
        run_number += 1;
        let media = row.media.as_ref().expect("a wsbridge row has media");
        let lost = media.frames_lost + media.frames_dropped_by_module;
        let kept = row.completed == calls && lost == 0 && media.jitter_p99_ms < CAPACITY_JITTER_P99_MS;
        println!(
            "capacity step: {calls} calls: {} completed, {lost} frames lost, uplink jitter p99 {:.2} ms, \
             FreeSWITCH {:.0} µs per call-second: {}",
            row.completed,
            media.jitter_p99_ms,
            row.cpu_us_per_call_second,
            if kept { "kept" } else { "NOT kept" }
        );
        if !kept {
            break;
        }
        capacity = Some(calls);
        calls += step;
    }
    match capacity {
        Some(calls) if calls + step > max => println!(
            "capacity: at least {calls} calls (0 lost, jitter p99 < {CAPACITY_JITTER_P99_MS} ms), the most tried"
        ),
        Some(calls) => println!(
            "capacity: {calls} calls with 0 lost frames and uplink jitter p99 < {CAPACITY_JITTER_P99_MS} ms on {} cores",
            cores()
        ),
        None => println!("capacity: below {from} calls"),
    }
}
