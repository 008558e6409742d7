//! content: here is an n-gram the model wrote, which content words does it stand for?
//!
//! BM25 reads a query as its words; SEAL's model writes n-grams that carry stop words,
//! punctuation and pieces of words with them. [`content_ngrams`] reads each n-gram as its
//! content words: "of the super bowl," is the term "super bowl", a piece of a query word the
//! model copied (`ound` of "shock-sound") is the word, and with the corpus's word table
//! ([`crate::stem::WordForms`]) a word the corpus lacks in that form is its stem's form.

use crate::decode::Hypothesis;
use crate::error::Result;
use crate::fmindex::{Shards, Span};
use crate::stem::{WordForms, is_stop_word};
use crate::tokenize::GenretTokenizer;

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
    hyps: &[Hypothesis<Span>],
    query: &str,
    tokenizer: &GenretTokenizer,
    fm: &Shards,
    forms: Option<&WordForms>,
) -> Result<Vec<Hypothesis<Span>>> {
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
    fm: &Shards,
    forms: Option<&WordForms>,
) -> Result<Option<Hypothesis<Span>>> {
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
            state: f.range.clone(),
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
pub(crate) mod tests {
    use super::*;
    use crate::stem::tests::{corpus, forms_of};

    /// `text` as the model would have written it, with log-prob `score`.
    pub(crate) fn written(
        tok: &GenretTokenizer,
        fm: &Shards,
        text: &str,
        score: f32,
    ) -> Hypothesis<Span> {
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
    fn a_query_word_the_corpus_lacks_is_read_as_its_stems_form() {
        let (docs, tok, fm) = corpus();
        let forms = forms_of(&docs, &tok, &fm);
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
