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

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use rust_stemmers::{Algorithm, Stemmer};

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

/// The corpus's words, grouped by stem.
pub struct WordForms {
    forms: Vec<Form>,
    /// The stem of each form.
    stem_of: Vec<usize>,
    /// The forms of each stem.
    stems: Vec<Vec<usize>>,
    /// A form's token ids -> the form.
    form_of: HashMap<Vec<u32>, usize>,
}

impl WordForms {
    /// Collects the alphabetic words of `docs` (titles and texts), encodes each as it reads
    /// after a space and glued to punctuation, and keeps the forms that occur in `fm`. Cost: one pass over the text,
    /// one tokenizer call and one backward search per distinct word (parallel); Cranfield's
    /// ~10k distinct words take well under a second.
    pub fn build(docs: &[DocEntry], tokenizer: &GenretTokenizer, fm: &FmIndex) -> Result<Self> {
        let words: HashSet<&str> = docs
            .iter()
            .flat_map(|d| [d.title.as_str(), d.text.as_str()])
            .flat_map(|t| t.split(|c: char| !c.is_alphabetic()))
            .filter(|w| !w.is_empty())
            .collect();
        let mut words: Vec<&str> = words.into_iter().collect();
        words.sort_unstable();
        let stemmer = Stemmer::create(Algorithm::English);
        // A word glued to punctuation ("/slip", "shock-sound") has other token ids than after
        // a space in a byte-level tokenizer, and a query copies whichever its text has.
        let glue = tokenizer.encode("-")?;
        let mut encoded = words
            .par_iter()
            .map(|w| {
                let stem = stemmer.stem(&w.to_lowercase()).into_owned();
                let spaced = tokenizer.encode(w)?;
                let glued = tokenizer.encode(&format!("-{w}"))?;
                let glued = match glued.strip_prefix(&glue[..]) {
                    Some(rest) if !glue.is_empty() && rest != spaced => Some(rest.to_vec()),
                    _ => None,
                };
                Ok(std::iter::once(spaced)
                    .chain(glued)
                    .map(|tokens| {
                        let range = fm.range(&tokens);
                        (stem.clone(), tokens, range)
                    })
                    .collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?
            .concat();
        // Words that differ only where the tokenizer normalises (case) are one form.
        encoded.retain(|(_, tokens, range)| !tokens.is_empty() && !range.is_empty());
        encoded.sort_unstable_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        encoded.dedup_by(|a, b| a.1 == b.1);
        let mut forms = Vec::with_capacity(encoded.len());
        let mut stem_of = Vec::with_capacity(encoded.len());
        let mut stems: Vec<Vec<usize>> = Vec::new();
        let mut last_stem = None;
        for (stem, tokens, range) in encoded {
            if last_stem.as_ref() != Some(&stem) {
                stems.push(Vec::new());
                last_stem = Some(stem);
            }
            stems.last_mut().expect("pushed").push(forms.len());
            stem_of.push(stems.len() - 1);
            forms.push(Form { tokens, range });
        }
        let form_of = forms
            .iter()
            .enumerate()
            .map(|(i, f)| (f.tokens.clone(), i))
            .collect();
        Ok(WordForms {
            forms,
            stem_of,
            stems,
            form_of,
        })
    }

    /// Splits `tokens` into corpus words, fewest words first; None when it is not a sequence
    /// of whole words. O(n^2) lookups for n tokens.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenize::TrainConfig;

    fn doc(text: &str) -> DocEntry {
        DocEntry {
            id: String::new(),
            title: String::new(),
            text: text.into(),
            tokens: 0,
        }
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
    }

    #[test]
    fn forms_the_model_wrote_weigh_as_one_word() {
        use crate::decode::Hypothesis;
        use crate::score::{SealParams, ngram_weight, weigh_ngrams};
        let (docs, tok, fm) = corpus();
        let forms = WordForms::build(&docs, &tok, &fm).unwrap();
        let hyp = |w: &str, p: f32| {
            let tokens = tok.encode(w).unwrap();
            let state = fm.range(&tokens);
            Hypothesis {
                tokens,
                score: p.ln(),
                state,
            }
        };
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
        let want = ngram_weight(0.9f32.ln() as f64, all, fm.tokens(), params.smoothing);
        assert!((flow.weight - want).abs() < 1e-6);
    }
}
