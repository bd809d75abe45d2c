//! `tokensieve._native`: the Rust side of the Python package. It exposes the pruners, the position bookkeeping
//! and the frame samplers on NumPy arrays; `python/tokensieve/__init__.py` adds dtype and torch handling and the
//! `Selection` type, and `tokensieve.hf` the transformers adapters.
//!
//! Inputs arrive as float32 NumPy arrays (the Python layer converts float64/float16/bfloat16 and torch tensors).
//! Each is read once into the owned `[N, D]` matrix the CPU backend computes on: that single host copy is the only
//! one, and the GIL is released while a method runs. Every Rust error becomes `tokensieve.TokensieveError` (a
//! `ValueError`) carrying the Rust message: the shape, the signal, the parameter or the method it names.

use ndarray::{Array2, ArrayView2};
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use tokensieve_pruners::params::parse_spec;
use tokensieve_pruners::positions::{span_positions, PositionIds, Rope};
use tokensieve_pruners::{
    retained_count as count_retained, run_on_host, Budget, CpuBackend, HostInputs, Layout, Method, Pruner,
    RetainedCount, Signal, METHODS,
};

create_exception!(
    _native,
    TokensieveError,
    PyValueError,
    "An input tokensieve refuses, with the Rust error's message."
);

fn err(e: impl std::fmt::Display) -> PyErr {
    TokensieveError::new_err(e.to_string())
}

fn budget(keep: Option<usize>, ratio: Option<f64>) -> PyResult<Budget> {
    let b = match (keep, ratio) {
        (Some(k), None) => Budget::Keep(k),
        (None, Some(r)) => Budget::Ratio(r),
        (Some(_), Some(_)) => return Err(err("give keep or ratio, not both")),
        (None, None) => return Err(err("give keep=K (tokens to keep) or ratio=R (a fraction in (0, 1])")),
    };
    b.validate().map_err(err)?;
    Ok(b)
}

fn layout(grid: Option<Vec<usize>>) -> PyResult<Layout> {
    grid.map_or(Ok(Layout::Flat), |g| Layout::from_dims(&g).map_err(err))
}

/// Builds a method from `name[:k=v,...]` plus keyword parameters (already rendered as text by the Python layer).
fn method(spec: &str, params: Vec<(String, String)>) -> PyResult<Method> {
    let (name, mut pairs) = parse_spec(spec).map_err(err)?;
    pairs.extend(params);
    Ok(Method::build(&name, &pairs).map_err(err)?.0)
}

fn owned(view: ArrayView2<'_, f32>) -> Array2<f32> {
    view.as_standard_layout().into_owned()
}

fn vector(a: Option<PyReadonlyArray1<'_, f32>>) -> Option<Vec<f32>> {
    a.map(|a| a.as_array().to_vec())
}

/// Runs one method on one sample. See `tokensieve.prune` for the documented Python signature.
#[pyfunction]
#[pyo3(signature = (features, method_spec, keep, ratio, cls_attn, keys, importance, query, relevance, grid, params))]
#[allow(clippy::too_many_arguments)]
fn prune<'py>(
    py: Python<'py>,
    features: PyReadonlyArray2<'py, f32>,
    method_spec: &str,
    keep: Option<usize>,
    ratio: Option<f64>,
    cls_attn: Option<PyReadonlyArray1<'py, f32>>,
    keys: Option<PyReadonlyArray2<'py, f32>>,
    importance: Option<PyReadonlyArray1<'py, f32>>,
    query: Option<PyReadonlyArray2<'py, f32>>,
    relevance: Option<PyReadonlyArray1<'py, f32>>,
    grid: Option<Vec<usize>>,
    params: Vec<(String, String)>,
) -> PyResult<Bound<'py, PyDict>> {
    let m = method(method_spec, params)?;
    let b = budget(keep, ratio)?;
    let inputs = HostInputs {
        features: owned(features.as_array()),
        keys: keys.map(|k| owned(k.as_array())),
        query: query.map(|q| owned(q.as_array())),
        cls_attention: vector(cls_attn),
        importance: vector(importance),
        relevance: vector(relevance),
        layout: layout(grid)?,
    };
    let out = py.detach(|| run_on_host(&CpuBackend, &m, inputs, b)).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("method", m.name())?;
    d.set_item("indices", out.kept.iter().map(|&i| i as i64).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("sizes", out.sizes.iter().map(|&i| i as i64).collect::<Vec<_>>().into_pyarray(py))?;
    d.set_item("output", out.output.into_pyarray(py))?;
    d.set_item("merged", out.merged)?;
    d.set_item("extra", out.extra.map(|e| e.into_pyarray(py)))?;
    d.set_item("requested", out.requested)?;
    d.set_item("clamped", out.clamped)?;
    d.set_item("notes", out.notes)?;
    d.set_item("elapsed_ms", out.elapsed_ms)?;
    Ok(d)
}

/// The `tokensieve.prune` keyword that carries a signal.
fn keyword(signal: Signal) -> &'static str {
    match signal {
        Signal::ClsAttention => "cls_attn",
        Signal::Keys => "keys",
        Signal::Importance => "importance",
        Signal::Relevance => "relevance",
        Signal::Query => "query",
        Signal::FrameGrid => "grid",
    }
}

/// Every registered method: name, summary, parameters, required and used signals, exact budget.
#[pyfunction]
fn methods(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let list = PyList::empty(py);
    for info in METHODS {
        let d = PyDict::new(py);
        d.set_item("name", info.name)?;
        d.set_item("summary", info.summary)?;
        let params = PyList::empty(py);
        for p in info.params {
            let pd = PyDict::new(py);
            pd.set_item("name", p.name)?;
            pd.set_item("default", p.default)?;
            pd.set_item("help", p.help)?;
            params.append(pd)?;
        }
        d.set_item("params", params)?;
        d.set_item("requires", info.requires.iter().map(|&s| keyword(s)).collect::<Vec<_>>())?;
        d.set_item("uses", info.uses.iter().map(|&s| keyword(s)).collect::<Vec<_>>())?;
        // Built with its defaults: whether a method is adaptive does not depend on its parameters.
        let built = Method::build(info.name, &[]).map_err(err)?.0;
        d.set_item("exact_budget", built.exact_budget())?;
        list.append(d)?;
    }
    Ok(list)
}

/// The rows a method hands the decoder for `n_tokens`: `(count, exact)`.
#[pyfunction]
#[pyo3(signature = (n_tokens, method_spec, keep, ratio, grid, params))]
fn retained_count(
    n_tokens: usize,
    method_spec: &str,
    keep: Option<usize>,
    ratio: Option<f64>,
    grid: Option<Vec<usize>>,
    params: Vec<(String, String)>,
) -> PyResult<(usize, bool)> {
    let l = layout(grid)?;
    if let Some(t) = l.token_count().filter(|&t| t != n_tokens) {
        return Err(err(format!("grid {l} describes {t} tokens but n_tokens is {n_tokens}")));
    }
    let m = method(method_spec, params)?;
    Ok(match count_retained(&m, n_tokens, budget(keep, ratio)?).map_err(err)? {
        RetainedCount::Exact(c) => (c, true),
        RetainedCount::AtMost(c) => (c, false),
    })
}

/// Original position ids of kept tokens: `(ids, next)`, ids `[K]` or `[3, K]`.
#[pyfunction]
#[pyo3(signature = (kept, n_tokens, grid, offset, mrope, temporal_scale))]
fn positions<'py>(
    py: Python<'py>,
    kept: Vec<usize>,
    n_tokens: usize,
    grid: Option<Vec<usize>>,
    offset: i64,
    mrope: bool,
    temporal_scale: f64,
) -> PyResult<(Bound<'py, PyAny>, i64)> {
    let rope = if mrope { Rope::MRope { temporal_scale } } else { Rope::OneD };
    let s = span_positions(&kept, layout(grid)?, n_tokens, offset, rope).map_err(err)?;
    let ids = match s.ids {
        PositionIds::Sequence(p) => p.into_pyarray(py).into_any(),
        PositionIds::MRope([t, h, w]) => {
            let k = t.len();
            let flat: Vec<i64> = t.into_iter().chain(h).chain(w).collect();
            let a = Array2::from_shape_vec((3, k), flat).map_err(err)?;
            a.into_pyarray(py).into_any()
        }
    };
    Ok((ids, s.next))
}

/// Index rules that need no decoding: `uniform` (both ends, lmms-eval) or `interior` (VLMEvalKit).
#[pyfunction]
#[pyo3(signature = (n_frames, k, convention))]
fn uniform_indices(n_frames: usize, k: usize, convention: &str) -> PyResult<Vec<usize>> {
    use tokensieve_video::samplers::Uniform;
    let c = match convention {
        "uniform" | "inclusive" => Uniform::Inclusive,
        "interior" | "uniform-interior" => Uniform::Interior,
        other => return Err(err(format!("convention `{other}` is unknown (uniform or interior)"))),
    };
    tokensieve_video::samplers::uniform_indices(n_frames, k, c).map_err(err)
}

/// D-CoDe's frame choice on given per-frame embeddings `[F, d]`.
#[pyfunction]
#[pyo3(signature = (embeddings, n, uniform_ratio))]
fn dcode_frames(embeddings: PyReadonlyArray2<'_, f32>, n: usize, uniform_ratio: f64) -> PyResult<Vec<usize>> {
    let e = embeddings.as_array();
    let rows: Vec<Vec<f32>> = e.outer_iter().map(|r| r.to_vec()).collect();
    tokensieve_video::samplers::dcode::select(&rows, n, uniform_ratio).map_err(err)
}

/// F2C's plan from per-candidate relevance scores: frames, anchors, clip length, side, tokens.
#[pyfunction]
#[pyo3(signature = (relevance, budget, anchors, min_clip, smooth))]
fn f2c_plan<'py>(
    py: Python<'py>,
    relevance: PyReadonlyArray1<'py, f32>,
    budget: usize,
    anchors: usize,
    min_clip: usize,
    smooth: usize,
) -> PyResult<Bound<'py, PyDict>> {
    use tokensieve_video::samplers::f2c;
    let r = relevance.as_array().to_vec();
    let planner = f2c::F2c { budget, anchors, min_clip, smooth, ladder: f2c::ONEVISION_LADDER.to_vec() };
    let plan = planner.plan(&r).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("frames", plan.frames)?;
    d.set_item("anchors", plan.anchors)?;
    d.set_item("clip_len", plan.clip_len)?;
    d.set_item("side", plan.rung.side)?;
    d.set_item("tokens_per_frame", plan.rung.tokens)?;
    d.set_item("tokens", plan.tokens)?;
    Ok(d)
}

/// Decodes the frames a named sampler picks: `(frames [F, H, W, 3] uint8, timestamps, indices)`.
#[pyfunction]
#[pyo3(signature = (path, spec))]
fn sample<'py>(
    py: Python<'py>,
    path: std::path::PathBuf,
    spec: &str,
) -> PyResult<(Bound<'py, PyAny>, Vec<f64>, Vec<usize>)> {
    use tokensieve_video::samplers::Sampler;
    let sampler = Sampler::from_spec(spec).map_err(err)?;
    let (indices, frames) = py
        .detach(|| -> Result<_, String> {
            let info = tokensieve_video::probe(&path).map_err(|e| e.to_string())?;
            let (indices, _note) = sampler.pick(&path, &info).map_err(|e| e.to_string())?;
            let frames = tokensieve_video::decode_indices_native(&path, &info, &indices).map_err(|e| e.to_string())?;
            Ok((indices, frames))
        })
        .map_err(err)?;
    let (h, w) = frames.first().map_or((0, 0), |f| (f.height as usize, f.width as usize));
    let times: Vec<f64> = frames.iter().map(|f| f.timestamp).collect();
    let mut bytes = Vec::with_capacity(frames.len() * h * w * 3);
    for f in &frames {
        if (f.height as usize, f.width as usize) != (h, w) {
            return Err(err(format!("{}: frames change size mid-stream", path.display())));
        }
        bytes.extend_from_slice(&f.rgb);
    }
    let array = numpy::ndarray::Array4::from_shape_vec((frames.len(), h, w, 3), bytes).map_err(err)?;
    Ok((array.into_pyarray(py).into_any(), times, indices))
}

/// What the container says about a video: duration, fps, frames, width, height, rotation.
#[pyfunction]
fn probe(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Bound<'_, PyDict>> {
    let info = tokensieve_video::probe(&path).map_err(err)?;
    let d = PyDict::new(py);
    d.set_item("duration", info.duration)?;
    d.set_item("fps", info.fps)?;
    d.set_item("frames", info.frames)?;
    d.set_item("width", info.width)?;
    d.set_item("height", info.height)?;
    d.set_item("rotation", info.rotation)?;
    Ok(d)
}

/// The extension module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("TokensieveError", m.py().get_type::<TokensieveError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(prune, m)?)?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(retained_count, m)?)?;
    m.add_function(wrap_pyfunction!(positions, m)?)?;
    m.add_function(wrap_pyfunction!(uniform_indices, m)?)?;
    m.add_function(wrap_pyfunction!(dcode_frames, m)?)?;
    m.add_function(wrap_pyfunction!(f2c_plan, m)?)?;
    m.add_function(wrap_pyfunction!(sample, m)?)?;
    m.add_function(wrap_pyfunction!(probe, m)?)?;
    Ok(())
}
