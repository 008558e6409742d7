//! Several FM-indexes searched as one.
//!
//! A corpus too large for one [`FmIndex`] (at most 2^31 - 1 symbols), or grown by appending,
//! is split into shards of consecutive documents, each indexed on its own. [`Shards`] answers
//! as the index of the whole corpus would: a pattern's [`Span`] holds its range in every
//! shard, counts are summed, continuations are merged by token, and an occurrence names the
//! global document (the shard's first document number plus the local one). Every answer that
//! does not sample occurrences is exactly the unsharded index's.
//!
//! Cost: each operation is its shard operation times the number of shards; with one shard it
//! is that shard's operation and a [`Span`] holds its range by value, with no allocation.

use std::sync::Arc;

use super::{
    BuildOptions, Continuation, FmIndex, FmRange, MAX_SYMBOLS, Occurrence, Part, TokenDocs,
};
use crate::error::{Error, Result};

/// The rows of a pattern in every shard (each shard's [`FmRange`], in shard order).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Span(Parts);

/// One shard's range held by value (a copy to clone), several shared (a count to clone):
/// decoding clones a span per hypothesis and step.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Parts {
    One(FmRange),
    Many(Arc<[FmRange]>),
}

impl Span {
    /// The span of a one-shard index.
    pub fn single(range: FmRange) -> Span {
        Span(Parts::One(range))
    }

    /// The span of a pattern's ranges, one per shard in shard order (at least one).
    pub fn new(parts: impl IntoIterator<Item = FmRange>) -> Span {
        let mut parts = parts.into_iter();
        let first = parts
            .next()
            .expect("a span has a range per shard, at least one");
        match parts.next() {
            None => Span::single(first),
            Some(second) => Span(Parts::Many(
                [first, second].into_iter().chain(parts).collect(),
            )),
        }
    }

    /// Occurrences over all shards.
    pub fn count(&self) -> usize {
        self.parts().iter().map(FmRange::count).sum()
    }

    /// Whether the pattern occurs in no shard.
    pub fn is_empty(&self) -> bool {
        self.parts().iter().all(FmRange::is_empty)
    }

    /// Length in tokens of the pattern.
    pub fn pattern_len(&self) -> usize {
        self.parts()[0].len
    }

    /// The range in each shard, in shard order.
    pub fn parts(&self) -> &[FmRange] {
        match &self.0 {
            Parts::One(r) => std::slice::from_ref(r),
            Parts::Many(all) => all,
        }
    }
}

/// A corpus's FM-index as one or more shards of consecutive documents. Immutable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shards {
    shards: Vec<FmIndex>,
    /// Global number of each shard's first document; one extra entry: the document count.
    first_doc: Vec<u32>,
    tokens: usize,
}

impl From<FmIndex> for Shards {
    fn from(fm: FmIndex) -> Shards {
        Shards::new(vec![fm]).expect("one shard is always consistent")
    }
}

impl Shards {
    /// The shards of one corpus, in document order. Fails when there are none, when their
    /// vocabularies differ, or when the documents overflow u32 numbering.
    pub fn new(shards: Vec<FmIndex>) -> Result<Shards> {
        let Some(first) = shards.first() else {
            return Err(Error::InvalidInput(
                "an FM-index needs at least one shard".into(),
            ));
        };
        if let Some(other) = shards.iter().find(|s| s.vocab_size() != first.vocab_size()) {
            return Err(Error::InvalidInput(format!(
                "FM-index shards disagree on the vocabulary: {} and {} tokens",
                first.vocab_size(),
                other.vocab_size()
            )));
        }
        let mut first_doc = Vec::with_capacity(shards.len() + 1);
        let mut docs = 0u64;
        for s in &shards {
            first_doc.push(docs as u32);
            docs += s.docs() as u64;
        }
        if docs > u32::MAX as u64 {
            return Err(Error::InvalidInput(format!(
                "{docs} documents: more than genret numbers (2^32 - 1)"
            )));
        }
        first_doc.push(docs as u32);
        let tokens = shards.iter().map(FmIndex::tokens).sum();
        Ok(Shards {
            shards,
            first_doc,
            tokens,
        })
    }

    /// Builds `docs` (token ids `< vocab_size`) into shards of consecutive documents, each
    /// at most `options.shard_symbols` symbols ([`shard_bounds`]), one after another, so the
    /// build's peak memory is one shard's ([`FmIndex::build`]: ~12 bytes per token).
    pub fn build<D: AsRef<[u32]> + Sync>(
        docs: &[D],
        vocab_size: u32,
        options: BuildOptions,
    ) -> Result<Shards> {
        Shards::build_from(docs, vocab_size, options)
    }

    /// [`Shards::build`] of documents read one at a time ([`FmIndex::build_from`]).
    pub fn build_from<D: TokenDocs + ?Sized>(
        docs: &D,
        vocab_size: u32,
        options: BuildOptions,
    ) -> Result<Shards> {
        Shards::build_each(docs, vocab_size, options, |_, shard| Ok(shard))
    }

    /// [`Shards::build_from`] that hands each shard `k` to `keep` as soon as it is built and
    /// holds what `keep` returns: say the shard saved and mapped back from its file, so that
    /// the shards built so far take no memory.
    pub fn build_each<D: TokenDocs + ?Sized>(
        docs: &D,
        vocab_size: u32,
        options: BuildOptions,
        mut keep: impl FnMut(usize, FmIndex) -> Result<FmIndex>,
    ) -> Result<Shards> {
        let lens = (0..docs.count()).map(|d| docs.len_of(d));
        let bounds = shard_bounds(lens, options.shard_symbols)?;
        let shards = bounds
            .windows(2)
            .enumerate()
            .map(|(k, w)| {
                let part = Part {
                    docs,
                    start: w[0],
                    end: w[1],
                };
                keep(k, FmIndex::build_from(&part, vocab_size, options)?)
            })
            .collect::<Result<Vec<_>>>()?;
        Shards::new(shards)
    }

    /// The shards, in document order.
    pub fn shards(&self) -> &[FmIndex] {
        &self.shards
    }

    /// Global number of shard `shard`'s first document.
    pub fn first_doc(&self, shard: usize) -> u32 {
        self.first_doc[shard]
    }

    /// Number of documents over all shards.
    pub fn docs(&self) -> usize {
        *self.first_doc.last().expect("one entry per shard plus one") as usize
    }

    /// Number of tokens over all documents (separators excluded).
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    pub fn vocab_size(&self) -> u32 {
        self.shards[0].vocab_size()
    }

    /// The shard holding global document `doc` and the document's number in it. O(log shards).
    fn locate_doc(&self, doc: u32) -> Result<(usize, u32)> {
        if doc as usize >= self.docs() {
            return Err(Error::no_such_doc(doc, self.docs()));
        }
        let shard = self.first_doc.partition_point(|&f| f <= doc) - 1;
        Ok((shard, doc - self.first_doc[shard]))
    }

    /// Length in tokens of document `doc`.
    pub fn doc_len(&self, doc: u32) -> Result<usize> {
        let (shard, local) = self.locate_doc(doc)?;
        Ok(self.shards[shard].doc_len(local))
    }

    /// The span of the empty pattern (see [`FmIndex::full_range`]).
    pub fn full_range(&self) -> Span {
        self.map(|s| s.full_range())
    }

    /// The span of `pattern` (see [`FmIndex::range`]).
    pub fn range(&self, pattern: &[u32]) -> Span {
        self.map(|s| s.range(pattern))
    }

    /// Occurrences of `pattern` over all shards.
    pub fn count(&self, pattern: &[u32]) -> usize {
        self.range(pattern).count()
    }

    /// The span of the pattern of `span` followed by `token` (see [`FmIndex::extend`]).
    pub fn extend(&self, span: &Span, token: u32) -> Span {
        let parts = self.shards.iter().zip(span.parts());
        Span::new(parts.map(|(s, &r)| s.extend(r, token)))
    }

    fn map(&self, f: impl Fn(&FmIndex) -> FmRange) -> Span {
        Span::new(self.shards.iter().map(f))
    }

    /// Every distinct token that follows the pattern of `span` in some shard, in increasing
    /// token order, with the extended span (its count summed over shards). Cost: the shards'
    /// [`FmIndex::for_each_continuation`] and, with several shards, a merge by token.
    pub fn for_each_continuation(&self, span: &Span, mut f: impl FnMut(u32, Span)) {
        if let [shard] = &self.shards[..] {
            shard.for_each_continuation(span.parts()[0], |c| f(c.token, Span::single(c.range)));
            return;
        }
        let lists: Vec<Vec<Continuation>> = self
            .shards
            .iter()
            .zip(span.parts())
            .map(|(s, &r)| s.continuations(r))
            .collect();
        let mut next = vec![0usize; lists.len()];
        loop {
            let Some(token) = lists
                .iter()
                .zip(&next)
                .filter_map(|(l, &i)| l.get(i).map(|c| c.token))
                .min()
            else {
                return;
            };
            let empty = FmRange {
                lo: 0,
                hi: 0,
                len: span.pattern_len() + 1,
            };
            let parts = lists
                .iter()
                .zip(next.iter_mut())
                .map(|(l, i)| match l.get(*i) {
                    Some(c) if c.token == token => {
                        *i += 1;
                        c.range
                    }
                    _ => empty,
                });
            f(token, Span::new(parts));
        }
    }

    /// [`for_each_continuation`](Self::for_each_continuation) collected.
    pub fn continuations(&self, span: &Span) -> Vec<(u32, Span)> {
        let mut out = Vec::new();
        self.for_each_continuation(span, |t, s| out.push((t, s)));
        out
    }

    /// Turns shard `shard`'s occurrences into global ones.
    fn global(&self, shard: usize, occurrences: Vec<Occurrence>) -> Vec<Occurrence> {
        let first = self.first_doc[shard];
        occurrences
            .into_iter()
            .map(|o| Occurrence {
                doc: first + o.doc,
                offset: o.offset,
            })
            .collect()
    }

    /// Up to `limit` occurrences of the pattern of `span`, shard by shard, each shard's in
    /// row order. Cost as [`FmIndex::locate`].
    pub fn locate(&self, span: &Span, limit: usize) -> Vec<Occurrence> {
        let mut out = Vec::new();
        for (k, (s, &r)) in self.shards.iter().zip(span.parts()).enumerate() {
            if out.len() >= limit {
                break;
            }
            out.extend(self.global(k, s.locate(r, limit - out.len())));
        }
        out
    }

    /// A share of the occurrences of the pattern of `span`: from a shard holding `c` of them,
    /// `ceil(c * want / of)` (at most `c`), located at rows spread evenly over its range.
    /// Cost as [`FmIndex::locate`] per occurrence returned.
    pub fn locate_evenly(&self, span: &Span, want: usize, of: usize) -> Vec<Occurrence> {
        let mut out = Vec::new();
        for (k, (s, &r)) in self.shards.iter().zip(span.parts()).enumerate() {
            let n = r.count();
            let take = (n * want).div_ceil(of.max(1)).min(n);
            let rows: Vec<usize> = (0..take).map(|i| r.lo + i * n / take).collect();
            out.extend(self.global(k, s.locate_rows(&rows, r.len)));
        }
        out
    }

    /// [`FmIndex::sampled_occurrences`] over the shards: from a shard holding `c` of the
    /// pattern's occurrences, up to `ceil(c * want / of)` of its sampled ones. No LF step.
    pub fn sampled_occurrences(&self, span: &Span, want: usize, of: usize) -> Vec<Occurrence> {
        let mut out = Vec::new();
        for (k, (s, &r)) in self.shards.iter().zip(span.parts()).enumerate() {
            let take = (r.count() * want).div_ceil(of.max(1));
            out.extend(self.global(k, s.sampled_occurrences(r, take)));
        }
        out
    }

    /// Distinct documents containing the pattern of `span`, sorted. Cost: a full locate.
    pub fn docs_of(&self, span: &Span) -> Vec<u32> {
        super::distinct_docs(self.locate(span, usize::MAX))
    }

    /// The tokens of document `doc` (see [`FmIndex::extract`]).
    pub fn extract(&self, doc: u32) -> Result<Vec<u32>> {
        let (shard, local) = self.locate_doc(doc)?;
        self.shards[shard].extract(local)
    }

    /// Whether every shard's large arrays are used in place ([`FmIndex::is_mapped`]).
    pub fn is_mapped(&self) -> bool {
        self.shards.iter().all(FmIndex::is_mapped)
    }

    /// Heap bytes of all shards.
    pub fn size_bytes(&self) -> usize {
        self.shards.iter().map(FmIndex::size_bytes).sum()
    }

    /// Bits per token over all shards, with or without the locate support.
    pub fn bits_per_token(&self, with_locate: bool) -> f64 {
        let bytes: usize = self
            .shards
            .iter()
            .map(|s| s.size_bytes() - if with_locate { 0 } else { s.locate_bytes() })
            .sum();
        bytes as f64 * 8.0 / self.tokens.max(1) as f64
    }
}

/// Where each shard of documents with token lengths `lens` starts, and where the last ends:
/// consecutive documents, as many as fit in `max` symbols (a document's tokens plus one, plus
/// one per shard). Fails when one document alone does not fit, or `max` exceeds
/// [`MAX_SYMBOLS`].
pub fn shard_bounds(lens: impl IntoIterator<Item = usize>, max: usize) -> Result<Vec<usize>> {
    if max > MAX_SYMBOLS {
        return Err(Error::OutOfRange {
            name: "shard size",
            expected: format!("at most {MAX_SYMBOLS} symbols"),
            got: max.to_string(),
        });
    }
    let mut bounds = vec![0];
    let mut used = 1;
    let mut docs = 0;
    for (d, len) in lens.into_iter().enumerate() {
        let need = len + 1;
        if need + 1 > max {
            return Err(Error::InvalidInput(format!(
                "document {d} has {len} tokens: more than one FM-index shard of {max} symbols \
                 holds; choose a larger shard size"
            )));
        }
        if used + need > max {
            bounds.push(d);
            used = 1;
        }
        used += need;
        docs = d + 1;
    }
    bounds.push(docs);
    Ok(bounds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fmindex::BuildOptions;

    fn docs() -> Vec<Vec<u32>> {
        vec![
            vec![3, 4, 5, 3, 4],
            vec![4, 5, 6],
            vec![3, 4, 6, 6],
            vec![7, 3, 4, 5],
            vec![],
            vec![5, 5, 5, 3],
        ]
    }

    fn split(docs: &[Vec<u32>], cuts: &[usize]) -> Shards {
        let mut bounds = vec![0];
        bounds.extend_from_slice(cuts);
        bounds.push(docs.len());
        let shards = bounds
            .windows(2)
            .map(|w| FmIndex::build(&docs[w[0]..w[1]], 8, BuildOptions::default()).unwrap())
            .collect();
        Shards::new(shards).unwrap()
    }

    #[test]
    fn sharded_answers_as_whole() {
        let docs = docs();
        let whole = split(&docs, &[]);
        for cuts in [&[2][..], &[1, 3, 5], &[4]] {
            let sharded = split(&docs, cuts);
            assert_eq!(sharded.docs(), whole.docs());
            assert_eq!(sharded.tokens(), whole.tokens());
            for d in 0..docs.len() as u32 {
                assert_eq!(sharded.extract(d).unwrap(), docs[d as usize]);
                assert_eq!(sharded.doc_len(d).unwrap(), docs[d as usize].len());
            }
            assert!(sharded.extract(docs.len() as u32).is_err());
            for pattern in [&[3u32, 4][..], &[5], &[5, 5], &[6, 6], &[9], &[]] {
                let (a, b) = (whole.range(pattern), sharded.range(pattern));
                assert_eq!(a.count(), b.count(), "{pattern:?}");
                assert_eq!(whole.docs_of(&a), sharded.docs_of(&b), "{pattern:?}");
                let mut x = whole.locate(&a, usize::MAX);
                let mut y = sharded.locate(&b, usize::MAX);
                x.sort();
                y.sort();
                assert_eq!(x, y, "{pattern:?}");
                let counts = |s: &Shards, span: &Span| -> Vec<(u32, usize)> {
                    s.continuations(span)
                        .into_iter()
                        .map(|(t, n)| (t, n.count()))
                        .collect()
                };
                assert_eq!(counts(&whole, &a), counts(&sharded, &b), "{pattern:?}");
                // Extending by each continuation gives the span the continuation carried.
                for (t, next) in sharded.continuations(&b) {
                    assert_eq!(next, sharded.extend(&b, t));
                    assert_eq!(next.pattern_len(), b.pattern_len() + 1);
                }
            }
        }
    }

    #[test]
    fn shares_are_proportional_and_genuine() {
        let docs = docs();
        let sharded = split(&docs, &[2, 4]);
        let span = sharded.range(&[3, 4]);
        let all: std::collections::BTreeSet<Occurrence> =
            sharded.locate(&span, usize::MAX).into_iter().collect();
        let some = sharded.locate_evenly(&span, 1, span.count());
        assert!(!some.is_empty() && some.len() <= all.len());
        assert!(some.iter().all(|o| all.contains(o)));
        let every = sharded.locate_evenly(&span, span.count(), span.count());
        assert_eq!(
            every.into_iter().collect::<std::collections::BTreeSet<_>>(),
            all
        );
        let sampled = sharded.sampled_occurrences(&span, usize::MAX, 1);
        assert!(sampled.iter().all(|o| all.contains(o)));
    }

    #[test]
    fn shards_hold_consecutive_documents_up_to_the_size() {
        assert_eq!(shard_bounds([3, 3, 3], 100).unwrap(), [0, 3]);
        // 1 + (3 + 1) * 2 = 9 symbols fit in 9, a third document does not.
        assert_eq!(shard_bounds([3, 3, 3, 0], 9).unwrap(), [0, 2, 4]);
        assert_eq!(shard_bounds([], 9).unwrap(), [0, 0]);
        let err = shard_bounds([3, 8], 9).unwrap_err().to_string();
        assert!(err.contains("document 1 has 8 tokens"), "{err}");
        assert!(shard_bounds([1], MAX_SYMBOLS + 1).is_err());
        let docs = docs();
        let options = BuildOptions {
            shard_symbols: 8,
            ..BuildOptions::default()
        };
        let built = Shards::build(&docs, 8, options).unwrap();
        assert!(built.shards().len() > 2);
        assert!(built.shards().iter().all(|s| s.tokens() + s.docs() < 8));
        assert_eq!(built, split(&docs, &bounds_of(&built)));
    }

    fn bounds_of(s: &Shards) -> Vec<usize> {
        (1..s.shards().len())
            .map(|k| s.first_doc(k) as usize)
            .collect()
    }

    #[test]
    fn mismatched_shards_are_refused() {
        let a = FmIndex::build(&[vec![1u32]], 8, BuildOptions::default()).unwrap();
        let b = FmIndex::build(&[vec![1u32]], 9, BuildOptions::default()).unwrap();
        assert!(Shards::new(vec![a, b]).is_err());
        assert!(Shards::new(vec![]).is_err());
    }
}
