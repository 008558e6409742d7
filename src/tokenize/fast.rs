//! The byte-level BPE tokenizers genret trains, encoded without HF's general pipeline.
//!
//! HF `tokenizers` runs every text through offset-tracking normalizers, a `fancy-regex`
//! pre-tokenizer and per-token string allocations: ~300k tokens per CPU-second here, most of
//! an index build. For the tokenizer genret trains (NFC [+ lowercase], GPT-2's byte-level
//! split with a prefix space, plain BPE) and ASCII text without `<`, the same ids come from a
//! hand-written split of GPT-2's pattern and a cache of each distinct piece's ids; a piece not
//! yet cached is encoded by the HF model itself. Any other text, or any other tokenizer, takes
//! HF's path, so the ids are HF's in every case (tests compare both on random and real text).

use std::collections::HashMap;
use std::sync::RwLock;

use tokenizers::{Model, Tokenizer};

/// Cached pieces at most; the cache is cleared when it is full (English words are Zipfian,
/// so it refills with the frequent ones at once).
const CACHE_LIMIT: usize = 1 << 20;

/// A piece's bytes (before the byte-level mapping) -> its token ids.
type PieceCache = HashMap<Box<[u8]>, Box<[u32]>>;

/// Encodes ASCII text as the HF tokenizer it was made from would.
pub(crate) struct FastByteLevel {
    lowercase: bool,
    /// The byte-level alphabet: the char each byte is written as in the vocabulary.
    byte_char: [char; 256],
    cache: RwLock<PieceCache>,
}

impl FastByteLevel {
    /// The fast path for `tokenizer`, or None when its pipeline is not the one genret trains.
    pub(crate) fn of(tokenizer: &Tokenizer) -> Option<FastByteLevel> {
        let json: serde_json::Value =
            serde_json::from_str(&tokenizer.to_string(false).ok()?).ok()?;
        let normalizers: Vec<&str> = json["normalizer"]["normalizers"]
            .as_array()?
            .iter()
            .map(|n| n["type"].as_str())
            .collect::<Option<_>>()?;
        let lowercase = match normalizers[..] {
            ["NFC"] => false,
            ["NFC", "Lowercase"] => true,
            _ => return None,
        };
        let pre = &json["pre_tokenizer"];
        let model = &json["model"];
        let plain_bpe = model["type"] == "BPE"
            && model["dropout"].is_null()
            && model["continuing_subword_prefix"].is_null()
            && model["end_of_word_suffix"].is_null()
            && model["byte_fallback"] != true;
        // Added tokens are split out of the text before anything else; the fast path declines
        // any text holding `<`, so every added token must start with it.
        let added_ok = json["added_tokens"]
            .as_array()?
            .iter()
            .all(|t| t["content"].as_str().is_some_and(|c| c.starts_with('<')));
        let byte_level = pre["type"] == "ByteLevel"
            && pre["add_prefix_space"] == true
            && pre["use_regex"] == true;
        (plain_bpe && added_ok && byte_level).then(|| FastByteLevel {
            lowercase,
            byte_char: byte_chars(),
            cache: RwLock::new(HashMap::new()),
        })
    }

    /// The ids of `text`, or None when the text must take HF's path (non-ASCII, or `<`).
    pub(crate) fn encode(&self, tokenizer: &Tokenizer, text: &str) -> Option<Vec<u32>> {
        if !text.is_ascii() || text.contains('<') {
            return None;
        }
        if text.is_empty() {
            return Some(Vec::new());
        }
        let mut bytes = Vec::with_capacity(text.len() + 1);
        if !text.starts_with(' ') {
            bytes.push(b' ');
        }
        bytes.extend_from_slice(text.as_bytes());
        if self.lowercase {
            bytes.make_ascii_lowercase();
        }
        let mut ids = Vec::with_capacity(text.len() / 4 + 1);
        let mut misses = Vec::new();
        {
            let cache = self.cache.read().ok()?;
            for piece in Pieces::new(&bytes) {
                match cache.get(piece) {
                    Some(cached) => ids.extend_from_slice(cached),
                    None => {
                        misses.push((ids.len(), piece));
                        ids.push(u32::MAX);
                    }
                }
            }
        }
        if misses.is_empty() {
            return Some(ids);
        }
        // Fill the holes left by uncached pieces, back to front so positions stay valid.
        let model = tokenizer.get_model();
        let mut fresh = Vec::with_capacity(misses.len());
        for &(at, piece) in misses.iter().rev() {
            let word: String = piece.iter().map(|&b| self.byte_char[b as usize]).collect();
            let piece_ids: Vec<u32> = model.tokenize(&word).ok()?.iter().map(|t| t.id).collect();
            ids.splice(at..at + 1, piece_ids.iter().copied());
            fresh.push((piece, piece_ids));
        }
        if let Ok(mut cache) = self.cache.write() {
            if cache.len() + fresh.len() > CACHE_LIMIT {
                cache.clear();
            }
            for (piece, piece_ids) in fresh {
                cache.insert(piece.into(), piece_ids.into());
            }
        }
        Some(ids)
    }
}

/// GPT-2's byte-to-char table: printable bytes stand for themselves, the others are moved to
/// U+0100 and up, in byte order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut table = ['\0'; 256];
    let mut moved = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).expect("a byte is a char")
        } else {
            moved += 1;
            char::from_u32(255 + moved).expect("below the surrogates")
        };
    }
    table
}

/// The pieces GPT-2's pattern splits ASCII text into:
/// `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`,
/// the first alternative that matches at each position, as the regex engine takes it.
struct Pieces<'a> {
    text: &'a [u8],
    at: usize,
}

impl<'a> Pieces<'a> {
    fn new(text: &'a [u8]) -> Self {
        Pieces { text, at: 0 }
    }
}

#[derive(PartialEq, Clone, Copy)]
enum Class {
    Letter,
    Digit,
    Space,
    Other,
}

fn class(b: u8) -> Class {
    match b {
        b'a'..=b'z' | b'A'..=b'Z' => Class::Letter,
        b'0'..=b'9' => Class::Digit,
        // Regex `\s` in ASCII: tab, newline, vertical tab, form feed, carriage return, space.
        b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | b' ' => Class::Space,
        _ => Class::Other,
    }
}

impl<'a> Iterator for Pieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let t = self.text;
        let start = self.at;
        if start >= t.len() {
            return None;
        }
        let run = |from: usize, c: Class| {
            let mut end = from;
            while end < t.len() && class(t[end]) == c {
                end += 1;
            }
            end
        };
        let rest = &t[start..];
        let end = if rest[0] == b'\''
            && let Some(n) = contraction(&rest[1..])
        {
            start + 1 + n
        } else {
            let (body, from) =
                if rest[0] == b' ' && rest.len() > 1 && class(rest[1]) != Class::Space {
                    (class(rest[1]), start + 1)
                } else {
                    (class(rest[0]), start)
                };
            match body {
                Class::Space => {
                    // `\s+(?!\S)`: the run, less its last char when a non-space follows;
                    // a single space before a non-space is `\s+`.
                    let end = run(start, Class::Space);
                    if end < t.len() && end - start > 1 {
                        end - 1
                    } else {
                        end
                    }
                }
                c => run(from, c),
            }
        };
        self.at = end;
        Some(&t[start..end])
    }
}

/// Length of the contraction after an apostrophe (`s`, `t`, `re`, `ve`, `m`, `ll`, `d`).
fn contraction(after: &[u8]) -> Option<usize> {
    match after {
        [b's' | b't' | b'm' | b'd', ..] => Some(1),
        [b'r', b'e', ..] | [b'v', b'e', ..] | [b'l', b'l', ..] => Some(2),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Collection;
    use crate::tokenize::{GenretTokenizer, TrainConfig};
    use proptest::prelude::*;
    use std::sync::LazyLock;

    fn texts() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
        ["adi", "cranfield"]
            .iter()
            .flat_map(|n| Collection::open(root.join(n), false).unwrap().corpus.docs)
            .map(|d| format!("{}\n{}", d.title, d.text))
            .collect()
    }

    /// Lowercasing and cased tokenizers trained on real text, with their fast paths.
    static TOKENIZERS: LazyLock<Vec<GenretTokenizer>> = LazyLock::new(|| {
        [true, false]
            .into_iter()
            .map(|lowercase| {
                let config = TrainConfig {
                    vocab_size: 2000,
                    lowercase,
                    ..TrainConfig::default()
                };
                let tok = GenretTokenizer::train(&config, texts().into_iter()).unwrap();
                assert!(tok.fast.is_some(), "a trained tokenizer has the fast path");
                tok
            })
            .collect()
    });

    fn same_as_hf(tok: &GenretTokenizer, text: &str) -> std::result::Result<(), TestCaseError> {
        let hf = tok.inner.encode(text, false).unwrap().get_ids().to_vec();
        let fast = tok.fast.as_ref().unwrap().encode(&tok.inner, text);
        if let Some(fast) = fast {
            prop_assert_eq!(fast, hf, "text {:?}", text);
        }
        Ok(())
    }

    #[test]
    fn real_documents_encode_as_hf_does() {
        let mut fast = 0;
        for tok in TOKENIZERS.iter() {
            for text in texts() {
                same_as_hf(tok, &text).unwrap();
                fast += tok
                    .fast
                    .as_ref()
                    .unwrap()
                    .encode(&tok.inner, &text)
                    .is_some() as usize;
            }
        }
        assert!(
            fast > 2500,
            "most of ADI and Cranfield take the fast path: {fast}"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Every split rule: contractions, optional spaces, runs of each class, whitespace
        /// runs before words and at the end, control bytes, case.
        #[test]
        fn random_ascii_encodes_as_hf_does(
            parts in proptest::collection::vec(prop_oneof![
                Just("'s"), Just("'re"), Just("'ll"), Just("'S"), Just("'x"), Just("'"),
                Just(" "), Just("  "), Just("\t"), Just("\n"), Just("\r\n"), Just("\x0b"),
                Just("\x0c"), Just("\x1c"), Just("\x00"), Just("\x7f"), Just("flow"),
                Just("Shock"), Just("ABC"), Just("42"), Just("3.5"), Just("-"), Just("(a)"),
                Just("..."), Just("\""), Just("e.g."), Just("x"), Just("<"), Just("é"),
            ], 0..12),
        ) {
            let text = parts.concat();
            for tok in TOKENIZERS.iter() {
                same_as_hf(tok, &text)?;
            }
        }
    }

    #[test]
    fn declines_what_it_cannot_do_exactly() {
        let tok = &TOKENIZERS[0];
        let fast = tok.fast.as_ref().unwrap();
        assert!(fast.encode(&tok.inner, "café au lait").is_none());
        assert!(fast.encode(&tok.inner, "a <title> b").is_none());
        assert!(fast.encode(&tok.inner, "plain text").is_some());
        assert_eq!(
            byte_chars()[b' ' as usize],
            '\u{120}',
            "GPT-2 writes a space as U+0120"
        );
    }
}
