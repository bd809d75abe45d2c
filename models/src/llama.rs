//! Llama-architecture causal LMs on libtorch — Llama and Qwen2 (the same block with query/key/value biases) — with
//! RMSNorm, rotary embeddings, grouped-query attention through fused scaled-dot-product attention and a SwiGLU MLP,
//! a KV cache and greedy generation. Loads GGUF files (llama) or Hugging Face directories (`config.json` +
//! `model.safetensors` or sharded `model-*.safetensors` with their index; `llama` and `qwen2`).
//!
//! Rotary layouts: GGUF stores the query and key projections permuted for llama.cpp, whose heads rotate adjacent
//! pairs `(x[2i], x[2i+1])`; Hugging Face checkpoints rotate the two halves (`rotate_half`, pairs `(x[i], x[i+d/2])`).
//! Both use `θ_i = base^(−2i/d)` and are the same model; the loader records which layout the weights are in.
//! Weights are converted once, at load, to the compute dtype the caller picks; [`Llama::set_weights`] can then hold
//! the linear layers as int8 for decoding on a CPU ([`crate::linear`]).
//!
//! In-decoder pruning (ALGORITHMS.md §1.3, T-llm) has three entry points, all recomputing only the attention rows a
//! rule reads (§1.8): [`LayerDrop`] (a rule that returns kept offsets: FastV, PyramidDrop, ToDRE stage 2),
//! [`PrefillPlan`] (a rule that also sees the span's hidden states and may replace the kept rows and append synthetic
//! ones: HoliTom inner, SparseVLM) and, while decoding, [`StepKeys`] (a per-token selection of the cached image keys
//! that the deeper layers attend to, the full cache being kept: DyCoke). The rows come from the layer before a drop
//! ([`QueryRows::Last`], [`QueryRows::AfterSpan`]) or, for PyramidDrop, from the drop layer's own norm and q/k on
//! its input ([`QueryRows::OwnLast`], one extra projection per stage). Without them the forward pass is unchanged.

use crate::gguf::{Gguf, GgufError};
use crate::linear::{DecoderWeights, Linear};
use crate::positions::PositionIds;
use crate::safetensors::{Checkpoint, SafetensorsError};
use crate::sampling::{Sampling, TokenPicker};
use crate::weights::Weights;
use serde::Deserialize;
use std::path::Path;
use tch::{Device, Kind, TchError, Tensor};
use thiserror::Error;

/// Why the model could not load or run.
#[derive(Debug, Error)]
pub enum LlamaError {
    /// A weight is missing or does not fit the configuration.
    #[error(transparent)]
    Weights(#[from] crate::weights::WeightError),
    /// From the GGUF reader.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// From libtorch.
    #[error("libtorch: {}", crate::weights::brief(.0))]
    Torch(#[from] tch::TchError),
    /// From a safetensors checkpoint.
    #[error(transparent)]
    Checkpoint(#[from] SafetensorsError),
    /// config.json is unreadable or incomplete.
    #[error("{path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// An in-decoder rule failed (its own error is the source).
    #[error("in-decoder rule: {0}")]
    Rule(#[source] RuleError),
    /// The file holds another architecture.
    #[error("{path}: architecture `{found}` is not llama")]
    Architecture {
        /// The file.
        path: String,
        /// What it holds.
        found: String,
    },
}

/// The keys of a Hugging Face `llama` / `qwen2` `config.json` (or a VLM's `text_config`) the decoder reads, with
/// transformers' names; absent optional keys take transformers' defaults.
#[derive(Debug, serde::Deserialize)]
struct HfTextConfig {
    #[serde(default)]
    model_type: String,
    num_hidden_layers: usize,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<RopeParameters>,
    rope_scaling: Option<RopeParameters>,
    #[serde(default)]
    tie_word_embeddings: bool,
}

/// The `text_config.model_type`s whose decoder is this one: Llama, Qwen2 and the Qwen2 decoders of Qwen2-VL and
/// Qwen2.5-VL (M-RoPE, [`MRope`]).
const DECODERS: [&str; 6] = ["llama", "qwen2", "qwen3", "qwen2_vl_text", "qwen2_5_vl_text", "qwen3_vl_text"];

/// Multimodal rotary embeddings (Qwen2-VL and later): each of the `d/2` rotary frequencies turns with one of the
/// three position ids of a row (temporal, height, width). `mrope_section = [s_t, s_h, s_w]` (summing to `d/2`)
/// gives the first `s_t` frequencies to the temporal id, the next `s_h` to the height id and the last `s_w` to the
/// width id (Qwen2-VL, Qwen2.5-VL: transformers' `recomposition_frequencies`); `interleaved` (Qwen3-VL) deals them
/// out `t, h, w, t, h, w, ...` while each axis has frequencies left. Rows whose three ids are equal (text) rotate
/// exactly as 1-D RoPE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MRope {
    /// Frequencies per axis.
    pub section: [usize; 3],
    /// Qwen3-VL's interleaved layout.
    pub interleaved: bool,
}

impl MRope {
    /// The axis (0 temporal, 1 height, 2 width) of each of the `half` frequencies; errors when the section does not
    /// sum to `half`.
    pub fn axes(&self, half: usize) -> Result<Vec<usize>, String> {
        let [t, h, w] = self.section;
        if t + h + w != half {
            return Err(format!(
                "mrope_section {:?} sums to {}, but the rotary half is {half}",
                self.section,
                t + h + w
            ));
        }
        Ok(if self.interleaved {
            // transformers' Qwen3VL `apply_interleaved_mrope`: index j takes h when j % 3 == 1 and j < 3·s_h, w when
            // j % 3 == 2 and j < 3·s_w, t otherwise.
            (0..half)
                .map(|j| match j % 3 {
                    1 if j < 3 * h => 1,
                    2 if j < 3 * w => 2,
                    _ => 0,
                })
                .collect()
        } else {
            (0..half).map(|j| usize::from(j >= t) + usize::from(j >= t + h)).collect()
        })
    }
}

/// transformers 5's `rope_parameters` (Qwen2-VL and later add `mrope_section`; older configs keep the section in
/// `rope_scaling`).
#[derive(Debug, serde::Deserialize)]
struct RopeParameters {
    rope_theta: Option<f64>,
    mrope_section: Option<Vec<usize>>,
    #[serde(default)]
    mrope_interleaved: bool,
}

/// Hyper-parameters read from `llama.*` metadata.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LlamaConfig {
    /// Decoder layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention).
    pub kv_heads: usize,
    /// Width of one head (`hidden / heads` unless the config says otherwise, as Qwen3's `head_dim` does).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f64,
    /// Rotary base.
    pub rope_base: f64,
}

impl Llama {
    /// FFN (intermediate) size, read from the loaded weights.
    pub fn ffn_size(&self) -> usize {
        self.layers.first().map_or(0, |l| l.gate.out_features() as usize)
    }

    /// Holds the linear weights (every layer's projections and the LM head) as `weights` says: `Int8` quantises them
    /// in place, one layer at a time, so the peak is the dense model plus one layer's f32 copy ([`crate::linear`]).
    /// The embeddings, norms and biases stay in the compute dtype. Dense weights cannot be restored once quantised.
    pub fn set_weights(&mut self, weights: DecoderWeights) -> Result<(), LlamaError> {
        if weights == DecoderWeights::Dense {
            return Ok(());
        }
        let take = |l: &mut Linear| -> Result<(), TchError> {
            let dense = std::mem::replace(l, Linear::Dense(Tensor::new()));
            *l = dense.quantized()?;
            Ok(())
        };
        for l in &mut self.layers {
            for linear in [&mut l.q, &mut l.k, &mut l.v, &mut l.o, &mut l.gate, &mut l.up, &mut l.down] {
                take(linear)?;
            }
        }
        take(&mut self.lm_head)?;
        Ok(())
    }

    /// How the linear weights are held.
    pub fn weights(&self) -> DecoderWeights {
        match self.lm_head {
            Linear::Dense(_) => DecoderWeights::Dense,
            Linear::Int8 { .. } => DecoderWeights::Int8,
        }
    }

    /// Bytes of the linear weights a decode step reads (every layer's projections and the LM head).
    pub fn linear_bytes(&self) -> usize {
        let layers: usize =
            self.layers.iter().flat_map(|l| [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]).map(Linear::bytes).sum();
        layers + self.lm_head.bytes()
    }
}

/// How rotary embeddings pair the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeLayout {
    /// `(x[2i], x[2i+1])`: llama.cpp / GGUF.
    Interleaved,
    /// `(x[i], x[i+d/2])`: Hugging Face `rotate_half`.
    Halves,
}

struct Layer {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    qkv_bias: Option<(Tensor, Tensor, Tensor)>,
    /// Qwen3's per-head RMSNorm weights of queries and keys `[head_dim]`.
    qk_norm: Option<(Tensor, Tensor)>,
    o: Linear,
    ffn_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

impl Layer {
    /// The query, key and value biases (Qwen2), or none (Llama).
    fn biases(&self) -> (Option<&Tensor>, Option<&Tensor>, Option<&Tensor>) {
        match &self.qkv_bias {
            Some((q, k, v)) => (Some(q), Some(k), Some(v)),
            None => (None, None, None),
        }
    }

    /// Qwen3's query and key head norms, or none.
    fn head_norms(&self) -> (Option<&Tensor>, Option<&Tensor>) {
        match &self.qk_norm {
            Some((q, k)) => (Some(q), Some(k)),
            None => (None, None),
        }
    }
}

/// One layer's cached keys and values: `[B, kv_heads, capacity, head_dim]` buffers whose first `len` positions are
/// real. A step writes its positions in place; when the capacity runs out both buffers double, so a position is
/// copied O(1) times on average (a concatenation per step copies the whole cache every step: quadratic in the
/// answer's length).
struct LayerKv {
    k: Tensor,
    v: Tensor,
    len: i64,
}

/// Positions reserved beyond the prefill when a layer's buffers are first allocated (the first decoding steps then
/// never reallocate; later growth doubles).
const KV_RESERVE: i64 = 128;

impl LayerKv {
    /// Buffers holding `k`, `v` `[B, H, S, d]` with room for [`KV_RESERVE`] more positions.
    fn new(k: &Tensor, v: &Tensor) -> Result<Self, TchError> {
        let mut kv = LayerKv { k: k.f_empty_like()?, v: v.f_empty_like()?, len: 0 };
        kv.reserve(k.size()[2] + KV_RESERVE)?;
        kv.write(k, v)?;
        Ok(kv)
    }

    /// Grows both buffers to `capacity` positions (when they hold fewer), keeping the `len` real ones.
    fn reserve(&mut self, capacity: i64) -> Result<(), TchError> {
        let size = self.k.size();
        if size[2] >= capacity {
            return Ok(());
        }
        let shape = [size[0], size[1], capacity, size[3]];
        for buf in [&mut self.k, &mut self.v] {
            let grown = Tensor::f_empty(shape, (buf.kind(), buf.device()))?;
            grown.f_narrow(2, 0, self.len)?.f_copy_(&buf.f_narrow(2, 0, self.len)?)?;
            *buf = grown;
        }
        Ok(())
    }

    /// Writes `k`, `v` `[B, H, S, d]` after the real positions; returns views of all of them `[B, H, len, d]`.
    fn append(&mut self, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor), TchError> {
        self.write(k, v)?;
        self.views()
    }

    /// Writes `k`, `v` `[B, H, S, d]` after the real positions, growing the buffers when they are full.
    fn write(&mut self, k: &Tensor, v: &Tensor) -> Result<(), TchError> {
        let s = k.size()[2];
        if self.len + s > self.k.size()[2] {
            self.reserve((self.len + s).max(2 * self.k.size()[2]))?;
        }
        self.k.f_narrow(2, self.len, s)?.f_copy_(k)?;
        self.v.f_narrow(2, self.len, s)?.f_copy_(v)?;
        self.len += s;
        Ok(())
    }

    /// The real positions `[B, H, len, d]` (views into the buffers).
    fn views(&self) -> Result<(Tensor, Tensor), TchError> {
        Ok((self.k.f_narrow(2, 0, self.len)?, self.v.f_narrow(2, 0, self.len)?))
    }

    /// Bytes of `positions` positions of keys and values.
    fn bytes_of(&self, positions: i64) -> usize {
        let size = self.k.size();
        2 * (size[0] * size[1] * positions * size[3]) as usize * self.k.kind().elt_size_in_bytes()
    }
}

/// Per-layer cached keys and values, written in place into preallocated buffers ([`KvCache::bytes`] counts the
/// real positions, [`KvCache::reserved_bytes`] the allocation).
#[derive(Default)]
pub struct KvCache {
    entries: Vec<LayerKv>,
    /// Position id of the next token (original numbering: dropped tokens keep their ids used).
    next_position: i64,
    /// Per layer, tokens removed from that layer's cache (for contiguous renumbering).
    dropped: Vec<i64>,
    contiguous: bool,
    /// Batched (left-padded) decoding: which cached keys are real, and each row's next position id.
    batch: Option<(Tensor, Tensor)>,
}

impl KvCache {
    /// Positions held by the first layer (the whole sequence so far).
    pub fn len(&self) -> i64 {
        self.entries.first().map_or(0, |e| e.len)
    }

    /// Positions held by layer `i` (shorter than [`KvCache::len`] after an in-decoder drop).
    pub fn layer_len(&self, i: usize) -> i64 {
        self.entries.get(i).map_or(0, |e| e.len)
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of the cached positions (what the kept tokens cost: the figure pruning reduces).
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes_of(e.len)).sum()
    }

    /// Bytes allocated, spare capacity included.
    pub fn reserved_bytes(&self) -> usize {
        self.entries.iter().map(|e| e.bytes_of(e.k.size()[2])).sum()
    }
}

/// How position ids continue after tokens are dropped inside the decoder (ALGORITHMS.md §1.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PositionMode {
    /// Kept tokens keep their original ids, later tokens continue from the last original id + 1 (default, as
    /// FastV and the reference methods do).
    Original,
    /// The layers after the drop renumber their sequence without gaps; later tokens shift down by the number
    /// dropped in that layer.
    Contiguous,
}

/// Which attention rows an in-decoder rule reads at the layer before each of its drops (softmax probabilities over
/// every visible key, mean over heads; KV heads repeated for grouped-query attention): the pruners crate's
/// [`Rows`](tokensieve_pruners::in_decoder::Rows), which each rule declares.
pub use tokensieve_pruners::in_decoder::Rows as QueryRows;

/// An in-decoder rule: `(stage, attention rows, current span) -> kept offsets within the span`.
pub type DropRule<'a> = &'a mut dyn FnMut(usize, &[Vec<f32>], std::ops::Range<usize>) -> Vec<usize>;

/// An in-decoder drop plan (FastV, PyramidDrop, ToDRE stage 2; [`PrefillPlan`] for rules that merge or add rows):
/// before each layer of `layers` (ascending), tokens of the droppable span that `select` does not keep are removed
/// from the hidden states and from the KV cache of that and every later layer. `select(stage, rows, span)` receives
/// the stage number, the attention rows of the layer before (empty before layer 0) and the span as it is now (it
/// shrinks after each stage; it starts as `span`), and returns the kept offsets within that span.
pub struct LayerDrop<'a> {
    /// The layers that no longer see the tokens dropped just before them.
    pub layers: Vec<usize>,
    /// The droppable positions of this forward's sequence (usually the image tokens).
    pub span: std::ops::Range<usize>,
    /// Which attention rows the rule reads.
    pub rows: QueryRows,
    /// The rule.
    pub select: DropRule<'a>,
    /// How positions continue.
    pub positions: PositionMode,
}

impl<'a> LayerDrop<'a> {
    /// A single drop before `layer` fed with the last query's row (FastV's shape of rule).
    pub fn once(layer: usize, span: std::ops::Range<usize>, select: DropRule<'a>, positions: PositionMode) -> Self {
        LayerDrop { layers: vec![layer], span, rows: QueryRows::Last, select, positions }
    }
}

/// The error an in-decoder rule may return (its own typed error, boxed; [`LlamaError::Rule`] keeps it as the source
/// so callers can downcast it).
pub type RuleError = Box<dyn std::error::Error + Send + Sync>;

/// What a [`PrefillPlan`]'s rule sees at one stage.
pub struct StageView<'v> {
    /// The stage number (0-based).
    pub stage: usize,
    /// The attention rows of the layer before ([`QueryRows`]; empty before layer 0).
    pub rows: &'v [Vec<f32>],
    /// The span as it is now (it starts as the plan's span and changes after each stage).
    pub span: std::ops::Range<usize>,
    /// The span's hidden states `[span.len(), D]` entering this stage's layer (the previous layer's outputs), in
    /// the compute dtype; a view, no copy.
    pub hidden: &'v Tensor,
    /// For [`QueryRows::KeyNorms`] plans: the whole sequence's hidden states entering this layer through the
    /// decoder's final RMSNorm, `[S, D]` (what DART compares); `None` otherwise, so other rules pay nothing.
    pub normed: Option<&'v Tensor>,
}

/// What a [`PrefillPlan`]'s rule decides at one stage: the kept offsets within the span (ascending, unique), and
/// optionally new hidden states for those kept rows and synthetic rows that follow them.
///
/// The layer's sequence becomes `prefix | kept (or replace) | extra | suffix` and the span becomes the kept and
/// extra rows. Kept rows keep their position ids ([`PositionMode::Original`]); extra rows take the id of the last
/// row of the plan's original span (ALGORITHMS.md §1.5: synthetic tokens take the position of the last original
/// token of their unit), or the next ids when positions are [`PositionMode::Contiguous`]. Both tensors may be of any
/// float kind and device; they are converted to the decoder's.
#[derive(Debug)]
pub struct LayerPlan {
    /// Kept offsets within the span, ascending and unique.
    pub kept: Vec<usize>,
    /// `[kept.len(), D]`: the kept rows' new hidden states (merging rules such as HoliTom's inner stage).
    pub replace: Option<Tensor>,
    /// `[e, D]`: synthetic rows placed right after the kept rows (SparseVLM's recycled cluster tokens).
    pub extra: Option<Tensor>,
}

impl LayerPlan {
    /// Keeps `kept` unchanged and adds nothing (what a [`DropRule`] returns).
    pub fn keep(kept: Vec<usize>) -> Self {
        LayerPlan { kept, replace: None, extra: None }
    }
}

/// A prefill rule that sees the span's hidden states and may merge and add rows: `view -> plan`.
pub type StageRule<'a> = &'a mut dyn FnMut(StageView<'_>) -> Result<LayerPlan, RuleError>;

/// An in-decoder prefill plan: [`LayerDrop`] generalised to rules that merge kept rows and add synthetic ones
/// (HoliTom inner, SparseVLM). Before each layer of `layers` (ascending), `rule` sees a [`StageView`] and returns a
/// [`LayerPlan`], applied to the hidden states, the position ids and the KV cache of that and every later layer.
pub struct PrefillPlan<'a> {
    /// The layers that see each stage's result (the rows come from the layer before each, or from the layer itself
    /// with [`QueryRows::OwnLast`]).
    pub layers: Vec<usize>,
    /// The droppable positions of this forward's sequence (usually the image tokens).
    pub span: std::ops::Range<usize>,
    /// Which attention rows the rule reads.
    pub rows: QueryRows,
    /// The rule.
    pub rule: StageRule<'a>,
    /// How positions continue.
    pub positions: PositionMode,
}

/// What a decode step's key rule sees: the new token's attention row at layer `layer − 1` over every cached key
/// (softmax probabilities, mean over heads) and the span of the cache it may restrict.
pub struct StepView<'v> {
    /// The row `[T]` (`T` keys, the new one included).
    pub row: &'v [f32],
    /// The restrictable span of cache positions.
    pub span: std::ops::Range<usize>,
}

/// A decode-step rule: `view -> Some(kept offsets within the span)`, or `None` to attend to every key.
pub type StepRule<'a> = &'a mut dyn FnMut(StepView<'_>) -> Result<Option<Vec<usize>>, RuleError>;

/// A decode-time key selection for one generated token (DyCoke's dynamic KV): the rule reads the token's attention
/// row at layer `layer − 1`; layers `>= layer` then attend to the cached keys outside `span` and to the span offsets
/// it kept. The cache itself keeps every key (the selected ones are gathered for the attention only), so later
/// steps may select differently.
pub struct StepKeys<'a> {
    /// The first layer whose attention is restricted (`>= 1`).
    pub layer: usize,
    /// The restrictable cache positions (the image tokens).
    pub span: std::ops::Range<usize>,
    /// The rule.
    pub select: StepRule<'a>,
}

/// Qwen3-VL's DeepStack input: vision planes added to the visual rows of a prefill after its first layers.
pub struct DeepStack {
    /// The rows of the prefill's sequence that receive the planes (the visual placeholders), ascending.
    pub rows: Vec<usize>,
    /// One `[rows.len(), D]` plane per level (any float kind and device); level `i` is added after layer `i`.
    pub planes: Vec<Tensor>,
}

impl DeepStack {
    /// The planes' rows after a plan kept `kept` of the span `span` and the span became `new_span`: rows before the
    /// span stay, kept rows move up to their place, dropped rows lose their plane rows, rows after the span shift.
    fn follow(
        &mut self,
        span: &std::ops::Range<usize>,
        kept: &[usize],
        new_span: &std::ops::Range<usize>,
        device: Device,
    ) -> Result<(), TchError> {
        let (mut rows, mut keep) = (Vec::with_capacity(self.rows.len()), Vec::with_capacity(self.rows.len()));
        for (j, &r) in self.rows.iter().enumerate() {
            let moved = if r < span.start {
                Some(r)
            } else if r < span.end {
                kept.binary_search(&(r - span.start)).ok().map(|p| span.start + p)
            } else {
                Some(r - span.end + new_span.end)
            };
            if let Some(m) = moved {
                rows.push(m);
                keep.push(j as i64);
            }
        }
        if keep.len() != self.rows.len() {
            let index = Tensor::from_slice(&keep).f_to_device(device)?;
            self.planes = self.planes.iter().map(|p| p.f_index_select(0, &index)).collect::<Result<_, _>>()?;
        }
        self.rows = rows;
        Ok(())
    }
}

/// The rule of an in-decoder prefill edit, in either shape.
enum EditRule<'a> {
    Offsets(DropRule<'a>),
    Plan(StageRule<'a>),
}

/// [`LayerDrop`] and [`PrefillPlan`] in one form, for `Llama::run`.
struct Edit<'a> {
    layers: Vec<usize>,
    span: std::ops::Range<usize>,
    rows: QueryRows,
    rule: EditRule<'a>,
    positions: PositionMode,
}

impl<'a> From<LayerDrop<'a>> for Edit<'a> {
    fn from(d: LayerDrop<'a>) -> Self {
        Edit { layers: d.layers, span: d.span, rows: d.rows, rule: EditRule::Offsets(d.select), positions: d.positions }
    }
}

impl<'a> From<PrefillPlan<'a>> for Edit<'a> {
    fn from(p: PrefillPlan<'a>) -> Self {
        Edit { layers: p.layers, span: p.span, rows: p.rows, rule: EditRule::Plan(p.rule), positions: p.positions }
    }
}

/// The loaded model.
pub struct Llama {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Linear,
    device: Device,
    rope: RopeLayout,
    /// `θ^(−2i/d)`, `[d/2]` f32 on the device: computed once at load.
    inv_freq: Tensor,
    /// M-RoPE decoders: `[3, d/2]` f32, row `a` holding `inv_freq` where frequency `j` turns with axis `a` and 0
    /// elsewhere, so the angles of ids `[S, 3]` are one product `ids · table` (one nonzero term per angle: the
    /// same f32 value as transformers' per-axis products).
    mrope: Option<Tensor>,
}

enum MRopeTableError {
    Section(String),
    Torch(TchError),
}

/// The `[3, d/2]` table of [`Llama::mrope`].
fn mrope_table(m: &MRope, inv_freq: &Tensor) -> Result<Tensor, MRopeTableError> {
    let half = inv_freq.size()[0] as usize;
    let axes = m.axes(half).map_err(MRopeTableError::Section)?;
    let mask: Vec<f32> = (0..3).flat_map(|a| axes.iter().map(move |&x| if x == a { 1.0 } else { 0.0 })).collect();
    let table = || -> Result<Tensor, TchError> {
        Tensor::from_slice(&mask).f_reshape([3, half as i64])?.f_to_device(inv_freq.device())?.f_mul(inv_freq)
    };
    table().map_err(MRopeTableError::Torch)
}

/// The explicit position ids of a forward.
#[derive(Clone, Copy)]
enum At<'a> {
    /// One id per row, ascending.
    Sequence(&'a [i64]),
    /// `[temporal, height, width]` rows of ids.
    MRope(&'a [Vec<i64>; 3]),
}

/// cos and sin of every rotary angle at one set of position ids, in the compute dtype: `[S, d/2]`, or
/// `[B, 1, S, d/2]` for a batch with positions per row. A forward computes them once and shares them across the q
/// and k of every layer (again only where a drop or a contiguous shift changes the ids), instead of once per
/// projection: `2·L` trigonometric passes per step became one. The angles are computed as f32 whatever the weights'
/// dtype, as transformers' `LlamaRotaryEmbedding` does.
struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

/// `θ^(−2i/d)` for `i < d/2`, as f32 on `device`.
fn inverse_frequencies(config: &LlamaConfig, device: Device) -> Result<Tensor, TchError> {
    let d = config.head_dim as i64;
    Tensor::f_arange(d / 2, (Kind::Float, device))?
        .f_mul_scalar(-2.0 / d as f64)?
        .f_mul_scalar(config.rope_base.ln())?
        .f_exp()
}

fn load(g: &Gguf, name: &str, device: Device, kind: Kind) -> Result<Tensor, LlamaError> {
    let (data, shape) = g.tensor_f32(name)?;
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&data).f_reshape(shape.as_slice())?.f_to_kind(kind)?.f_to_device(device)?)
}

impl Llama {
    /// Loads a llama-architecture GGUF file onto `device`, computing in f32.
    pub fn from_gguf(path: &Path, device: Device) -> Result<Self, LlamaError> {
        Self::from_gguf_as(path, device, Kind::Float)
    }

    /// Loads a llama-architecture GGUF file onto `device`, computing in `kind` (`Float`, `Half`, `BFloat16`).
    pub fn from_gguf_as(path: &Path, device: Device, kind: Kind) -> Result<Self, LlamaError> {
        let g = Gguf::open(path)?;
        let arch = g.meta("general.architecture")?.as_str().unwrap_or_default().to_string();
        if arch != "llama" {
            return Err(LlamaError::Architecture { path: path.display().to_string(), found: arch });
        }
        let config = LlamaConfig {
            layers: g.meta_int("llama.block_count")? as usize,
            hidden: g.meta_int("llama.embedding_length")? as usize,
            heads: g.meta_int("llama.attention.head_count")? as usize,
            kv_heads: g.meta_int("llama.attention.head_count_kv")? as usize,
            head_dim: (g.meta_int("llama.embedding_length")? / g.meta_int("llama.attention.head_count")?.max(1))
                as usize,
            eps: g.meta_float("llama.attention.layer_norm_rms_epsilon")?,
            rope_base: g.meta_float("llama.rope.freq_base").unwrap_or(10000.0),
        };
        let _guard = tch::no_grad_guard();
        let embed = load(&g, "token_embd.weight", device, kind)?;
        let lm_head = if g.tensors.contains_key("output.weight") {
            Linear::Dense(load(&g, "output.weight", device, kind)?)
        } else {
            Linear::Dense(embed.shallow_clone())
        };
        let layers = (0..config.layers)
            .map(|i| {
                let w = |n: &str| load(&g, &format!("blk.{i}.{n}.weight"), device, kind);
                let lin = |n: &str| w(n).map(Linear::Dense);
                Ok(Layer {
                    attn_norm: w("attn_norm")?,
                    q: lin("attn_q")?,
                    k: lin("attn_k")?,
                    v: lin("attn_v")?,
                    qkv_bias: None,
                    qk_norm: None,
                    o: lin("attn_output")?,
                    ffn_norm: w("ffn_norm")?,
                    gate: lin("ffn_gate")?,
                    up: lin("ffn_up")?,
                    down: lin("ffn_down")?,
                })
            })
            .collect::<Result<Vec<_>, LlamaError>>()?;
        let norm = load(&g, "output_norm.weight", device, kind)?;
        let inv_freq = inverse_frequencies(&config, device)?;
        Ok(Llama { config, embed, layers, norm, lm_head, device, rope: RopeLayout::Interleaved, inv_freq, mrope: None })
    }

    /// Loads a Hugging Face `llama` or `qwen2` directory onto `device`, computing in f32.
    pub fn from_hf_dir(dir: &Path, device: Device) -> Result<Self, LlamaError> {
        Self::from_hf_dir_as(dir, device, Kind::Float)
    }

    /// Loads a Hugging Face `llama` or `qwen2` directory onto `device`, computing in `kind` (weights stored as F32,
    /// F16 or BF16 are converted once, at load).
    pub fn from_hf_dir_as(dir: &Path, device: Device, kind: Kind) -> Result<Self, LlamaError> {
        let config_path = dir.join("config.json");
        let bad = |reason: String| LlamaError::Config { path: config_path.display().to_string(), reason };
        let text = std::fs::read_to_string(&config_path).map_err(|e| bad(e.to_string()))?;
        let full: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        // A LLaVA-style checkpoint keeps the language model's keys under `text_config`.
        let json = full.get("text_config").cloned().unwrap_or(full);
        let hf = HfTextConfig::deserialize(&json).map_err(|e| bad(format!("text config: {e}")))?;
        if !DECODERS.contains(&hf.model_type.as_str()) {
            return Err(LlamaError::Architecture { path: config_path.display().to_string(), found: hf.model_type });
        }
        let heads = hf.num_attention_heads;
        let config = LlamaConfig {
            layers: hf.num_hidden_layers,
            hidden: hf.hidden_size,
            heads,
            kv_heads: hf.num_key_value_heads.unwrap_or(heads),
            head_dim: hf.head_dim.unwrap_or(hf.hidden_size / heads.max(1)),
            eps: hf.rms_norm_eps.unwrap_or(1e-6),
            // transformers 5 nests the base in `rope_parameters`; older configs keep `rope_theta` at the top.
            rope_base: hf.rope_parameters.as_ref().and_then(|r| r.rope_theta).or(hf.rope_theta).unwrap_or(10000.0),
        };
        let mrope = match hf
            .rope_parameters
            .iter()
            .chain(hf.rope_scaling.iter())
            .find_map(|r| r.mrope_section.as_ref().map(|s| (s.clone(), r.mrope_interleaved)))
        {
            Some((section, interleaved)) => {
                let section: [usize; 3] = section
                    .as_slice()
                    .try_into()
                    .map_err(|_| bad(format!("rope_parameters.mrope_section {section:?} must have three entries")))?;
                // transformers' Qwen3-VL text model interleaves whatever the flag says.
                Some(MRope { section, interleaved: interleaved || hf.model_type == "qwen3_vl_text" })
            }
            None if hf.model_type.ends_with("_vl_text") => {
                return Err(bad(format!(
                    "text config: a {} decoder needs rope_parameters.mrope_section",
                    hf.model_type
                )))
            }
            None => None,
        };
        let shards = Checkpoint::open(dir)?;
        let _guard = tch::no_grad_guard();
        // Standalone LMs use `model.`; LLaVA checkpoints `language_model.model.` (llava-hf) or `model.language_model.`.
        let prefix = ["model.", "language_model.model.", "model.language_model."]
            .into_iter()
            .find(|p| shards.contains(&format!("{p}embed_tokens.weight")))
            .unwrap_or("model.");
        let root = Weights::new(&shards, "", device, kind);
        let model = Weights::new(&shards, prefix, device, kind);
        let (d, m, v) = (config.hidden, hf.intermediate_size, hf.vocab_size);
        let head_dim = config.head_dim;
        let (q_out, kv_out) = (heads * head_dim, config.kv_heads * head_dim);
        let head_name = ["lm_head.weight", "language_model.lm_head.weight"].into_iter().find(|n| shards.contains(n));
        let embed = model.get("embed_tokens.weight", &[v, d])?;
        let lm_head = match head_name {
            Some(n) if !hf.tie_word_embeddings => Linear::Dense(root.get(n, &[v, d])?),
            _ => Linear::Dense(embed.shallow_clone()),
        };
        let layers = (0..config.layers)
            .map(|i| {
                let l = model.pp(&format!("layers.{i}"));
                let attn = l.pp("self_attn");
                let qkv_bias = if attn.contains("q_proj.bias") {
                    Some((
                        attn.get("q_proj.bias", &[q_out])?,
                        attn.get("k_proj.bias", &[kv_out])?,
                        attn.get("v_proj.bias", &[kv_out])?,
                    ))
                } else {
                    None
                };
                let qk_norm = if attn.contains("q_norm.weight") {
                    Some((attn.get("q_norm.weight", &[head_dim])?, attn.get("k_norm.weight", &[head_dim])?))
                } else {
                    None
                };
                Ok(Layer {
                    attn_norm: l.get("input_layernorm.weight", &[d])?,
                    q: Linear::Dense(attn.get("q_proj.weight", &[q_out, d])?),
                    k: Linear::Dense(attn.get("k_proj.weight", &[kv_out, d])?),
                    v: Linear::Dense(attn.get("v_proj.weight", &[kv_out, d])?),
                    qkv_bias,
                    qk_norm,
                    o: Linear::Dense(attn.get("o_proj.weight", &[d, q_out])?),
                    ffn_norm: l.get("post_attention_layernorm.weight", &[d])?,
                    gate: Linear::Dense(l.get("mlp.gate_proj.weight", &[m, d])?),
                    up: Linear::Dense(l.get("mlp.up_proj.weight", &[m, d])?),
                    down: Linear::Dense(l.get("mlp.down_proj.weight", &[d, m])?),
                })
            })
            .collect::<Result<Vec<_>, LlamaError>>()?;
        let norm = model.get("norm.weight", &[d])?;
        let inv_freq = inverse_frequencies(&config, device)?;
        let mrope = match mrope {
            Some(m) => Some(mrope_table(&m, &inv_freq).map_err(|e| match e {
                MRopeTableError::Section(reason) => bad(reason),
                MRopeTableError::Torch(e) => LlamaError::Torch(e),
            })?),
            None => None,
        };
        Ok(Llama { config, embed, layers, norm, lm_head, device, rope: RopeLayout::Halves, inv_freq, mrope })
    }

    /// The rotary tables of the position ids `positions`: `[S]`, `[S, 3]` M-RoPE ids (temporal, height, width) or,
    /// when `batched`, `[B, S]`.
    fn rope_tables(&self, positions: &Tensor, batched: bool) -> Result<RopeTables, LlamaError> {
        let ids = positions.f_to_kind(Kind::Float)?;
        let angles = match (&self.mrope, positions.dim(), batched) {
            (_, 2, true) => ids.f_unsqueeze(-1)?.f_mul(&self.inv_freq)?.f_unsqueeze(1)?,
            (Some(table), 2, false) => ids.f_matmul(table)?,
            (None, 2, false) => {
                return Err(LlamaError::Config {
                    path: "forward".into(),
                    reason: "M-RoPE position ids for a decoder without mrope_section".into(),
                })
            }
            _ => ids.f_unsqueeze(-1)?.f_mul(&self.inv_freq)?,
        };
        let kind = self.embed.kind();
        Ok(RopeTables { cos: angles.f_cos()?.f_to_kind(kind)?, sin: angles.f_sin()?.f_to_kind(kind)? })
    }

    /// Rotates `x` `[B, H, S, D]` by `tables` (of its S positions) in the weights' layout.
    fn rope(&self, x: &Tensor, tables: &RopeTables) -> Result<Tensor, LlamaError> {
        let (b, h, s, d) = x.size4()?;
        let half = d / 2;
        let (cos, sin) = (&tables.cos, &tables.sin);
        let (x0, x1) = match self.rope {
            RopeLayout::Interleaved => {
                let pairs = x.f_reshape([b, h, s, half, 2])?;
                (pairs.f_select(4, 0)?, pairs.f_select(4, 1)?)
            }
            RopeLayout::Halves => (x.f_narrow(3, 0, half)?, x.f_narrow(3, half, half)?),
        };
        let r0 = x0.f_mul(cos)?.f_sub(&x1.f_mul(sin)?)?;
        let r1 = x0.f_mul(sin)?.f_add(&x1.f_mul(cos)?)?;
        Ok(match self.rope {
            RopeLayout::Interleaved => Tensor::f_stack(&[r0, r1], 4)?.f_reshape([b, h, s, d])?,
            RopeLayout::Halves => Tensor::f_cat(&[r0, r1], 3)?,
        })
    }

    /// Token embeddings `[B, S, D]` of `ids` `[B, S]`.
    pub fn embed(&self, ids: &Tensor) -> Result<Tensor, LlamaError> {
        let (b, s) = ids.size2()?;
        Ok(self.embed.f_index_select(0, &ids.f_reshape([-1])?)?.f_reshape([b, s, self.config.hidden as i64])?)
    }

    /// Runs `ids` `[B, S]` after the cached positions; returns the logits of the last position `[B, V]`.
    pub fn forward(&self, ids: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlamaError> {
        let _guard = tch::no_grad_guard();
        self.forward_embeds(self.embed(ids)?, cache)
    }

    /// As [`Llama::forward`] for one generated token, with an optional decode-time key selection (DyCoke's dynamic
    /// KV); `None` is exactly [`Llama::forward`].
    pub fn forward_step(
        &self,
        ids: &Tensor,
        cache: &mut KvCache,
        keys: Option<StepKeys<'_>>,
    ) -> Result<Tensor, LlamaError> {
        let _guard = tch::no_grad_guard();
        self.run(self.embed(ids)?, cache, None, keys, None, None, None)
    }

    /// Runs input embeddings `[B, S, D]` (text and merged visual tokens) after the cached positions; returns the
    /// logits of the last position `[B, V]`.
    pub fn forward_embeds(&self, x: Tensor, cache: &mut KvCache) -> Result<Tensor, LlamaError> {
        self.forward_embeds_with(x, cache, None)
    }

    /// As [`Llama::forward_embeds`], optionally dropping tokens inside the decoder (prefill only: the cache must
    /// be empty when `drop` is given).
    pub fn forward_embeds_with(
        &self,
        x: Tensor,
        cache: &mut KvCache,
        drop: Option<LayerDrop<'_>>,
    ) -> Result<Tensor, LlamaError> {
        self.run(x, cache, drop.map(Edit::from), None, None, None, None)
    }

    /// As [`Llama::forward_embeds_with`] with explicit position ids `positions` (one per input row, ascending; gaps
    /// allowed), for prompts whose pruned visual tokens keep their original positions (ALGORITHMS.md §1.5). Later
    /// steps continue from the last id + 1.
    pub fn forward_embeds_at(
        &self,
        x: Tensor,
        positions: &[i64],
        cache: &mut KvCache,
        drop: Option<LayerDrop<'_>>,
    ) -> Result<Tensor, LlamaError> {
        self.run(x, cache, drop.map(Edit::from), None, None, Some(At::Sequence(positions)), None)
    }

    /// As [`Llama::forward_embeds_at`] with a [`PrefillPlan`], whose rule may merge kept rows and add synthetic
    /// ones (prefill only: the cache must be empty when `plan` is given).
    pub fn forward_embeds_planned(
        &self,
        x: Tensor,
        positions: &[i64],
        cache: &mut KvCache,
        plan: Option<PrefillPlan<'_>>,
    ) -> Result<Tensor, LlamaError> {
        self.run(x, cache, plan.map(Edit::from), None, None, Some(At::Sequence(positions)), None)
    }

    /// As [`Llama::forward_embeds_planned`] with either kind of position ids: 1-D ids (ascending, gaps allowed), or
    /// M-RoPE ids `[temporal, height, width]` per row for a decoder with `mrope_section` (any order, each at least
    /// the next position). After M-RoPE ids, later steps continue from the largest id + 1 on every axis (what
    /// transformers' `rope_deltas` give). Synthetic rows a plan adds take the ids of the span's last row.
    pub fn forward_embeds_positioned(
        &self,
        x: Tensor,
        positions: &PositionIds,
        cache: &mut KvCache,
        plan: Option<PrefillPlan<'_>>,
    ) -> Result<Tensor, LlamaError> {
        self.forward_embeds_stacked(x, positions, cache, plan, None)
    }

    /// As [`Llama::forward_embeds_positioned`], adding Qwen3-VL's DeepStack planes to the visual rows after the
    /// first layers (transformers' `Qwen3VLTextModel._deepstack_process`). A plan's drops remove the dropped rows'
    /// plane rows too, so later levels reach the kept rows only; rows a plan merges keep their own plane rows and
    /// synthetic rows get none (prefill only).
    pub fn forward_embeds_stacked(
        &self,
        x: Tensor,
        positions: &PositionIds,
        cache: &mut KvCache,
        plan: Option<PrefillPlan<'_>>,
        deepstack: Option<DeepStack>,
    ) -> Result<Tensor, LlamaError> {
        let at = match positions {
            PositionIds::Sequence(p) => At::Sequence(p),
            PositionIds::MRope(p) => At::MRope(p),
        };
        self.run(x, cache, plan.map(Edit::from), None, None, Some(at), deepstack)
    }

    /// Runs a batch of rows `ids` `[B, S]` in which `valid` `[B, S]` (bool) marks real tokens; prompts are
    /// left-padded so every row's last position is real. Each row gets its own position ids (counting its real
    /// tokens only) and attends to its real keys only; returns the logits of the last position `[B, V]`. The first
    /// call on a cache starts a batched cache, and every later call on it must be batched.
    pub fn forward_batch(&self, ids: &Tensor, valid: &Tensor, cache: &mut KvCache) -> Result<Tensor, LlamaError> {
        let _guard = tch::no_grad_guard();
        self.run(self.embed(ids)?, cache, None, None, Some(valid), None, None)
    }

    /// Position ids `[B, S]` and the attention mask `[B, 1, S, T]` of a batched step, updating the cache's record
    /// of real keys. A padding query may attend to itself only, so no row of the mask is empty (an empty row would
    /// give NaN states that then poison the values it stores).
    fn batch_step(&self, cache: &mut KvCache, valid: &Tensor) -> Result<(Tensor, Tensor), LlamaError> {
        let (b, s) = valid.size2()?;
        if cache.batch.is_none() && !cache.is_empty() {
            return Err(LlamaError::Config {
                path: "forward".into(),
                reason: "a batched step needs a batched cache".into(),
            });
        }
        let device = self.device;
        let valid = valid.f_to_device(device)?.f_to_kind(Kind::Bool)?;
        let (past, next) = cache.batch.take().unwrap_or_else(|| {
            (Tensor::zeros([b, 0], (Kind::Bool, device)), Tensor::zeros([b], (Kind::Int64, device)))
        });
        let counted = valid.f_to_kind(Kind::Int64)?.f_cumsum(1, Kind::Int64)?;
        let positions = next.f_unsqueeze(1)?.f_add(&counted)?.f_sub_scalar(1)?.f_clamp_min(0)?;
        let all = Tensor::f_cat(&[past, valid.shallow_clone()], 1)?;
        let t = all.size()[1];
        let query = Tensor::arange_start(t - s, t, (Kind::Int64, device)).f_unsqueeze(1)?;
        let key = Tensor::arange(t, (Kind::Int64, device)).f_unsqueeze(0)?;
        let causal = key.f_le_tensor(&query)?.f_unsqueeze(0)?; // [1, S, T]
        let own = key.f_eq_tensor(&query)?.f_unsqueeze(0)?;
        let mask = all.f_unsqueeze(1)?.f_logical_and(&causal)?.f_logical_or(&own)?.f_unsqueeze(1)?;
        let advanced =
            next.f_add(&valid.f_to_kind(Kind::Int64)?.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Int64)?)?;
        cache.batch = Some((all, advanced));
        Ok((positions, mask))
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        mut x: Tensor,
        cache: &mut KvCache,
        mut drop: Option<Edit<'_>>,
        mut step: Option<StepKeys<'_>>,
        batch: Option<&Tensor>,
        at: Option<At<'_>>,
        mut deepstack: Option<DeepStack>,
    ) -> Result<Tensor, LlamaError> {
        let _guard = tch::no_grad_guard();
        let bad = |reason: String| LlamaError::Config { path: "forward".into(), reason };
        if cache.batch.is_some() && batch.is_none() {
            return Err(bad("this cache holds a batch: continue it with forward_batch".into()));
        }
        if batch.is_some() && (drop.is_some() || step.is_some()) {
            return Err(bad("in-decoder rules run on one sequence, not a padded batch".into()));
        }
        let c = self.config;
        let head_dim = c.head_dim as i64;
        // Compute in the weights' dtype; logits come back as f32 whatever it is.
        x = x.f_to_kind(self.embed.kind())?;
        let (b, mut s, _) = x.size3()?;
        let fed = s;
        if let Some(stack) = deepstack.as_ref() {
            let d = x.size()[2];
            let wrong = stack.planes.iter().find(|p| p.size() != [stack.rows.len() as i64, d]);
            if b != 1 || !cache.is_empty() || stack.rows.iter().any(|&r| r as i64 >= s) || wrong.is_some() {
                return Err(bad(format!(
                    "DeepStack planes {:?} for {} rows must be [rows, {d}] on one prefill sequence of {s} rows",
                    wrong.map(|p| p.size()),
                    stack.rows.len()
                )));
            }
        }
        if drop.is_some() && !cache.is_empty() {
            return Err(bad("an in-decoder drop needs an empty cache (prefill)".into()));
        }
        if let Some(k) = step.as_ref() {
            self.check_step(k, cache, b, s)?;
        }
        if cache.dropped.len() < self.layers.len() {
            cache.dropped.resize(self.layers.len(), 0);
        }
        let first = cache.next_position;
        let (mut positions, mask) = match (batch, at) {
            (Some(valid), _) => {
                let (p, m) = self.batch_step(cache, valid)?;
                (p, Some(m))
            }
            (None, Some(At::Sequence(at))) => {
                if at.len() as i64 != s || at.windows(2).any(|w| w[0] >= w[1]) || at.first().is_some_and(|&p| p < first)
                {
                    return Err(bad(format!(
                        "{} position ids for {s} inputs: they must ascend from {first} (the next position)",
                        at.len()
                    )));
                }
                (Tensor::from_slice(at).f_to_device(self.device)?, None)
            }
            (None, Some(At::MRope(at))) => {
                if self.mrope.is_none() {
                    return Err(bad("M-RoPE position ids for a decoder without mrope_section".into()));
                }
                if at.iter().any(|row| row.len() as i64 != s) || at.iter().flatten().any(|&p| p < first) {
                    return Err(bad(format!(
                        "{} x {} M-RoPE position ids for {s} inputs: three rows of {s}, none below {first} (the \
                         next position)",
                        at.len(),
                        at[0].len()
                    )));
                }
                let rows: Vec<Tensor> = at.iter().map(|r| Tensor::from_slice(r)).collect();
                (Tensor::f_stack(&rows, 1)?.f_to_device(self.device)?, None)
            }
            (None, None) => (Tensor::arange_start(first, first + s, (Kind::Int64, self.device)), None),
        };
        // Synthetic rows a plan adds take the position (all three M-RoPE ids) of the original span's last row (§1.5).
        let mut synthetic = positions.f_narrow(0, 0, s.min(1))?;
        if let Some(d) = drop.as_ref() {
            if d.layers.windows(2).any(|w| w[0] >= w[1]) || d.layers.last().is_some_and(|&l| l >= self.layers.len()) {
                return Err(bad(format!(
                    "drop layers {:?} must be ascending and below the {} layers",
                    d.layers,
                    self.layers.len()
                )));
            }
            if d.span.start > d.span.end || d.span.end as i64 > s {
                return Err(bad(format!("the span {:?} is outside the {s} inputs", d.span)));
            }
            if d.span.end > 0 && matches!(d.rule, EditRule::Plan(_)) {
                synthetic = positions.f_narrow(0, d.span.end as i64 - 1, 1)?;
            }
        }
        let mut span = drop.as_ref().map_or(0..0, |d| d.span.clone());
        let mut stage = 0;
        let mut rows: Vec<Vec<f32>> = Vec::new();
        // Decode-time key selection: the gather index of layers >= step.layer, chosen at layer step.layer - 1.
        let mut gather: Option<(i64, Tensor)> = None;
        let mut selected: Option<Option<Vec<usize>>> = None;
        // The rotary tables of the current ids, keyed by (drop stage, contiguous shift): recomputed only when those
        // change, so once per forward without drops.
        let mut tables: Option<((usize, i64), RopeTables)> = None;
        for (i, l) in self.layers.iter().enumerate() {
            if let Some(d) = drop.as_mut().filter(|d| d.layers.get(stage) == Some(&i)) {
                if d.rows == QueryRows::OwnLast {
                    rows = self.own_last_row(l, &x, &positions)?;
                }
                let plan = match &mut d.rule {
                    EditRule::Offsets(select) => {
                        // Offsets-only rules are normalised (sorted, unique, inside the span), as they always were.
                        let mut kept: Vec<usize> =
                            select(stage, &rows, span.clone()).into_iter().filter(|&o| o < span.len()).collect();
                        kept.sort_unstable();
                        kept.dedup();
                        LayerPlan::keep(kept)
                    }
                    EditRule::Plan(rule) => {
                        if b != 1 {
                            return Err(bad(format!("an in-decoder plan runs on one sequence, got {b}")));
                        }
                        let sequence = x.f_select(0, 0)?;
                        let hidden = sequence.f_narrow(0, span.start as i64, span.len() as i64)?;
                        let normed = match d.rows {
                            QueryRows::KeyNorms => {
                                Some(sequence.f_rms_norm([c.hidden as i64].as_slice(), Some(&self.norm), c.eps)?)
                            }
                            _ => None,
                        };
                        let view = StageView {
                            stage,
                            rows: &rows,
                            span: span.clone(),
                            hidden: &hidden,
                            normed: normed.as_ref(),
                        };
                        rule(view).map_err(LlamaError::Rule)?
                    }
                };
                let kept = deepstack.as_ref().map(|_| plan.kept.clone());
                let (new_x, new_positions, new_span) =
                    self.apply_plan(&x, &positions, span.clone(), plan, d.positions, &synthetic)?;
                if let (Some(stack), Some(kept)) = (deepstack.as_mut(), kept) {
                    stack.follow(&span, &kept, &new_span, self.device)?;
                }
                let removed = s - new_x.size()[1];
                x = new_x;
                positions = new_positions;
                cache.contiguous = d.positions == PositionMode::Contiguous;
                for dropped in &mut cache.dropped[i..] {
                    *dropped += removed;
                }
                s = x.size()[1];
                span = new_span;
                stage += 1;
            }
            // Decoding after a contiguous drop: this layer's ids are shifted down by what it lost.
            let shift = if cache.contiguous && drop.is_none() { cache.dropped[i] } else { 0 };
            if tables.as_ref().is_some_and(|(key, _)| *key != (stage, shift)) {
                tables = None;
            }
            let (_, rope) = match tables {
                Some(ref current) => current,
                None => {
                    let ids = if shift == 0 { positions.shallow_clone() } else { positions.f_sub_scalar(shift)? };
                    tables.insert(((stage, shift), self.rope_tables(&ids, batch.is_some())?))
                }
            };
            let h = x.f_rms_norm([c.hidden as i64].as_slice(), Some(&l.attn_norm), c.eps)?;
            let (qb, kb, vb) = l.biases();
            let (qn, kn) = l.head_norms();
            let q = self.rotary_projection(&h, (&l.q, qb, qn), c.heads, rope)?;
            let k = self.rotary_projection(&h, (&l.k, kb, kn), c.kv_heads, rope)?;
            let v = l.v.forward(&h, vb)?.f_reshape([b, s, c.kv_heads as i64, head_dim])?.f_transpose(1, 2)?;
            let (k, v) = match cache.entries.get_mut(i) {
                Some(layer) => layer.append(&k, &v)?,
                None => {
                    cache.entries.push(LayerKv::new(&k, &v)?);
                    (k, v)
                }
            };
            if let Some(d) =
                drop.as_ref().filter(|d| d.layers.get(stage) == Some(&(i + 1)) && d.rows != QueryRows::OwnLast)
            {
                rows = match d.rows {
                    // The L1 norm of each of this forward's rows' keys, every KV head concatenated (after RoPE).
                    QueryRows::KeyNorms => {
                        let mine = k.f_narrow(2, k.size()[2] - s, s)?.f_select(0, 0)?.f_abs()?;
                        vec![Vec::<f32>::try_from(mine.f_sum_dim_intlist([0i64, 2].as_slice(), false, Kind::Float)?)?]
                    }
                    QueryRows::Last | QueryRows::OwnLast => {
                        attention_rows(&q, &k, c.heads / c.kv_heads, head_dim, s - 1)?
                    }
                    QueryRows::AfterSpan => {
                        let from = (span.end as i64).min(s - 1);
                        attention_rows(&q, &k, c.heads / c.kv_heads, head_dim, from)?
                    }
                };
            }
            let restricted = match step.as_mut() {
                Some(keys) if i + 1 == keys.layer => {
                    let row = attention_rows(&q, &k, c.heads / c.kv_heads, head_dim, s - 1)?;
                    let row = row.first().map_or(&[][..], Vec::as_slice);
                    let kept = (keys.select)(StepView { row, span: keys.span.clone() }).map_err(LlamaError::Rule)?;
                    if let Some(kept) = kept.as_ref() {
                        if kept.windows(2).any(|w| w[0] >= w[1]) || kept.last().is_some_and(|&o| o >= keys.span.len()) {
                            return Err(bad(format!(
                                "the step rule kept {kept:?}: offsets must ascend inside the span of {}",
                                keys.span.len()
                            )));
                        }
                    }
                    selected = Some(kept);
                    None
                }
                Some(keys) if i >= keys.layer => match selected.as_ref() {
                    Some(Some(kept)) => {
                        let t = k.size()[2];
                        // One index per key length (every restricted layer has the same one without prefill drops).
                        let index = match gather.take() {
                            Some((len, index)) if len == t => (len, index),
                            _ => {
                                let (a, e) = (keys.span.start as i64, keys.span.end as i64);
                                let key: Vec<i64> =
                                    (0..a).chain(kept.iter().map(|&o| a + o as i64)).chain(e..t).collect();
                                (t, Tensor::from_slice(&key).f_to_device(self.device)?)
                            }
                        };
                        let restricted = (k.f_index_select(2, &index.1)?, v.f_index_select(2, &index.1)?);
                        gather = Some(index);
                        Some(restricted)
                    }
                    _ => None,
                },
                _ => None,
            };
            let (ka, va) = match restricted.as_ref() {
                Some((rk, rv)) => (rk, rv),
                None => (&k, &v),
            };
            let attn = Tensor::f_scaled_dot_product_attention::<&Tensor>(
                &q,
                ka,
                va,
                mask.as_ref(),
                0.0,
                mask.is_none() && s > 1,
                None,
                true,
            )?;
            let attn = attn.f_transpose(1, 2)?.f_reshape([b, s, (c.heads * c.head_dim) as i64])?;
            x = x.f_add(&l.o.forward(&attn, None)?)?;
            let h = x.f_rms_norm([c.hidden as i64].as_slice(), Some(&l.ffn_norm), c.eps)?;
            let gated = l.gate.forward(&h, None)?.f_silu()?.f_mul(&l.up.forward(&h, None)?)?;
            x = x.f_add(&l.down.forward(&gated, None)?)?;
            if let Some(plane) = deepstack.as_ref().and_then(|d| d.planes.get(i)) {
                let rows = deepstack.as_ref().map_or(&[][..], |d| d.rows.as_slice());
                let index =
                    Tensor::from_slice(&rows.iter().map(|&r| r as i64).collect::<Vec<_>>()).f_to_device(self.device)?;
                let plane = plane.f_to_device(self.device)?.f_to_kind(x.kind())?.f_unsqueeze(0)?;
                x = x.f_index_add(1, &index, &plane)?;
            }
        }
        // Position ids advance by the tokens fed, dropped or not (original numbering), or past the last (1-D) or
        // largest (M-RoPE) given id.
        cache.next_position = match at {
            Some(At::Sequence(a)) => a.last().map_or(first + fed, |&last| last + 1),
            Some(At::MRope(a)) => a.iter().flatten().max().map_or(first + fed, |&max| max + 1),
            None => first + fed,
        };
        let last = x.f_select(1, s - 1)?.f_rms_norm([c.hidden as i64].as_slice(), Some(&self.norm), c.eps)?;
        Ok(self.lm_head.forward(&last, None)?.f_to_kind(Kind::Float)?)
    }

    /// Checks a decode-time key selection against the step and the cache.
    fn check_step(&self, keys: &StepKeys<'_>, cache: &KvCache, b: i64, s: i64) -> Result<(), LlamaError> {
        let bad = |reason: String| LlamaError::Config { path: "forward_step".into(), reason };
        if b != 1 || s != 1 {
            return Err(bad(format!("a decode-time key selection runs on one new token, got [{b}, {s}]")));
        }
        if keys.layer == 0 || keys.layer >= self.layers.len() {
            return Err(bad(format!(
                "layer {} must be at least 1 (the row is the previous layer's) and below the {} layers",
                keys.layer,
                self.layers.len()
            )));
        }
        let shortest = (keys.layer - 1..self.layers.len()).map(|i| cache.layer_len(i)).min().unwrap_or(0);
        if keys.span.start > keys.span.end || keys.span.end as i64 > shortest {
            return Err(bad(format!(
                "the span {:?} is outside the cached positions ({shortest} in the shortest restricted layer)",
                keys.span
            )));
        }
        Ok(())
    }

    /// One rotary projection (`W_q` or `W_k`, with its bias and Qwen3's head norm) of the normalised states `h`
    /// `[B, S, D]`: `[B, heads, S, d]`, RoPE applied with `tables` (of the S positions).
    fn rotary_projection(
        &self,
        h: &Tensor,
        (w, bias, norm): (&Linear, Option<&Tensor>, Option<&Tensor>),
        heads: usize,
        tables: &RopeTables,
    ) -> Result<Tensor, LlamaError> {
        let c = self.config;
        let (b, s, _) = h.size3()?;
        let split = w.forward(h, bias)?.f_reshape([b, s, heads as i64, c.head_dim as i64])?;
        // Qwen3: RMSNorm over each head's width before the rotation (`q_norm` / `k_norm`).
        let split = match norm {
            Some(weight) => split.f_rms_norm([c.head_dim as i64].as_slice(), Some(weight), c.eps)?,
            None => split,
        };
        self.rope(&split.f_transpose(1, 2)?, tables)
    }

    /// PyramidDrop's `pdrop_rank_drop` row: the last query of layer `l`'s own input norm, q/k projections and RoPE
    /// on its input `x` (one sequence) against every key, softmax, mean over heads. Only the last row's query is
    /// projected.
    fn own_last_row(&self, l: &Layer, x: &Tensor, positions: &Tensor) -> Result<Vec<Vec<f32>>, LlamaError> {
        let c = self.config;
        let h = x.f_rms_norm([c.hidden as i64].as_slice(), Some(&l.attn_norm), c.eps)?;
        let s = h.size()[1];
        let (qb, kb, _) = l.biases();
        let all = self.rope_tables(positions, false)?;
        let last = RopeTables { cos: all.cos.f_narrow(0, s - 1, 1)?, sin: all.sin.f_narrow(0, s - 1, 1)? };
        let (qn, kn) = l.head_norms();
        let q = self.rotary_projection(&h.f_narrow(1, s - 1, 1)?, (&l.q, qb, qn), c.heads, &last)?;
        let k = self.rotary_projection(&h, (&l.k, kb, kn), c.kv_heads, &all)?;
        attention_rows(&q, &k, c.heads / c.kv_heads, c.head_dim as i64, 0)
    }

    /// Applies one stage's plan to the hidden states `x` `[B, S, D]` and the position ids `[S]`: returns the new
    /// states, positions and span (`prefix | kept or replaced | extra | suffix`).
    fn apply_plan(
        &self,
        x: &Tensor,
        positions: &Tensor,
        span: std::ops::Range<usize>,
        plan: LayerPlan,
        mode: PositionMode,
        synthetic: &Tensor,
    ) -> Result<(Tensor, Tensor, std::ops::Range<usize>), LlamaError> {
        let bad = |reason: String| LlamaError::Config { path: "in-decoder plan".into(), reason };
        let (b, s, d) = x.size3()?;
        let (start, end) = (span.start as i64, span.end as i64);
        let kept = &plan.kept;
        if kept.windows(2).any(|w| w[0] >= w[1]) || kept.last().is_some_and(|&o| o >= span.len()) {
            return Err(bad(format!("kept offsets {kept:?} must ascend inside the span of {}", span.len())));
        }
        let shaped = |t: &Tensor, rows: usize, what: &str| -> Result<Tensor, LlamaError> {
            let size = t.size();
            if size != [rows as i64, d] {
                return Err(bad(format!("{what} has shape {size:?}, expected [{rows}, {d}]")));
            }
            if b != 1 {
                return Err(bad(format!("{what} needs one sequence, got {b}")));
            }
            Ok(t.f_to_device(self.device)?.f_to_kind(x.kind())?.f_unsqueeze(0)?)
        };
        let index = Tensor::from_slice(&kept.iter().map(|&o| start + o as i64).collect::<Vec<i64>>())
            .f_to_device(self.device)?;
        let kept_rows = match plan.replace.as_ref() {
            Some(r) => shaped(r, kept.len(), "the replaced rows")?,
            None => x.f_index_select(1, &index)?,
        };
        let extra = match plan.extra.as_ref() {
            Some(t) => Some(shaped(t, t.size().first().map_or(0, |&r| r.max(0) as usize), "the extra rows")?),
            None => None,
        };
        let e = extra.as_ref().map_or(0, |t| t.size()[1]);
        let mut parts = vec![x.f_narrow(1, 0, start)?, kept_rows];
        parts.extend(extra);
        parts.push(x.f_narrow(1, end, s - end)?);
        let new_x = Tensor::f_cat(&parts, 1)?;
        let new_s = new_x.size()[1];
        let new_positions = match mode {
            PositionMode::Original => Tensor::f_cat(
                &[
                    positions.f_narrow(0, 0, start)?,
                    positions.f_index_select(0, &index)?,
                    // `[1]` or `[1, 3]` repeated for the e synthetic rows.
                    synthetic.f_repeat(if positions.dim() == 2 { vec![e, 1] } else { vec![e] })?,
                    positions.f_narrow(0, end, s - end)?,
                ],
                0,
            )?,
            PositionMode::Contiguous => {
                // M-RoPE ids renumber as 1-D ids from the first row's smallest id (all three axes equal after it).
                let from = if s > 0 { positions.f_narrow(0, 0, 1)?.f_min()?.int64_value(&[]) } else { 0 };
                Tensor::arange_start(from, from + new_s, (Kind::Int64, self.device))
            }
        };
        Ok((new_x, new_positions, span.start..span.start + kept.len() + e as usize))
    }

    /// Greedy decoding of up to `max_new` tokens after `prompt`, stopping at any of `stop`.
    pub fn generate_greedy(&self, prompt: &[u32], max_new: usize, stop: &[u32]) -> Result<Vec<u32>, LlamaError> {
        let mut out = Vec::new();
        self.generate(prompt, max_new, stop, |t| {
            out.push(t);
            true
        })?;
        Ok(out)
    }

    /// Greedy decoding that hands each new token to `on_token` as soon as it exists (return `false` to stop);
    /// returns the KV cache so callers can report its size.
    pub fn generate(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<KvCache, LlamaError> {
        let mut greedy = TokenPicker::new(Sampling::default());
        self.generate_with(prompt, max_new, stop, &mut greedy, on_token)
    }

    /// As [`Llama::generate`], choosing each token with `picker` (greedy or seeded temperature/top-p sampling).
    pub fn generate_with(
        &self,
        prompt: &[u32],
        max_new: usize,
        stop: &[u32],
        picker: &mut TokenPicker,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<KvCache, LlamaError> {
        let mut cache = KvCache::default();
        let ids: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let mut logits =
            self.forward(&Tensor::from_slice(&ids).f_unsqueeze(0)?.f_to_device(self.device)?, &mut cache)?;
        for _ in 0..max_new {
            let next = picker.next(&logits)? as u32;
            if stop.contains(&next) || !on_token(next) {
                break;
            }
            let step = Tensor::from_slice(&[next as i64]).f_unsqueeze(0)?.f_to_device(self.device)?;
            logits = self.forward(&step, &mut cache)?;
        }
        Ok(cache)
    }
}

impl Llama {
    /// Generates for several prompts at once, left-padded into one batch; each row stops at any of `stop` or after
    /// `max_new` tokens. The answers equal the one-prompt ones (up to float rounding of the padded matmuls).
    pub fn generate_batch(
        &self,
        prompts: &[Vec<u32>],
        max_new: usize,
        stop: &[u32],
        picker: &mut TokenPicker,
    ) -> Result<Vec<Vec<u32>>, LlamaError> {
        let b = prompts.len();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        if b == 0 || prompts.iter().any(Vec::is_empty) {
            return Err(LlamaError::Config {
                path: "generate_batch".into(),
                reason: "every prompt needs a token".into(),
            });
        }
        let mut ids = vec![0i64; b * longest];
        let mut valid = vec![false; b * longest];
        for (r, p) in prompts.iter().enumerate() {
            let pad = longest - p.len();
            for (j, &t) in p.iter().enumerate() {
                ids[r * longest + pad + j] = t as i64;
                valid[r * longest + pad + j] = true;
            }
        }
        let shape = [b as i64, longest as i64];
        let mut cache = KvCache::default();
        let to = |v: &[i64]| Tensor::from_slice(v).f_reshape(shape.as_slice()).and_then(|t| t.f_to_device(self.device));
        let mut logits = self.forward_batch(&to(&ids)?, &Tensor::from_slice(&valid).f_reshape(shape)?, &mut cache)?;
        let mut out = vec![Vec::new(); b];
        let mut done = vec![false; b];
        for _ in 0..max_new {
            let mut step = vec![0i64; b];
            let mut live = vec![false; b];
            for r in 0..b {
                if done[r] {
                    continue;
                }
                let t = picker.next(&logits.f_get(r as i64)?)? as u32;
                if stop.contains(&t) {
                    done[r] = true;
                    continue;
                }
                out[r].push(t);
                step[r] = t as i64;
                live[r] = true;
            }
            if !live.iter().any(|&l| l) {
                break;
            }
            let ids = Tensor::from_slice(&step).f_reshape([b as i64, 1])?.f_to_device(self.device)?;
            logits = self.forward_batch(&ids, &Tensor::from_slice(&live).f_reshape([b as i64, 1])?, &mut cache)?;
        }
        Ok(out)
    }
}

/// The attention of queries `from..S` over every key, softmax probabilities averaged over heads (key/value heads
/// repeated for grouped-query attention), causally masked: one `[T]` row per query, computed for these rows only
/// instead of a full attention map (ALGORITHMS.md §1.8).
fn attention_rows(
    q: &Tensor,
    k: &Tensor,
    groups: usize,
    head_dim: i64,
    from: i64,
) -> Result<Vec<Vec<f32>>, LlamaError> {
    let (s, t) = (q.size()[2], k.size()[2]);
    let q_rows = q.f_narrow(2, from, s - from)?; // [B, H, r, d]
    let k = if groups > 1 { k.f_repeat_interleave_self_int(groups as i64, 1, None)? } else { k.shallow_clone() };
    let mut scores = q_rows.f_matmul(&k.f_transpose(2, 3)?)?.f_div_scalar((head_dim as f64).sqrt())?;
    if s - from > 1 {
        // Query r sits at key position t - s + from + r and sees keys up to it.
        let query_pos = Tensor::arange_start(t - s + from, t, (Kind::Int64, q.device())).f_unsqueeze(1)?;
        let key_pos = Tensor::arange(t, (Kind::Int64, q.device())).f_unsqueeze(0)?;
        let future = key_pos.f_gt_tensor(&query_pos)?;
        scores = scores.f_masked_fill(&future, f64::NEG_INFINITY)?;
    }
    let probs = scores.f_softmax(-1, Kind::Float)?.f_mean_dim([1i64].as_slice(), false, Kind::Float)?; // [B, r, T]
    let probs = probs.f_select(0, 0)?;
    (0..s - from).map(|r| Ok(Vec::<f32>::try_from(probs.f_select(0, r)?)?)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m_rope_sections_deal_frequencies_to_axes_as_transformers_does() {
        // Qwen2.5-VL: contiguous sections (transformers' `split(mrope_section)` then `m[i % 3]`).
        let qwen25 = MRope { section: [2, 3, 3], interleaved: false };
        assert_eq!(qwen25.axes(8).unwrap(), [0, 0, 1, 1, 1, 2, 2, 2]);
        // Qwen3-VL's interleaved layout for [24, 20, 20]: h at 1, 4, ..., 58; w at 2, 5, ..., 59; t elsewhere.
        let qwen3 = MRope { section: [24, 20, 20], interleaved: true };
        let axes = qwen3.axes(64).unwrap();
        assert_eq!(&axes[..7], &[0, 1, 2, 0, 1, 2, 0]);
        assert_eq!(&axes[57..], &[0, 1, 2, 0, 0, 0, 0]);
        assert_eq!((0..3).map(|a| axes.iter().filter(|&&x| x == a).count()).collect::<Vec<_>>(), [24, 20, 20]);
        assert!(qwen25.axes(16).unwrap_err().contains("sums to 8"));
    }

    #[test]
    fn equal_m_rope_ids_rotate_as_one_dimensional_rope() {
        let config =
            LlamaConfig { layers: 0, hidden: 16, heads: 1, kv_heads: 1, head_dim: 16, eps: 1e-6, rope_base: 10000.0 };
        let inv_freq = inverse_frequencies(&config, Device::Cpu).unwrap();
        let Ok(table) = mrope_table(&MRope { section: [2, 3, 3], interleaved: false }, &inv_freq) else {
            panic!("table")
        };
        let ids = Tensor::from_slice(&[0i64, 0, 0, 5, 5, 5, 7, 2, 9]).reshape([3, 3]);
        let angles = ids.to_kind(Kind::Float).matmul(&table);
        let one_d = Tensor::from_slice(&[0f32, 5.0]).unsqueeze(-1) * &inv_freq;
        assert_eq!(
            Vec::<f32>::try_from(angles.narrow(0, 0, 2).reshape([-1])).unwrap(),
            Vec::<f32>::try_from(one_d.reshape([-1])).unwrap()
        );
        // Row (7, 2, 9): frequencies 0-1 turn with 7, 2-4 with 2, 5-7 with 9.
        let row: Vec<f32> = Vec::try_from(angles.get(2)).unwrap();
        let f: Vec<f32> = Vec::try_from(&inv_freq).unwrap();
        let want: Vec<f32> =
            f.iter().enumerate().map(|(j, &x)| x * [7.0, 7.0, 2.0, 2.0, 2.0, 9.0, 9.0, 9.0][j]).collect();
        assert_eq!(row, want);
    }
}
