//! The encoder-decoder itself (HF `T5ForConditionalGeneration`): building it from named parameters,
//! encoding, the decoder step under beam search, and full-sequence logits for training.

use std::sync::Arc;

use candle_core::{D, Device, Module, Tensor};
use candle_nn::{Embedding, Linear};

use super::Params;
use super::bert::BertModel;
use super::cache::{CopySource, DecoderCache, Encoded, StepScores, mask_bias};
use super::config::Config;
use super::heads::{CopyHead, CopyRows, OutputVocab, mix_copy};
use super::host_decoder::HostKv;
use super::kernels;
use super::layers::{
    Getter, Mode, SMALL_ROWS, T5Block, bias_table, linear, matmul, position_bias, rms_norm, softmax,
};
use super::panels::PackedWeight;
use super::params::is_frozen;
use crate::device::Precision;
use crate::error::{Error, Result, cerr};

/// T5 encoder-decoder with a language-modelling head (HF `T5ForConditionalGeneration`).
#[derive(Debug, Clone)]
pub struct T5ForConditionalGeneration {
    pub config: Config,
    pub(super) shared: Embedding,
    encoder: Encoder,
    pub(super) decoder: Vec<T5Block>,
    pub(super) decoder_norm: Tensor,
    /// `shared.weight` itself when embeddings are tied (read at every call, so training
    /// updates reach it), else `lm_head.weight`.
    pub(super) lm_head: Tensor,
    pub(super) output: Option<OutputVocab>,
    pub(super) copy: Option<CopyHead>,
    /// The decoder step's head packed for the host kernels, once the model is prepared for
    /// inference ([`T5ForConditionalGeneration::for_inference`]).
    pub(super) packed_head: Option<Arc<PackedWeight>>,
    device: Device,
}

/// T5's own encoder, or a frozen BERT-family one (genret's warm start).
#[derive(Debug, Clone)]
enum Encoder {
    T5 {
        blocks: Vec<T5Block>,
        norm: Tensor,
    },
    Bert {
        bert: Box<BertModel>,
        /// [`Config::lexical_memory`].
        lexical: Option<LexicalMemory>,
    },
}

/// [`Config::lexical_memory`]: the trainable table and, when it has rows for some tokens
/// only, each encoder token's row (`u32::MAX`: none).
#[derive(Debug, Clone)]
struct LexicalMemory {
    table: Tensor,
    row_of: Option<Vec<u32>>,
}

/// BERT's input ids for genret's: ids past BERT's vocabulary (genret's added special tokens,
/// which prefix every encoder input) map onto rows 1..=99, `[unused0]`..`[unused98]` in
/// BERT's WordPiece vocabularies: rows pretraining never used, so they mark the task without
/// meaning anything else.
fn bert_ids(ids: &Tensor, vocab: usize) -> candle_core::Result<Tensor> {
    let vocab = vocab as u32;
    let (b, s) = ids.dims2()?;
    let mapped: Vec<u32> = ids
        .flatten_all()?
        .to_vec1::<u32>()?
        .into_iter()
        .map(|id| {
            if id < vocab {
                id
            } else {
                1 + (id - vocab) % 99
            }
        })
        .collect();
    Tensor::from_vec(mapped, (b, s), ids.device())
}

impl T5ForConditionalGeneration {
    /// Builds the model over `params` (which it shares: training updates them in place).
    pub fn new(config: &Config, params: &Params) -> Result<Self> {
        let p = Getter(params);
        let shared_w = p.get("shared.weight")?;
        let device = shared_w.device().clone();
        let encoder = match &config.bert_encoder {
            Some(b) => {
                if b.hidden_size != config.d_model {
                    return Err(Error::Model(format!(
                        "the BERT encoder's hidden size {} differs from d_model {}",
                        b.hidden_size, config.d_model
                    )));
                }
                let tensors = params
                    .iter()
                    .filter(|(name, _)| is_frozen(name))
                    .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
                    .collect();
                let lexical = if config.lexical_memory {
                    let table = p.get("encoder.lexical.weight")?;
                    let row_of = config.lexical_tokens.as_ref().map(|tokens| {
                        let mut row_of = vec![u32::MAX; b.vocab_size];
                        for (row, &t) in tokens.iter().enumerate() {
                            if let Some(slot) = row_of.get_mut(t as usize) {
                                *slot = row as u32;
                            }
                        }
                        row_of
                    });
                    Some(LexicalMemory { table, row_of })
                } else {
                    None
                };
                Encoder::Bert {
                    bert: Box::new(BertModel::from_tensors(b.clone(), tensors, &device)?),
                    lexical,
                }
            }
            None => Encoder::T5 {
                blocks: (0..config.num_layers)
                    .map(|i| T5Block::new(&p, "encoder", i, config))
                    .collect::<Result<_>>()?,
                norm: p.get("encoder.final_layer_norm.weight")?,
            },
        };
        let decoder = (0..config.decoder_layers())
            .map(|i| T5Block::new(&p, "decoder", i, config))
            .collect::<Result<_>>()?;
        let lm_head = if config.tie_word_embeddings {
            shared_w.clone()
        } else {
            p.get("lm_head.weight")?
        };
        let output = match &config.output_tokens {
            Some(tokens) => Some(OutputVocab::new(tokens, config.vocab_size, &lm_head)?),
            None => None,
        };
        let copy = if config.copy_attention {
            Some(CopyHead {
                q: Linear::new(p.get("copy.q.weight")?, None),
                k: Linear::new(p.get("copy.k.weight")?, None),
                gate: p.get("copy.gate.weight")?,
            })
        } else {
            None
        };
        Ok(T5ForConditionalGeneration {
            config: config.clone(),
            shared: Embedding::new(shared_w, config.d_model),
            encoder,
            decoder,
            decoder_norm: p.get("decoder.final_layer_norm.weight")?,
            lm_head,
            output,
            copy,
            packed_head: None,
            device,
        })
    }

    /// This model prepared for search: on the CPU (see [`crate::device::host_kernels`]), every
    /// linear layer's weight and the decoder step's head (a BERT encoder's too,
    /// [`BertModel::for_inference`]) are copied into panels for the host kernels
    /// (`super::panels`), rounded to f16 with [`Precision::F16`] (half the bytes a step
    /// reads; products and sums stay f32) or quantized with [`Precision::Int8`]
    /// (`super::int8`). Costs a copy of those weights (half of it in f16, a quarter in int8).
    /// Elsewhere the model is returned as it is.
    ///
    /// The copy is taken now, so the model must not be trained afterwards: later updates of
    /// its parameters would not reach the step.
    pub fn for_inference(mut self, precision: Precision) -> Result<Self> {
        if !crate::device::host_kernels(&self.device) {
            return Ok(self);
        }
        let blocks = match &mut self.encoder {
            Encoder::T5 { blocks, .. } => blocks.iter_mut().chain(&mut self.decoder),
            Encoder::Bert { bert, .. } => {
                **bert = bert.as_ref().clone().for_inference(precision)?;
                [].iter_mut().chain(&mut self.decoder)
            }
        };
        for block in blocks {
            block.pack(precision).map_err(cerr)?;
        }
        let head = PackedWeight::pack(self.step_head(), precision).map_err(cerr)?;
        self.packed_head = Some(Arc::new(head));
        Ok(self)
    }

    /// The decoder step's head weight: the output vocabulary's rows when restricted.
    pub(super) fn step_head(&self) -> &Tensor {
        match &self.output {
            Some(o) => &o.head_rows,
            None => &self.lm_head,
        }
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Pads `seqs` into `(batch, max_len)` ids and a `(batch, max_len)` 0/1 mask.
    pub fn pad_batch(&self, seqs: &[Vec<u32>]) -> Result<(Tensor, Tensor)> {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut ids = Vec::with_capacity(seqs.len() * len);
        let mut mask = Vec::with_capacity(seqs.len() * len);
        for s in seqs {
            ids.extend_from_slice(s);
            ids.extend(std::iter::repeat_n(self.config.pad_token_id, len - s.len()));
            mask.extend(std::iter::repeat_n(1f32, s.len()));
            mask.extend(std::iter::repeat_n(0f32, len - s.len()));
        }
        let ids = Tensor::from_vec(ids, (seqs.len(), len), &self.device).map_err(cerr)?;
        let mask = Tensor::from_vec(mask, (seqs.len(), len), &self.device).map_err(cerr)?;
        Ok((ids, mask))
    }

    fn encode_mode(&self, ids: &Tensor, mask: &Tensor, mode: Mode) -> candle_core::Result<Encoded> {
        let (b, s) = ids.dims2()?;
        let mask_bias = mask_bias(mask)?;
        let states = match &self.encoder {
            Encoder::T5 { blocks, norm } => {
                let mut x = self.shared.forward(ids)?;
                let table = bias_table(blocks);
                let bias =
                    position_bias(table, &self.config, 0, s, s, true)?.broadcast_add(&mask_bias)?;
                for block in blocks {
                    let h = rms_norm(&x, &block.self_norm, block.eps, mode)?;
                    let (k, v) = block.self_attention.key_values(&h, mode)?;
                    x = (x + block.self_attention.attend(&h, &k, &v, &bias, mode)?)?;
                    x = block.ff.forward(&x, mode)?;
                }
                rms_norm(&x, norm, self.config.layer_norm_epsilon, mode)?
            }
            Encoder::Bert { bert, lexical } => {
                // Frozen: detached, so backward never walks into it.
                let ids = bert_ids(ids, bert.config.vocab_size)?;
                let states = bert.forward_inner(&ids, mask)?.detach();
                match lexical {
                    Some(table) => (states + self.lexical_rows(table, &ids)?)?,
                    None => states,
                }
            }
        };
        let copy = match &self.copy {
            Some(head) => {
                let rows: Vec<Vec<u32>> = ids
                    .to_vec2::<u32>()?
                    .iter()
                    .zip(mask.to_vec2::<f32>()?)
                    .map(|(ids, mask)| {
                        ids.iter()
                            .zip(mask)
                            .map(|(&id, m)| match self.output_row(id) {
                                Some(row) if m > 0.0 => row,
                                _ => u32::MAX,
                            })
                            .collect()
                    })
                    .collect();
                let bias: Vec<f32> = rows
                    .iter()
                    .flatten()
                    .map(|&r| if r == u32::MAX { -1e9 } else { 0.0 })
                    .collect();
                let outputs = match &self.output {
                    Some(o) => o.ids.dim(0)?,
                    None => self.config.vocab_size,
                };
                Some(CopySource {
                    keys: linear(&head.k, &states, mode)?,
                    bias: Tensor::from_vec(bias, (b, 1, s), &self.device)?,
                    rows: CopyRows::new(rows, outputs, &self.device)?,
                })
            }
            None => None,
        };
        Ok(Encoded {
            states,
            mask_bias,
            copy,
        })
    }

    /// The output row of token `id`: the id itself, or its row in the restricted vocabulary;
    /// `None` if the decoder cannot write it.
    fn output_row(&self, id: u32) -> Option<u32> {
        match &self.output {
            None => ((id as usize) < self.config.vocab_size).then_some(id),
            Some(o) => o
                .row_of
                .get(id as usize)
                .copied()
                .filter(|&r| r != u32::MAX),
        }
    }

    /// The copy head's attention `(b, t, src_len)` and gate `(b, t, 1)` for decoder states
    /// `h` `(b, t, d_model)`.
    fn copy_parts(
        &self,
        head: &CopyHead,
        h: &Tensor,
        src: &CopySource,
        mode: Mode,
    ) -> candle_core::Result<(Tensor, Tensor)> {
        let q = (linear(&head.q, h, mode)? * (self.config.d_model as f64).powf(-0.5))?;
        let scores = matmul(&q, &src.keys.t()?, mode)?.broadcast_add(&src.bias)?;
        let attn = softmax(&scores, mode)?;
        let z = h.broadcast_matmul(&head.gate.t()?)?;
        // sigmoid from differentiable primitives.
        let gate = (z.neg()?.exp()? + 1.0)?.recip()?;
        Ok((attn, gate))
    }

    /// The encoder output of a batch whose frozen encoder states were computed beforehand
    /// (`states` `(batch, len, d_model)` of the padded `ids` with `mask`, as
    /// [`frozen_states`](Self::frozen_states) gives them): what the encoder would give,
    /// with the trainable [`Config::lexical_memory`] added. Models without a copy head.
    pub fn encoded_from_states(
        &self,
        states: Tensor,
        ids: &Tensor,
        mask: &Tensor,
    ) -> Result<Encoded> {
        let states = match &self.encoder {
            Encoder::Bert {
                bert,
                lexical: Some(table),
            } => {
                let run = || -> candle_core::Result<Tensor> {
                    let ids = bert_ids(ids, bert.config.vocab_size)?;
                    states + self.lexical_rows(table, &ids)?
                };
                run().map_err(cerr)?
            }
            _ => states,
        };
        Encoded::from_states(states, mask)
    }

    /// [`Config::lexical_memory`]'s vectors of `ids` `(batch, len)`, scaled: `(batch, len,
    /// d_model)`.
    fn lexical_rows(&self, memory: &LexicalMemory, ids: &Tensor) -> candle_core::Result<Tensor> {
        let scale = (self.config.d_model as f64).sqrt();
        let Some(row_of) = &memory.row_of else {
            return Embedding::new(memory.table.clone(), self.config.d_model).forward(ids)? * scale;
        };
        let (b, s) = ids.dims2()?;
        let (rows, keep): (Vec<u32>, Vec<f32>) = ids
            .flatten_all()?
            .to_vec1::<u32>()?
            .into_iter()
            .map(|id| match row_of.get(id as usize).copied() {
                Some(r) if r != u32::MAX => (r, scale as f32),
                _ => (0, 0.0),
            })
            .unzip();
        let rows = Tensor::from_vec(rows, b * s, &self.device)?;
        let keep = Tensor::from_vec(keep, (b * s, 1), &self.device)?;
        memory
            .table
            .index_select(&rows, 0)?
            .broadcast_mul(&keep)?
            .reshape((b, s, self.config.d_model))
    }

    /// The frozen encoder's states of a padded batch, without the trainable parts that
    /// [`encoded_from_states`](Self::encoded_from_states) adds: what a training run can
    /// compute once and cache. An error for a trainable (T5) encoder.
    pub fn frozen_states(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        match &self.encoder {
            Encoder::Bert { bert, .. } => {
                let run = || -> candle_core::Result<Tensor> {
                    let ids = bert_ids(ids, bert.config.vocab_size)?;
                    Ok(bert.forward_inner(&ids, mask)?.detach())
                };
                run().map_err(cerr)
            }
            Encoder::T5 { .. } => Err(Error::Model(
                "a T5 encoder trains with the decoder: its states cannot be cached".into(),
            )),
        }
    }

    /// Runs the encoder once over a padded batch (`ids`, `mask` from [`pad_batch`](Self::pad_batch)).
    pub fn encode(&self, ids: &Tensor, mask: &Tensor) -> Result<Encoded> {
        self.encode_mode(ids, mask, Mode::Infer).map_err(cerr)
    }

    /// Full teacher-forced pass: the final decoder states `(batch, tgt_len, d_model)` for
    /// decoder inputs `dec_ids` (targets shifted right, starting with
    /// `decoder_start_token_id`), and the encoder's output; [`head`](Self::head) turns the
    /// states into logits.
    fn forward_mode(
        &self,
        ids: &Tensor,
        mask: &Tensor,
        dec_ids: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<(Tensor, Encoded)> {
        let enc = self.encode_mode(ids, mask, mode)?;
        let x = self.decode_states(&enc, dec_ids, mode)?;
        Ok((x, enc))
    }

    /// The decoder's final states `(batch, tgt_len, d_model)` for decoder inputs `dec_ids`
    /// over an encoder output.
    fn decode_states(
        &self,
        enc: &Encoded,
        dec_ids: &Tensor,
        mode: Mode,
    ) -> candle_core::Result<Tensor> {
        let (_, t) = dec_ids.dims2()?;
        let mut x = self.shared.forward(dec_ids)?;
        let table = bias_table(&self.decoder);
        let causal: Vec<f32> = (0..t)
            .flat_map(|q| (0..t).map(move |k| if k > q { -1e9 } else { 0.0 }))
            .collect();
        let causal = Tensor::from_vec(causal, (1, 1, t, t), &self.device)?;
        let self_bias =
            position_bias(table, &self.config, 0, t, t, false)?.broadcast_add(&causal)?;
        for block in &self.decoder {
            let h = rms_norm(&x, &block.self_norm, block.eps, mode)?;
            let (k, v) = block.self_attention.key_values(&h, mode)?;
            x = (x + block.self_attention.attend(&h, &k, &v, &self_bias, mode)?)?;
            let (cross, norm) = block.cross_attention.as_ref().expect("decoder block");
            let h = rms_norm(&x, norm, block.eps, mode)?;
            let (k, v) = cross.key_values(&enc.states, mode)?;
            x = (x + cross.attend(&h, &k, &v, &enc.mask_bias, mode)?)?;
            x = block.ff.forward(&x, mode)?;
        }
        rms_norm(&x, &self.decoder_norm, self.config.layer_norm_epsilon, mode)
    }

    /// Logits of decoder states over the output vocabulary: every token, or the allowed rows
    /// of [`Config::output_tokens`] in their order. HF scales the states by d_model^-0.5
    /// before the head where [`Config::scales_head`] says.
    fn head(&self, x: &Tensor, mode: Mode) -> candle_core::Result<Tensor> {
        let x = if self.config.scales_head() {
            (x * (self.config.d_model as f64).powf(-0.5))?
        } else {
            x.clone()
        };
        let selected;
        let weight = match (&self.output, mode) {
            (None, _) => &self.lm_head,
            (Some(o), Mode::Infer) => &o.head_rows,
            (Some(o), Mode::Train) => {
                selected = self.lm_head.index_select(&o.ids, 0)?;
                &selected
            }
        };
        if x.rank() == 2 && x.dim(0)? <= SMALL_ROWS {
            // A decoder step's few rows: `W @ x^T` makes the weight the left operand, which
            // gemm streams without first packing a transposed copy of it (1.7 ms instead of
            // 2.4 ms for 10 rows over 16k tokens).
            return weight.matmul(&x.t()?)?.t()?.contiguous();
        }
        x.broadcast_matmul(&weight.t()?)
    }

    /// Scores over the output rows `(..., rows)` spread over the whole vocabulary
    /// `(..., vocab)`, `-inf` outside the output vocabulary.
    fn full_vocab(&self, scores: Tensor) -> candle_core::Result<Tensor> {
        let Some(o) = &self.output else {
            return Ok(scores);
        };
        let dims = scores.dims().to_vec();
        let rows = scores.elem_count() / dims[dims.len() - 1];
        let full = o.scatter(&scores.reshape((rows, dims[dims.len() - 1]))?)?;
        let mut out_dims = dims;
        *out_dims.last_mut().expect("rank >= 1") = self.config.vocab_size;
        full.reshape(out_dims)
    }

    /// Scores `(batch, tgt_len, vocab)` of a teacher-forced pass, with inference ops: logits,
    /// or log-probs for a model with a copy head (whose mixture has no logits).
    pub fn forward(&self, ids: &Tensor, mask: &Tensor, dec_ids: &Tensor) -> Result<Tensor> {
        let run = || -> candle_core::Result<Tensor> {
            let (x, enc) = self.forward_mode(ids, mask, dec_ids, Mode::Infer)?;
            let logits = self.head(&x, Mode::Infer)?;
            let (Some(head), Some(src)) = (&self.copy, &enc.copy) else {
                return self.full_vocab(logits);
            };
            let (b, t, out) = logits.dims3()?;
            let (attn, gate) = self.copy_parts(head, &x, src, Mode::Infer)?;
            let s = attn.dim(2)?;
            let logp = mix_copy(
                &logits.reshape((b * t, out))?,
                &attn.reshape((b * t, s))?,
                &gate.reshape((b * t, 1))?,
                &src.rows,
                t,
            )?;
            self.full_vocab(logp.reshape((b, t, out))?)
        };
        run().map_err(cerr)
    }

    /// Mean token cross-entropy of `targets` (each ending with EOS) given `sources`, with
    /// differentiable ops: call `.backward()` on the result to train.
    pub fn loss(&self, sources: &[Vec<u32>], targets: &[Vec<u32>]) -> Result<Tensor> {
        let (ids, mask) = self.pad_batch(sources)?;
        let enc = self.encode_mode(&ids, &mask, Mode::Train).map_err(cerr)?;
        self.loss_encoded(&enc, targets)
    }

    /// [`loss`](Self::loss) over an encoder output computed beforehand (a frozen encoder's
    /// cached states, [`Encoded::from_states`]): the decoder's part of a training step.
    pub fn loss_encoded(&self, enc: &Encoded, targets: &[Vec<u32>]) -> Result<Tensor> {
        if self.copy.is_some() && enc.copy.is_none() {
            return Err(Error::Model(
                "a model with a copy head needs the source tokens: use loss, not cached states"
                    .into(),
            ));
        }
        let start = self.config.decoder_start_token_id;
        let shifted: Vec<Vec<u32>> = targets
            .iter()
            .map(|t| {
                std::iter::once(start)
                    .chain(t[..t.len() - 1].iter().copied())
                    .collect()
            })
            .collect();
        let (dec_ids, tgt_mask) = self.pad_batch(&shifted)?;
        // Labels index the output rows: token ids, or rows of the restricted vocabulary.
        let rows: Vec<Vec<u32>> = targets
            .iter()
            .map(|t| {
                t.iter()
                    .map(|&id| {
                        self.output_row(id).ok_or_else(|| {
                            Error::InvalidInput(format!(
                                "target token {id} is outside the model's output vocabulary"
                            ))
                        })
                    })
                    .collect::<Result<Vec<u32>>>()
            })
            .collect::<Result<_>>()?;
        let (labels, _) = self.pad_batch(&rows)?;
        let run = || -> candle_core::Result<Tensor> {
            let x = self.decode_states(enc, &dec_ids, Mode::Train)?;
            let logits = self.head(&x, Mode::Train)?;
            let (b, t, v) = logits.dims3()?;
            let mut picked =
                kernels::label_log_softmax(&logits.reshape((b * t, v))?, &labels.flatten_all()?)?
                    .reshape((b, t))?;
            if let (Some(head), Some(src)) = (&self.copy, &enc.copy) {
                // P(label) = (1 - g) P_vocab(label) + g * (attention on the label's copies).
                let (attn, gate) = self.copy_parts(head, &x, src, Mode::Train)?;
                let (b, t, s) = attn.dims3()?;
                let matches: Vec<f32> = (0..b)
                    .flat_map(|i| {
                        let (rows, src_rows) = (&rows[i], &src.rows.rows[i]);
                        (0..t).flat_map(move |j| {
                            let label = rows.get(j).copied().unwrap_or(u32::MAX);
                            src_rows
                                .iter()
                                .map(move |&r| f32::from(u8::from(r == label && r != u32::MAX)))
                        })
                    })
                    .collect();
                let matches = Tensor::from_vec(matches, (b, t, s), &self.device)?;
                let copied = (attn * matches)?.sum(2)?;
                let gate = gate.squeeze(2)?;
                let mixed = ((picked.exp()? * gate.affine(-1.0, 1.0)?)? + (copied * gate)?)?;
                picked = (mixed + 1e-12)?.log()?;
            }
            let total = (picked * &tgt_mask)?.sum_all()?;
            let count = tgt_mask.sum_all()?;
            total.neg()?.broadcast_div(&count)
        };
        run().map_err(cerr)
    }

    /// Starts decoding `beams` rows per query from an encoder output: computes every decoder
    /// layer's cross-attention keys and values once.
    pub fn start(&self, encoded: &Encoded, beams: usize) -> Result<DecoderCache> {
        let run = || -> candle_core::Result<DecoderCache> {
            let queries = encoded.states.dim(0)?;
            let cross_kv = self
                .decoder
                .iter()
                .map(|b| {
                    b.cross_attention
                        .as_ref()
                        .expect("decoder block")
                        .0
                        .key_values(&encoded.states, Mode::Infer)
                })
                .collect::<candle_core::Result<_>>()?;
            let host = crate::device::host_kernels(&self.device).then(|| {
                HostKv::new(
                    self.decoder.len(),
                    queries * beams,
                    self.config.num_heads * self.config.d_kv,
                )
            });
            Ok(DecoderCache {
                self_kv: vec![None; self.decoder.len()],
                cross_kv,
                cross_bias: encoded.mask_bias.contiguous()?,
                copy: encoded.copy.clone(),
                beams,
                queries,
                steps: 0,
                host,
            })
        };
        run().map_err(cerr)
    }

    /// One decoder step for every row: feeds `tokens` (one per row, at position
    /// `cache.steps`) and returns next-token log-probs `(rows, vocab)`, growing the cache.
    /// Cost: O(rows * (layers * d_model^2 + vocab * d_model)) plus attention over the steps so
    /// far and the source.
    pub fn step(&self, tokens: &[u32], cache: &mut DecoderCache) -> Result<Tensor> {
        match self.step_scores(tokens, cache)? {
            StepScores::Host(scores) => scores
                .to_tensor(self.config.vocab_size, &self.device)
                .map_err(cerr),
            StepScores::Tensor(t) => Ok(t),
        }
    }

    /// [`step`](Self::step) without spreading the scores over the whole vocabulary: on the
    /// host, log-probs are then computed for the tokens beam search asks for only
    /// ([`StepScores::pick`]).
    pub fn step_scores(&self, tokens: &[u32], cache: &mut DecoderCache) -> Result<StepScores> {
        if tokens.len() != cache.rows() {
            return Err(Error::Internal(format!(
                "step: {} tokens for {} rows",
                tokens.len(),
                cache.rows()
            )));
        }
        if cache.host.is_some() {
            return self
                .step_host(tokens, cache)
                .map(StepScores::Host)
                .map_err(cerr);
        }
        self.step_inner(tokens, cache)
            .map(StepScores::Tensor)
            .map_err(cerr)
    }

    fn step_inner(&self, tokens: &[u32], cache: &mut DecoderCache) -> candle_core::Result<Tensor> {
        let mode = Mode::Infer;
        let rows = tokens.len();
        let (queries, beams) = (cache.queries, cache.beams);
        let pos = cache.steps;
        let ids = Tensor::new(tokens, &self.device)?.unsqueeze(1)?;
        let mut x = self.shared.forward(&ids)?; // (rows, 1, d)
        let table = bias_table(&self.decoder);
        let self_bias = position_bias(table, &self.config, pos, 1, pos + 1, false)?;
        for (l, block) in self.decoder.iter().enumerate() {
            let h = rms_norm(&x, &block.self_norm, block.eps, mode)?;
            let (k_new, v_new) = block.self_attention.key_values(&h, mode)?;
            let (k, v) = match cache.self_kv[l].take() {
                Some((k, v)) => (
                    Tensor::cat(&[&k, &k_new], 2)?,
                    Tensor::cat(&[&v, &v_new], 2)?,
                ),
                None => (k_new, v_new),
            };
            x = (x + block.self_attention.attend(&h, &k, &v, &self_bias, mode)?)?;
            cache.self_kv[l] = Some((k, v));

            // Cross-attention: a query's beams are its `tq` positions against shared K/V.
            let (cross, norm) = block.cross_attention.as_ref().expect("decoder block");
            let h = rms_norm(&x, norm, block.eps, mode)?;
            let hq = h.reshape((queries, beams, self.config.d_model))?;
            let (ck, cv) = &cache.cross_kv[l];
            let out = cross.attend(&hq, ck, cv, &cache.cross_bias, mode)?;
            x = (x + out.reshape((rows, 1, self.config.d_model))?)?;
            x = block.ff.forward(&x, mode)?;
        }
        cache.steps += 1;
        let x = rms_norm(&x, &self.decoder_norm, self.config.layer_norm_epsilon, mode)?;
        let logits = self.head(&x.squeeze(1)?, mode)?;
        let logp = match (&self.copy, &cache.copy) {
            (Some(head), Some(src)) => {
                let hq = x.reshape((queries, beams, self.config.d_model))?;
                let (attn, gate) = self.copy_parts(head, &hq, src, mode)?;
                let s = attn.dim(2)?;
                mix_copy(
                    &logits,
                    &attn.reshape((rows, s))?,
                    &gate.reshape((rows, 1))?,
                    &src.rows,
                    beams,
                )?
            }
            _ => candle_nn::ops::log_softmax(&logits, D::Minus1)?,
        };
        self.full_vocab(logp)
    }
}
