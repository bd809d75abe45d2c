//! Position ids of a prompt after pruning (ALGORITHMS.md §1.5). The type and the span bookkeeping live in the
//! pruners crate (`tokensieve_pruners::positions`), next to the selections they describe, so the Python package
//! computes them without the models; decoders take them from here.

pub use tokensieve_pruners::positions::{span_positions, PositionIds, Rope, SpanPositions};
