//! index::tokens: what are document d's token ids, without walking the FM-index?
//!
//! `tokens.bin` ([`TOKENS_FILE`], an [`ArrayFile`]) holds every document's token ids in
//! index order, concatenated, with where each document starts: the forward index that
//! scoring reads candidate documents from. The FM-index can rebuild a document too
//! ([`crate::fmindex::FmIndex::extract`]), at one LF step (a rank per wavelet level, a cache
//! miss each) per token; here a document is one slice of the mapped file. Cost: 2 bytes per
//! token when the vocabulary fits 16 bits (4 otherwise) plus 8 bytes per document.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::fmindex::TokenDocs;
use crate::storage::{Array, ArrayFile, ArrayWriter, Mapped};

/// Name of the token store inside an index directory.
pub const TOKENS_FILE: &str = "tokens.bin";
/// Manifest name of the [`TOKENS_FILE`] part.
pub const TOKENS_PART: &str = "tokens";

const MAGIC: &[u8; 8] = b"GRTOKENS";
const FORMAT_VERSION: u32 = 1;

/// The token ids, as narrow as the vocabulary allows.
#[derive(Debug)]
enum Ids {
    Narrow(Array<u16>),
    Wide(Array<u32>),
}

/// Every document's token ids, in index order: the build's `tokens.bin`, then one file per
/// addition (`genret index --add`).
#[derive(Debug)]
pub struct TokenStore {
    parts: Vec<TokenFile>,
    /// Number of each part's first document; one extra entry: the total.
    first: Vec<usize>,
}

impl TokenStore {
    /// Writes the token ids of `docs` (each `< vocab_size`) to `path` atomically.
    pub fn write<D: AsRef<[u32]>>(path: &Path, docs: &[D], vocab_size: u32) -> Result<()> {
        let mut buffer = TokenBuffer::new(vocab_size);
        for d in docs {
            buffer.push(d.as_ref());
        }
        buffer.write(path)
    }

    /// Reads a mapped `tokens.bin` (its checksum not computed again if the whole file was
    /// verified when mapped), used in place. O(documents) to check the starts; every id is
    /// checked against the vocabulary too, O(tokens) at memory speed, in parallel.
    pub fn open(file: Arc<Mapped>) -> Result<TokenStore> {
        let part = TokenFile::open(file)?;
        Ok(TokenStore {
            first: vec![0, part.docs()],
            parts: vec![part],
        })
    }

    /// The documents of `stores`, one after another; they must share one vocabulary.
    pub fn concat(stores: Vec<TokenStore>) -> Result<TokenStore> {
        let parts: Vec<TokenFile> = stores.into_iter().flat_map(|s| s.parts).collect();
        if parts.windows(2).any(|w| w[0].vocab_size != w[1].vocab_size) {
            return Err(Error::InvalidInput(
                "token store parts disagree on the vocabulary".into(),
            ));
        }
        let mut first = vec![0];
        for p in &parts {
            first.push(first.last().unwrap() + p.docs());
        }
        Ok(TokenStore { parts, first })
    }

    /// Number of documents.
    pub fn docs(&self) -> usize {
        *self.first.last().unwrap()
    }

    pub fn vocab_size(&self) -> u32 {
        self.parts[0].vocab_size
    }

    /// The token ids of document `doc`, appended to `out` (cleared first). O(its length).
    pub fn doc_into(&self, doc: u32, out: &mut Vec<u32>) -> Result<()> {
        let d = doc as usize;
        if d >= self.docs() {
            return Err(Error::no_such_doc(doc, self.docs()));
        }
        let (file, local) = self.part_of(d);
        file.doc_into(local as u32, out);
        Ok(())
    }

    /// The file holding document `d` (in range) and its number there.
    fn part_of(&self, d: usize) -> (&TokenFile, usize) {
        let p = self.first.partition_point(|&f| f <= d) - 1;
        (&self.parts[p], d - self.first[p])
    }

    /// The token ids of document `doc`. O(its length).
    pub fn doc(&self, doc: u32) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        self.doc_into(doc, &mut out)?;
        Ok(out)
    }
}

impl TokenDocs for TokenStore {
    fn count(&self) -> usize {
        self.docs()
    }

    fn tokens(&self, d: usize) -> Cow<'_, [u32]> {
        let (file, local) = self.part_of(d);
        let (lo, hi) = file.bounds(local);
        match &file.ids {
            Ids::Narrow(a) => Cow::Owned(a[lo..hi].iter().map(|&t| t as u32).collect()),
            Ids::Wide(a) => Cow::Borrowed(&a[lo..hi]),
        }
    }

    fn len_of(&self, d: usize) -> usize {
        let (file, local) = self.part_of(d);
        let (lo, hi) = file.bounds(local);
        hi - lo
    }
}

/// Token ids gathered in memory as documents are tokenized, in the narrowest type the
/// vocabulary allows (2 bytes per token when it fits 16 bits, 4 otherwise, plus 8 per
/// document), then written as one `tokens.bin`.
#[derive(Debug)]
pub struct TokenBuffer {
    starts: Vec<u64>,
    ids: IdBuffer,
    vocab_size: u32,
}

#[derive(Debug)]
enum IdBuffer {
    Narrow(Vec<u16>),
    Wide(Vec<u32>),
}

impl TokenBuffer {
    pub fn new(vocab_size: u32) -> TokenBuffer {
        let ids = if vocab_size <= 1 << 16 {
            IdBuffer::Narrow(Vec::new())
        } else {
            IdBuffer::Wide(Vec::new())
        };
        TokenBuffer {
            starts: vec![0],
            ids,
            vocab_size,
        }
    }

    /// Appends the next document (its ids `< vocab_size`, as the tokenizer guarantees).
    pub fn push(&mut self, doc: &[u32]) {
        match &mut self.ids {
            IdBuffer::Narrow(a) => a.extend(doc.iter().map(|&t| t as u16)),
            IdBuffer::Wide(a) => a.extend_from_slice(doc),
        }
        self.starts
            .push(self.starts.last().unwrap() + doc.len() as u64);
    }

    /// Number of documents pushed.
    pub fn docs(&self) -> usize {
        self.starts.len() - 1
    }

    /// Writes the documents to `path` atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut w = ArrayWriter::new();
        w.u64s(&[self.docs() as u64, self.vocab_size as u64])
            .u64s(&self.starts);
        match &self.ids {
            IdBuffer::Narrow(a) => w.array(a),
            IdBuffer::Wide(a) => w.array(a),
        };
        w.write(path, MAGIC, FORMAT_VERSION)
    }
}

/// One `tokens.bin`.
#[derive(Debug)]
struct TokenFile {
    /// Where each document starts, then the total: `docs + 1` entries.
    starts: Array<u64>,
    ids: Ids,
    vocab_size: u32,
}

impl TokenFile {
    fn open(file: Arc<Mapped>) -> Result<TokenFile> {
        let (mut r, _) = ArrayFile::read(file, MAGIC, 1..=FORMAT_VERSION)?;
        let head = r.u64s()?;
        let [docs, vocab_size] = head[..] else {
            return Err(r.corrupt("bad scalar header"));
        };
        if vocab_size > u32::MAX as u64 {
            return Err(r.corrupt("bad scalar header"));
        }
        let starts: Array<u64> = r.array()?;
        let ids = if vocab_size <= 1 << 16 {
            Ids::Narrow(r.array()?)
        } else {
            Ids::Wide(r.array()?)
        };
        let total = match &ids {
            Ids::Narrow(a) => a.len(),
            Ids::Wide(a) => a.len(),
        } as u64;
        let in_vocab = match &ids {
            Ids::Narrow(a) => a.par_iter().all(|&t| (t as u64) < vocab_size),
            Ids::Wide(a) => a.par_iter().all(|&t| (t as u64) < vocab_size),
        };
        let consistent = starts.len() as u64 == docs + 1
            && starts.first() == Some(&0)
            && starts.last() == Some(&total)
            && starts.par_windows(2).all(|w| w[0] <= w[1])
            && in_vocab;
        if !consistent {
            return Err(r.corrupt("document starts or token ids disagree with each other"));
        }
        r.finish()?;
        Ok(TokenFile {
            starts,
            ids,
            vocab_size: vocab_size as u32,
        })
    }

    fn docs(&self) -> usize {
        self.starts.len() - 1
    }

    /// Where document `d` (in range) starts and ends in `ids`.
    fn bounds(&self, d: usize) -> (usize, usize) {
        (self.starts[d] as usize, self.starts[d + 1] as usize)
    }

    /// Document `doc` (in range) into `out`, cleared first.
    fn doc_into(&self, doc: u32, out: &mut Vec<u32>) {
        let (lo, hi) = self.bounds(doc as usize);
        out.clear();
        match &self.ids {
            Ids::Narrow(a) => out.extend(a[lo..hi].iter().map(|&t| t as u32)),
            Ids::Wide(a) => out.extend_from_slice(&a[lo..hi]),
        }
    }
}
