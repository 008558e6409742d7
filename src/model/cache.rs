//! What beam search carries between decoder steps: the encoded source and the reorderable self-
//! attention cache.

use candle_core::Tensor;

use super::heads::CopyRows;
use super::host_decoder::{HostKv, HostScores};
use crate::error::{Error, Result, cerr};

/// The encoder's output for a batch of queries, with its padding mask as an additive bias.
#[derive(Debug, Clone)]
pub struct Encoded {
    /// `(batch, src_len, d_model)`.
    pub states: Tensor,
    /// `(batch, 1, 1, src_len)`: 0 for tokens, a large negative number for padding.
    pub mask_bias: Tensor,
    /// The copy head's view of the source, when the model has one.
    pub(super) copy: Option<CopySource>,
}

impl Encoded {
    /// An encoder output computed elsewhere: `states` `(batch, src_len, d_model)` with the
    /// `(batch, src_len)` 0/1 `mask` of real tokens. For models without a copy head (whose
    /// view of the source needs the token ids).
    pub fn from_states(states: Tensor, mask: &Tensor) -> Result<Encoded> {
        Ok(Encoded {
            states,
            mask_bias: mask_bias(mask).map_err(cerr)?,
            copy: None,
        })
    }
}

/// The attention bias of a `(batch, src_len)` 0/1 mask, `(batch, 1, 1, src_len)`: 0 where
/// attended, -1e9 where padded; large but finite so a fully padded row stays finite.
pub(super) fn mask_bias(mask: &Tensor) -> candle_core::Result<Tensor> {
    let (b, s) = mask.dims2()?;
    (mask.reshape((b, 1, 1, s))? - 1.0)? * 1e9
}

/// What the copy head needs of a source batch.
#[derive(Debug, Clone)]
pub(super) struct CopySource {
    /// `(batch, src_len, d_model)`: the copy attention's keys.
    pub(super) keys: Tensor,
    /// `(batch, 1, src_len)`: 0 where the token can be copied, a large negative number where
    /// not (padding, tokens outside the output vocabulary).
    pub(super) bias: Tensor,
    /// Per batch row and source position: the output row its token copies into.
    pub(super) rows: CopyRows,
}

/// The decoder's state for rows = queries x beams (row `r` belongs to query `r / beams`).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    /// Per decoder layer: self-attention keys and values `(rows, heads, steps, d_kv)`.
    pub(super) self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Per decoder layer: cross-attention keys and values `(queries, heads, src, d_kv)`,
    /// computed once and shared by a query's beams.
    pub(super) cross_kv: Vec<(Tensor, Tensor)>,
    /// `(queries, 1, 1, src)` padding bias.
    pub(super) cross_bias: Tensor,
    /// Per query: the copy head's keys and source tokens.
    pub(super) copy: Option<CopySource>,
    pub(super) beams: usize,
    pub(super) queries: usize,
    /// Tokens consumed so far (the next step's position).
    pub steps: usize,
    /// On the CPU: the self-attention cache of the host decoder step, which then replaces
    /// `self_kv`.
    pub(super) host: Option<HostKv>,
}

/// A decoder step's next-token scores for every row.
#[derive(Debug, Clone)]
pub enum StepScores {
    /// From the host decoder step: log-probs computed on demand.
    Host(HostScores),
    /// Log-probs `(rows, vocab)` on the model's device.
    Tensor(Tensor),
}

impl StepScores {
    /// Each row repeated `times` times in place: the scores of [`DecoderCache::expand`]ed rows.
    pub fn expand(self, times: usize) -> Result<StepScores> {
        Ok(match self {
            StepScores::Host(scores) => StepScores::Host(scores.expand(times)),
            StepScores::Tensor(t) => {
                let rows = t.dim(0).map_err(cerr)? as u32;
                let index: Vec<u32> = (0..rows)
                    .flat_map(|r| std::iter::repeat_n(r, times))
                    .collect();
                let index = Tensor::new(index.as_slice(), t.device()).map_err(cerr)?;
                StepScores::Tensor(t.index_select(&index, 0).map_err(cerr)?)
            }
        })
    }

    /// The log-probs of `index` `(rows, width)` (token ids, row by row): one `Vec` per row.
    pub fn pick(&self, index: &[u32], width: usize) -> Result<Vec<Vec<f32>>> {
        match self {
            StepScores::Host(scores) => Ok(scores.pick(index, width)),
            StepScores::Tensor(logp) => {
                let rows = index.len() / width.max(1);
                let index =
                    Tensor::from_vec(index.to_vec(), (rows, width), logp.device()).map_err(cerr)?;
                logp.gather(&index, 1)
                    .and_then(|t| t.to_vec2())
                    .map_err(cerr)
            }
        }
    }
}

impl DecoderCache {
    pub fn rows(&self) -> usize {
        self.queries * self.beams
    }

    pub fn beams(&self) -> usize {
        self.beams
    }

    /// Hands a step's scores back once they are no longer needed, so that the next step
    /// writes into their buffer instead of fresh memory. Optional.
    pub fn recycle(&mut self, scores: StepScores) {
        if let (Some(host), StepScores::Host(scores)) = (&mut self.host, scores) {
            host.spare_logits = scores.into_buffer();
        }
    }

    /// Widens every query's one row to `beams` equal rows: a query's beams are the same until
    /// the first token is chosen, so beam search runs the steps before it (the decoder start,
    /// a forced prefix) on one row per query and copies the cache once.
    pub fn expand(&mut self, beams: usize) -> Result<()> {
        if self.beams != 1 {
            return Err(Error::Internal(
                "expand: the cache already has beams".into(),
            ));
        }
        let rows: Vec<u32> = (0..self.queries as u32)
            .flat_map(|q| std::iter::repeat_n(q, beams))
            .collect();
        self.select_rows(&rows)?;
        self.beams = beams;
        Ok(())
    }

    /// Re-indexes the self-attention cache after beams moved: new row `i` continues old row
    /// `rows[i]`. Rows must stay within their query (`rows[i] / beams == i / beams`), which
    /// beam search guarantees; cross-attention state is per query and is not touched.
    /// Cost: one `index_select` per layer of the cached keys and values, no recomputation.
    pub fn reorder(&mut self, rows: &[u32]) -> Result<()> {
        if rows.len() != self.rows()
            || rows
                .iter()
                .enumerate()
                .any(|(i, &r)| r as usize / self.beams != i / self.beams)
        {
            return Err(Error::Internal(
                "reorder: every row must come from a row of the same query".into(),
            ));
        }
        self.select_rows(rows)
    }

    /// New row `i` continues old row `rows[i]`: one copy per layer of the cached keys and
    /// values, no recomputation.
    fn select_rows(&mut self, rows: &[u32]) -> Result<()> {
        if let Some(host) = &mut self.host {
            host.select_rows(rows, self.steps);
            return Ok(());
        }
        let Some(Some((k0, _))) = self.self_kv.first() else {
            return Ok(());
        };
        let index = Tensor::new(rows, k0.device()).map_err(cerr)?;
        for entry in self.self_kv.iter_mut().flatten() {
            entry.0 = entry.0.index_select(&index, 0).map_err(cerr)?;
            entry.1 = entry.1.index_select(&index, 0).map_err(cerr)?;
        }
        Ok(())
    }
}
