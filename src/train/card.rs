//! What a trained model's folder tells people and Hugging Face tools beside its weights: the
//! tokenizer it reads with, `generation_config.json`, and a model card (`README.md`) saying
//! what it was trained on, how, and what HF transformers does and does not compute of it.

use std::path::Path;

use super::{LogEntry, Target, TrainConfig};
use crate::dsi::Recall;
use crate::error::{Error, Result};
use crate::index::Index;
use crate::model::Config;
use crate::storage::write_atomic;

/// Writes `tokenizer.json` (SEAL: the index's; DSI's folder already holds its encoder's),
/// `generation_config.json` and `README.md` into the model folder `dir`.
pub(super) fn write(
    dir: &Path,
    index: &Index,
    config: &TrainConfig,
    model: &Config,
    log: &[LogEntry],
    recall: Option<&Recall>,
) -> Result<()> {
    if config.target == Target::Seal {
        let from = index.dir.file(&index.dir.manifest.tokenizer.file);
        let bytes = std::fs::read(&from).map_err(|e| Error::io(&from, e))?;
        write_atomic(&dir.join("tokenizer.json"), &bytes)?;
    }
    let generation = serde_json::json!({
        "decoder_start_token_id": model.decoder_start_token_id,
        "eos_token_id": model.eos_token_id,
        "pad_token_id": model.pad_token_id,
        "num_beams": 10,
    });
    write_atomic(
        &dir.join("generation_config.json"),
        &serde_json::to_vec_pretty(&generation).expect("JSON serializes"),
    )?;
    write_atomic(
        &dir.join("README.md"),
        card(index, config, model, log, recall).as_bytes(),
    )
}

fn card(
    index: &Index,
    config: &TrainConfig,
    model: &Config,
    log: &[LogEntry],
    recall: Option<&Recall>,
) -> String {
    let corpus = &index.dir.manifest.corpus;
    let (what, task) = match config.target {
        Target::Seal => (
            "SEAL",
            "reads `<query>` and a query's tokens and writes corpus n-grams after `<ngram>` \
             (`genret search` constrains every step by the index's FM-index and ranks documents \
             by the n-grams they hold)",
        ),
        Target::Dsi => (
            "DSI",
            "reads a query with its encoder's tokenizer and writes a document identifier \
             (`genret search --mode dsi` constrains every step by the docid trie, \
             `docids.bin`)",
        ),
    };
    // Documents added to the index since its build (`genret index --add`) are trained on too.
    let added: String = index
        .dir
        .manifest
        .added
        .iter()
        .map(|a| format!(" and `{}`", a.source))
        .collect();
    let mut s = format!(
        "# genret {what} model\n\n\
         Trained by genret {} on the index of `{}`{added}: {} documents, {} tokens (documents \
         fingerprint {}). It {task}.\n\n",
        env!("CARGO_PKG_VERSION"),
        corpus.source,
        index.stats.docs,
        index.stats.tokens,
        index.dir.manifest.documents_fingerprint()
    );
    s.push_str(&format!(
        "## Training\n\n\
         - {} parameters: d_model {}, {} encoder and {} decoder layers, vocabulary {}\n\
         - {} steps (preset {:?}), batch {}, learning rate {}, seed {}\n\
         - tasks {}{}\n",
        model.num_params(),
        model.d_model,
        model.num_layers,
        model.decoder_layers(),
        model.vocab_size,
        log.last().map_or(0, |e| e.step),
        config.preset,
        config.batch_size,
        config.lr,
        config.seed,
        config.tasks,
        config
            .queries
            .as_ref()
            .map_or_else(String::new, |(_, split)| format!(
                ", plus the judged queries of split `{split}`"
            )),
    ));
    if let Some(last) = log.last() {
        s.push_str(&format!("- final training loss {:.4}\n", last.loss));
    }
    if let Some(r) = recall {
        s.push_str(&format!("- indexing recall@1 {:.3}\n", r.index));
    }
    s.push_str(
        "\n## Files and Hugging Face transformers\n\n\
         `config.json` and `model.safetensors` use HF T5's configuration keys and tensor names \
         (genret reproduces HF's T5 logits on HF's own checkpoints: tests/hf_t5.rs); \
         `tokenizer.json` and `generation_config.json` sit beside them, and `checksums.json` \
         lets genret verify every file. What HF's `T5ForConditionalGeneration` would not \
         compute as genret does is listed below.\n",
    );
    if model.copy_attention {
        s.push_str(
            "\nThe model has genret's copy head (a pointer-generator: `copy.q.weight`, \
             `copy.k.weight`, `copy.gate.weight`), which mixes the vocabulary distribution with \
             attention over the query's own tokens. HF transformers does not know these tensors: \
             it drops them (with a warning) and computes the vocabulary distribution alone, so \
             its outputs differ from genret's. Load the model with genret to use it (`genret \
             train --no-copy` trains a model without it).\n",
        );
    }
    if model.bert_encoder.is_some() {
        s.push_str(
            "\nThe encoder is a frozen BERT-family model stored under `bert.*` (genret's warm \
             start); HF's T5 class does not read it.\n",
        );
    }
    if model.output_tokens.is_some() {
        s.push_str(
            "\nThe decoder writes a restricted output vocabulary (`output_tokens` in \
             `config.json`): genret normalises its distribution over those tokens alone, HF's \
             class over the whole vocabulary, so HF's probabilities differ (their order among \
             those tokens does not).\n",
        );
    }
    s
}
