//! device: where do the model's tensors live and its products run?
//!
//! `--device cpu|cuda|cuda:N|auto` on every command that runs a model. `auto` (the default)
//! is the first GPU when genret was built with the `cuda` feature (scripts/build_cuda.sh) and
//! one is present, else the CPU. The model, its training, the decoder step and the dense
//! encoder run on the chosen device; the FM-index, the docid trie and document scoring stay on
//! the CPU, and a decoder step sends only the allowed tokens' ids to the device and brings back
//! only their log-probabilities.
//!
//! On the CPU, genret uses hand-written kernels where candle's composed ops cost more (see
//! `model::kernels`); on any other device it uses candle's device-generic ops, which compute
//! the same function. `GENRET_PORTABLE_OPS=1` makes the CPU take the device-generic path too,
//! so that path's results can be checked on a machine without a GPU.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

pub use candle_core::Device;

use crate::error::{Error, Result};

/// What `--device` accepts, for help texts and errors.
pub const CHOICES: &str = "auto, cpu, cuda or cuda:N (N: the GPU's ordinal)";

/// The device a spec names: `auto` (or empty), `cpu`, `cuda`, `cuda:N`.
///
/// Errors: an unknown spec (UnknownName), `cuda` in a build without the `cuda` feature or
/// on a machine without that GPU (NotFound, saying how to get one or to use `cpu`).
pub fn parse(spec: &str) -> Result<Device> {
    let spec = spec.trim();
    match spec {
        "" | "auto" => Ok(auto()),
        "cpu" => Ok(Device::Cpu),
        _ => {
            let ordinal = match spec.strip_prefix("cuda") {
                Some("") => Some(0),
                Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()),
                None => None,
            };
            match ordinal {
                Some(n) => cuda(n, spec),
                None => Err(Error::UnknownName {
                    what: "device",
                    got: spec.to_string(),
                    expected: CHOICES.into(),
                }),
            }
        }
    }
}

/// The first GPU if this build has CUDA and a GPU answers, else the CPU.
pub fn auto() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = Device::new_cuda(0) {
        return device;
    }
    Device::Cpu
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize, spec: &str) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| Error::NotFound {
        what: "CUDA device",
        name: spec.to_string(),
        hint: format!("{e}; check the driver with nvidia-smi, or use --device cpu"),
    })
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize, spec: &str) -> Result<Device> {
    Err(Error::NotFound {
        what: "CUDA device",
        name: spec.to_string(),
        hint: "this genret was built without the `cuda` feature: build it with \
               scripts/build_cuda.sh, or use --device cpu"
            .into(),
    })
}

/// How models run their matrix products at search. `f32` (the default): exactly, results
/// equal between CPU and GPU up to summation order. `tf32`: a GPU's tensor cores, 10-bit
/// mantissas and f32 sums (several times the rate for large products); no effect on the CPU.
/// `f16`: the CPU's decoder step reads its weights rounded to f16 (half the bytes of a step
/// on few rows, which waits on memory), with products and sums in f32; no effect on a GPU.
/// `int8`: the CPU's packed products quantize weights per output column and inputs per row
/// to 8 bits and sum in i32 (a quarter of the bytes, four times the multiply-adds per
/// instruction with AVX-512 VNNI); no effect on a GPU.
/// Norms, softmax and log-probabilities stay f32 in every case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    F32,
    Tf32,
    F16,
    Int8,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Precision> {
        match s {
            "f32" => Ok(Precision::F32),
            "tf32" => Ok(Precision::Tf32),
            "f16" => Ok(Precision::F16),
            "int8" => Ok(Precision::Int8),
            other => Err(Error::UnknownName {
                what: "precision",
                got: other.to_string(),
                expected: "f32, tf32, f16 or int8".into(),
            }),
        }
    }
}

/// Sets how models of this process run their products from now on (see [`Precision`]).
pub fn set_precision(precision: Precision) {
    if precision == Precision::Int8 && !int8_is_fast() {
        tracing::warn!(
            "--precision int8 is fast with AVX-512 VNNI, which this CPU lacks: its products \
             run a plain loop, slower than f32's"
        );
    }
    candle_core::cuda::set_gemm_reduced_precision_f32(precision == Precision::Tf32);
    PRECISION.store(precision as u8, Ordering::Relaxed);
}

/// What [`set_precision`] last set; `f32` before.
pub fn precision() -> Precision {
    match PRECISION.load(Ordering::Relaxed) {
        1 => Precision::Tf32,
        2 => Precision::F16,
        3 => Precision::Int8,
        _ => Precision::F32,
    }
}

/// Whether this CPU runs int8 products with AVX-512 VNNI (else a plain loop).
fn int8_is_fast() -> bool {
    #[cfg(target_arch = "x86_64")]
    return crate::simd::has_avx512_vnni();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

static PRECISION: AtomicU8 = AtomicU8::new(Precision::F32 as u8);

/// A device's name as `--device` spells it (`cpu`, `cuda:0`).
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Whether the CPU-only kernels may run on tensors of `device`: on the CPU, unless
/// `GENRET_PORTABLE_OPS` asks for the device-generic path.
pub fn host_kernels(device: &Device) -> bool {
    device.is_cpu() && !portable_ops()
}

/// `GENRET_PORTABLE_OPS` set to anything but empty or `0`; read once per process.
pub fn portable_ops() -> bool {
    static PORTABLE: OnceLock<bool> = OnceLock::new();
    *PORTABLE.get_or_init(|| {
        std::env::var("GENRET_PORTABLE_OPS").is_ok_and(|v| !v.is_empty() && v != "0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling_and_names_it_back() {
        assert!(parse("cpu").unwrap().is_cpu());
        assert_eq!(name(&parse(" cpu ").unwrap()), "cpu");
        // Without a GPU (every CI machine) auto is the CPU.
        #[cfg(not(feature = "cuda"))]
        assert!(parse("auto").unwrap().is_cpu() && parse("").unwrap().is_cpu());
        for bad in ["gpu", "cuda:", "cuda:x", "cuda0", "CPU"] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("unknown device") && err.contains("cuda:N"),
                "{err}"
            );
        }
    }

    #[test]
    fn precision_names() {
        assert_eq!("tf32".parse::<Precision>().unwrap(), Precision::Tf32);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("f16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        let err = "bf16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("f32, tf32, f16 or int8"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_in_a_cpu_build_says_how_to_get_one() {
        for spec in ["cuda", "cuda:1"] {
            let err = parse(spec).unwrap_err().to_string();
            assert!(
                err.contains("built without the `cuda` feature")
                    && err.contains("scripts/build_cuda.sh")
                    && err.contains("--device cpu"),
                "{err}"
            );
        }
    }
}
