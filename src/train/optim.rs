//! The optimiser: AdamW with its moments kept for an exact resume, one fused pass per parameter,
//! the learning-rate schedule and the gradient norm.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rayon::prelude::*;

use super::TrainConfig;
use crate::device;
use crate::error::{Error, Result, cerr};
use crate::model::{self, Params};

/// AdamW with its moments, savable for exact resumption.
pub struct AdamW {
    m: BTreeMap<String, Tensor>,
    v: BTreeMap<String, Tensor>,
    pub step: usize,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    pub fn new(params: &Params, weight_decay: f64) -> Result<AdamW> {
        let zeros = |t: &Tensor| t.zeros_like().map_err(cerr);
        let mut m = BTreeMap::new();
        let mut v = BTreeMap::new();
        for (name, var) in params.iter().filter(|(n, _)| !model::is_frozen(n)) {
            m.insert(name.clone(), zeros(var.as_tensor())?);
            v.insert(name.clone(), zeros(var.as_tensor())?);
        }
        Ok(AdamW {
            m,
            v,
            step: 0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
        })
    }

    /// One update with learning rate `lr`, gradients scaled by `scale` (clipping).
    pub fn update(
        &mut self,
        params: &Params,
        grads: &candle_core::backprop::GradStore,
        lr: f64,
        scale: f64,
    ) -> Result<()> {
        self.step += 1;
        for (name, var) in params.iter().filter(|(n, _)| !model::is_frozen(n)) {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            let theta = var.as_tensor();
            // No decay on norms and position biases (1-D or tiny tables), as is usual.
            let decay = if theta.rank() > 1 && !name.contains("relative_attention_bias") {
                self.weight_decay
            } else {
                0.0
            };
            let h = AdamStep::new(
                (self.beta1, self.beta2),
                self.step,
                self.eps,
                lr,
                decay,
                scale,
            );
            let run = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
                if !device::host_kernels(theta.device()) {
                    return h.apply_tensors(g, &self.m[name], &self.v[name], theta);
                }
                let (m, v, new) = model::kernels::with_f32s(
                    &[g, &self.m[name], &self.v[name], theta],
                    "adamw",
                    |s| h.apply(s[0], s[1], s[2], s[3]),
                )?;
                let shape = theta.shape();
                Ok((
                    Tensor::from_vec(m, shape, theta.device())?,
                    Tensor::from_vec(v, shape, theta.device())?,
                    Tensor::from_vec(new, shape, theta.device())?,
                ))
            };
            let (m, v, new) = run().map_err(cerr)?;
            var.set(&new).map_err(cerr)?;
            self.m.insert(name.clone(), m);
            self.v.insert(name.clone(), v);
        }
        Ok(())
    }

    pub(super) fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = HashMap::new();
        for (k, t) in &self.m {
            tensors.insert(format!("m.{k}"), t.clone());
        }
        for (k, t) in &self.v {
            tensors.insert(format!("v.{k}"), t.clone());
        }
        model::save_tensors(path, &tensors)
    }

    pub(super) fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let mut tensors =
            candle_core::safetensors::load(path, device).map_err(|e| Error::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        for (prefix, map) in [("m", &mut self.m), ("v", &mut self.v)] {
            for (k, t) in map.iter_mut() {
                *t = tensors
                    .remove(&format!("{prefix}.{k}"))
                    .ok_or_else(|| Error::Corrupt {
                        path: path.to_path_buf(),
                        message: format!("optimizer state lacks {prefix}.{k}"),
                    })?;
            }
        }
        Ok(())
    }
}

/// The constants of one AdamW update: gradient scale (clipping), moment decays, their bias
/// corrections `c = 1 - beta^t`, epsilon, learning rate, and `keep = 1 - lr * weight_decay`.
struct AdamStep {
    scale: f32,
    b1: f32,
    b2: f32,
    c1: f32,
    c2: f32,
    eps: f32,
    lr: f32,
    keep: f32,
}

impl AdamStep {
    /// The constants of update number `step` (1-based) with the given moment decays, epsilon,
    /// learning rate, weight decay and gradient scale.
    fn new(
        (b1, b2): (f64, f64),
        step: usize,
        eps: f64,
        lr: f64,
        weight_decay: f64,
        scale: f64,
    ) -> AdamStep {
        let t = step as i32;
        AdamStep {
            scale: scale as f32,
            b1: b1 as f32,
            b2: b2 as f32,
            c1: (1.0 - b1.powi(t)) as f32,
            c2: (1.0 - b2.powi(t)) as f32,
            eps: eps as f32,
            lr: lr as f32,
            keep: (1.0 - lr * weight_decay) as f32,
        }
    }

    /// New `(m, v, theta)` from gradient `g`, moments `m`, `v` and parameter `theta` (equal
    /// lengths), in one parallel pass.
    fn apply(
        &self,
        g: &[f32],
        m: &[f32],
        v: &[f32],
        theta: &[f32],
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        const CHUNK: usize = 1 << 14;
        let n = theta.len();
        let (mut m2, mut v2, mut t2) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
        m2.par_chunks_mut(CHUNK)
            .zip(v2.par_chunks_mut(CHUNK))
            .zip(t2.par_chunks_mut(CHUNK))
            .enumerate()
            .for_each(|(c, ((m2, v2), t2))| {
                let at = c * CHUNK;
                for i in 0..m2.len() {
                    let g = g[at + i] * self.scale;
                    let m = self.b1 * m[at + i] + (1.0 - self.b1) * g;
                    let v = self.b2 * v[at + i] + (1.0 - self.b2) * g * g;
                    let step = (m / self.c1) / ((v / self.c2).sqrt() + self.eps);
                    m2[i] = m;
                    v2[i] = v;
                    t2[i] = theta[at + i] * self.keep - self.lr * step;
                }
            });
        (m2, v2, t2)
    }

    /// [`apply`](Self::apply) with tensor ops, for parameters on a device other than the CPU
    /// (where the parameters, gradients and moments stay).
    fn apply_tensors(
        &self,
        g: &Tensor,
        m: &Tensor,
        v: &Tensor,
        theta: &Tensor,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let f = |x: f32| f64::from(x);
        let g = (g * f(self.scale))?;
        let m = ((m * f(self.b1))? + (&g * f(1.0 - self.b1))?)?;
        let v = ((v * f(self.b2))? + (g.sqr()? * f(1.0 - self.b2))?)?;
        let step = ((&m / f(self.c1))? / ((&v / f(self.c2))?.sqrt()? + f(self.eps))?)?;
        let new = ((theta * f(self.keep))? - (step * f(self.lr))?)?;
        Ok((m, v, new))
    }
}

/// Learning rate at `step` (0-based) of `total`: linear warm-up, then linear decay to 0.
pub fn learning_rate(config: &TrainConfig, step: usize, total: usize) -> f64 {
    let warm = ((total as f64 * config.warmup).round() as usize).max(1);
    if step < warm {
        config.lr * (step + 1) as f64 / warm as f64
    } else {
        let rest = (total - warm).max(1) as f64;
        config.lr * (1.0 - (step - warm) as f64 / rest).max(0.0)
    }
}

pub(super) fn global_norm(
    params: &Params,
    grads: &candle_core::backprop::GradStore,
) -> Result<f64> {
    let mut sum = 0.0f64;
    // Off the CPU, the squares are summed on the device and read back once, not per parameter.
    let mut on_device: Option<Tensor> = None;
    for var in params.values() {
        if let Some(g) = grads.get(var.as_tensor()) {
            if !device::host_kernels(g.device()) {
                let squares = g.sqr().and_then(|s| s.sum_all()).map_err(cerr)?;
                on_device = Some(match on_device {
                    Some(total) => (total + squares).map_err(cerr)?,
                    None => squares,
                });
                continue;
            }
            // Fixed chunks summed in order: the same bits whatever rayon's split.
            let chunks: Vec<f64> = model::kernels::with_f32s(&[g], "gradient norm", |s| {
                s[0].par_chunks(1 << 14)
                    .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                    .collect()
            })
            .map_err(cerr)?;
            sum += chunks.iter().sum::<f64>();
        }
    }
    if let Some(total) = on_device {
        sum += f64::from(total.to_scalar::<f32>().map_err(cerr)?);
    }
    Ok(sum.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fused update and the tensor-op one (a GPU's) equal AdamW written with candle's tensor
    /// ops (the reference).
    #[test]
    fn fused_adam_step_matches_the_composed_update() {
        let dev = Device::Cpu;
        let n = 40_000; // more than one parallel chunk
        let vals = |salt: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + salt) % 1013) as f32 / 1013.0 * scale - scale / 2.0)
                .collect()
        };
        let (g, m, theta) = (vals(1, 2.0), vals(2, 0.2), vals(3, 1.0));
        let v: Vec<f32> = vals(4, 0.02).iter().map(|x| x.abs()).collect();
        let (b1, b2, t, eps, lr, wd, scale) = (0.9f64, 0.999f64, 3, 1e-8, 1e-3, 0.01, 0.5);
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let h = AdamStep::new((b1, b2), t as usize, eps, lr, wd, scale);
        let (m2, v2, t2) = h.apply(&g, &m, &v, &theta);

        let t_ = |x: &Vec<f32>| Tensor::from_slice(x, n, &dev).unwrap();
        // The tensor-op update (what a GPU runs) against the composed formula written out.
        let reference = || -> candle_core::Result<(Tensor, Tensor, Tensor)> {
            let g = (t_(&g) * scale)?;
            let m = ((t_(&m) * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((t_(&v) * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let step = ((&m / c1)? / ((&v / c2)?.sqrt()? + eps)?)?;
            let new = ((t_(&theta) * (1.0 - lr * wd))? - (step * lr)?)?;
            Ok((m, v, new))
        };
        let (rm, rv, rt) = reference().unwrap();
        let (pm, pv, pt) = h
            .apply_tensors(&t_(&g), &t_(&m), &t_(&v), &t_(&theta))
            .unwrap();
        for (portable, reference) in [(&pm, &rm), (&pv, &rv), (&pt, &rt)] {
            let (p, r) = (
                portable.to_vec1::<f32>().unwrap(),
                reference.to_vec1::<f32>().unwrap(),
            );
            let worst = p
                .iter()
                .zip(&r)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-6))
                .fold(0f32, f32::max);
            assert!(
                worst < 1e-5,
                "tensor-op update: relative difference {worst}"
            );
        }
        for (fused, reference) in [(m2, rm), (v2, rv), (t2, rt)] {
            let reference = reference.to_vec1::<f32>().unwrap();
            let worst = fused
                .iter()
                .zip(&reference)
                .map(|(a, b)| (a - b).abs() / b.abs().max(1e-6))
                .fold(0f32, f32::max);
            assert!(worst < 1e-5, "relative difference {worst}");
        }
    }
}
