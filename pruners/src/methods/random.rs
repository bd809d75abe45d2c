//! Random baseline: `k` tokens drawn uniformly without replacement from a seeded generator.
//!
//! `O(N)` time and memory. The generator is SplitMix64, so a seed gives the same picks on every platform and
//! backend. Every token-pruning paper reports it as the floor a method must beat.

use crate::backend::Backend;
use crate::error::Result;
use crate::params::{ParamSpec, Params};
use crate::primitives::SplitMix64;
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// Uniform random selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomPick {
    /// Seed.
    pub seed: u64,
}

impl RandomPick {
    /// Parameters and defaults.
    pub const PARAMS: [ParamSpec; 1] = [ParamSpec { name: "seed", default: "0", help: "seed of the draw" }];

    /// Builds from parameters.
    pub fn from_params(p: &Params) -> Result<Self> {
        Ok(RandomPick { seed: p.get("seed")? })
    }
}

impl Pruner for RandomPick {
    fn name(&self) -> &'static str {
        "random"
    }

    fn select<B: Backend>(&self, _: &B, tokens: &TokenSet<B::Matrix>, k: usize) -> Result<Selection<B::Matrix>> {
        Ok(Selection::from_unsorted(SplitMix64::new(self.seed).sample(tokens.len(), k), k))
    }
}
