//! fmindex: here is a prefix, which tokens may follow it and how often?
//!
//! A token-level FM-index (Ferragina and Manzini, "Opportunistic data structures with
//! applications", FOCS 2000) laid out as SEAL uses it (Bevilacqua et al., "Autoregressive
//! Search Engines", NeurIPS 2022): each document's token ids are **reversed** and followed by a
//! document-end symbol, so extending an n-gram to the right is one backward-search step, and
//! the distinct tokens that may follow an n-gram are the distinct BWT symbols of its range.
//!
//! Internal alphabet: `0` ends the whole text, `1` ends a document, token `t` is `t + 2`.
//! Patterns never contain 0 or 1, so an n-gram never matches across a document boundary.
//!
//! Parts: the BWT in a [`WaveletMatrix`] of `ceil(log2(vocab + 2))` levels; the C array;
//! a suffix-array sample every `sample_rate` text positions (a bit vector marking sampled rows
//! plus the sampled positions) for locate; document starts for position -> document; and the
//! row of each document's end symbol, for [`FmIndex::extract`].
//!
//! Space, for `n` tokens plus one end symbol per document and `b = ceil(log2(vocab + 2))`:
//! `n * (b * 8/7 + 8/7 + 32 / sample_rate)` bits, plus 4 bytes per document and 8 bytes per
//! vocabulary entry. An index holds at most 2^31 - 1 symbols (tokens plus one per document).
//!
//! Build: [`FmIndex::build`] (suffix array by `libsais`, multithreaded).

mod bits;
mod shards;
mod wavelet;

pub use bits::RankBitVec;
pub use shards::{Shards, Span};
pub use wavelet::{WaveletMatrix, bits_for};

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::storage::{Array, ArrayFile, ArrayReader, ArrayWriter, Mapped};

/// Symbol that ends the whole text (occurs once, last).
const END: u64 = 0;
/// Symbol that ends each document.
const SEP: u64 = 1;
/// Token `t` is stored as symbol `t + SHIFT`.
const SHIFT: u64 = 2;

/// Magic bytes of `fmindex.bin`.
pub const MAGIC: &[u8; 8] = b"GRFMIDX\0";
/// Version of the `fmindex.bin` layout written by this build.
/// Version 2 starts every bit vector on a 64-byte boundary, so the file is used in place.
pub const FORMAT_VERSION: u32 = 2;
/// Oldest `fmindex.bin` layout this build reads.
pub const OLDEST_FORMAT_VERSION: u32 = 1;

/// Default distance between suffix-array samples. Locate is the largest part of a SEAL query
/// on a large corpus (one LF step, a few cache misses, per position walked), so 16 rather than
/// 32 halves it for one more bit per token.
pub const DEFAULT_SAMPLE_RATE: u32 = 16;

/// Rows whose locate walks are interleaved ([`FmIndex::locate_rows`]): enough independent
/// lookups in flight to cover a cache miss's latency.
const LANES: usize = 16;

/// The rows of the index whose suffixes start with a pattern: `[lo, hi)` in BWT order, plus
/// the pattern's length (needed to turn a row into a document offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FmRange {
    pub lo: usize,
    pub hi: usize,
    pub len: usize,
}

impl FmRange {
    /// Number of occurrences.
    pub fn count(&self) -> usize {
        self.hi - self.lo
    }

    pub fn is_empty(&self) -> bool {
        self.hi <= self.lo
    }
}

/// One token that may follow a pattern: how often it does, and the range of the extended
/// pattern (so decoding extends ranges and never recomputes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Continuation {
    pub token: u32,
    pub count: usize,
    pub range: FmRange,
}

/// Where a pattern occurs: document number (in build order) and token offset of its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Occurrence {
    pub doc: u32,
    pub offset: u32,
}

/// Most symbols one FM-index holds (tokens, plus one per document, plus one): the suffix
/// array is built with 32-bit signed positions.
pub const MAX_SYMBOLS: usize = i32::MAX as usize;

/// Build parameters.
#[derive(Debug, Clone, Copy)]
pub struct BuildOptions {
    /// Keep one suffix-array sample per this many text positions. Larger is smaller and
    /// slower to locate: locate costs up to `sample_rate` LF steps per occurrence.
    pub sample_rate: u32,
    /// Most symbols (tokens, plus one per document, plus one) in one shard of a
    /// [`Shards::build`]: a larger corpus is split into shards of consecutive documents.
    /// At most [`MAX_SYMBOLS`].
    pub shard_symbols: usize,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions {
            sample_rate: DEFAULT_SAMPLE_RATE,
            shard_symbols: MAX_SYMBOLS,
        }
    }
}

/// A token-level FM-index over a collection of documents. Immutable once built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FmIndex {
    bwt: WaveletMatrix,
    /// `c[s]`: number of symbols smaller than `s`; `sigma + 1` entries.
    c: Array<u32>,
    /// `c[s]` minus where symbol `s`'s run starts after the wavelet matrix's last level
    /// (wrapping), so a final-level position `p` of `s` maps to row `base[s] + p`.
    base: Vec<u32>,
    /// Rows whose text position is a multiple of `sample_rate`.
    sampled: RankBitVec,
    /// Text positions of the sampled rows, in row order.
    samples: Array<u32>,
    /// Text position where each (reversed) document starts; one extra entry: the END position.
    doc_starts: Array<u32>,
    /// Row of the suffix that starts at each document's end symbol.
    sep_rows: Array<u32>,
    sample_rate: u32,
    vocab_size: u32,
}

/// Documents of token ids as a build reads them, one at a time by number: token lists in
/// memory, or a store on disk that the build reads without holding a second copy.
pub trait TokenDocs: Sync {
    /// Number of documents.
    fn count(&self) -> usize;
    /// Document `d`'s token ids (`d < count()`).
    fn tokens(&self, d: usize) -> Cow<'_, [u32]>;
    /// Document `d`'s length in tokens.
    fn len_of(&self, d: usize) -> usize {
        self.tokens(d).len()
    }
}

impl<D: AsRef<[u32]> + Sync> TokenDocs for [D] {
    fn count(&self) -> usize {
        self.len()
    }

    fn tokens(&self, d: usize) -> Cow<'_, [u32]> {
        Cow::Borrowed(self[d].as_ref())
    }
}

/// As its slice: a `&Vec` is what becomes a `&dyn TokenDocs`.
impl<D: AsRef<[u32]> + Sync> TokenDocs for Vec<D> {
    fn count(&self) -> usize {
        self.as_slice().count()
    }

    fn tokens(&self, d: usize) -> Cow<'_, [u32]> {
        self.as_slice().tokens(d)
    }
}

/// Documents `start..end` of `docs`, numbered from 0.
pub(crate) struct Part<'a, T: ?Sized> {
    pub(crate) docs: &'a T,
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl<T: TokenDocs + ?Sized> TokenDocs for Part<'_, T> {
    fn count(&self) -> usize {
        self.end - self.start
    }

    fn tokens(&self, d: usize) -> Cow<'_, [u32]> {
        self.docs.tokens(self.start + d)
    }

    fn len_of(&self, d: usize) -> usize {
        self.docs.len_of(self.start + d)
    }
}

/// Text of the index before the suffix array: narrow symbols when they fit, which lets
/// `libsais` use its faster 16-bit path.
enum Text {
    Narrow(Vec<u16>),
    Wide(Vec<i32>),
}

/// The distinct documents of `occurrences`, sorted.
fn distinct_docs(occurrences: Vec<Occurrence>) -> Vec<u32> {
    let mut docs: Vec<u32> = occurrences.into_iter().map(|o| o.doc).collect();
    docs.sort_unstable();
    docs.dedup();
    docs
}

/// The BWT as built, in the text's width.
enum Bwt {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

/// The text of an index of `docs` (`n` symbols): each document's tokens reversed and shifted,
/// then SEP; END last. Also where each document starts, and the end.
fn index_text<D: TokenDocs + ?Sized, T>(
    docs: &D,
    n: usize,
    to: impl Fn(u64) -> T,
) -> (Vec<T>, Vec<u32>) {
    let mut doc_starts = Vec::with_capacity(docs.count() + 1);
    let mut text = Vec::with_capacity(n);
    for d in 0..docs.count() {
        doc_starts.push(text.len() as u32);
        text.extend(docs.tokens(d).iter().rev().map(|&t| to(t as u64 + SHIFT)));
        text.push(to(SEP));
    }
    doc_starts.push(text.len() as u32);
    text.push(to(END));
    (text, doc_starts)
}

/// `BWT[i] = T[SA[i] - 1]`, END (0, `T::default()`) for the row of the whole text.
fn bwt_of<T: Default + Send>(sa: &[u32], at: impl Fn(usize) -> T + Sync) -> Vec<T> {
    const { assert!(END == 0) };
    sa.par_iter()
        .map(|&p| {
            if p == 0 {
                T::default()
            } else {
                at(p as usize - 1)
            }
        })
        .collect()
}

impl FmIndex {
    /// Builds the index of `docs`, whose tokens must all be `< vocab_size`.
    ///
    /// Cost: O(n log sigma) time for n tokens (the suffix array is linear, in parallel; the
    /// wavelet matrix is one pass per level); peak memory about 12 bytes per token.
    /// Deterministic: the same documents give a byte-identical index.
    pub fn build<D: AsRef<[u32]> + Sync>(
        docs: &[D],
        vocab_size: u32,
        options: BuildOptions,
    ) -> Result<FmIndex> {
        FmIndex::build_from(docs, vocab_size, options)
    }

    /// [`FmIndex::build`] of documents read one at a time (say from a token store on disk),
    /// so that only the index's own arrays are in memory.
    pub fn build_from<D: TokenDocs + ?Sized>(
        docs: &D,
        vocab_size: u32,
        options: BuildOptions,
    ) -> Result<FmIndex> {
        if options.sample_rate == 0 {
            return Err(Error::OutOfRange {
                name: "sample rate",
                expected: "at least 1".into(),
                got: "0".into(),
            });
        }
        let sigma = vocab_size as u64 + SHIFT;
        if sigma > i32::MAX as u64 {
            return Err(Error::InvalidInput(format!(
                "a vocabulary of {vocab_size} exceeds the FM-index limit of 2^31 - 3 tokens"
            )));
        }
        let mut counts = vec![0u64; sigma as usize];
        let mut tokens = 0u64;
        for d in 0..docs.count() {
            let doc = docs.tokens(d);
            if let Some(pos) = doc.iter().position(|&t| t >= vocab_size) {
                return Err(Error::InvalidInput(format!(
                    "document {d}: token {} at position {pos} is outside the vocabulary of {vocab_size}",
                    doc[pos]
                )));
            }
            for &t in doc.iter() {
                counts[(t as u64 + SHIFT) as usize] += 1;
            }
            tokens += doc.len() as u64;
        }
        let n64 = tokens + docs.count() as u64 + 1;
        if n64 > i32::MAX as u64 {
            return Err(Error::InvalidInput(format!(
                "{tokens} tokens in {} documents exceed the FM-index limit of 2^31 - 1 symbols; split the corpus",
                docs.count()
            )));
        }
        let n = n64 as usize;
        counts[SEP as usize] = docs.count() as u64;
        counts[END as usize] = 1;
        // The text is written straight in its narrowest type: the build's peak memory is the
        // text, the suffix array and the BWT (2 + 4 + 2 bytes per symbol when narrow).
        let (mut text, doc_starts) = if sigma <= 1 << 16 {
            let (t, starts) = index_text(docs, n, |s| s as u16);
            (Text::Narrow(t), starts)
        } else {
            let (t, starts) = index_text(docs, n, |s| s as i32);
            (Text::Wide(t), starts)
        };
        let sa = suffix_array(&mut text)?;
        // BWT[i] = T[SA[i] - 1]; the row of the whole text gets END (the text is cyclic).
        let bits = bits_for(sigma);
        let bwt = match &text {
            Text::Narrow(t) => Bwt::Narrow(bwt_of(&sa, |p| t[p])),
            Text::Wide(t) => Bwt::Wide(bwt_of(&sa, |p| t[p] as u32)),
        };
        let rate = options.sample_rate;
        let sampled = RankBitVec::from_fn(n, |i| (sa[i] as u32).is_multiple_of(rate));
        let samples: Vec<u32> = sa.iter().filter(|&&p| p % rate == 0).copied().collect();

        let mut c = vec![0u32; sigma as usize + 1];
        for s in 0..sigma as usize {
            c[s + 1] = c[s] + counts[s] as u32;
        }
        // Rows starting with SEP are c[SEP]..c[SEP + 1]; the SEP at text position p ends the
        // document whose successor starts at p + 1.
        let mut sep_rows = vec![0u32; docs.count()];
        for row in c[SEP as usize]..c[SEP as usize + 1] {
            let p = sa[row as usize] as u32;
            let d = doc_starts.partition_point(|&s| s <= p + 1) - 2;
            sep_rows[d] = row;
        }
        drop(sa);
        drop(text);
        let base = bases(&c, bits);
        let bwt = match bwt {
            Bwt::Narrow(b) => WaveletMatrix::from_vec(b, bits),
            Bwt::Wide(b) => WaveletMatrix::from_vec(b, bits),
        };
        Ok(FmIndex {
            bwt,
            c: c.into(),
            base,
            sampled,
            samples: samples.into(),
            doc_starts: doc_starts.into(),
            sep_rows: sep_rows.into(),
            sample_rate: rate,
            vocab_size,
        })
    }

    /// Number of documents.
    pub fn docs(&self) -> usize {
        self.sep_rows.len()
    }

    /// Number of tokens over all documents (separators excluded).
    pub fn tokens(&self) -> usize {
        self.bwt.len() - self.docs() - 1
    }

    /// Length in tokens of document `doc`. Panics if `doc >= docs()`.
    pub fn doc_len(&self, doc: u32) -> usize {
        let d = doc as usize;
        (self.doc_starts[d + 1] - self.doc_starts[d] - 1) as usize
    }

    pub fn vocab_size(&self) -> u32 {
        self.vocab_size
    }

    pub fn sample_rate(&self) -> u32 {
        self.sample_rate
    }

    /// The range of the empty pattern: every position where an n-gram can start, i.e. each
    /// token and each document end (`tokens() + docs()` rows). O(1).
    pub fn full_range(&self) -> FmRange {
        FmRange {
            lo: 1,
            hi: self.bwt.len(),
            len: 0,
        }
    }

    /// The range of `pattern`. O(m log sigma) for m tokens; an empty range if it does not
    /// occur or holds a token outside the vocabulary.
    pub fn range(&self, pattern: &[u32]) -> FmRange {
        let Some((&first, rest)) = pattern.split_first() else {
            return self.full_range();
        };
        let mut range = self.token_range(first);
        for &t in rest {
            if range.is_empty() {
                break;
            }
            range = self.extend(range, t);
        }
        range.len = pattern.len();
        range
    }

    fn token_range(&self, token: u32) -> FmRange {
        if token >= self.vocab_size {
            return FmRange {
                lo: 0,
                hi: 0,
                len: 1,
            };
        }
        let s = token as usize + SHIFT as usize;
        FmRange {
            lo: self.c[s] as usize,
            hi: self.c[s + 1] as usize,
            len: 1,
        }
    }

    /// Occurrences of `pattern` (overlapping ones included). O(m log sigma).
    pub fn count(&self, pattern: &[u32]) -> usize {
        self.range(pattern).count()
    }

    /// The range of the pattern of `range` followed by `token`: one backward-search step,
    /// O(log sigma) (two rank operations per wavelet level, stopping early when empty).
    pub fn extend(&self, range: FmRange, token: u32) -> FmRange {
        let empty = FmRange {
            lo: 0,
            hi: 0,
            len: range.len + 1,
        };
        if token >= self.vocab_size || range.is_empty() {
            return empty;
        }
        let s = token as u64 + SHIFT;
        let (a, b) = self.bwt.leaf_range(s, range.lo, range.hi);
        if a == b {
            return empty;
        }
        let base = self.base[s as usize];
        FmRange {
            lo: base.wrapping_add(a as u32) as usize,
            hi: base.wrapping_add(b as u32) as usize,
            len: range.len + 1,
        }
    }

    /// Every distinct token that follows the pattern of `range`, in increasing token order,
    /// with its count and the extended range. Document ends are not tokens and are not listed.
    ///
    /// Cost: O(d log sigma) rank operations for d distinct next tokens (the interval-symbols
    /// walk over the wavelet matrix), independent of the number of occurrences.
    pub fn continuations(&self, range: FmRange) -> Vec<Continuation> {
        let mut out = Vec::new();
        self.continuations_into(range, &mut out);
        out
    }

    /// [`continuations`](Self::continuations) into a caller's buffer (cleared first), so the
    /// decoder's hot loop allocates nothing.
    pub fn continuations_into(&self, range: FmRange, out: &mut Vec<Continuation>) {
        out.clear();
        self.for_each_continuation(range, |c| out.push(c));
    }

    /// [`continuations`](Self::continuations) as a callback, in increasing token order, for
    /// callers that filter or transform them without a buffer.
    pub fn for_each_continuation(&self, range: FmRange, mut f: impl FnMut(Continuation)) {
        if range.is_empty() {
            return;
        }
        self.bwt
            .distinct_in(range.lo, range.hi, SHIFT, &mut |s, a, b| {
                let base = self.base[s as usize];
                f(Continuation {
                    token: (s - SHIFT) as u32,
                    count: b - a,
                    range: FmRange {
                        lo: base.wrapping_add(a as u32) as usize,
                        hi: base.wrapping_add(b as u32) as usize,
                        len: range.len + 1,
                    },
                });
            });
    }

    /// The LF mapping: symbol before row `row`'s suffix, and the row of the suffix one
    /// position earlier in the text. O(log sigma).
    #[inline]
    fn lf(&self, row: usize) -> (u64, usize) {
        let (s, leaf) = self.bwt.access_leaf(row);
        (s, self.base[s as usize].wrapping_add(leaf as u32) as usize)
    }

    /// The document holding text position `position`, and the position's offset inside the
    /// document's stored (reversed) token run; an offset equal to the document's length is its
    /// end symbol. O(log docs). `None` for the final END position or beyond.
    pub fn doc_of(&self, position: usize) -> Option<(u32, usize)> {
        let d = self
            .doc_starts
            .partition_point(|&s| s as usize <= position)
            .checked_sub(1)?;
        if d >= self.docs() {
            return None;
        }
        Some((d as u32, position - self.doc_starts[d] as usize))
    }

    /// Up to `limit` occurrences of the pattern of `range`, in row order (not document order).
    /// Cost: O(min(count, limit) * sample_rate * log sigma).
    pub fn locate(&self, range: FmRange, limit: usize) -> Vec<Occurrence> {
        let hi = range.hi.min(range.lo.saturating_add(limit));
        let rows: Vec<usize> = (range.lo..hi).collect();
        self.locate_rows(&rows, range.len)
    }

    /// The occurrences of a pattern of `len` tokens at suffix-array `rows` of its range, in
    /// their order (the final END position, which is no occurrence, left out). Cost as
    /// [`locate`](Self::locate) per row, with the rows' LF walks interleaved
    /// ([`text_positions`](Self::text_positions)).
    pub fn locate_rows(&self, rows: &[usize], len: usize) -> Vec<Occurrence> {
        self.text_positions(rows)
            .into_iter()
            .filter_map(|position| self.occurrence_at(position, len))
            .collect()
    }

    /// The text position of the suffix at every row, each at most `sample_rate` LF steps
    /// (O(sample_rate log sigma)) from a sampled one, walked [`LANES`] at a time: each
    /// round checks every lane for a sampled row (retiring it and taking the next row into
    /// its lane), then moves every lane one LF step down the wavelet matrix level by level
    /// ([`WaveletMatrix::access_leaves`]). One walk is a chain of dependent lookups; walks of
    /// different rows are independent, so interleaved they overlap.
    fn text_positions(&self, rows: &[usize]) -> Vec<usize> {
        let mut out = vec![0usize; rows.len()];
        // Per lane: the index in `rows`, the current row, and LF steps taken.
        let mut slot = [0usize; LANES];
        let mut row = [0usize; LANES];
        let mut steps = [0usize; LANES];
        let mut symbols = [0u64; LANES];
        let (mut active, mut next) = (0, 0);
        loop {
            while active < LANES && next < rows.len() {
                (slot[active], row[active], steps[active]) = (next, rows[next], 0);
                (active, next) = (active + 1, next + 1);
            }
            let mut i = 0;
            while i < active {
                let (is_sampled, rank) = self.sampled.get_rank1(row[i]);
                if !is_sampled {
                    i += 1;
                    continue;
                }
                out[slot[i]] = self.samples[rank] as usize + steps[i];
                // The lane takes the next row, or the last lane's walk; checked again.
                if next < rows.len() {
                    (slot[i], row[i], steps[i]) = (next, rows[next], 0);
                    next += 1;
                } else {
                    active -= 1;
                    (slot[i], row[i], steps[i]) = (slot[active], row[active], steps[active]);
                }
            }
            if active == 0 {
                return out;
            }
            self.bwt
                .access_leaves(&mut row[..active], &mut symbols[..active]);
            for ((r, &s), steps) in row[..active].iter_mut().zip(&symbols).zip(&mut steps) {
                *r = self.base[s as usize].wrapping_add(*r as u32) as usize;
                *steps += 1;
            }
        }
    }

    /// The occurrence of a pattern of `len` tokens whose suffix starts at text position
    /// `position`; `None` for the final END position.
    fn occurrence_at(&self, position: usize, len: usize) -> Option<Occurrence> {
        let (doc, rev_offset) = self.doc_of(position)?;
        // The reversed run holds the pattern backwards starting at rev_offset.
        let offset = self.doc_len(doc) - rev_offset - len;
        Some(Occurrence {
            doc,
            offset: offset as u32,
        })
    }

    /// Up to `limit` occurrences of the pattern of `range` whose text position is sampled for
    /// locate (every `sample_rate`-th position, whatever the pattern: about `count /
    /// sample_rate` of them, a sample independent of the pattern), evenly spaced among them.
    /// They need no LF step: O(returned * log docs), against `sample_rate / 2` LF steps per
    /// occurrence for [`locate`](Self::locate).
    pub fn sampled_occurrences(&self, range: FmRange, limit: usize) -> Vec<Occurrence> {
        let (a, b) = (self.sampled.rank1(range.lo), self.sampled.rank1(range.hi));
        let m = b - a;
        let want = m.min(limit);
        (0..want)
            .filter_map(|i| self.occurrence_at(self.samples[a + i * m / want] as usize, range.len))
            .collect()
    }

    /// Distinct documents containing the pattern of `range`, sorted. Cost: a full
    /// [`locate`](Self::locate) of the range, O(count * sample_rate * log sigma).
    pub fn docs_of(&self, range: FmRange) -> Vec<u32> {
        distinct_docs(self.locate(range, usize::MAX))
    }

    /// Number of distinct documents containing `pattern`. Cost as [`docs_of`](Self::docs_of).
    pub fn doc_frequency(&self, pattern: &[u32]) -> usize {
        self.docs_of(self.range(pattern)).len()
    }

    /// The tokens of document `doc`, reconstructed from the index by walking LF backwards from
    /// the document's end symbol (which reads the reversed run forwards). O(len log sigma).
    pub fn extract(&self, doc: u32) -> Result<Vec<u32>> {
        let d = doc as usize;
        if d >= self.docs() {
            return Err(Error::no_such_doc(doc, self.docs()));
        }
        let mut row = self.sep_rows[d] as usize;
        let len = self.doc_len(doc);
        let mut tokens = Vec::with_capacity(len);
        for _ in 0..len {
            let (s, next) = self.lf(row);
            tokens.push((s - SHIFT) as u32);
            row = next;
        }
        Ok(tokens)
    }

    /// Whether the large arrays (the bit vectors and the samples) are used in place in a
    /// mapped file rather than copied: true for a file of format 2 or later on a
    /// little-endian machine.
    pub fn is_mapped(&self) -> bool {
        self.bwt.levels().iter().all(RankBitVec::is_mapped)
            && self.sampled.is_mapped()
            && self.samples.is_mapped()
    }

    /// Heap bytes of the whole index.
    pub fn size_bytes(&self) -> usize {
        self.bwt.size_bytes()
            + self.locate_bytes()
            + self.c.len() * 4
            + self.base.len() * 4
            + self.doc_starts.len() * 4
            + self.sep_rows.len() * 4
    }

    /// Heap bytes of the locate support (sample marks and samples).
    pub fn locate_bytes(&self) -> usize {
        self.sampled.size_bytes() + self.samples.len() * 4
    }

    /// Bits per token of the whole index, with or without the locate support.
    pub fn bits_per_token(&self, with_locate: bool) -> f64 {
        let bytes = if with_locate {
            self.size_bytes()
        } else {
            self.size_bytes() - self.locate_bytes()
        };
        bytes as f64 * 8.0 / self.tokens().max(1) as f64
    }

    /// Writes `fmindex.bin` atomically, every bit vector on a 64-byte boundary.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut w = ArrayWriter::new();
        w.u64s(&[
            self.vocab_size as u64,
            self.sample_rate as u64,
            self.bwt.len() as u64,
            self.docs() as u64,
            self.bwt.bits() as u64,
        ]);
        w.u32s(&self.c);
        for level in self.bwt.levels() {
            w.aligned(level.blocks());
        }
        w.aligned(self.sampled.blocks())
            .u32s(&self.samples)
            .u32s(&self.doc_starts)
            .u32s(&self.sep_rows);
        w.write(path, MAGIC, FORMAT_VERSION)
    }

    /// Reads `fmindex.bin`, verifying header, checksum and the consistency of every array.
    /// A damaged file is an error, never a panic. O(file size), at memory speed: the file is
    /// mapped and, from format 2 on, its arrays are used in place.
    pub fn load(path: &Path) -> Result<FmIndex> {
        FmIndex::load_mapped(Mapped::open(path, None)?)
    }

    /// [`FmIndex::load`] of a mapped file, whose checksum is not computed again if the whole
    /// file was verified when it was mapped ([`Mapped::verified`]).
    pub fn load_mapped(file: Arc<Mapped>) -> Result<FmIndex> {
        let (mut r, version) =
            ArrayFile::read(file, MAGIC, OLDEST_FORMAT_VERSION..=FORMAT_VERSION)?;
        let head = r.u64s()?;
        let [vocab_size, sample_rate, n, docs, bits] = head[..] else {
            return Err(r.corrupt("bad scalar header"));
        };
        let sigma = vocab_size + SHIFT;
        if vocab_size > u32::MAX as u64
            || sample_rate == 0
            || sample_rate > u32::MAX as u64
            || n > u32::MAX as u64
            || docs >= n.max(1)
            || bits != bits_for(sigma) as u64
        {
            return Err(r.corrupt("inconsistent scalar header"));
        }
        let n = n as usize;
        let c: Array<u32> = r.array()?;
        let counts_ok = c.len() == sigma as usize + 1
            && c[0] == 0
            && c.windows(2).all(|w| w[0] <= w[1])
            && c[sigma as usize] as usize == n
            && c[1] == 1;
        if !counts_ok {
            return Err(r.corrupt("bad C array"));
        }
        let bit_vector = |r: &mut ArrayReader| -> Result<RankBitVec> {
            let checked = if version >= 2 {
                RankBitVec::from_blocks(r.aligned()?, n)
            } else {
                RankBitVec::from_u64s(&r.u64s()?, n)
            };
            checked.map_err(|m| r.corrupt(m))
        };
        let mut levels = Vec::with_capacity(bits as usize);
        for _ in 0..bits {
            levels.push(bit_vector(&mut r)?);
        }
        let bwt = WaveletMatrix::from_parts(levels, n, bits as u32).map_err(|m| r.corrupt(m))?;
        let sampled = bit_vector(&mut r)?;
        let samples: Array<u32> = r.array()?;
        let doc_starts: Array<u32> = r.array()?;
        let sep_rows: Array<u32> = r.array()?;
        let counts: Vec<u64> = c.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
        let consistent = samples.len() == sampled.ones()
            && samples.par_iter().all(|&p| (p as usize) < n)
            && doc_starts.len() == docs as usize + 1
            && doc_starts.first().is_some_and(|&s| s == 0)
            && doc_starts.par_windows(2).all(|w| w[0] < w[1])
            && doc_starts.last().is_some_and(|&s| s as usize == n - 1)
            && sep_rows.len() == docs as usize
            && counts[SEP as usize] == docs
            && sep_rows.par_iter().all(|&r| (c[1]..c[2]).contains(&r));
        if !consistent {
            return Err(r.corrupt("arrays disagree with each other"));
        }
        r.finish()?;
        let base = bases(&c, bits as u32);
        Ok(FmIndex {
            bwt,
            c,
            base,
            sampled,
            samples,
            doc_starts,
            sep_rows,
            sample_rate: sample_rate as u32,
            vocab_size: vocab_size as u32,
        })
    }
}

/// `c[s] - leaf_start[s]` for every symbol, wrapping (see [`FmIndex::base`]).
fn bases(c: &[u32], bits: u32) -> Vec<u32> {
    let counts: Vec<u64> = c.windows(2).map(|w| (w[1] - w[0]) as u64).collect();
    WaveletMatrix::leaf_starts(&counts, bits)
        .iter()
        .zip(c)
        .map(|(&leaf, &c)| c.wrapping_sub(leaf as u32))
        .collect()
}

/// Suffix array of the text by `libsais` (multithreaded through OpenMP), as `u32` positions.
fn suffix_array(text: &mut Text) -> Result<Vec<u32>> {
    use libsais::{SuffixArrayConstruction, ThreadCount};
    let err = |e: libsais::LibsaisError| Error::Internal(format!("suffix array (libsais): {e:?}"));
    let sa: Vec<i32> = match text {
        Text::Narrow(t) => SuffixArrayConstruction::for_text(t)
            .in_owned_buffer32()
            .multi_threaded(ThreadCount::openmp_default())
            .run()
            .map_err(err)?
            .into_vec(),
        // libsais scans the text for its alphabet size (one linear pass) rather than taking
        // it on trust, which keeps this module free of `unsafe`.
        Text::Wide(t) => SuffixArrayConstruction::for_text_mut(t)
            .in_owned_buffer32()
            .multi_threaded(ThreadCount::openmp_default())
            .run()
            .map_err(err)?
            .into_vec(),
    };
    Ok(sa.into_iter().map(|p| p as u32).collect())
}
