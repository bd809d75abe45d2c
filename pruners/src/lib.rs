//! # tokensieve-pruners
//!
//! Visual-token selection and merging for vision-language and video LLMs: given the visual tokens of one sample
//! (`[N, D]` features plus optional side signals), keep the few that matter and hand them to the decoder.
//!
//! ```
//! use tokensieve_pruners::{prune, Budget, CpuBackend, Method, TokenSet};
//! let features = ndarray::Array2::from_shape_fn((576, 64), |(i, j)| ((i * 31 + j * 7) % 97) as f32 / 97.0);
//! let tokens = TokenSet::from_array(features)?;
//! let (method, _params) = Method::from_spec("todre:pivot=random,seed=3")?;
//! let kept = prune(&CpuBackend, &method, &tokens, Budget::Keep(64))?;
//! assert_eq!(kept.kept.len(), 64);
//! # Ok::<(), tokensieve_pruners::PruneError>(())
//! ```
//!
//! Every method is written once against the [`Backend`] trait and runs on ndarray ([`CpuBackend`]) or, with the
//! `torch` feature, on `tch::Tensor` ([`TchBackend`], CUDA when present). Conventions (ALGORITHMS.md §1): budgets
//! count tokens kept; kept indices are ascending; ties go to the lowest index; NaN and infinities are typed errors;
//! `k >= N` is the identity and `N = 0` gives an empty result.

#![warn(missing_docs)]

pub mod backend;
pub mod budget;
pub mod columns;
pub mod cpu;
pub mod error;
pub mod host;
pub mod in_decoder;
pub mod layout;
pub mod methods;
pub mod params;
pub mod positions;
pub mod primitives;
pub mod pruner;
pub mod selection;
pub mod simd;
pub mod token_set;
#[cfg(feature = "torch")]
pub mod torch;

pub use backend::Backend;
pub use budget::{Budget, ResolvedBudget};
pub use cpu::CpuBackend;
pub use error::{PruneError, Result, Signal};
pub use host::{retained_count, run_on_host, HostInputs, HostOutcome, RetainedCount};
pub use layout::Layout;
pub use methods::{lookup, Method, MethodInfo, METHODS};
pub use params::{ParamSpec, Params};
pub use pruner::{prune, prune_batch, Pruner};
pub use selection::Selection;
pub use token_set::TokenSet;
#[cfg(feature = "torch")]
pub use torch::TchBackend;
