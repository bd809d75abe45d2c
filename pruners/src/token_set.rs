//! The input of every selector: the visual tokens of one sample and the side signals some methods read.
//!
//! The constructors validate shapes and finiteness once (ALGORITHMS.md §1.7: a NaN inside an argmax would make a
//! pick depend on scan order), so the methods need not.

use crate::backend::Backend;
use crate::error::{PruneError, Result, Signal};
use crate::layout::Layout;

/// Visual tokens `[N, D]` of one sample with their layout and optional side signals.
#[derive(Debug)]
pub struct TokenSet<M> {
    features: M,
    n: usize,
    d: usize,
    layout: Layout,
    cls_attention: Option<Vec<f32>>,
    keys: Option<M>,
    importance: Option<Vec<f32>>,
    relevance: Option<Vec<f32>>,
    query: Option<M>,
    query_space: Option<M>,
}

fn check_vector(name: &'static str, v: &[f32], n: usize) -> Result<()> {
    if v.len() != n {
        return Err(PruneError::Shape { tensor: name, got: vec![v.len()], expected: format!("[{n}] (one per token)") });
    }
    match v.iter().position(|x| !x.is_finite()) {
        Some(index) => Err(PruneError::NonFinite { tensor: name, index, value: v[index] }),
        None => Ok(()),
    }
}

fn check_matrix<B: Backend>(b: &B, name: &'static str, m: &B::Matrix) -> Result<()> {
    match b.first_non_finite(m)? {
        Some((index, value)) => Err(PruneError::NonFinite { tensor: name, index, value }),
        None => Ok(()),
    }
}

impl<M> TokenSet<M> {
    /// Wraps features `[N, D]` with a flat layout, rejecting NaN and infinities.
    pub fn new<B: Backend<Matrix = M>>(backend: &B, features: M) -> Result<Self> {
        check_matrix(backend, "features", &features)?;
        let (n, d) = backend.shape(&features);
        Ok(TokenSet {
            features,
            n,
            d,
            layout: Layout::Flat,
            cls_attention: None,
            keys: None,
            importance: None,
            relevance: None,
            query: None,
            query_space: None,
        })
    }

    /// Sets the layout; it must describe exactly `N` tokens.
    pub fn with_layout(mut self, layout: Layout) -> Result<Self> {
        if let Some(count) = layout.token_count() {
            if count != self.n {
                return Err(PruneError::Layout { layout: layout.to_string(), layout_tokens: count, tokens: self.n });
            }
        }
        self.layout = layout;
        Ok(self)
    }

    /// Adds the CLS -> patch attention `[N]`.
    pub fn with_cls_attention(mut self, attention: Vec<f32>) -> Result<Self> {
        check_vector("cls attention", &attention, self.n)?;
        self.cls_attention = Some(attention);
        Ok(self)
    }

    /// Adds per-token importance `[N]`.
    pub fn with_importance(mut self, importance: Vec<f32>) -> Result<Self> {
        check_vector("importance", &importance, self.n)?;
        self.importance = Some(importance);
        Ok(self)
    }

    /// Adds per-token query relevance `[N]`.
    pub fn with_relevance(mut self, relevance: Vec<f32>) -> Result<Self> {
        check_vector("relevance", &relevance, self.n)?;
        self.relevance = Some(relevance);
        Ok(self)
    }

    /// Adds ViT keys `[N, Dk]` (averaged over heads).
    pub fn with_keys<B: Backend<Matrix = M>>(mut self, backend: &B, keys: M) -> Result<Self> {
        let (rows, cols) = backend.shape(&keys);
        if rows != self.n {
            return Err(PruneError::Shape {
                tensor: "keys",
                got: vec![rows, cols],
                expected: format!("[{}, Dk]", self.n),
            });
        }
        check_matrix(backend, "keys", &keys)?;
        self.keys = Some(keys);
        Ok(self)
    }

    /// Adds the tokens as a dual encoder embeds them, `[N, E]`: the joint image-text space the query lives in
    /// (a CLIP/SigLIP checkpoint's patch embeddings where each token's region is). Query-aware methods then measure
    /// relevance here and keep measuring similarity on the features. Set it before [`TokenSet::with_query`].
    pub fn with_query_space<B: Backend<Matrix = M>>(mut self, backend: &B, space: M) -> Result<Self> {
        let (rows, cols) = backend.shape(&space);
        if rows != self.n {
            return Err(PruneError::Shape {
                tensor: "query space",
                got: vec![rows, cols],
                expected: format!("[{}, E] (one row per token)", self.n),
            });
        }
        check_matrix(backend, "query space", &space)?;
        self.query_space = Some(space);
        Ok(self)
    }

    /// Adds query embeddings `[T, D]` in the space (and width) of the features, or of the query space when one is
    /// set ([`TokenSet::with_query_space`]).
    pub fn with_query<B: Backend<Matrix = M>>(mut self, backend: &B, query: M) -> Result<Self> {
        let (rows, cols) = backend.shape(&query);
        let width = self.query_space.as_ref().map_or(self.d, |s| backend.shape(s).1);
        if cols != width {
            return Err(PruneError::Shape {
                tensor: "query",
                got: vec![rows, cols],
                expected: format!("[T, {width}]"),
            });
        }
        check_matrix(backend, "query", &query)?;
        self.query = Some(query);
        Ok(self)
    }

    /// Number of tokens `N`.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True when there are no tokens.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Feature width `D`.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// The features `[N, D]`.
    pub fn features(&self) -> &M {
        &self.features
    }

    /// The features `[N, D]`, dropping the signals.
    pub fn into_features(self) -> M {
        self.features
    }

    /// The layout.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// CLS attention, if given.
    pub fn cls_attention(&self) -> Option<&[f32]> {
        self.cls_attention.as_deref()
    }

    /// Keys, if given.
    pub fn keys(&self) -> Option<&M> {
        self.keys.as_ref()
    }

    /// Importance, if given.
    pub fn importance(&self) -> Option<&[f32]> {
        self.importance.as_deref()
    }

    /// Relevance, if given.
    pub fn relevance(&self) -> Option<&[f32]> {
        self.relevance.as_deref()
    }

    /// Query embeddings, if given.
    pub fn query(&self) -> Option<&M> {
        self.query.as_ref()
    }

    /// The tokens in the query's space, if given ([`TokenSet::with_query_space`]).
    pub fn query_space(&self) -> Option<&M> {
        self.query_space.as_ref()
    }

    /// The tokens `idx` (in that order) as a new flat set with the matching slices of every signal; the query is
    /// shared whole. Used by methods that run an inner selector per clip or frame.
    pub fn subset<B: Backend<Matrix = M>>(&self, backend: &B, idx: &[usize]) -> Result<Self> {
        let pick = |v: &Option<Vec<f32>>| v.as_ref().map(|v| idx.iter().map(|&i| v[i]).collect());
        let all_query: Option<Vec<usize>> = self.query.as_ref().map(|q| (0..backend.shape(q).0).collect());
        Ok(TokenSet {
            features: backend.gather_rows(&self.features, idx)?,
            n: idx.len(),
            d: self.d,
            layout: Layout::Flat,
            cls_attention: pick(&self.cls_attention),
            keys: self.keys.as_ref().map(|k| backend.gather_rows(k, idx)).transpose()?,
            importance: pick(&self.importance),
            relevance: pick(&self.relevance),
            query: match (&self.query, all_query) {
                (Some(q), Some(rows)) => Some(backend.gather_rows(q, &rows)?),
                _ => None,
            },
            query_space: self.query_space.as_ref().map(|s| backend.gather_rows(s, idx)).transpose()?,
        })
    }

    /// The grid layout `(views, frames, height, width)`, or a typed error naming `method` when the layout is flat.
    pub fn grid(&self, method: &'static str) -> Result<(usize, usize, usize, usize)> {
        match self.layout {
            Layout::Grid { views, frames, height, width } => Ok((views, frames, height, width)),
            Layout::Flat => Err(PruneError::MissingSignal { method, signal: Signal::FrameGrid }),
        }
    }

    /// CLS attention, or a typed error naming `method`.
    pub fn require_cls_attention(&self, method: &'static str) -> Result<&[f32]> {
        self.cls_attention().ok_or(PruneError::MissingSignal { method, signal: Signal::ClsAttention })
    }

    /// Keys, or a typed error naming `method`.
    pub fn require_keys(&self, method: &'static str) -> Result<&M> {
        self.keys().ok_or(PruneError::MissingSignal { method, signal: Signal::Keys })
    }
}

impl TokenSet<ndarray::Array2<f32>> {
    /// Convenience for the CPU backend: wraps an owned `[N, D]` array.
    pub fn from_array(features: ndarray::Array2<f32>) -> Result<Self> {
        TokenSet::new(&crate::CpuBackend, features)
    }
}
