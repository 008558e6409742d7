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
//!
//! Before that, [`content_ngrams`] reads each n-gram as its content words, as BM25 reads a
//! query as its words: "of the super bowl," is the term "super bowl", and a piece of a query
//! word the model copied (`ound` of "shock-sound") is the word.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rayon::prelude::*;
use rust_stemmers::{Algorithm, Stemmer};

use crate::decode::Hypothesis;
use crate::error::Result;
use crate::fmindex::{FmIndex, FmRange};
use crate::index::DocEntry;
use crate::tokenize::GenretTokenizer;

/// Most combinations of word forms tried for one n-gram (each costs one backward search).
const MAX_COMBINATIONS: usize = 64;

/// One form of a word, or of an n-gram, as it occurs in the corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub tokens: Vec<u32>,
    pub range: FmRange,
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
fn words_of(d: &DocEntry) -> impl Iterator<Item = &str> {
    [d.title.as_str(), d.text.as_str()]
        .into_iter()
        .flat_map(|t| t.split(|c: char| !c.is_alphabetic()))
        .filter(|w| !w.is_empty())
}

/// The corpus's words, grouped by stem.
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
    /// Collects the alphabetic words of `docs` (titles and texts), encodes each as it reads
    /// after a space and glued to punctuation, keeps the forms that occur in `fm`, and counts
    /// the documents holding each stem. Cost: two passes over the text, one stemmer call, one
    /// tokenizer call and one backward search per distinct word (parallel); Cranfield's ~10k
    /// distinct words take well under a second.
    pub fn build(docs: &[DocEntry], tokenizer: &GenretTokenizer, fm: &FmIndex) -> Result<Self> {
        let words: HashSet<&str> = docs.iter().flat_map(words_of).collect();
        let mut words: Vec<&str> = words.into_iter().collect();
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
        let doc_freq = docs
            .par_iter()
            .fold(
                || vec![0u32; stems.len()],
                |mut counts, d| {
                    let mut held: Vec<usize> = words_of(d)
                        .filter_map(|w| number_of_word.get(w).copied())
                        .collect();
                    held.sort_unstable();
                    held.dedup();
                    held.into_iter().for_each(|s| counts[s] += 1);
                    counts
                },
            )
            .reduce(
                || vec![0u32; stems.len()],
                |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect(),
            );
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
    pub fn phrase(&self, tokens: &[u32], fm: &FmIndex) -> Option<Phrase> {
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

/// The n-grams the model wrote for `query`, each read as its content: its text without stop
/// words ([`is_stop_word`]) and punctuation at either end ("of the super bowl," counts as
/// "super bowl"), re-encoded as the corpus spells it after a space; one of stop words and
/// punctuation alone is dropped. An n-gram that cuts a word of the query (`ound` of
/// "shock-sound", `os` of "Osweiler") is first widened to the whole word, and with `forms` a
/// word the corpus lacks in that form is read as the corpus's form of its stem (the query's
/// "Panther", whose pieces `pant` `her` the model copied, as "panthers", as BM25's stemmer
/// reads it). Any other n-gram whose content the corpus lacks in that spelling is kept as
/// written. The probabilities stay, so
/// n-grams with one content add up in [`crate::score::weigh_ngrams`].
///
/// Why: a small model spreads its probability over the contexts a query's words take in the
/// corpus ("the super", "of super", ", super"); each such n-gram is rare, so SEAL's weight
/// rewards it, and their sum drowns the query's discriminative words. Read as content they
/// are one term, as the words are to BM25. The copy head copies the query's tokens, and
/// byte-level BPE splits a rare word (or one glued to punctuation) into pieces that are rare
/// in the corpus for the wrong reason, so it is read as the word. Both gain on the three
/// collections (docs/BENCHMARKS.md). Cost: one encode and decode of the query, one decode per
/// n-gram, one encode and backward search per trimmed or widened one.
pub fn content_ngrams(
    hyps: &[Hypothesis<FmRange>],
    query: &str,
    tokenizer: &GenretTokenizer,
    fm: &FmIndex,
    forms: Option<&WordForms>,
) -> Result<Vec<Hypothesis<FmRange>>> {
    // The query as the model reads it (normalised as the tokenizer normalises).
    let query = tokenizer.decode(&tokenizer.encode(query)?, false)?;
    let mut out = Vec::with_capacity(hyps.len());
    for h in hyps {
        let text = tokenizer.decode(&h.tokens, false)?;
        if let Some(words) = query_words(&text, &query)
            && let Some((start, end)) = content_span(words)
            && let Some(read) = respelled(&words[start..end], h.score, tokenizer, fm, forms)?
        {
            out.push(read);
            continue;
        }
        let Some((start, end)) = content_span(&text) else {
            continue;
        };
        if text[..start].trim().is_empty() && text[end..].trim().is_empty() {
            out.push(h.clone());
            continue;
        }
        let read = respelled(&text[start..end], h.score, tokenizer, fm, forms)?;
        out.push(read.unwrap_or_else(|| h.clone()));
    }
    Ok(out)
}

/// `content` re-encoded as the corpus spells it after a space, with probability `score`; a
/// single word the corpus lacks in that form as the corpus's commonest form of its stem (with
/// `forms`; [`WordForms::stem_form`]); None when the corpus has neither.
fn respelled(
    content: &str,
    score: f32,
    tokenizer: &GenretTokenizer,
    fm: &FmIndex,
    forms: Option<&WordForms>,
) -> Result<Option<Hypothesis<FmRange>>> {
    let tokens = tokenizer.encode(content)?;
    let state = fm.range(&tokens);
    if !state.is_empty() {
        return Ok(Some(Hypothesis {
            tokens,
            score,
            state,
        }));
    }
    let word = content.chars().all(char::is_alphabetic);
    Ok(forms
        .filter(|_| word)
        .and_then(|f| f.stem_form(content))
        .map(|f| Hypothesis {
            tokens: f.tokens.clone(),
            score,
            state: f.range,
        }))
}

/// `piece` widened to the whole words of `query` it cuts: where the model copied part of a
/// query word (`ound` of "shock-sound", `def` of "defender"), the word. None when `piece`
/// occurs in `query` with whole words at both ends, or not at all.
fn query_words<'q>(piece: &str, query: &'q str) -> Option<&'q str> {
    let word = |c: Option<char>| c.is_some_and(char::is_alphanumeric);
    let p = piece.trim();
    if p.is_empty() {
        return None;
    }
    // A piece that starts with a space starts a word where the model wrote it.
    let spaced = piece.starts_with(char::is_whitespace);
    let mut widened = None;
    for (i, _) in query.match_indices(p) {
        let end = i + p.len();
        let cuts_start = !spaced && word(p.chars().next()) && word(query[..i].chars().last());
        let cuts_end = word(p.chars().last()) && word(query[end..].chars().next());
        if !cuts_start && !cuts_end {
            return None;
        }
        if widened.is_none() {
            let start = query[..i]
                .char_indices()
                .rev()
                .take_while(|&(_, c)| c.is_alphanumeric())
                .last()
                .map_or(i, |(j, _)| j);
            let stop = query[end..]
                .char_indices()
                .find(|&(_, c)| !c.is_alphanumeric())
                .map_or(query.len(), |(j, _)| end + j);
            widened =
                Some(&query[if cuts_start { start } else { i }..if cuts_end { stop } else { end }]);
        }
    }
    widened
}

/// The byte span of `text` from its first content word to the end of its last; None when it
/// has none.
fn content_span(text: &str) -> Option<(usize, usize)> {
    let mut span: Option<(usize, usize)> = None;
    let mut word_start = None;
    // A sentinel non-word char at the end closes the last word.
    for (i, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphanumeric(), word_start) {
            (true, None) => word_start = Some(i),
            (false, Some(s)) => {
                word_start = None;
                if !is_stop_word(&text[s..i].to_lowercase()) {
                    span = Some(span.map_or((s, i), |(first, _)| (first, i)));
                }
            }
            _ => {}
        }
    }
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TrainConfig;

    fn doc(text: &str) -> DocEntry {
        DocEntry::of_text(text)
    }

    fn corpus() -> ([DocEntry; 4], GenretTokenizer, FmIndex) {
        let docs = [
            doc("the flow separates. Flows over wings"),
            doc("a flowing stream; the wing and a model"),
            doc("models of flow, modelling wings; the flows"),
            doc("slip/flow at a high-flow rate"),
        ];
        let tok = GenretTokenizer::train(
            &TrainConfig {
                vocab_size: 300,
                ..TrainConfig::default()
            },
            docs.iter().map(|d| d.text.clone()),
        )
        .unwrap();
        let encoded: Vec<Vec<u32>> = docs.iter().map(|d| tok.encode(&d.text).unwrap()).collect();
        let fm = FmIndex::build(&encoded, tok.vocab_size() as u32, Default::default()).unwrap();
        (docs, tok, fm)
    }

    /// `text` as the model would have written it, with log-prob `score`.
    fn written(tok: &GenretTokenizer, fm: &FmIndex, text: &str, score: f32) -> Hypothesis<FmRange> {
        let tokens = tok.encode(text).unwrap();
        let state = fm.range(&tokens);
        assert!(!state.is_empty(), "{text:?} occurs");
        Hypothesis {
            tokens,
            score,
            state,
        }
    }

    #[test]
    fn finds_the_forms_the_corpus_holds() {
        let (docs, tok, fm) = corpus();
        let forms = WordForms::build(&docs, &tok, &fm).unwrap();
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
        let forms = WordForms::build(&docs, &tok, &fm).unwrap();
        for word in ["flow", "flows", "wing", "model", "stream", "rate", "slip"] {
            let want = docs
                .iter()
                .filter(|d| words_of(d).any(|w| stem(w) == stem(word)))
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

    #[test]
    fn a_query_word_the_corpus_lacks_is_read_as_its_stems_form() {
        let (docs, tok, fm) = corpus();
        let forms = WordForms::build(&docs, &tok, &fm).unwrap();
        // "separated" is no corpus word; "separates" is.
        assert!(fm.range(&tok.encode("separated").unwrap()).is_empty());
        let form = forms.stem_form("Separated").unwrap();
        assert_eq!(form.tokens, tok.encode("separates").unwrap());
        assert_eq!(form.range, fm.range(&form.tokens));
        assert!(forms.stem_form("zebra").is_none());
        // The model copied the first piece of the query's "separated": read as "separates".
        let first = tok.encode("separated").unwrap()[..1].to_vec();
        let piece = Hypothesis {
            state: fm.range(&first),
            tokens: first,
            score: -1.0,
        };
        assert!(!piece.state.is_empty());
        let query = "separated flows";
        let one = std::slice::from_ref(&piece);
        let read = content_ngrams(one, query, &tok, &fm, Some(&forms)).unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].tokens, form.tokens);
        assert_eq!(read[0].score, -1.0);
        // Without the word table it is not.
        let plain = content_ngrams(one, query, &tok, &fm, None).unwrap();
        assert!(plain.iter().all(|h| h.tokens != form.tokens));
    }

    #[test]
    fn forms_the_model_wrote_weigh_as_one_word() {
        use crate::score::{SealParams, ngram_weight, weigh_ngrams};
        let (docs, tok, fm) = corpus();
        let forms = WordForms::build(&docs, &tok, &fm).unwrap();
        let hyp = |w: &str, p: f32| written(&tok, &fm, w, p.ln());
        let hyps = [hyp("flow", 0.6), hyp("wing", 0.8), hyp("flows", 0.3)];
        let params = SealParams::default();
        let exact = weigh_ngrams(&fm, &hyps, &params, None);
        assert_eq!(exact.len(), 3);
        assert!(exact.iter().all(|n| n.variants.is_empty()));

        let grouped = weigh_ngrams(&fm, &hyps, &params, Some(&forms));
        assert_eq!(grouped.len(), 2, "flow and flows are one word");
        let flow = grouped.iter().find(|n| n.tokens == hyps[0].tokens).unwrap();
        assert!((flow.log_prob - 0.9f32.ln()).abs() < 1e-6);
        let count = |w: &str| fm.count(&tok.encode(w).unwrap());
        let glue = tok.encode("-").unwrap().len();
        let glued = fm.count(&tok.encode("-flow").unwrap()[glue..]);
        assert_eq!(glued, 2, "high-flow, slip/flow");
        let all = count("flow") + count("flows") + count("flowing") + glued;
        assert_eq!(flow.count(), all);
        assert_eq!(flow.variants.len(), 3);
        // Weighed by the documents holding a form, each counted once.
        let mut docs: Vec<u32> = flow.forms().flat_map(|(_, r)| fm.docs_of(r)).collect();
        docs.sort_unstable();
        docs.dedup();
        assert!(docs.len() < all, "some document repeats a form");
        assert_eq!(flow.docs, docs);
        assert_eq!(flow.doc_freq, docs.len() as f64);
        let want = ngram_weight(
            0.9f32.ln() as f64,
            flow.doc_freq,
            fm.tokens(),
            params.smoothing,
        );
        assert!((flow.weight - want).abs() < 1e-6);
        // SEAL's weight counts the occurrences: lower.
        let seal = SealParams {
            doc_freq: false,
            ..params
        };
        let by_occurrences = weigh_ngrams(&fm, &hyps, &seal, Some(&forms));
        let by_occurrences = by_occurrences
            .iter()
            .find(|n| n.tokens == flow.tokens)
            .unwrap();
        let want = ngram_weight(
            0.9f32.ln() as f64,
            all as f64,
            fm.tokens(),
            params.smoothing,
        );
        assert!((by_occurrences.weight - want).abs() < 1e-6);
        assert!(by_occurrences.weight < flow.weight);
    }

    #[test]
    fn ngrams_count_as_their_content() {
        let (_, tok, fm) = corpus();
        let hyp = |w: &str| written(&tok, &fm, w, -1.0);
        let hyps = [
            hyp("of flow,"),
            hyp("the flows"),
            hyp("and a"),
            hyp("wing and a model"),
            hyp("flow separates."),
            hyp("a high-flow"),
            hyp("stream; the"),
        ];
        let read = content_ngrams(&hyps, "", &tok, &fm, None).unwrap();
        let texts: Vec<String> = read
            .iter()
            .map(|h| tok.decode(&h.tokens, false).unwrap())
            .collect();
        // Stop words inside an n-gram stay; one of stop words and punctuation is dropped.
        assert_eq!(
            texts,
            [
                "flow",
                "flows",
                "wing and a model",
                "flow separates",
                "high-flow",
                "stream"
            ]
        );
        for (h, w) in read.iter().zip(&texts) {
            assert_eq!(h.state, fm.range(&h.tokens), "{w}");
            assert_eq!(h.score, -1.0);
        }
        // "wing and a model" is its own content: the very hypothesis comes back.
        assert_eq!(read[2], hyps[3]);
    }

    #[test]
    fn pieces_of_query_words_are_read_as_the_words() {
        let q = "papers on shock-sound wave interaction, by defenders";
        assert_eq!(query_words("ound", q), Some("sound"));
        assert_eq!(query_words("ound wave", q), Some("sound wave"));
        assert_eq!(query_words("def", q), Some("defenders"));
        assert_eq!(query_words("nteractio", q), Some("interaction"));
        // Whole words of the query, words it lacks, and a spaced piece that ends a word.
        assert_eq!(query_words("wave", q), None);
        assert_eq!(query_words("shock-sound", q), None);
        assert_eq!(query_words("flow", q), None);
        assert_eq!(query_words(" ound", q), None);
        // One whole occurrence is enough for the model to have copied the word.
        assert_eq!(query_words("flow", "flows and flow"), None);

        // Through content_ngrams: the piece of "modelling" the model copied counts as the word.
        let (_, tok, fm) = corpus();
        let word = tok.encode("modelling").unwrap();
        assert!(word.len() >= 2, "modelling is one token: {word:?}");
        let tail = word[1..].to_vec();
        let piece = Hypothesis {
            state: fm.range(&tail),
            tokens: tail,
            score: -1.0,
        };
        assert!(!piece.state.is_empty());
        let read = content_ngrams(
            std::slice::from_ref(&piece),
            "modelling flows",
            &tok,
            &fm,
            None,
        )
        .unwrap();
        assert_eq!(read.len(), 1);
        assert_eq!(tok.decode(&read[0].tokens, false).unwrap(), "modelling");
        assert_eq!(read[0].state, fm.range(&read[0].tokens));
        // Without the word in the query, the piece stays as written.
        let read = content_ngrams(std::slice::from_ref(&piece), "flows", &tok, &fm, None).unwrap();
        assert_eq!(read[0], piece);
    }
}
