//! [`Chunker`]: content-defined chunking of a byte stream that arrives in pieces, with
//! FastCDC (`fastcdc::v2020`, normalisation level 1, the default gear table).
//!
//! It keeps a window of at most `max` bytes plus the piece being added and cuts the
//! first chunk of the window only once the window holds `max` bytes or the stream ended:
//! FastCDC's cut point depends only on the bytes from the chunk's start up to `max`, so
//! the cuts are exactly `fastcdc::v2020::StreamCDC`'s over the same bytes (a test checks
//! it), which reads into a buffer of `max` bytes the same way. `StreamCDC` itself wants a
//! blocking `Read`; an HTTP body arrives as async pieces, hence this window.

use bytes::{Buf, Bytes, BytesMut};
use fastcdc::v2020::{cut, select_masks, Normalization};

use super::manifest::ChunkerParams;

/// Cuts a stream fed with [`Chunker::push`] into chunks.
pub struct Chunker {
    params: ChunkerParams,
    masks: (u64, u64),
    window: BytesMut,
}

impl Chunker {
    /// A chunker with `params` (which must be [`ChunkerParams::is_valid`]).
    pub fn new(params: ChunkerParams) -> Chunker {
        Chunker {
            params,
            masks: select_masks(params.avg as usize, Normalization::Level1),
            window: BytesMut::with_capacity(params.max as usize * 2),
        }
    }

    /// Bytes held, not yet cut.
    pub fn buffered(&self) -> usize {
        self.window.len()
    }

    /// Whether the window holds enough to cut a chunk without the stream's end.
    pub fn is_full(&self) -> bool {
        self.window.len() >= self.params.max as usize
    }

    /// Append the next piece of the stream.
    pub fn push(&mut self, piece: &[u8]) {
        self.window.extend_from_slice(piece);
    }

    /// The next chunk, if it can be cut: when the window is full, or at the stream's end
    /// (`eof`) while bytes remain. Each chunk is its own buffer (copied out of the window),
    /// so a chunk in flight never pins the window's larger allocation.
    pub fn next_chunk(&mut self, eof: bool) -> Option<Bytes> {
        if self.window.is_empty() || (!eof && !self.is_full()) {
            return None;
        }
        let (mask_s, mask_l) = self.masks;
        let (_, n) = cut(
            &self.window,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        let n = n.clamp(1, self.window.len());
        let chunk = Bytes::copy_from_slice(&self.window[..n]);
        self.window.advance(n);
        Some(chunk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    const SMALL: ChunkerParams = ChunkerParams {
        min: 4096,
        avg: 16384,
        max: 65536,
    };

    fn cut_all(data: &[u8], params: ChunkerParams, piece: usize) -> Vec<Bytes> {
        let mut c = Chunker::new(params);
        let mut out = Vec::new();
        for p in data.chunks(piece.max(1)) {
            c.push(p);
            while let Some(ch) = c.next_chunk(false) {
                out.push(ch);
            }
            assert!(c.buffered() < params.max as usize + piece.max(1));
        }
        while let Some(ch) = c.next_chunk(true) {
            out.push(ch);
        }
        out
    }

    #[test]
    fn cuts_are_streamcdcs_whatever_the_piece_sizes() {
        let data = pseudo_random(1_500_000, 7);
        let expected: Vec<usize> = fastcdc::v2020::StreamCDC::new(&data[..], 4096, 16384, 65536)
            .map(|c| c.expect("reading a slice").length)
            .collect();
        assert!(expected.len() > 20, "{} chunks", expected.len());
        for piece in [1, 1000, 4096, 65536, 100_000, 2_000_000] {
            let got: Vec<usize> = cut_all(&data, SMALL, piece)
                .iter()
                .map(|c| c.len())
                .collect();
            assert_eq!(got, expected, "pieces of {piece} bytes");
        }
    }

    #[test]
    fn chunks_add_up_to_the_stream_and_respect_the_bounds() {
        let data = pseudo_random(9 << 20, 3);
        let chunks = cut_all(&data, ChunkerParams::DEFAULT, 64 << 10);
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert!(joined == data, "the chunks differ from the stream");
        let (last, rest) = chunks.split_last().expect("some chunks");
        for c in rest {
            assert!(c.len() >= 256 << 10 && c.len() <= 4 << 20, "{}", c.len());
        }
        assert!(!last.is_empty() && last.len() <= 4 << 20);
        assert!(cut_all(&[], SMALL, 10).is_empty());
    }

    #[test]
    fn an_insert_changes_only_the_chunks_around_it() {
        let data = pseudo_random(2_000_000, 11);
        let mut edited = data.clone();
        edited.splice(1_000_000..1_000_000, pseudo_random(100, 5));
        let a = cut_all(&data, SMALL, 8192);
        let b = cut_all(&edited, SMALL, 8192);
        let shared = b.iter().filter(|c| a.contains(c)).count();
        assert!(
            shared + 3 >= b.len(),
            "{shared} of {} chunks shared",
            b.len()
        );
    }
}
