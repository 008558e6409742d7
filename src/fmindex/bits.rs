//! A bit vector with constant-time rank, laid out one cache line per block.
//!
//! Hand-written rather than taken from a crate because the FM-index needs three things at
//! once that no crate offered together: a flat little-endian layout it can map and use in
//! place (so opening an index copies nothing), a combined "bit and rank" probe (one cache miss per wavelet level), and a
//! small, documented overhead that keeps the whole index under 20 bits per token.
//!
//! Layout: 64-byte aligned blocks of `[cumulative rank u64 | 7 data words]`, so a rank query
//! touches exactly one cache line. Overhead: 64 bits per 448 data bits (14.3%).

use rayon::prelude::*;

use crate::storage::{Array, Plain};

/// Data bits per block: seven 64-bit words.
const BLOCK_BITS: usize = 448;
const BLOCK_WORDS: usize = 7;

/// One cache line: the number of ones before this block, then seven words of data.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct Block {
    rank: u64,
    words: [u64; BLOCK_WORDS],
}

// SAFETY: eight u64 fields, 64 bytes, no padding: every bit pattern is a valid Block.
unsafe impl bytemuck::Zeroable for Block {}
unsafe impl bytemuck::Pod for Block {}

impl Plain for Block {
    fn swap_le(self) -> Self {
        Block {
            rank: u64::from_le(self.rank),
            words: self.words.map(u64::from_le),
        }
    }
}

/// An immutable bit vector supporting `rank1` in O(1): at most seven popcounts in one
/// cache line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankBitVec {
    /// Owned when built, used in place when loaded from a mapped file.
    blocks: Array<Block>,
    len: usize,
    ones: usize,
}

impl RankBitVec {
    /// Builds from packed words (bit `i` is bit `i % 64` of word `i / 64`); bits at or past
    /// `len` are ignored. Cost: O(len / 64).
    pub fn from_words(words: &[u64], len: usize) -> RankBitVec {
        // One block more than needed for the data, so `rank1(len)` has a block to read.
        let n_blocks = len / BLOCK_BITS + 1;
        let mut blocks = vec![Block::default(); n_blocks];
        let mut rank = 0u64;
        for (b, block) in blocks.iter_mut().enumerate() {
            block.rank = rank;
            for k in 0..BLOCK_WORDS {
                let w = b * BLOCK_WORDS + k;
                let first_bit = w * 64;
                if first_bit >= len {
                    break;
                }
                let mut word = words.get(w).copied().unwrap_or(0);
                if len - first_bit < 64 {
                    word &= (1u64 << (len - first_bit)) - 1;
                }
                block.words[k] = word;
                rank += word.count_ones() as u64;
            }
        }
        RankBitVec {
            blocks: Array::from(blocks),
            len,
            ones: rank as usize,
        }
    }

    /// Builds from a bit predicate over `0..len`. Cost: O(len).
    pub fn from_fn(len: usize, mut bit: impl FnMut(usize) -> bool) -> RankBitVec {
        let mut words = vec![0u64; len.div_ceil(64)];
        for i in 0..len {
            if bit(i) {
                words[i / 64] |= 1 << (i % 64);
            }
        }
        RankBitVec::from_words(&words, len)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of set bits.
    pub fn ones(&self) -> usize {
        self.ones
    }

    /// The block holding bit `i`, the word index of `i` in it, and the ones before that word.
    #[inline]
    fn locate(&self, i: usize) -> (&Block, usize, usize) {
        let block = &self.blocks[i / BLOCK_BITS];
        let full = (i % BLOCK_BITS) / 64;
        // Every word, masked, rather than the words before `full`: a loop of that length ends
        // with a branch mispredicted about once a call.
        let mut rank = block.rank as usize;
        for (w, word) in block.words.iter().enumerate() {
            let keep = 0u64.wrapping_sub((w < full) as u64);
            rank += (word & keep).count_ones() as usize;
        }
        (block, full, rank)
    }

    /// Number of ones in `[0, i)`. Requires `i <= len`. O(1).
    #[inline]
    pub fn rank1(&self, i: usize) -> usize {
        debug_assert!(i <= self.len);
        let (block, full, rank) = self.locate(i);
        let rem = i % 64;
        if rem == 0 {
            rank
        } else {
            rank + (block.words[full] & ((1u64 << rem) - 1)).count_ones() as usize
        }
    }

    /// Number of zeros in `[0, i)`. Requires `i <= len`. O(1).
    #[inline]
    pub fn rank0(&self, i: usize) -> usize {
        i - self.rank1(i)
    }

    /// Bit `i` and `rank1(i)` from one cache line. Requires `i < len`. O(1).
    #[inline]
    pub fn get_rank1(&self, i: usize) -> (bool, usize) {
        debug_assert!(i < self.len);
        let (block, full, rank) = self.locate(i);
        let word = block.words[full];
        let rem = i % 64;
        (
            (word >> rem) & 1 == 1,
            rank + (word & ((1u64 << rem) - 1)).count_ones() as usize,
        )
    }

    /// Bit `i`. Requires `i < len`. O(1).
    #[inline]
    pub fn get(&self, i: usize) -> bool {
        let block = &self.blocks[i / BLOCK_BITS];
        let offset = i % BLOCK_BITS;
        (block.words[offset / 64] >> (offset % 64)) & 1 == 1
    }

    /// Whether the blocks are used in place in a mapped file.
    pub fn is_mapped(&self) -> bool {
        self.blocks.is_mapped()
    }

    /// Heap bytes used.
    pub fn size_bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }

    /// The blocks, for serialization ([`crate::storage::ArrayWriter::aligned`] keeps them
    /// one per cache line in the file).
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Rebuilds from stored blocks (used in place if mapped), checking that their number
    /// fits `len`, that every stored rank is the count of ones before its block, and that no
    /// bit is set past `len`. O(len / 64), in parallel.
    pub fn from_blocks(blocks: Array<Block>, len: usize) -> Result<RankBitVec, String> {
        let n_blocks = len / BLOCK_BITS + 1;
        if blocks.len() != n_blocks {
            return Err(format!(
                "bit vector of {len} bits needs {n_blocks} blocks, found {}",
                blocks.len()
            ));
        }
        let ones = |b: &Block| b.words.iter().map(|w| w.count_ones() as u64).sum::<u64>();
        if blocks[0].rank != 0 {
            return Err("rank directory is inconsistent at block 0".into());
        }
        if let Some(b) = (1..n_blocks)
            .into_par_iter()
            .find_first(|&b| blocks[b].rank != blocks[b - 1].rank + ones(&blocks[b - 1]))
        {
            return Err(format!("rank directory is inconsistent at block {b}"));
        }
        // Only the last block can hold positions at or past `len`.
        let last = n_blocks - 1;
        for (k, &w) in blocks[last].words.iter().enumerate() {
            let first_bit = (last * BLOCK_WORDS + k) * 64;
            let valid = len.saturating_sub(first_bit).min(64);
            if valid < 64 && w >> valid != 0 {
                return Err(format!("bits set past the end at block {last}"));
            }
        }
        let total = blocks[last].rank + ones(&blocks[last]);
        Ok(RankBitVec {
            blocks,
            len,
            ones: total as usize,
        })
    }

    /// Rebuilds from the flat `[rank, w0..w6]` words per block of format 2 files (copied),
    /// with the checks of [`RankBitVec::from_blocks`].
    pub fn from_u64s(flat: &[u64], len: usize) -> Result<RankBitVec, String> {
        if !flat.len().is_multiple_of(8) {
            return Err(format!(
                "{} words is not a whole number of blocks",
                flat.len()
            ));
        }
        let blocks: Vec<Block> = flat
            .chunks_exact(8)
            .map(|c| Block {
                rank: c[0],
                words: c[1..8].try_into().unwrap(),
            })
            .collect();
        RankBitVec::from_blocks(Array::from(blocks), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::needless_range_loop)] // i runs to len inclusive: rank at the end too
    fn rank_matches_naive_scan() {
        for len in [0usize, 1, 63, 64, 65, 447, 448, 449, 896, 1000, 5000] {
            let bits: Vec<bool> = (0..len).map(|i| (i * 7919 + i / 3) % 5 < 2).collect();
            let bv = RankBitVec::from_fn(len, |i| bits[i]);
            let mut naive = 0;
            for i in 0..=len {
                assert_eq!(bv.rank1(i), naive, "len {len} i {i}");
                if i < len {
                    assert_eq!(bv.get(i), bits[i]);
                    assert_eq!(bv.get_rank1(i), (bits[i], naive));
                    naive += bits[i] as usize;
                }
            }
            assert_eq!(bv.ones(), naive);
            let back = RankBitVec::from_blocks(Array::from(bv.blocks().to_vec()), len).unwrap();
            assert_eq!(back, bv);
            let flat: Vec<u64> = bv
                .blocks()
                .iter()
                .flat_map(|b| [b.rank].into_iter().chain(b.words))
                .collect();
            assert_eq!(RankBitVec::from_u64s(&flat, len).unwrap(), bv);
        }
    }

    #[test]
    fn from_u64s_rejects_bad_rank_directory() {
        let bv = RankBitVec::from_fn(1000, |i| i % 3 == 0);
        let mut blocks = bv.blocks().to_vec();
        blocks[1].rank += 1;
        assert!(RankBitVec::from_blocks(Array::from(blocks.clone()), 1000).is_err());
        blocks[1].rank -= 1;
        blocks[2].words[6] |= 1 << 63; // past the end
        assert!(RankBitVec::from_blocks(Array::from(blocks), 1000).is_err());
        assert!(RankBitVec::from_blocks(Array::from(bv.blocks()[..1].to_vec()), 1000).is_err());
    }
}
