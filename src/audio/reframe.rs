//! Cuts a byte stream into fixed-size frames; a partial frame waits for more.

pub struct Reframer {
    frame_bytes: usize,
    partial: Vec<u8>,
}

impl Reframer {
    pub fn new(frame_bytes: usize) -> Self {
        assert!(frame_bytes > 0);
        Reframer { frame_bytes, partial: Vec::with_capacity(frame_bytes) }
    }

    /// Calls `on_frame` for each complete frame in `data`, in order.
    pub fn push(&mut self, mut data: &[u8], mut on_frame: impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            let take = (self.frame_bytes - self.partial.len()).min(data.len());
            self.partial.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.partial.len() < self.frame_bytes {
                return;
            }
            on_frame(&self.partial);
            self.partial.clear();
        }
        let mut frames = data.chunks_exact(self.frame_bytes);
        for frame in &mut frames {
            on_frame(frame);
        }
        self.partial.extend_from_slice(frames.remainder());
    }

    /// Bytes waiting for the rest of their frame.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    pub fn clear(&mut self) {
        self.partial.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_split_of_the_input_gives_the_same_frames() {
        let input: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for chunk in [1, 3, 333, 640, 641, 5000, 10_000] {
            let mut reframer = Reframer::new(640);
            let mut out = Vec::new();
            let mut frames = 0;
            for piece in input.chunks(chunk) {
                reframer.push(piece, |frame| {
                    assert_eq!(frame.len(), 640);
                    frames += 1;
                    out.extend_from_slice(frame);
                });
            }
            assert_eq!(frames, 10_000 / 640, "chunk {chunk}");
            assert_eq!(reframer.pending(), 10_000 % 640);
            assert_eq!(out[..], input[..out.len()], "chunk {chunk}: bytes lost, duplicated or reordered");
        }
    }

    #[test]
    fn clear_drops_the_partial_frame() {
        let mut reframer = Reframer::new(4);
        reframer.push(&[1, 2, 3], |_| panic!("no frame yet"));
        reframer.clear();
        let mut got = Vec::new();
        reframer.push(&[5, 6, 7, 8], |frame| got.extend_from_slice(frame));
        assert_eq!(got, [5, 6, 7, 8]);
    }
}
