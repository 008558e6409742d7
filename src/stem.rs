//! stem: here is an n-gram the model wrote, which other forms of its words does the corpus hold?
//!
//! BM25 matches a query's "flows" to a document's "flow" through a stemmer; SEAL's n-grams are
//! exact token strings, so a model that writes `flow` misses every document that only says
//! `flows`. [`WordForms`] groups the corpus's words by their Snowball English stem (the
//! stemmer tantivy's `en_stem` uses for the BM25 baseline), each form with its token ids and
//! FM-index range; [`WordForms::phrase`] reads an n-gram as words and finds the n-grams of the
//! corpus that differ from it only in the forms of its words ("similarity law" for "similarity
//! laws"), so that scoring can count them all as one term.
//!
//! Each word has two spellings in token ids where the tokenizer tells them apart (byte-level
//! BPE does): after a space, and glued to punctuation (`slip` in "/slip flow/"). Both are forms
//! of the word, so a query's "/slip flow/", which the model copies token for token, finds
//! documents that say "slip flow" (on Cranfield this alone adds ~0.007 nDCG@10).
//!
//! Only whole words are read: an n-gram is split into the token ids of corpus words, so one
//! that starts or ends inside a word, or holds punctuation, is matched exactly.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, LazyLock};

use rayon::prelude::*;
use rust_stemmers::{Algorithm, Stemmer};

use std::path::Path;

use crate::error::Result;
use crate::fmindex::{FmRange, Shards, Span};
use crate::storage::{ArrayFile, ArrayWriter, Mapped};
use crate::tokenize::GenretTokenizer;

/// The index part holding the stored word table, written by the index build, and its file.
pub const WORDS_PART: &str = "words";
pub const WORDS_FILE: &str = "words.bin";
const MAGIC: &[u8; 8] = b"GRWORDS\0";
/// Version of the `words.bin` layout.
pub const FORMAT_VERSION: u32 = 1;

/// Most combinations of word forms tried for one n-gram (each costs one backward search).
const MAX_COMBINATIONS: usize = 64;

/// One form of a word, or of an n-gram, as it occurs in the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub tokens: Vec<u32>,
    pub range: Span,
}

/// An n-gram read as words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase {
    /// The stem of each word: n-grams with equal stems are one term.
    pub stems: Vec<usize>,
    /// The corpus's other n-grams with these stems, the n-gram itself excluded.
    pub variants: Vec<Form>,
}

/// Whether `word` (lowercase) is an English stop word: NLTK's list (198 words, from the
/// `stop-words` crate), which holds the question words ("what", "how", "did") that queries
/// are full of. Lucene's shorter list (33 words, as tantivy has it) left those as content and
/// scored below it (docs/BENCHMARKS.md).
pub fn is_stop_word(word: &str) -> bool {
    static STOP: LazyLock<HashSet<&str>> =
        LazyLock::new(|| stop_words::get("en").iter().copied().collect());
    STOP.contains(word)
}

/// The Snowball English stem of `word`, lowercased first.
fn stem(word: &str) -> String {
    Stemmer::create(Algorithm::English)
        .stem(&word.to_lowercase())
        .into_owned()
}

/// The alphabetic words of a document's title and text.
fn words_of(fields: [&str; 2]) -> impl Iterator<Item = &str> {
    fields
        .into_iter()
        .flat_map(|t| t.split(|c: char| !c.is_alphabetic()))
        .filter(|w| !w.is_empty())
}

/// The corpus's words, grouped by stem.
#[derive(PartialEq)]
pub struct WordForms {
    forms: Vec<Form>,
    /// The stem of each form.
    stem_of: Vec<usize>,
    /// The forms of each stem.
    stems: Vec<Vec<usize>>,
    /// A form's token ids -> the form.
    form_of: HashMap<Vec<u32>, usize>,
    /// Whether a form is the spelling glued to punctuation.
    glued: Vec<bool>,
    /// The documents holding some form of each stem.
    doc_freq: Vec<u32>,
    /// A stem -> its number.
    stem_number: HashMap<String, usize>,
}

impl WordForms {
    /// Collects the alphabetic words of documents `0..docs` (the title and text `fields`
    /// gives, read twice, so they may come from disk), encodes each as it reads
    /// after a space and glued to punctuation, keeps the forms that occur in `fm`, and counts
    /// the documents holding each stem. Cost: two passes over the text, one stemmer call, one
    /// tokenizer call and one backward search per distinct word (parallel); Cranfield's ~10k
    /// distinct words take well under a second.
    pub fn build<'d>(
        docs: usize,
        fields: impl Fn(usize) -> Result<[Cow<'d, str>; 2]> + Sync,
        tokenizer: &GenretTokenizer,
        fm: &Shards,
    ) -> Result<Self> {
        let words: HashSet<String> = (0..docs)
            .into_par_iter()
            .try_fold(HashSet::new, |mut seen: HashSet<String>, d| {
                let [title, text] = fields(d)?;
                for w in words_of([&title, &text]) {
                    if !seen.contains(w) {
                        seen.insert(w.to_string());
                    }
                }
                Ok::<_, crate::error::Error>(seen)
            })
            .try_reduce(HashSet::new, |mut a, b| {
                a.extend(b);
                Ok(a)
            })?;
        let mut words: Vec<&str> = words.iter().map(String::as_str).collect();
        words.sort_unstable();
        let stem_of_word: HashMap<&str, String> = words.par_iter().map(|&w| (w, stem(w))).collect();
        // A word glued to punctuation ("/slip", "shock-sound") has other token ids than after
        // a space in a byte-level tokenizer, and a query copies whichever its text has.
        let glue = tokenizer.encode("-")?;
        let mut encoded = words
            .par_iter()
            .map(|w| {
                let stem = stem_of_word[w].clone();
                let spaced = tokenizer.encode(w)?;
                let glued = tokenizer.encode(&format!("-{w}"))?;
                let glued = match glued.strip_prefix(&glue[..]) {
                    Some(rest) if !glue.is_empty() && rest != spaced => Some(rest.to_vec()),
                    _ => None,
                };
                Ok(std::iter::once((spaced, false))
                    .chain(glued.map(|g| (g, true)))
                    .map(|(tokens, glued)| {
                        let range = fm.range(&tokens);
                        (stem.clone(), tokens, range, glued)
                    })
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?
            .concat();
        // Words that differ only where the tokenizer normalises (case) are one form.
        encoded.retain(|(_, tokens, range, _)| !tokens.is_empty() && !range.is_empty());
        encoded.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        encoded.dedup_by(|a, b| a.1 == b.1);
        let mut forms = Vec::with_capacity(encoded.len());
        let mut stem_of = Vec::with_capacity(encoded.len());
        let mut glued = Vec::with_capacity(encoded.len());
        let mut stems: Vec<Vec<usize>> = Vec::new();
        let mut stem_number: HashMap<String, usize> = HashMap::new();
        for (stem, tokens, range, is_glued) in encoded {
            if let Entry::Vacant(e) = stem_number.entry(stem) {
                e.insert(stems.len());
                stems.push(Vec::new());
            }
            stems.last_mut().expect("pushed").push(forms.len());
            stem_of.push(stems.len() - 1);
            glued.push(is_glued);
            forms.push(Form { tokens, range });
        }
        let form_of: HashMap<Vec<u32>, usize> = forms
            .iter()
            .enumerate()
            .map(|(i, f)| (f.tokens.clone(), i))
            .collect();
        let number_of_word: HashMap<&str, usize> = stem_of_word
            .iter()
            .filter_map(|(&w, s)| Some((w, *stem_number.get(s)?)))
            .collect();
        let doc_freq = (0..docs)
            .into_par_iter()
            .try_fold(
                || vec![0u32; stems.len()],
                |mut counts, d| {
                    let [title, text] = fields(d)?;
                    let mut held: Vec<usize> = words_of([&title, &text])
                        .filter_map(|w| number_of_word.get(w).copied())
                        .collect();
                    held.sort_unstable();
                    held.dedup();
                    held.into_iter().for_each(|s| counts[s] += 1);
                    Ok::<_, crate::error::Error>(counts)
                },
            )
            .try_reduce(
                || vec![0u32; stems.len()],
                |a, b| Ok(a.iter().zip(&b).map(|(x, y)| x + y).collect()),
            )?;
        Ok(WordForms {
            forms,
            stem_of,
            stems,
            form_of,
            glued,
            doc_freq,
            stem_number,
        })
    }

    /// Writes the table to `path` atomically (an [`ArrayFile`]). O(table size).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut offsets = vec![0u64];
        let mut tokens = Vec::new();
        let mut ranges = Vec::with_capacity(3 * self.forms.len());
        for form in &self.forms {
            tokens.extend_from_slice(&form.tokens);
            offsets.push(tokens.len() as u64);
            for r in form.range.parts() {
                ranges.extend([r.lo as u64, r.hi as u64, r.len as u64]);
            }
        }
        let mut names = vec![String::new(); self.stems.len()];
        for (name, &number) in &self.stem_number {
            names[number] = name.clone();
        }
        let mut name_offsets = vec![0u64];
        let mut name_bytes = Vec::new();
        for name in &names {
            name_bytes.extend_from_slice(name.as_bytes());
            name_offsets.push(name_bytes.len() as u64);
        }
        let as_u32 = |v: &[usize]| v.iter().map(|&x| x as u32).collect::<Vec<_>>();
        let glued: Vec<u32> = self.glued.iter().map(|&g| g as u32).collect();
        ArrayWriter::new()
            .u64s(&offsets)
            .u32s(&tokens)
            .u64s(&ranges)
            .u32s(&as_u32(&self.stem_of))
            .u32s(&glued)
            .u32s(&self.doc_freq)
            .u64s(&name_offsets)
            .bytes(&name_bytes)
            .write(path, MAGIC, FORMAT_VERSION)
    }

    /// Reads a table [`WordForms::save`] wrote for `fm`, verified (checksum, then every index
    /// and range checked against `fm`). O(table size): the cost of a search's first use of
    /// word forms, against [`WordForms::build`]'s pass over the corpus.
    pub fn load(path: &Path, fm: &Shards) -> Result<Self> {
        WordForms::load_mapped(Mapped::open(path, None)?, fm)
    }

    /// [`WordForms::load`] of a mapped file, whose checksum is not computed again if the
    /// whole file was verified when it was mapped.
    pub fn load_mapped(file: Arc<Mapped>, fm: &Shards) -> Result<Self> {
        let (mut r, _) = ArrayFile::read(file, MAGIC, 1..=FORMAT_VERSION)?;
        let offsets = r.u64s()?;
        let tokens = r.u32s()?;
        let ranges = r.u64s()?;
        let stem_of = r.u32s()?;
        let glued = r.u32s()?;
        let doc_freq = r.u32s()?;
        let name_offsets = r.u64s()?;
        let name_bytes = r.bytes()?;
        let forms_n = stem_of.len();
        let stems_n = doc_freq.len();
        let monotone = |o: &[u64], end: usize| {
            o.first() == Some(&0)
                && o.last() == Some(&(end as u64))
                && o.windows(2).all(|w| w[0] <= w[1])
        };
        // Each form's range in every shard, shard after shard.
        let shards = fm.shards().len();
        let rows: Vec<u64> = fm
            .shards()
            .iter()
            .map(|s| s.full_range().hi as u64)
            .collect();
        if offsets.len() != forms_n + 1
            || !monotone(&offsets, tokens.len())
            || ranges.len() != 3 * shards * forms_n
            || glued.len() != forms_n
            || name_offsets.len() != stems_n + 1
            || !monotone(&name_offsets, name_bytes.len())
            || stem_of.iter().any(|&s| s as usize >= stems_n)
            || tokens.iter().any(|&t| t >= fm.vocab_size())
            || (ranges.chunks(3).enumerate()).any(|(i, c)| c[0] > c[1] || c[1] > rows[i % shards])
        {
            return Err(r.corrupt("word table arrays disagree with each other or the FM-index"));
        }
        let forms: Vec<Form> =
            (0..forms_n)
                .map(|f| Form {
                    tokens: tokens[offsets[f] as usize..offsets[f + 1] as usize].to_vec(),
                    range: Span::new(ranges[3 * shards * f..3 * shards * (f + 1)].chunks(3).map(
                        |c| FmRange {
                            lo: c[0] as usize,
                            hi: c[1] as usize,
                            len: c[2] as usize,
                        },
                    )),
                })
                .collect();
        let mut stems = vec![Vec::new(); stems_n];
        for (f, &s) in stem_of.iter().enumerate() {
            stems[s as usize].push(f);
        }
        let mut stem_number = HashMap::with_capacity(stems_n);
        for s in 0..stems_n {
            let bytes = &name_bytes[name_offsets[s] as usize..name_offsets[s + 1] as usize];
            let name = std::str::from_utf8(bytes)
                .map_err(|_| r.corrupt(format!("stem {s} is not UTF-8")))?;
            stem_number.insert(name.to_string(), s);
        }
        let form_of = forms
            .iter()
            .enumerate()
            .map(|(i, f)| (f.tokens.clone(), i))
            .collect();
        r.finish()?;
        Ok(WordForms {
            forms,
            stem_of: stem_of.into_iter().map(|s| s as usize).collect(),
            stems,
            form_of,
            glued: glued.into_iter().map(|g| g != 0).collect(),
            doc_freq,
            stem_number,
        })
    }

    /// The corpus's commonest form of `word`'s stem, spelled after a space ("panthers" for a
    /// query's "Panther" the corpus never has); None when the corpus holds no word of that
    /// stem. One stemmer call.
    pub fn stem_form(&self, word: &str) -> Option<&Form> {
        self.stems[*self.stem_number.get(&stem(word))?]
            .iter()
            .filter(|&&f| !self.glued[f])
            .map(|&f| &self.forms[f])
            .max_by_key(|f| f.range.count())
    }

    /// The documents holding some form of the word whose token ids are `tokens` (in either
    /// spelling), as BM25's document frequency of a stemmed term; None when `tokens` is not
    /// one corpus word. O(|tokens|).
    pub fn doc_freq(&self, tokens: &[u32]) -> Option<usize> {
        let form = self.form_of.get(tokens)?;
        Some(self.doc_freq[self.stem_of[*form]] as usize)
    }

    /// Splits `tokens` into corpus words, fewest words first; None when it is not a sequence
    /// of whole words. A spelling glued to punctuation only starts the n-gram: after another
    /// word it would be the rest of that word ("ap" + "p" is no split of "app"). O(n^2)
    /// lookups for n tokens.
    fn words(&self, tokens: &[u32]) -> Option<Vec<usize>> {
        let n = tokens.len();
        // best[i]: the fewest words covering tokens[..i], as (words, last form, start).
        let mut best: Vec<Option<(usize, usize, usize)>> = vec![None; n + 1];
        best[0] = Some((0, 0, 0));
        for end in 1..=n {
            for start in 0..end {
                let (Some((words, _, _)), Some(&form)) =
                    (best[start], self.form_of.get(&tokens[start..end]))
                else {
                    continue;
                };
                if start > 0 && self.glued[form] {
                    continue;
                }
                if best[end].is_none_or(|(w, _, _)| words + 1 < w) {
                    best[end] = Some((words + 1, form, start));
                }
            }
        }
        let mut out = Vec::new();
        let mut end = n;
        while end > 0 {
            let (_, form, start) = best[end]?;
            out.push(form);
            end = start;
        }
        out.reverse();
        (!out.is_empty()).then_some(out)
    }

    /// `tokens` read as words, with the corpus's n-grams that differ from it only in the forms
    /// of its words; None when it is not a sequence of whole words or has no such variant.
    /// Cost: the split, then one backward search per combination of forms for a several-word
    /// n-gram (at most 64); a one-word n-gram's forms are precomputed.
    pub fn phrase(&self, tokens: &[u32], fm: &Shards) -> Option<Phrase> {
        let words = self.words(tokens)?;
        let stems: Vec<usize> = words.iter().map(|&f| self.stem_of[f]).collect();
        let choices: Vec<&[usize]> = stems.iter().map(|&s| &self.stems[s][..]).collect();
        let variants: Vec<Form> = if let [only] = choices[..] {
            only.iter()
                .filter(|&&f| f != words[0])
                .map(|&f| self.forms[f].clone())
                .collect()
        } else {
            // Odometer over the forms of each word.
            let mut pick = vec![0; choices.len()];
            let mut out = Vec::new();
            for _ in 0..MAX_COMBINATIONS {
                let combo: Vec<usize> = pick.iter().zip(&choices).map(|(&p, c)| c[p]).collect();
                if combo != words {
                    let tokens: Vec<u32> = combo
                        .iter()
                        .flat_map(|&f| self.forms[f].tokens.iter().copied())
                        .collect();
                    let range = fm.range(&tokens);
                    if !range.is_empty() {
                        out.push(Form { tokens, range });
                    }
                }
                let Some(i) = (0..pick.len())
                    .rev()
                    .find(|&i| pick[i] + 1 < choices[i].len())
                else {
                    break;
                };
                pick[i] += 1;
                pick[i + 1..].iter_mut().for_each(|p| *p = 0);
            }
            out
        };
        (!variants.is_empty()).then_some(Phrase { stems, variants })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::fmindex::FmIndex;
    use crate::tokenize::TrainConfig;

    /// Four documents' texts, a tokenizer trained on them and their FM-index.
    pub(crate) fn corpus() -> ([String; 4], GenretTokenizer, Shards) {
        let docs = [
            "the flow separates. Flows over wings",
            "a flowing stream; the wing and a model",
            "models of flow, modelling wings; the flows",
            "slip/flow at a high-flow rate",
        ]
        .map(String::from);
        let tok = GenretTokenizer::train(
            &TrainConfig {
                vocab_size: 300,
                ..TrainConfig::default()
            },
            docs.iter().cloned(),
        )
        .unwrap();
        let encoded: Vec<Vec<u32>> = docs.iter().map(|d| tok.encode(d).unwrap()).collect();
        let fm = FmIndex::build(&encoded, tok.vocab_size() as u32, Default::default()).unwrap();
        (docs, tok, fm.into())
    }

    /// The word table of [`corpus`].
    pub(crate) fn forms_of(docs: &[String], tok: &GenretTokenizer, fm: &Shards) -> WordForms {
        WordForms::build(
            docs.len(),
            |d| Ok(["".into(), docs[d].as_str().into()]),
            tok,
            fm,
        )
        .unwrap()
    }

    #[test]
    fn the_stored_table_reads_back_equal_and_damage_is_refused() {
        let (docs, tok, fm) = corpus();
        let forms = forms_of(&docs, &tok, &fm);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(WORDS_FILE);
        forms.save(&path).unwrap();
        let read = WordForms::load(&path, &fm).unwrap();
        assert!(read == forms, "the table reads back as it was built");
        assert!(read.stem_form("flowed").is_some());
        assert_eq!(read.stem_form("flowed"), forms.stem_form("flowed"));
        // A table of another, smaller corpus: its ranges run past this FM-index.
        let small: Shards = FmIndex::build(
            &[tok.encode("flow").unwrap()],
            fm.vocab_size(),
            Default::default(),
        )
        .unwrap()
        .into();
        let err = WordForms::load(&path, &small).err().unwrap().to_string();
        assert!(
            err.contains(WORDS_FILE) && err.contains("disagree"),
            "{err}"
        );
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 9;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(
            WordForms::load(&path, &fm).is_err(),
            "a flipped byte is refused"
        );
    }

    #[test]
    fn finds_the_forms_the_corpus_holds() {
        let (docs, tok, fm) = corpus();
        let forms = forms_of(&docs, &tok, &fm);
        let phrase = |w: &str| forms.phrase(&tok.encode(w).unwrap(), &fm);
        let variants = |w: &str| {
            let p = phrase(w).unwrap_or_else(|| panic!("{w:?} has variants"));
            for f in &p.variants {
                assert_eq!(f.range, fm.range(&f.tokens));
                assert!(f.range.count() > 0);
            }
            let mut v: Vec<String> = p
                .variants
                .iter()
                .map(|f| tok.decode(&f.tokens, false).unwrap())
                .collect();
            v.sort();
            v
        };
        // "Flows" and "flows" are one form for a lowercasing tokenizer.
        // "flow" twice: after a space, and glued to punctuation ("high-flow"), where a
        // byte-level tokenizer gives it other token ids.
        assert_eq!(variants("flows"), ["flow", "flow", "flowing"]);
        let glue = tok.encode("-").unwrap();
        let glued = tok.encode("-flow").unwrap()[glue.len()..].to_vec();
        assert_ne!(glued, tok.encode("flow").unwrap());
        assert_eq!(
            forms.phrase(&glued, &fm).unwrap().stems,
            phrase("flow").unwrap().stems
        );
        assert_eq!(
            phrase("flows").unwrap().stems,
            phrase("flow").unwrap().stems
        );
        assert_eq!(variants("wings"), ["wing"]);
        assert_eq!(
            phrase("model").unwrap().stems,
            phrase("modelling").unwrap().stems
        );
        assert_eq!(phrase("stream"), None, "one form only");
        assert_eq!(phrase("ing"), None, "not a word");
        // Several words: the combinations of forms that occur.
        assert_eq!(variants("the flow"), ["the flows"]);
        assert_eq!(
            phrase("the flows").unwrap().stems,
            phrase("the flow").unwrap().stems
        );
        assert_eq!(phrase("over wings"), None, "\"over wing\" does not occur");
        assert_eq!(phrase("flow,"), None, "punctuation is matched exactly");
        // A glued spelling starts an n-gram ("/flow wing"), never continues a word.
        let wing = tok.encode("wing").unwrap();
        assert_eq!(
            forms
                .words(&[&glued[..], &wing[..]].concat())
                .map(|w| w.len()),
            Some(2)
        );
        assert_eq!(forms.words(&[&wing[..], &glued[..]].concat()), None);
    }

    #[test]
    fn counts_the_documents_holding_each_word_in_any_form() {
        let (docs, tok, fm) = corpus();
        let forms = forms_of(&docs, &tok, &fm);
        for word in ["flow", "flows", "wing", "model", "stream", "rate", "slip"] {
            let want = docs
                .iter()
                .filter(|d| words_of(["", d.as_str()]).any(|w| stem(w) == stem(word)))
                .count();
            let got = forms.doc_freq(&tok.encode(word).unwrap());
            assert_eq!(got, Some(want), "{word}");
        }
        // "flow" in 4 documents (one only as "high-flow", "slip/flow"), "flowing" too.
        assert_eq!(forms.doc_freq(&tok.encode("flowing").unwrap()), Some(4));
        // Not one word: no count.
        assert_eq!(forms.doc_freq(&tok.encode("the flow").unwrap()), None);
        assert_eq!(forms.doc_freq(&tok.encode("zebra").unwrap()), None);
    }
}
