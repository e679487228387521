//! Wakes the calls' tasks for their caller audio in batches, not frame by frame.
//!
//! FreeSWITCH hands every call its frame on the same 20 ms tick. Waking a
//! call's task from each session thread costs the runtime thread a wake-up
//! per frame, and on a machine with room those wakes do not merge: the
//! runtime finishes one call's frame before the next session thread runs.
//! The pump is woken once for the first frame of a tick, waits a short
//! window for the tick's other frames, then wakes every call that has audio
//! queued from the runtime itself, where a wake costs no context switch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

/// One call's side of the pump: its task's wake-up, and whether it is
/// already among the calls the pump will wake.
pub struct PumpSlot {
    task: Notify,
    due: AtomicBool,
    /// The slot's place in every batch: calls are woken oldest first.
    order: u64,
}

impl Default for PumpSlot {
    fn default() -> Self {
        static CREATED: AtomicU64 = AtomicU64::new(0);
        PumpSlot { task: Notify::new(), due: AtomicBool::new(false), order: CREATED.fetch_add(1, Ordering::Relaxed) }
    }
}

impl PumpSlot {
    /// What the call's task waits on.
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.task.notified()
    }

    /// Wakes the call's task now (text, marks, or no pump).
    pub fn wake_now(&self) {
        self.task.notify_one();
    }
}

pub struct UplinkPump {
    window: Duration,
    due: Mutex<Vec<Arc<PumpSlot>>>,
    /// The pump has been woken for the batch being gathered.
    armed: AtomicBool,
    wake: Notify,
}

impl UplinkPump {
    /// `window`: how long the pump waits after a batch's first frame.
    pub fn new(window: Duration) -> Arc<Self> {
        Arc::new(UplinkPump { window, due: Mutex::new(Vec::new()), armed: AtomicBool::new(false), wake: Notify::new() })
    }

    fn due(&self) -> MutexGuard<'_, Vec<Arc<PumpSlot>>> {
        crate::support::sync::lock(&self.due)
    }

    /// The call of `slot` has caller audio queued: its task is woken with
    /// the batch. Called from FreeSWITCH's threads; never blocks on the runtime.
    pub fn schedule(&self, slot: &Arc<PumpSlot>) {
        if slot.due.swap(true, Ordering::AcqRel) {
            return;
        }
        self.due().push(slot.clone());
        if !self.armed.swap(true, Ordering::AcqRel) {
            self.wake.notify_one();
        }
    }

    /// The pump's task, for the life of the runtime.
    pub async fn run(self: Arc<Self>) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            if !self.window.is_zero() {
                tokio::time::sleep(self.window).await;
            }
            // Disarmed first: a frame from now on wakes the pump for the next batch.
            self.armed.store(false, Ordering::Release);
            std::mem::swap(&mut batch, &mut *self.due());
            in_wake_order(&mut batch);
            for slot in batch.drain(..) {
                // Cleared before the wake, so a frame queued meanwhile is either
                // taken by this wake or schedules the call again.
                slot.due.store(false, Ordering::Release);
                slot.wake_now();
            }
        }
    }
}

/// The batch in the calls' own order, not the order their frames came in:
/// FreeSWITCH's session threads run in a different order every tick, and a
/// call whose place in the batch moved would send its frames unevenly.
fn in_wake_order(batch: &mut [Arc<PumpSlot>]) {
    batch.sort_unstable_by_key(|slot| slot.order);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Instant;

    /// A call's task: counts its wakes until told to stop.
    fn call_task(slot: Arc<PumpSlot>, wakes: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                slot.notified().await;
                wakes.fetch_add(1, Ordering::SeqCst);
            }
        })
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_tick_of_frames_from_many_calls_wakes_each_call_once() {
        let pump = UplinkPump::new(Duration::from_millis(2));
        tokio::spawn(pump.clone().run());
        let slots: Vec<Arc<PumpSlot>> = (0..50).map(|_| Arc::new(PumpSlot::default())).collect();
        let wakes: Vec<Arc<AtomicUsize>> = (0..50).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let tasks: Vec<_> = slots.iter().zip(&wakes).map(|(s, w)| call_task(s.clone(), w.clone())).collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        // One tick: every call's frame, from session threads, twice over (two frames queued).
        let pushed = {
            let (pump, slots) = (pump.clone(), slots.clone());
            std::thread::spawn(move || {
                for slot in slots.iter().chain(slots.iter()) {
                    pump.schedule(slot);
                }
            })
        };
        pushed.join().unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let counts: Vec<usize> = wakes.iter().map(|w| w.load(Ordering::SeqCst)).collect();
        assert!(counts.iter().all(|&n| n == 1), "each call woken once for its tick: {counts:?}");
        for task in tasks {
            task.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_frame_is_never_stranded_and_waits_about_the_window() {
        let pump = UplinkPump::new(Duration::from_millis(2));
        tokio::spawn(pump.clone().run());
        let slot = Arc::new(PumpSlot::default());
        for round in 0..200 {
            let notified = slot.notified();
            let queued_at = Instant::now();
            {
                let (pump, slot) = (pump.clone(), slot.clone());
                std::thread::spawn(move || pump.schedule(&slot)).join().unwrap();
            }
            tokio::time::timeout(Duration::from_millis(500), notified)
                .await
                .unwrap_or_else(|_| panic!("round {round}: the call was never woken"));
            let waited = queued_at.elapsed();
            assert!(waited >= Duration::from_millis(2), "round {round}: woken after {waited:?}, before the window");
            // Back to back, and a frame landing just as the pump wakes: a few rounds without a pause.
            if round % 3 == 0 {
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
    }

    #[test]
    fn each_batch_wakes_the_calls_in_the_same_order() {
        let slots: Vec<Arc<PumpSlot>> = (0..20).map(|_| Arc::new(PumpSlot::default())).collect();
        // Frames came in as FreeSWITCH's threads ran: newest call first, then the rest.
        let mut tick: Vec<Arc<PumpSlot>> = slots.iter().skip(1).rev().step_by(2).cloned().collect();
        tick.extend(slots.iter().step_by(2).cloned());
        in_wake_order(&mut tick);
        let places: Vec<usize> =
            tick.iter().map(|slot| slots.iter().position(|s| Arc::ptr_eq(s, slot)).unwrap()).collect();
        assert!(places.windows(2).all(|pair| pair[0] < pair[1]), "oldest call first: {places:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn no_window_wakes_at_once() {
        let pump = UplinkPump::new(Duration::ZERO);
        tokio::spawn(pump.clone().run());
        let slot = Arc::new(PumpSlot::default());
        let notified = slot.notified();
        pump.schedule(&slot);
        tokio::time::timeout(Duration::from_millis(100), notified).await.expect("woken");
    }
}
