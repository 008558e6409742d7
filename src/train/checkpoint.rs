//! A run's files: the checkpoint (model, optimiser, state) swapped in whole, the training log, and
//! where each run keeps them.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::optim::AdamW;
use super::{CHECKPOINT_DIR, TRAIN_LOG, Target, TrainConfig};
use crate::dsi::Recall;
use crate::error::{Error, Result};
use crate::index::{Index, MODEL_DIR};
use crate::model::{self, Config, Params};
use crate::storage::write_dir;

/// One line of `train_log.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub step: usize,
    pub loss: f64,
    pub lr: f64,
    pub examples_per_s: f64,
    /// DSI: recall measured at this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recall: Option<Recall>,
}

/// `checkpoint/state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct CheckpointState {
    pub(super) step: usize,
    pub(super) total_steps: usize,
    pub(super) config: TrainConfig,
}

/// `checkpoint/state.json` in the checkpoint directory `ckpt`, or `None` if there is none.
pub(super) fn read_state(ckpt: &Path) -> Result<Option<CheckpointState>> {
    let path = ckpt.join("state.json");
    let Ok(bytes) = std::fs::read(&path) else {
        return Ok(None);
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| Error::Corrupt {
            path,
            message: e.to_string(),
        })
}

/// Where a run's model, checkpoint and log live inside the index.
pub(super) struct RunPaths {
    /// Manifest part of the trained model.
    pub(super) part: &'static str,
    /// Directory of the trained model, relative to the index.
    pub(super) model: String,
    pub(super) checkpoint: PathBuf,
    pub(super) log: PathBuf,
}

impl RunPaths {
    pub(super) fn of(dir: &Path, target: Target) -> RunPaths {
        let base = match target {
            Target::Seal => String::new(),
            Target::Dsi => format!("{}/", crate::dsi::DSI_DIR),
        };
        RunPaths {
            part: match target {
                Target::Seal => "model",
                Target::Dsi => crate::dsi::DSI_DIR,
            },
            model: format!("{base}{MODEL_DIR}"),
            checkpoint: dir.join(format!("{base}{CHECKPOINT_DIR}")),
            log: dir.join(format!("{base}{TRAIN_LOG}")),
        }
    }
}

/// The configuration of the index's latest training run of `target` (kept with its last
/// checkpoint), or `None` if there is no checkpoint.
pub fn trained_with(index: &Index, target: Target) -> Result<Option<TrainConfig>> {
    let paths = RunPaths::of(index.dir.path(), target);
    Ok(read_state(&paths.checkpoint)?.map(|s| s.config))
}

/// Writes a checkpoint (with `extra`'s files) into a fresh directory and swaps it in, so a
/// crash leaves the previous checkpoint or the new one whole.
#[allow(clippy::too_many_arguments)]
pub(super) fn save_checkpoint(
    ckpt: &Path,
    model_config: &Config,
    params: &Params,
    opt: &AdamW,
    step: usize,
    total: usize,
    config: &TrainConfig,
    owner: &str,
    extra: &dyn Fn(&Path) -> Result<()>,
) -> Result<()> {
    write_dir(ckpt, &ckpt.with_extension("tmp"), Some(owner), |tmp| {
        model::save(tmp, model_config, params)?;
        opt.save(&tmp.join("optimizer.safetensors"))?;
        extra(tmp)?;
        let state = CheckpointState {
            step,
            total_steps: total,
            config: config.clone(),
        };
        crate::storage::write_atomic(
            &tmp.join("state.json"),
            &serde_json::to_vec_pretty(&state).expect("state serializes"),
        )
    })
}

pub(super) fn append_log(path: &Path, entry: &LogEntry) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let line = serde_json::to_string(entry).expect("log entry serializes");
    writeln!(f, "{line}").map_err(|e| Error::io(path, e))
}

/// Reads `train_log.jsonl` (empty if absent).
pub fn read_log(path: &Path) -> Result<Vec<LogEntry>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let mut lines = crate::corpus::Lines::open(path)?;
    let mut out = Vec::new();
    while let Some(line) = lines.next_line()? {
        if line.text.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(line.text)
                .map_err(|e| line.error(format!("malformed log entry: {e}")))?,
        );
    }
    Ok(out)
}

pub(super) fn rewrite_log(path: &Path, entries: &[LogEntry]) -> Result<()> {
    crate::storage::write_atomic_with(path, |w| {
        for e in entries {
            serde_json::to_writer(&mut *w, e)?;
            w.write_all(b"\n")?;
        }
        Ok(())
    })
}
