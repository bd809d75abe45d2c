//! `tokensieve prune`: run any registered method on a feature matrix saved with NumPy and print what it kept.

use super::{emit, CliError};
use ndarray::Array2;
use serde_json::json;
use std::path::{Path, PathBuf};
use tokensieve::npy;
use tokensieve::pruners::{
    run_on_host, Backend, Budget, CpuBackend, HostInputs, Layout, Method, PruneError, Pruner, METHODS,
};

/// Arguments of `prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Visual tokens, an `[N, D]` float64/float32/float16 .npy file.
    #[arg(long, required_unless_present = "list")]
    features: Option<PathBuf>,
    /// Method name, optionally with parameters: `name:key=value,...` (see --list).
    #[arg(long, required_unless_present = "list")]
    method: Option<String>,
    /// Keep this many tokens.
    #[arg(long, conflicts_with = "ratio", required_unless_present_any = ["ratio", "list"])]
    keep: Option<usize>,
    /// Keep this fraction of the tokens, in (0, 1].
    #[arg(long)]
    ratio: Option<f64>,
    /// CLS -> patch attention `[N]`.
    #[arg(long)]
    cls_attn: Option<PathBuf>,
    /// ViT keys averaged over heads `[N, Dk]`.
    #[arg(long)]
    keys: Option<PathBuf>,
    /// Per-token importance `[N]`.
    #[arg(long)]
    importance: Option<PathBuf>,
    /// Per-token query relevance `[N]`.
    #[arg(long)]
    relevance: Option<PathBuf>,
    /// Query embeddings `[T, D]`.
    #[arg(long)]
    query: Option<PathBuf>,
    /// Token layout: `F,H,W` (frames x height x width) or `V,F,H,W` (camera views first).
    #[arg(long)]
    grid: Option<String>,
    /// Seed, for methods with randomness.
    #[arg(long)]
    seed: Option<u64>,
    /// A method parameter `key=value` (repeatable; same as `--method name:key=value`).
    #[arg(long = "param", value_name = "KEY=VALUE")]
    params: Vec<String>,
    /// Write the output tokens `[kept, D]` (merged where the method merges, else the kept rows) as .npy.
    #[arg(long)]
    merged_out: Option<PathBuf>,
    /// Tensor backend: `cpu` (ndarray) or `torch` (libtorch; CUDA when available).
    #[arg(long, default_value = "cpu", value_parser = ["cpu", "torch"])]
    backend: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// List the methods with their parameters and exit.
    #[arg(long)]
    list: bool,
}

fn prune_error(e: PruneError) -> CliError {
    match e {
        PruneError::NonFinite { .. } | PruneError::Backend(_) => CliError::runtime(e.to_string(), None),
        PruneError::UnknownMethod(_) | PruneError::Param { .. } => {
            CliError::usage(e.to_string(), "`tokensieve prune --list` shows every method and its parameters")
        }
        PruneError::MissingSignal { .. } => CliError::usage(e.to_string(), "pass the signal's .npy file"),
        _ => CliError::usage(e.to_string(), "check the shapes and the budget against `tokensieve prune --help`"),
    }
}

fn load(path: &Path) -> Result<npy::NpyArray, CliError> {
    npy::read(path).map_err(|e| {
        CliError::runtime(e.to_string(), Some("save arrays with numpy.save (float64, float32 or float16)".into()))
    })
}

fn matrix(path: &Path, name: &'static str) -> Result<Array2<f32>, CliError> {
    let a = load(path)?;
    match a.shape.as_slice() {
        [r, c] => Array2::from_shape_vec((*r, *c), a.data).map_err(|e| CliError::runtime(e.to_string(), None)),
        other => Err(CliError::usage(
            format!("{}: {name} must be 2-D, got shape {other:?}", path.display()),
            "reshape to [rows, width] before saving",
        )),
    }
}

fn vector(path: &Path, name: &'static str) -> Result<Vec<f32>, CliError> {
    let a = load(path)?;
    match a.shape.as_slice() {
        [_] | [_, 1] | [1, _] => Ok(a.data),
        other => Err(CliError::usage(
            format!("{}: {name} must be 1-D (one value per token), got shape {other:?}", path.display()),
            "save a vector of length N",
        )),
    }
}

fn layout(spec: &str) -> Result<Layout, CliError> {
    let dims: Result<Vec<usize>, _> = spec.split(',').map(|s| s.trim().parse::<usize>()).collect();
    dims.ok()
        .and_then(|d| Layout::from_dims(&d).ok())
        .ok_or_else(|| CliError::usage(format!("--grid {spec} is not F,H,W or V,F,H,W"), "for example --grid 8,14,14"))
}

fn list() -> String {
    let mut text = String::new();
    for m in METHODS {
        text += &format!("{:<14} {}\n", m.name, m.summary);
        if !m.requires.is_empty() {
            let needs: Vec<String> = m.requires.iter().map(|s| s.to_string()).collect();
            text += &format!("{:<14}   needs: {}\n", "", needs.join(", "));
        }
        for p in m.params {
            text += &format!("{:<14}   {:<22} {}\n", "", format!("{}={}", p.name, p.default), p.help);
        }
    }
    text
}

pub fn run(args: Args) -> Result<(), CliError> {
    if args.list {
        return emit(&list());
    }
    let (Some(features_path), Some(spec)) = (&args.features, &args.method) else {
        return Err(CliError::usage("--features and --method are required", "see `tokensieve prune --help`"));
    };
    let (name, mut pairs) = tokensieve::pruners::params::parse_spec(spec).map_err(prune_error)?;
    for p in &args.params {
        let (k, v) = p.split_once('=').ok_or_else(|| {
            CliError::usage(format!("--param {p} is not key=value"), "for example --param lambda=0.7")
        })?;
        pairs.push((k.to_string(), v.to_string()));
    }
    if let Some(seed) = args.seed {
        let info = tokensieve::pruners::lookup(&name).map_err(prune_error)?;
        if !info.params.iter().any(|p| p.name == "seed") {
            return Err(CliError::usage(format!("method `{name}` takes no seed"), "drop --seed"));
        }
        pairs.push(("seed".into(), seed.to_string()));
    }
    let (method, params) = Method::build(&name, &pairs).map_err(prune_error)?;
    let budget = match (args.keep, args.ratio) {
        (Some(k), _) => Budget::Keep(k),
        (None, Some(r)) => Budget::Ratio(r),
        _ => return Err(CliError::usage("give --keep K or --ratio R", "for example --ratio 0.1")),
    };
    budget.validate().map_err(prune_error)?;
    let inputs = HostInputs {
        features: matrix(features_path, "features")?,
        keys: args.keys.as_deref().map(|p| matrix(p, "keys")).transpose()?,
        query: args.query.as_deref().map(|p| matrix(p, "query")).transpose()?,
        cls_attention: args.cls_attn.as_deref().map(|p| vector(p, "cls attention")).transpose()?,
        importance: args.importance.as_deref().map(|p| vector(p, "importance")).transpose()?,
        relevance: args.relevance.as_deref().map(|p| vector(p, "relevance")).transpose()?,
        layout: args.grid.as_deref().map(layout).transpose()?.unwrap_or(Layout::Flat),
    };
    let (n, d) = inputs.features.dim();
    let backend_name;
    let outcome = match args.backend.as_str() {
        "torch" => {
            #[cfg(feature = "torch")]
            {
                let b = tokensieve::pruners::TchBackend::cuda_if_available();
                backend_name = b.name();
                run_on_host(&b, &method, inputs, budget).map_err(prune_error)?
            }
            #[cfg(not(feature = "torch"))]
            {
                return Err(CliError::usage(
                    "this build has no torch backend",
                    "rebuild with `cargo build --release --features torch` (or use `make build`)",
                ));
            }
        }
        _ => {
            backend_name = CpuBackend.name();
            run_on_host(&CpuBackend, &method, inputs, budget).map_err(prune_error)?
        }
    };
    if let Some(path) = &args.merged_out {
        let (rows, cols) = outcome.output.dim();
        let data: Vec<f32> = outcome.output.iter().copied().collect();
        npy::write_f32(path, &[rows, cols], &data).map_err(|e| CliError::runtime(e.to_string(), None))?;
    }
    if args.json {
        let mut out = json!({
            "method": method.name(),
            "n": n,
            "d": d,
            "k": outcome.requested,
            "kept": outcome.kept,
            "params": params.effective(),
            "elapsed_ms": outcome.elapsed_ms,
            "backend": backend_name,
            "clamped": outcome.clamped,
            "notes": outcome.notes,
        });
        if outcome.merged {
            out["sizes"] = json!(outcome.sizes);
        }
        if let Some(extra) = &outcome.extra {
            out["extra_tokens"] = json!(extra.nrows());
        }
        emit(&format!("{out}\n"))
    } else {
        let mut text = format!(
            "{} kept {} of {n} tokens (budget {}) in {:.2} ms on {backend_name}\n",
            method.name(),
            outcome.kept.len(),
            outcome.requested,
            outcome.elapsed_ms
        );
        for note in &outcome.notes {
            text += &format!("  note: {note}\n");
        }
        text += &format!("  kept: {:?}\n", outcome.kept);
        emit(&text)
    }
}
