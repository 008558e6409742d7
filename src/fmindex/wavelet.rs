//! Wavelet matrix over integer symbols (Claude, Navarro and Ordóñez, "The wavelet matrix",
//! Information Systems 2015).
//!
//! `bits = ceil(log2 sigma)` levels, each a [`RankBitVec`] of `len` bits plus its number of
//! zeros. Level `l` stores bit `bits - 1 - l` of every symbol, in the order left by stably
//! partitioning the previous level by its bit (zeros first). After the last level each
//! symbol's occurrences form one contiguous run; [`WaveletMatrix::leaf_starts`] gives where.
//!
//! Space: `len * bits * 8/7` bits. Every query below is O(bits) rank operations except
//! [`WaveletMatrix::distinct_in`], which is O(d * bits) for `d` distinct symbols reported.

use rayon::prelude::*;

use super::bits::RankBitVec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveletMatrix {
    levels: Vec<RankBitVec>,
    zeros: Vec<usize>,
    len: usize,
    bits: u32,
}

/// Levels needed for symbols `< sigma` (at least one).
pub fn bits_for(sigma: u64) -> u32 {
    (64 - (sigma.max(2) - 1).leading_zeros()).max(1)
}

impl WaveletMatrix {
    /// Builds over `values`, each `< 2^bits`. Cost: O(len * bits) time, 2 * len symbols of
    /// scratch memory; the bit packing of each level runs in parallel.
    pub fn build<T>(values: &[T], bits: u32) -> WaveletMatrix
    where
        T: Copy + Into<u64> + Send + Sync,
    {
        WaveletMatrix::from_vec(values.to_vec(), bits)
    }

    /// [`WaveletMatrix::build`] over values it may reorder in place: len symbols of scratch
    /// memory beyond them.
    pub fn from_vec<T>(values: Vec<T>, bits: u32) -> WaveletMatrix
    where
        T: Copy + Into<u64> + Send + Sync,
    {
        let len = values.len();
        let mut next: Vec<T> = values.clone();
        let mut cur: Vec<T> = values;
        let mut levels = Vec::with_capacity(bits as usize);
        let mut zeros = Vec::with_capacity(bits as usize);
        for l in 0..bits {
            let shift = bits - 1 - l;
            let words: Vec<u64> = cur
                .par_chunks(64)
                .map(|chunk| {
                    chunk
                        .iter()
                        .enumerate()
                        .fold(0u64, |w, (j, &v)| w | (((v.into() >> shift) & 1) << j))
                })
                .collect();
            let level = RankBitVec::from_words(&words, len);
            let z = len - level.ones();
            let (mut zi, mut oi) = (0, z);
            for &v in &cur {
                if (v.into() >> shift) & 1 == 0 {
                    next[zi] = v;
                    zi += 1;
                } else {
                    next[oi] = v;
                    oi += 1;
                }
            }
            std::mem::swap(&mut cur, &mut next);
            levels.push(level);
            zeros.push(z);
        }
        WaveletMatrix {
            levels,
            zeros,
            len,
            bits,
        }
    }

    /// Reassembles from serialized levels, checking their sizes.
    pub fn from_parts(levels: Vec<RankBitVec>, len: usize, bits: u32) -> Result<Self, String> {
        if levels.len() != bits as usize {
            return Err(format!("{} levels stored, {bits} expected", levels.len()));
        }
        if levels.iter().any(|l| l.len() != len) {
            return Err("a wavelet level has the wrong length".into());
        }
        let zeros = levels.iter().map(|l| len - l.ones()).collect();
        Ok(WaveletMatrix {
            levels,
            zeros,
            len,
            bits,
        })
    }

    pub fn levels(&self) -> &[RankBitVec] {
        &self.levels
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// Where each symbol's run starts after the last level, given per-symbol counts.
    /// The last level orders symbols by their bit-reversed value. O(sigma log sigma).
    pub fn leaf_starts(counts: &[u64], bits: u32) -> Vec<u64> {
        let mut order: Vec<u64> = (0..counts.len() as u64).collect();
        order.sort_by_key(|&c| c.reverse_bits() >> (64 - bits));
        let mut starts = vec![0u64; counts.len()];
        let mut acc = 0;
        for c in order {
            starts[c as usize] = acc;
            acc += counts[c as usize];
        }
        starts
    }

    /// The symbol at `i` and its position after the last level (that position minus the
    /// symbol's leaf start is `rank_symbol(i)`). Requires `i < len`. O(bits).
    #[inline]
    pub fn access_leaf(&self, mut i: usize) -> (u64, usize) {
        let mut symbol = 0u64;
        for (level, &z) in self.levels.iter().zip(&self.zeros) {
            let (bit, r1) = level.get_rank1(i);
            symbol = (symbol << 1) | bit as u64;
            i = if bit { z + r1 } else { i - r1 };
        }
        (symbol, i)
    }

    /// [`access_leaf`](Self::access_leaf) of every position of `pos`, in place, with the
    /// symbols written to `symbols` (as long): the positions go down the levels together, so
    /// that their rank lookups, independent of each other, overlap in the CPU instead of each
    /// waiting on the one before. O(bits) per position.
    #[inline]
    pub fn access_leaves(&self, pos: &mut [usize], symbols: &mut [u64]) {
        symbols.fill(0);
        for (level, &z) in self.levels.iter().zip(&self.zeros) {
            for (i, symbol) in pos.iter_mut().zip(symbols.iter_mut()) {
                let (bit, r1) = level.get_rank1(*i);
                *symbol = (*symbol << 1) | bit as u64;
                *i = if bit { z + r1 } else { *i - r1 };
            }
        }
    }

    /// Maps the row range `[s, e)` to the final-level positions of `symbol`'s occurrences
    /// within it: returns `(s', e')` with `e' - s'` the number of occurrences. O(bits),
    /// with an early exit when the range empties.
    #[inline]
    pub fn leaf_range(&self, symbol: u64, mut s: usize, mut e: usize) -> (usize, usize) {
        for (l, (level, &z)) in self.levels.iter().zip(&self.zeros).enumerate() {
            if s == e {
                return (0, 0);
            }
            let bit = (symbol >> (self.bits as usize - 1 - l)) & 1;
            let (rs, re) = (level.rank1(s), level.rank1(e));
            if bit == 1 {
                s = z + rs;
                e = z + re;
            } else {
                s -= rs;
                e -= re;
            }
        }
        (s, e)
    }

    /// Calls `f(symbol, s', e')` for every distinct symbol in `[s, e)`, in increasing symbol
    /// order, where `e' - s'` is its number of occurrences and `(s', e')` its final-level
    /// range. Subtrees whose symbols are all below `min_symbol` are skipped.
    ///
    /// This is the interval-symbols walk: it descends only into non-empty halves, so it costs
    /// O(d * bits) rank operations for `d` distinct symbols, independent of `e - s`.
    pub fn distinct_in(
        &self,
        s: usize,
        e: usize,
        min_symbol: u64,
        f: &mut impl FnMut(u64, usize, usize),
    ) {
        if s < e {
            self.walk(0, s, e, 0, min_symbol, f);
        }
    }

    fn walk(
        &self,
        l: usize,
        s: usize,
        e: usize,
        prefix: u64,
        min_symbol: u64,
        f: &mut impl FnMut(u64, usize, usize),
    ) {
        if l == self.levels.len() {
            f(prefix, s, e);
            return;
        }
        let remaining = self.bits as usize - l;
        // Largest symbol in this subtree: prefix followed by all ones.
        if ((prefix << remaining) | ((1u64 << remaining) - 1)) < min_symbol {
            return;
        }
        if e - s == 1 {
            // A single row: follow its one path, one rank per level instead of two.
            let (mut i, mut symbol) = (s, prefix);
            for (level, &z) in self.levels[l..].iter().zip(&self.zeros[l..]) {
                let (bit, r1) = level.get_rank1(i);
                symbol = (symbol << 1) | bit as u64;
                i = if bit { z + r1 } else { i - r1 };
            }
            if symbol >= min_symbol {
                f(symbol, i, i + 1);
            }
            return;
        }
        let level = &self.levels[l];
        let (rs, re) = (level.rank1(s), level.rank1(e));
        let (s0, e0) = (s - rs, e - re);
        if e0 > s0 {
            self.walk(l + 1, s0, e0, prefix << 1, min_symbol, f);
        }
        if re > rs {
            let z = self.zeros[l];
            self.walk(l + 1, z + rs, z + re, (prefix << 1) | 1, min_symbol, f);
        }
    }

    /// Heap bytes used.
    pub fn size_bytes(&self) -> usize {
        self.levels.iter().map(RankBitVec::size_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_for_small_alphabets() {
        assert_eq!(bits_for(1), 1);
        assert_eq!(bits_for(2), 1);
        assert_eq!(bits_for(3), 2);
        assert_eq!(bits_for(4), 2);
        assert_eq!(bits_for(5), 3);
        assert_eq!(bits_for(65536), 16);
        assert_eq!(bits_for(65537), 17);
    }

    #[test]
    fn queries_match_naive() {
        let sigma = 37u64;
        let bits = bits_for(sigma);
        let values: Vec<u32> = (0..2000u32).map(|i| (i * i + 7 * i) % 37).collect();
        let wm = WaveletMatrix::build(&values, bits);
        let mut counts = vec![0u64; sigma as usize];
        for &v in &values {
            counts[v as usize] += 1;
        }
        let leaf = WaveletMatrix::leaf_starts(&counts, bits);
        for i in (0..values.len()).step_by(13) {
            let (sym, pos) = wm.access_leaf(i);
            assert_eq!(sym, values[i] as u64);
            let rank = values[..i].iter().filter(|&&v| v == values[i]).count();
            assert_eq!(pos - leaf[sym as usize] as usize, rank);
        }
        for (s, e) in [(0, 2000), (5, 6), (100, 180), (1999, 2000), (700, 700)] {
            let mut seen = Vec::new();
            wm.distinct_in(s, e, 3, &mut |c, a, b| seen.push((c, b - a)));
            let mut naive = std::collections::BTreeMap::new();
            for &v in &values[s..e] {
                if v >= 3 {
                    *naive.entry(v as u64).or_insert(0usize) += 1;
                }
            }
            assert_eq!(seen, naive.into_iter().collect::<Vec<_>>());
            for c in 0..sigma {
                let (a, b) = wm.leaf_range(c, s, e);
                let n = values[s..e].iter().filter(|&&v| v as u64 == c).count();
                assert_eq!(b - a, n);
            }
        }
    }
}
