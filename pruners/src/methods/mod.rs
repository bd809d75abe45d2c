//! Every selection and merging method, one file each, and the [`Method`] enum that names them for the registry.

pub mod importance;

pub mod cdpruner;
pub mod dcode;
pub mod density;
pub mod divprune;
pub mod dycoke;
pub mod evs;
pub mod fastvid;
pub mod holitom;
pub mod kcenter;
pub mod mmr;
pub mod pool;
pub mod prumerge_plus;
pub mod query;
pub mod random;
pub mod todre;
pub mod tome;
pub mod visionzip;
pub mod vispruner;

use crate::backend::Backend;
use crate::error::{Result, Signal};
use crate::params::{ParamSpec, Params};
use crate::pruner::Pruner;
use crate::selection::Selection;
use crate::token_set::TokenSet;

/// Registry entry of one method: its name, a one-line summary, its parameters and the signals it needs.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    /// Command-line name.
    pub name: &'static str,
    /// One line for `tokensieve prune --list`.
    pub summary: &'static str,
    /// Parameters with defaults.
    pub params: &'static [ParamSpec],
    /// Signals the method cannot run without.
    pub requires: &'static [Signal],
    /// Signals the method reads when given (a superset of `requires`).
    pub uses: &'static [Signal],
    build: fn(&Params) -> Result<Method>,
}

macro_rules! methods {
    ($( $variant:ident($ty:ty) = $name:literal, $params:expr, $requires:expr, $uses:expr, $summary:literal; )*) => {
        /// Any registered method, chosen at run time by name.
        #[derive(Debug, Clone)]
        pub enum Method {
            $( #[doc = $summary] $variant($ty), )*
        }

        /// The registry, in the order `--list` prints it.
        pub const METHODS: &[MethodInfo] = &[
            $( MethodInfo {
                name: $name,
                summary: $summary,
                params: &$params,
                requires: &$requires,
                uses: &$uses,
                build: |p| Ok(Method::$variant(<$ty>::from_params(p)?)),
            }, )*
        ];

        impl Pruner for Method {
            fn name(&self) -> &'static str {
                match self { $( Method::$variant(m) => m.name(), )* }
            }
            fn requires(&self) -> &'static [Signal] {
                match self { $( Method::$variant(m) => m.requires(), )* }
            }
            fn uses(&self) -> &'static [Signal] {
                match self { $( Method::$variant(_) => &$uses, )* }
            }
            fn exact_budget(&self) -> bool {
                match self { $( Method::$variant(m) => m.exact_budget(), )* }
            }
            fn synthetic_rows(&self) -> usize {
                match self { $( Method::$variant(m) => m.synthetic_rows(), )* }
            }
            fn fixed_count(&self) -> bool {
                match self { $( Method::$variant(m) => m.fixed_count(), )* }
            }
            fn select<B: Backend>(&self, backend: &B, tokens: &TokenSet<B::Matrix>, k: usize)
                -> Result<Selection<B::Matrix>> {
                match self { $( Method::$variant(m) => m.select(backend, tokens, k), )* }
            }
        }
    };
}

const NONE: [ParamSpec; 0] = [];

methods! {
    Todre(todre::Todre) = "todre", todre::PivotRule::PARAMS, [], [Signal::ClsAttention],
        "ToDRE stage 1: greedy max-sum cosine diversity from a CLS (or seeded random) pivot";
    KCenter(kcenter::KCenter) = "kcenter", todre::PivotRule::PARAMS, [], [Signal::ClsAttention],
        "greedy k-center (farthest-first) from ToDRE's pivot";
    Mmr(mmr::Mmr) = "mmr", mmr::Mmr::PARAMS, [], [Signal::ClsAttention, Signal::Importance, Signal::Relevance],
        "IDPruner: maximal marginal relevance, lambda*importance - (1-lambda)*max cosine to the kept set";
    Query(query::QueryAware) = "query", query::QueryAware::PARAMS, [], [Signal::Relevance, Signal::Query],
        "LaVida-style: top-k text-patch cosine relevance, dropped tokens merged into their most similar kept token";
    Density(density::Density) = "density", density::Density::PARAMS, [], [Signal::FrameGrid, Signal::ClsAttention],
        "LangDC-style: per-clip budgets in proportion to temporal change and spatial spread, inner selector per clip";
    DCoDe(dcode::DCoDe) = "dcode", dcode::DCoDe::PARAMS, [], [Signal::FrameGrid],
        "D-CoDe spatial: per-frame top-k by activation norm, kept tokens with cosine >= theta merged by the published in-place walk; mode=fixed opt-in";
    DivPrune(divprune::DivPrune) = "divprune", NONE, [], [],
        "DivPrune: max-min cosine diversity, first pick = farthest nearest neighbour";
    VisionZip(visionzip::VisionZip) = "visionzip", visionzip::VisionZip::PARAMS, [Signal::ClsAttention], [Signal::ClsAttention, Signal::Keys],
        "VisionZip (official, ViT layer -2 attention/keys/pre-projector states): CLS slot + dominant patches by CLS attention, contextual tokens merged by key similarity; returns k-1 (no CLS row; cls=patch for k)";
    ToMe(tome::ToMe) = "tome", NONE, [], [Signal::Keys],
        "ToMe: bipartite soft matching on keys, size-weighted merges, repeated to the budget";
    CdPruner(cdpruner::CdPruner) = "cdpruner", cdpruner::CdPruner::PARAMS, [], [Signal::Relevance, Signal::Query],
        "CDPruner: greedy MAP of a DPP on query-relevance-weighted cosine (needs --query or --relevance; past the kernel rank the rest by relevance)";
    PruMergePlus(prumerge_plus::PruMergePlus) = "prumerge-plus", prumerge_plus::PruMergePlus::PARAMS, [Signal::ClsAttention], [Signal::ClsAttention, Signal::Keys],
        "PruMerge+ (official; needs the single full-width-head CLS attention and full-width keys of ViT layer 23): IQR outliers + spatial scaffold, 32 key-similar tokens merged in, one extra token (adaptive)";
    VisPruner(vispruner::VisPruner) = "vispruner", vispruner::VisPruner::PARAMS, [Signal::ClsAttention], [Signal::ClsAttention],
        "VisPruner (official loop): important tokens by head-mean CLS attention of ViT layer -2, diverse ones by iterative duplicate removal on pre-projector features";
    DyCoke(dycoke::DyCoke) = "dycoke", dycoke::DyCoke::PARAMS, [Signal::FrameGrid], [Signal::FrameGrid],
        "DyCoke TTM (official loops, dycoke_k=0.7): 4-frame windows keep the tokens that changed vs their reference frame; tail=full, dycoke_k=budget opt-in";
    Evs(evs::Evs) = "evs", evs::Evs::PARAMS, [Signal::FrameGrid], [Signal::FrameGrid],
        "EVS (vLLM's video pruning): the first frame whole, then the top k by dissimilarity to the same position one frame earlier; rate=q for vLLM's own count";
    FastVid(fastvid::FastVid) = "fastvid", fastvid::FastVid::PARAMS, [Signal::FrameGrid, Signal::ClsAttention], [Signal::FrameGrid, Signal::ClsAttention],
        "FastVID (official DTM): DySeg segments, salient tokens by attention, the rest merged into each anchor frame's density-peak anchors; merge=pooled opt-in";
    HoliTom(holitom::HoliTom) = "holitom", holitom::HoliTom::PARAMS, [Signal::FrameGrid, Signal::ClsAttention], [Signal::FrameGrid, Signal::ClsAttention],
        "HoliTom outer: DP temporal windows, static tokens averaged and DPC-merged, dynamic ones kept by attention (exact k; official per-frame ceil via the library)";
    Random(random::RandomPick) = "random", random::RandomPick::PARAMS, [], [],
        "baseline: k tokens uniformly at random (seeded)";
    Pool(pool::Pool) = "pool", NONE, [], [Signal::FrameGrid],
        "baseline: average pooling of each frame onto a coarser uniform grid";
}

impl Method {
    /// Builds a method from its name and `key=value` pairs; returns it with the effective parameters.
    pub fn build(name: &str, given: &[(String, String)]) -> Result<(Method, Params)> {
        let info = lookup(name)?;
        let params = Params::new(info.name, info.params, given)?;
        Ok(((info.build)(&params)?, params))
    }

    /// Builds a method from `name:key=value,...`.
    pub fn from_spec(spec: &str) -> Result<(Method, Params)> {
        let (name, pairs) = crate::params::parse_spec(spec)?;
        Method::build(&name, &pairs)
    }

    /// Whether this method, as configured, reads a per-token relevance that it does not compute from a query
    /// itself: MMR with `importance=relevance`. The pipeline hands it the question's relevance
    /// ([`query::question_relevance`]); `query` and `cdpruner` compute theirs from the query rows.
    pub fn reads_relevance(&self) -> bool {
        matches!(self, Method::Mmr(m) if m.importance == "relevance")
    }
}

/// The registry entry of `name`.
pub fn lookup(name: &str) -> Result<&'static MethodInfo> {
    METHODS.iter().find(|m| m.name == name).ok_or_else(|| crate::PruneError::UnknownMethod(name.to_string()))
}
