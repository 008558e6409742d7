//! The output side: the copy head (pointer-generator) and the restricted output vocabulary.

use candle_core::{D, Tensor};
use candle_nn::Linear;

use crate::device;
use crate::error::{Error, Result, cerr};

/// The copy head (pointer-generator, See et al., "Get To The Point", ACL 2017): one attention
/// over the source whose weights, summed per token, are a second distribution over the output
/// vocabulary, mixed with the vocabulary head's by a gate on the decoder state `h`:
///
/// ```text
/// P(w) = (1 - g) P_vocab(w) + g * sum_{s : source_s = w} a_s,   g = sigmoid(gate . h)
/// ```
///
/// A query's own words, which the n-grams of its relevant documents mostly repeat, are then one
/// attention away instead of a prediction the vocabulary head must learn for every word.
#[derive(Debug, Clone)]
pub(super) struct CopyHead {
    pub(super) q: Linear,
    pub(super) k: Linear,
    /// `(1, d_model)`.
    pub(super) gate: Tensor,
}

/// `log((1 - g) softmax(logits) + g * copy)` for `n` rows: `logits` `(n, out)`, copy attention
/// `attn` `(n, src)` and gate `(n, 1)`; each source row serves `repeat` consecutive rows (a
/// query's beams, a sequence's positions). `source` says which output row each source
/// position copies into. Inference only: on the host, O(n * out) additions (a token no source
/// position names keeps `log(1 - g) + logp`) plus O(n * src) for the copied tokens; on other
/// devices the same mixture from device-generic ops, without leaving the device.
pub(super) fn mix_copy(
    logits: &Tensor,
    attn: &Tensor,
    gate: &Tensor,
    source: &CopyRows,
    repeat: usize,
) -> candle_core::Result<Tensor> {
    if !device::host_kernels(logits.device()) {
        return mix_copy_portable(logits, attn, gate, &source.index, repeat);
    }
    let (n, out) = logits.dims2()?;
    let mut logp = candle_nn::ops::log_softmax(logits, D::Minus1)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let a = attn.flatten_all()?.to_vec1::<f32>()?;
    let g = gate.flatten_all()?.to_vec1::<f32>()?;
    let src = a.len() / n.max(1);
    let mut copied: Vec<(u32, f32)> = Vec::with_capacity(src);
    for (i, row) in logp.chunks_mut(out).enumerate() {
        let gi = g[i];
        let keep = (1.0 - gi).ln();
        row.iter_mut().for_each(|x| *x += keep);
        // A token at several source positions copies their summed attention.
        copied.clear();
        for (j, &r) in source.rows[i / repeat.max(1)].iter().enumerate() {
            if r == u32::MAX {
                continue;
            }
            match copied.iter_mut().find(|(t, _)| *t == r) {
                Some((_, mass)) => *mass += a[i * src + j],
                None => copied.push((r, a[i * src + j])),
            }
        }
        for &(r, mass) in &copied {
            let x = &mut row[r as usize];
            *x = (x.exp() + gi * mass).ln();
        }
    }
    Tensor::from_vec(logp, (n, out), logits.device())
}

/// [`mix_copy`] with device-generic ops: the attention is scattered into `(n, out + 1)`
/// columns (the last one takes the positions that copy nothing), then mixed in log space,
/// `logaddexp(log(1 - g) + logp, log(g * copy))` where a token is copied.
fn mix_copy_portable(
    logits: &Tensor,
    attn: &Tensor,
    gate: &Tensor,
    index: &Tensor,
    repeat: usize,
) -> candle_core::Result<Tensor> {
    let (n, out) = logits.dims2()?;
    let (batch, src) = index.dims2()?;
    let index = index
        .unsqueeze(1)?
        .broadcast_as((batch, repeat, src))?
        .reshape((n, src))?;
    let copy = Tensor::zeros((n, out + 1), logits.dtype(), logits.device())?
        .scatter_add(&index, &attn.contiguous()?, 1)?
        .narrow(1, 0, out)?;
    let keep = candle_nn::ops::log_softmax(logits, D::Minus1)?
        .broadcast_add(&gate.affine(-1.0, 1.0)?.log()?)?;
    let copied = copy.broadcast_mul(gate)?.log()?;
    let top = keep.maximum(&copied)?;
    let both = (&top + ((&keep - &top)?.exp()? + (&copied - &top)?.exp()?)?.log()?)?;
    copy.gt(0.0)?.where_cond(&both, &keep)
}

/// Which output row each source position copies into, per source row.
#[derive(Debug, Clone)]
pub(super) struct CopyRows {
    /// `rows[b][j]`: the output row of source `b`'s token `j`, `u32::MAX` for none (padding,
    /// a token outside the output vocabulary).
    pub(super) rows: Vec<Vec<u32>>,
    /// The same as a `(batch, src_len)` u32 tensor on the model's device, with the number of
    /// output rows in place of `u32::MAX`.
    pub(super) index: Tensor,
}

impl CopyRows {
    pub(super) fn new(
        rows: Vec<Vec<u32>>,
        outputs: usize,
        device: &candle_core::Device,
    ) -> candle_core::Result<CopyRows> {
        let src = rows.first().map_or(0, Vec::len);
        let flat: Vec<u32> = rows
            .iter()
            .flatten()
            .map(|&r| if r == u32::MAX { outputs as u32 } else { r })
            .collect();
        let index = Tensor::from_vec(flat, (rows.len(), src), device)?;
        Ok(CopyRows { rows, index })
    }
}

/// A restricted output vocabulary (`Config::output_tokens`): a decoder writes only tokens of
/// its corpus, docids and specials, so the output layer need not score the rest (with a
/// 30k-token BERT vocabulary and a small corpus, most of it).
#[derive(Debug, Clone)]
pub(super) struct OutputVocab {
    /// The allowed token ids, `(rows,)` u32.
    pub(super) ids: Tensor,
    /// `row_of[token]`: the token's row among the allowed ones, `u32::MAX` if not allowed;
    /// shared with each decoder step's scores.
    pub(super) row_of: std::sync::Arc<[u32]>,
    /// `(1, vocab)`: 0 for allowed tokens, -inf for the rest; the base that scores scatter into.
    base: Tensor,
    /// The head's allowed rows as of construction, for inference. Training (which updates the
    /// embeddings in place) selects them afresh at every call.
    pub(super) head_rows: Tensor,
}

impl OutputVocab {
    pub(super) fn new(tokens: &[u32], vocab: usize, lm_head: &Tensor) -> Result<OutputVocab> {
        if tokens.is_empty()
            || tokens.windows(2).any(|w| w[0] >= w[1])
            || tokens[tokens.len() - 1] as usize >= vocab
        {
            return Err(Error::Model(format!(
                "output_tokens must be sorted, distinct and below the vocabulary size {vocab}"
            )));
        }
        let mut row_of = vec![u32::MAX; vocab];
        let mut base = vec![f32::NEG_INFINITY; vocab];
        for (row, &t) in tokens.iter().enumerate() {
            row_of[t as usize] = row as u32;
            base[t as usize] = 0.0;
        }
        let device = lm_head.device();
        let ids = Tensor::new(tokens, device).map_err(cerr)?;
        let head_rows = lm_head.index_select(&ids, 0).map_err(cerr)?;
        Ok(OutputVocab {
            base: Tensor::from_vec(base, (1, vocab), device).map_err(cerr)?,
            ids,
            row_of: row_of.into(),
            head_rows,
        })
    }

    /// Scores over the allowed rows, `(n, rows)`, spread over the whole vocabulary.
    pub(super) fn scatter(&self, scores: &Tensor) -> candle_core::Result<Tensor> {
        let n = scores.dim(0)?;
        self.base
            .broadcast_as((n, self.row_of.len()))?
            .contiguous()?
            .index_add(&self.ids, scores, 1)
    }
}
