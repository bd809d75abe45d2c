//! The in-decoder rules that merge, recycle or act while decoding — SparseVLM, HoliTom's inner merge and DyCoke's
//! dynamic KV — run inside the libtorch decoder ([`Llama::forward_embeds_planned`], [`Llama::forward_step`]) with
//! the pruners' rules, against direct transcriptions of their official Python: an eager decoder written here from
//! the checkpoint's weights (explicit softmax attention, GQA heads repeated, per-layer caches) that applies each rule
//! at its layer the way the reference code does (SparseVLMs `modelling_sparse_llama.py` / `score.py` /
//! `cluster_and_merge`, HoliTom `modeling_qwen2.py`, DyCoke `PrunableDynamicCache`, PyramidDrop
//! `modeling_llama_pdrop.py::pdrop_forward` / `pdrop_rank_drop`, FastV's llava-hf `modeling_llama.py`). Prefill logits and several
//! decode steps agree within 1e-4, the kept sets agree exactly, and each rule measurably changes the logits.
//!
//! Two models: the `tiny_qwen2` fixture (2 layers, GQA, q/k/v biases, tied head) and a 4-layer Qwen2 with larger
//! random weights written here (peaked attention, so the rules' choices matter and SparseVLM runs three stages).

#![cfg(feature = "torch")]

use ndarray::Array2;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::{Device, Kind, Tensor};
use tokensieve_models::llama::{
    KvCache, LayerPlan, Llama, LlamaError, PositionMode, PrefillPlan, QueryRows, RuleError, StageView, StepKeys,
    StepView,
};
use tokensieve_models::safetensors::{write, Safetensors, StoreAs};
use tokensieve_pruners::in_decoder::{InDecoder, StagePlan};
use tokensieve_pruners::primitives::SplitMix64;
use tokensieve_pruners::CpuBackend;

// ------------------------------------------------------------------------------------------------------------------
// Models
// ------------------------------------------------------------------------------------------------------------------

struct Normal(SplitMix64);

impl Normal {
    fn next(&mut self) -> f32 {
        let (u, v) = (self.0.unit().max(1e-300), self.0.unit());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }

    fn fill(&mut self, n: usize, std: f32, mean: f32) -> Vec<f32> {
        (0..n).map(|_| mean + std * self.next()).collect()
    }
}

/// A 4-layer Qwen2 (hidden 32, 4 heads, 2 KV heads, vocabulary 64) with weights large enough for peaked attention.
fn peaked_model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Written once per target directory (seeded, so every run writes the same bytes), through a rename so that
        // concurrent test processes never read a half-written checkpoint.
        let done = Path::new(env!("CARGO_TARGET_TMPDIR")).join("in-decoder-rules-peaked-qwen2");
        if done.join("config.json").exists() {
            return done;
        }
        let dir = done.with_extension(format!("part-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (d, kv, f, v, layers) = (32usize, 16usize, 64usize, 64usize, 4usize);
        let mut rng = Normal(SplitMix64::new(17));
        let mut w: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        let mut put = |name: String, shape: Vec<usize>, std: f32, mean: f32, rng: &mut Normal| {
            let n = shape.iter().product();
            w.push((name, shape, rng.fill(n, std, mean)));
        };
        put("model.embed_tokens.weight".into(), vec![v, d], 1.0, 0.0, &mut rng);
        for l in 0..layers {
            let p = format!("model.layers.{l}");
            put(format!("{p}.input_layernorm.weight"), vec![d], 0.1, 1.0, &mut rng);
            for (name, rows, std) in [("q_proj", d, 0.35), ("k_proj", kv, 0.35), ("v_proj", kv, 0.2)] {
                put(format!("{p}.self_attn.{name}.weight"), vec![rows, d], std, 0.0, &mut rng);
                put(format!("{p}.self_attn.{name}.bias"), vec![rows], 0.1, 0.0, &mut rng);
            }
            put(format!("{p}.self_attn.o_proj.weight"), vec![d, d], 0.15, 0.0, &mut rng);
            put(format!("{p}.post_attention_layernorm.weight"), vec![d], 0.1, 1.0, &mut rng);
            put(format!("{p}.mlp.gate_proj.weight"), vec![f, d], 0.15, 0.0, &mut rng);
            put(format!("{p}.mlp.up_proj.weight"), vec![f, d], 0.15, 0.0, &mut rng);
            put(format!("{p}.mlp.down_proj.weight"), vec![d, f], 0.15, 0.0, &mut rng);
        }
        put("model.norm.weight".into(), vec![d], 0.1, 1.0, &mut rng);
        put("lm_head.weight".into(), vec![v, d], 0.2, 0.0, &mut rng);
        write(&dir.join("model.safetensors"), &w, StoreAs::F32).unwrap();
        let config = serde_json::json!({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"],
            "hidden_size": d, "intermediate_size": f, "num_hidden_layers": layers, "num_attention_heads": 4,
            "num_key_value_heads": 2, "vocab_size": v, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
            "tie_word_embeddings": false, "max_position_embeddings": 256});
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        if std::fs::rename(&dir, &done).is_err() {
            // Another process finished first; its copy is identical.
            let _ = std::fs::remove_dir_all(&dir);
        }
        done
    })
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny_qwen2")
}

// ------------------------------------------------------------------------------------------------------------------
// The eager reference decoder
// ------------------------------------------------------------------------------------------------------------------

struct LayerWeights {
    ln1: Tensor,
    q: (Tensor, Tensor),
    k: (Tensor, Tensor),
    v: (Tensor, Tensor),
    o: Tensor,
    ln2: Tensor,
    gate: Tensor,
    up: Tensor,
    down: Tensor,
}

/// Qwen2 as transformers' eager code computes it, from the checkpoint's tensors.
struct Reference {
    embed: Tensor,
    layers: Vec<LayerWeights>,
    norm: Tensor,
    head: Tensor,
    heads: i64,
    kv_heads: i64,
    eps: f64,
    theta: f64,
}

/// Per-layer keys and values `[1, kv_heads, T, d]`.
#[derive(Default)]
struct RefCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
}

/// One eager layer's outputs: the hidden states, this layer's full keys and values, the probabilities `[H, S, T]`.
struct LayerOut {
    x: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
}

impl Reference {
    fn load(dir: &Path) -> Self {
        let st = Safetensors::open(&dir.join("model.safetensors")).unwrap();
        let config: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        let get = |name: &str| {
            let (data, shape) = st.tensor_f32(name).unwrap();
            Tensor::from_slice(&data).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>())
        };
        let layers = (0..config["num_hidden_layers"].as_u64().unwrap())
            .map(|l| {
                let p = format!("model.layers.{l}");
                let proj =
                    |n: &str| (get(&format!("{p}.self_attn.{n}.weight")), get(&format!("{p}.self_attn.{n}.bias")));
                LayerWeights {
                    ln1: get(&format!("{p}.input_layernorm.weight")),
                    q: proj("q_proj"),
                    k: proj("k_proj"),
                    v: proj("v_proj"),
                    o: get(&format!("{p}.self_attn.o_proj.weight")),
                    ln2: get(&format!("{p}.post_attention_layernorm.weight")),
                    gate: get(&format!("{p}.mlp.gate_proj.weight")),
                    up: get(&format!("{p}.mlp.up_proj.weight")),
                    down: get(&format!("{p}.mlp.down_proj.weight")),
                }
            })
            .collect();
        let embed = get("model.embed_tokens.weight");
        let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false) || !st.contains("lm_head.weight");
        let head = if tied { embed.shallow_clone() } else { get("lm_head.weight") };
        let theta = config["rope_parameters"]["rope_theta"].as_f64().or(config["rope_theta"].as_f64()).unwrap();
        Reference {
            embed,
            layers,
            norm: get("model.norm.weight"),
            head,
            heads: config["num_attention_heads"].as_i64().unwrap(),
            kv_heads: config["num_key_value_heads"].as_i64().unwrap(),
            eps: config["rms_norm_eps"].as_f64().unwrap(),
            theta,
        }
    }

    fn embed(&self, ids: &[i64]) -> Tensor {
        self.embed.index_select(0, &Tensor::from_slice(ids)).unsqueeze(0)
    }

    fn rms(&self, x: &Tensor, w: &Tensor) -> Tensor {
        let var = x.pow_tensor_scalar(2).mean_dim([-1i64].as_slice(), true, Kind::Float);
        x * (var + self.eps).rsqrt() * w
    }

    /// `rotate_half` RoPE of `x` `[1, H, S, d]` at `positions`.
    fn rope(&self, x: &Tensor, positions: &[i64]) -> Tensor {
        let d = x.size()[3];
        let inv: Vec<f32> = (0..d / 2).map(|i| (1.0 / self.theta.powf(2.0 * i as f64 / d as f64)) as f32).collect();
        let pos = Tensor::from_slice(positions).to_kind(Kind::Float).unsqueeze(1);
        let freqs = pos * Tensor::from_slice(&inv).unsqueeze(0);
        let emb = Tensor::cat(&[&freqs, &freqs], 1);
        let (cos, sin) = (emb.cos(), emb.sin());
        let half = d / 2;
        let rotated = Tensor::cat(&[-x.narrow(3, half, half), x.narrow(3, 0, half)], 3);
        x * &cos + rotated * &sin
    }

    /// Layer `l` on `x` `[1, S, D]` at `positions`, after the cached `past` keys; `visible` `[T]` (bool), when
    /// given, hides keys from the attention (DyCoke's restriction).
    fn layer(
        &self,
        l: usize,
        x: &Tensor,
        positions: &[i64],
        past: Option<(&Tensor, &Tensor)>,
        visible: Option<&Tensor>,
    ) -> LayerOut {
        let w = &self.layers[l];
        let (s, dim) = (x.size()[1], x.size()[2]);
        let hd = dim / self.heads;
        let h = self.rms(x, &w.ln1);
        let split =
            |p: &(Tensor, Tensor), heads: i64| h.linear(&p.0, Some(&p.1)).reshape([1, s, heads, hd]).transpose(1, 2);
        let q = self.rope(&split(&w.q, self.heads), positions);
        let mut k = self.rope(&split(&w.k, self.kv_heads), positions);
        let mut v = split(&w.v, self.kv_heads);
        if let Some((pk, pv)) = past {
            k = Tensor::cat(&[pk, &k], 2);
            v = Tensor::cat(&[pv, &v], 2);
        }
        let t = k.size()[2];
        let groups = self.heads / self.kv_heads;
        let (kr, vr) = (k.repeat_interleave_self_int(groups, 1, None), v.repeat_interleave_self_int(groups, 1, None));
        let mut scores = q.matmul(&kr.transpose(2, 3)) / (hd as f64).sqrt();
        let query = Tensor::arange_start(t - s, t, (Kind::Int64, Device::Cpu)).unsqueeze(1);
        let key = Tensor::arange(t, (Kind::Int64, Device::Cpu)).unsqueeze(0);
        scores = scores.masked_fill(&key.gt_tensor(&query), f64::NEG_INFINITY);
        if let Some(visible) = visible {
            scores = scores.masked_fill(&visible.logical_not().view([1, 1, 1, t]), f64::NEG_INFINITY);
        }
        let probs = scores.softmax(-1, Kind::Float);
        let attn = probs.matmul(&vr).transpose(1, 2).reshape([1, s, dim]);
        let x = x + attn.linear::<&Tensor>(&w.o, None);
        let h = self.rms(&x, &w.ln2);
        let mlp = (h.linear::<&Tensor>(&w.gate, None).silu() * h.linear::<&Tensor>(&w.up, None))
            .linear::<&Tensor>(&w.down, None);
        LayerOut { x: x + mlp, k, v, probs: probs.squeeze_dim(0) }
    }

    fn logits(&self, x: &Tensor) -> Vec<f32> {
        let last = self.rms(&x.select(1, x.size()[1] - 1), &self.norm);
        values(&last.linear::<&Tensor>(&self.head, None))
    }

    /// One decode step of `token` at the per-layer positions `position(l)`; `visible(l, T)` may hide keys.
    fn step(
        &self,
        cache: &mut RefCache,
        token: i64,
        position: &dyn Fn(usize) -> i64,
        hook: &mut dyn FnMut(usize, &Tensor) -> Option<Tensor>,
    ) -> Vec<f32> {
        let mut x = self.embed(&[token]);
        let mut visible: Option<Tensor> = None;
        for l in 0..self.layers.len() {
            let out = self.layer(l, &x, &[position(l)], Some((&cache.k[l], &cache.v[l])), visible.as_ref());
            // The hook sees this layer's probabilities (mean over heads, the one row) and may restrict later layers.
            if let Some(mask) = hook(l, &out.probs.mean_dim([0i64].as_slice(), false, Kind::Float).select(0, 0)) {
                visible = Some(mask);
            }
            cache.k[l] = out.k;
            cache.v[l] = out.v;
            x = out.x;
        }
        self.logits(&x)
    }
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::try_from(t.to_kind(Kind::Float).reshape([-1])).unwrap()
}

fn diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Row `r` of a `[N, D]` tensor as a host vector.
fn row(t: &Tensor, r: usize) -> Vec<f32> {
    values(&t.get(r as i64))
}

fn to_array(t: &Tensor) -> Array2<f32> {
    let (n, d) = t.size2().unwrap();
    Array2::from_shape_vec((n as usize, d as usize), values(t)).unwrap()
}

fn to_tensor(a: &Array2<f32>) -> Tensor {
    let (n, d) = a.dim();
    Tensor::from_slice(a.as_standard_layout().as_slice().unwrap()).reshape([n as i64, d as i64])
}

/// The `k` largest values' indices, by value descending then index ascending (`torch.topk` on tie-free inputs).
fn topk(v: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[b].total_cmp(&v[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// A prompt: `prefix` token ids, `n` visual rows (random, scaled like the embeddings), `text` token ids.
struct Prompt {
    x: Tensor,
    span: std::ops::Range<usize>,
}

fn prompt(reference: &Reference, prefix: &[i64], n: usize, text: &[i64], seed: u64) -> Prompt {
    let d = reference.embed.size()[1];
    let scale = values(&reference.embed.pow_tensor_scalar(2).mean(Kind::Float))[0].sqrt();
    let visual =
        Tensor::from_slice(&Normal(SplitMix64::new(seed)).fill(n * d as usize, scale, 0.0)).reshape([1, n as i64, d]);
    let x = Tensor::cat(&[reference.embed(prefix), visual, reference.embed(text)], 1);
    Prompt { x, span: prefix.len()..prefix.len() + n }
}

/// The rule as the pipeline runs it (pruners on the host here): a [`PrefillPlan`] fed by [`InDecoder::start`].
fn run_in_decoder(model: &Llama, rule: &InDecoder, p: &Prompt, kept_seen: &mut Vec<Vec<usize>>) -> (Vec<f32>, KvCache) {
    let x0 = p.x.select(0, 0);
    let visual = to_array(&x0.narrow(0, p.span.start as i64, p.span.len() as i64));
    let text = to_array(&x0.narrow(0, p.span.end as i64, x0.size()[0] - p.span.end as i64));
    let mut run = rule.start(&CpuBackend, &visual, &text).unwrap();
    let mut stage = |view: StageView<'_>| -> Result<LayerPlan, RuleError> {
        let plan: StagePlan<Array2<f32>> = run.stage(
            &CpuBackend,
            view.stage,
            view.rows,
            view.span,
            &to_array(view.hidden),
            view.normed.map(to_array).as_ref(),
        )?;
        kept_seen.push(plan.kept.clone());
        Ok(LayerPlan {
            kept: plan.kept,
            replace: plan.replace.as_ref().map(to_tensor),
            extra: plan.extra.as_ref().map(to_tensor),
        })
    };
    let plan = PrefillPlan {
        layers: rule.drop_layers(model.config.layers),
        span: p.span.clone(),
        rows: rule.rows(),
        rule: &mut stage,
        positions: if rule.contiguous_positions() { PositionMode::Contiguous } else { PositionMode::Original },
    };
    let s = p.x.size()[1];
    let positions: Vec<i64> = (0..s).collect();
    let mut cache = KvCache::default();
    let logits =
        values(&model.forward_embeds_planned(p.x.shallow_clone(), &positions, &mut cache, Some(plan)).unwrap());
    (logits, cache)
}

fn plain_logits(model: &Llama, p: &Prompt, steps: &[i64]) -> Vec<Vec<f32>> {
    let mut cache = KvCache::default();
    let mut out = vec![values(&model.forward_embeds(p.x.shallow_clone(), &mut cache).unwrap())];
    for &t in steps {
        out.push(values(&model.forward(&Tensor::from_slice(&[t]).unsqueeze(0), &mut cache).unwrap()));
    }
    out
}

const STEPS: [i64; 3] = [5, 9, 17];

fn check_close(name: &str, ours: &[Vec<f32>], want: &[Vec<f32>]) {
    for (i, (a, b)) in ours.iter().zip(want).enumerate() {
        let d = diff(a, b);
        assert!(
            d <= 1e-4,
            "{name}: {} differs by {d}",
            if i == 0 { "the prefill".to_string() } else { format!("step {i}") }
        );
    }
}

fn check_changed(name: &str, ours: &[Vec<f32>], plain: &[Vec<f32>]) {
    let most = ours.iter().zip(plain).map(|(a, b)| diff(a, b)).fold(0.0, f32::max);
    assert!(most > 1e-4, "{name}: the rule did not change the logits ({most})");
}

// ------------------------------------------------------------------------------------------------------------------
// The reference decoder is the decoder
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn the_eager_transcription_matches_the_decoder() {
    for dir in [fixture(), peaked_model().to_path_buf()] {
        let (model, reference) = (Llama::from_hf_dir(&dir, Device::Cpu).unwrap(), Reference::load(&dir));
        let p = prompt(&reference, &[3, 4], 12, &[7, 8, 9], 1);
        let plain = plain_logits(&model, &p, &STEPS);
        let s = p.x.size()[1];
        let positions: Vec<i64> = (0..s).collect();
        let mut cache = RefCache::default();
        let mut x = p.x.shallow_clone();
        for l in 0..reference.layers.len() {
            let out = reference.layer(l, &x, &positions, None, None);
            cache.k.push(out.k);
            cache.v.push(out.v);
            x = out.x;
        }
        let mut ours = vec![reference.logits(&x)];
        for (t, &token) in STEPS.iter().enumerate() {
            ours.push(reference.step(&mut cache, token, &|_| s + t as i64, &mut |_, _| None));
        }
        check_close(&dir.display().to_string(), &plain, &ours);
    }
}

// ------------------------------------------------------------------------------------------------------------------
// HoliTom inner
// ------------------------------------------------------------------------------------------------------------------

/// `Qwen2Model_holitom.forward`'s `layer_idx == HOLITOM_k` branch, then plain decoding (original position ids).
fn holitom_reference(
    r: &Reference,
    p: &Prompt,
    k_layer: usize,
    ratio: f64,
    steps: &[i64],
) -> (Vec<Vec<f32>>, Vec<usize>, Vec<i64>) {
    let s = p.x.size()[1];
    let mut positions: Vec<i64> = (0..s).collect();
    let mut x = p.x.shallow_clone();
    let mut cache = RefCache::default();
    let mut last_probs = None;
    let mut kept_offsets = Vec::new();
    for l in 0..r.layers.len() {
        if l == k_layer {
            let probs: Tensor = last_probs.take().unwrap();
            let avg = probs.mean_dim([0i64].as_slice(), false, Kind::Float); // [S, T]
            let last = values(&avg.get(avg.size()[0] - 1));
            let (start, len) = (p.span.start, p.span.len());
            let image = &last[start..start + len];
            let keep = (len as f64 * (1.0 - ratio)).round_ties_even() as usize;
            let top = topk(image, keep); // top_attention_rank_index - start, in topk order
            let non_top: Vec<usize> = (0..len).filter(|i| !top.contains(i)).collect();
            let mut h: Vec<Vec<f32>> = (0..s as usize).map(|i| row(&x.get(0), i)).collect();
            let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let sims: Vec<Vec<f32>> = non_top
                .iter()
                .map(|&i| {
                    top.iter()
                        .map(|&j| {
                            let (a, b) = (&h[start + i], &h[start + j]);
                            a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>() / (norm(a) * norm(b))
                        })
                        .collect()
                })
                .collect();
            for (n, &i) in non_top.iter().enumerate() {
                let best = topk(&sims[n], 1)[0];
                let target = start + top[best];
                let merged: Vec<f32> = h[target].iter().zip(&h[start + i]).map(|(a, b)| (a + b) / 2.0).collect();
                h[target] = merged;
            }
            let mut keep_index: Vec<usize> =
                (0..start).chain(top.iter().map(|&j| start + j)).chain(start + len..s as usize).collect();
            keep_index.sort_unstable();
            kept_offsets = {
                let mut t = top.clone();
                t.sort_unstable();
                t
            };
            let rows: Vec<f32> = keep_index.iter().flat_map(|&i| h[i].clone()).collect();
            x = Tensor::from_slice(&rows).reshape([1, keep_index.len() as i64, -1]);
            positions = keep_index.iter().map(|&i| i as i64).collect();
        }
        let out = r.layer(l, &x, &positions, None, None);
        if l + 1 == k_layer {
            last_probs = Some(out.probs.shallow_clone());
        }
        cache.k.push(out.k);
        cache.v.push(out.v);
        x = out.x;
    }
    let mut logits = vec![r.logits(&x)];
    for (t, &token) in steps.iter().enumerate() {
        logits.push(r.step(&mut cache, token, &|_| s + t as i64, &mut |_, _| None));
    }
    let lens = cache.k.iter().map(|k| k.size()[2]).collect();
    (logits, kept_offsets, lens)
}

#[test]
fn holitom_inner_in_the_decoder_equals_its_transcription() {
    for (dir, layer, n) in [(fixture(), 1, 16), (peaked_model().to_path_buf(), 2, 20)] {
        let (model, reference) = (Llama::from_hf_dir(&dir, Device::Cpu).unwrap(), Reference::load(&dir));
        let p = prompt(&reference, &[3, 4, 5], n, &[7, 8, 9, 10], 2);
        let rule = InDecoder::from_spec(&format!("holitom-inner:layer={layer},r=0.5")).unwrap();
        let mut kept = Vec::new();
        let (prefill, mut cache) = run_in_decoder(&model, &rule, &p, &mut kept);
        let s = p.x.size()[1];
        let lens: Vec<i64> = (0..model.config.layers).map(|l| cache.layer_len(l)).collect();
        let mut ours = vec![prefill];
        for &t in &STEPS {
            ours.push(values(&model.forward(&Tensor::from_slice(&[t]).unsqueeze(0), &mut cache).unwrap()));
        }
        let (want, want_kept, want_lens) = holitom_reference(&reference, &p, layer, 0.5, &STEPS);
        let name = format!("holitom-inner on {}", dir.display());
        assert_eq!(kept, vec![want_kept], "{name}: the kept tokens");
        let merged_away = (n / 2) as i64;
        let expect: Vec<i64> = (0..model.config.layers).map(|l| if l < layer { s } else { s - merged_away }).collect();
        assert_eq!(lens, expect, "{name}: the cache of layers >= {layer} lost the merged tokens");
        assert_eq!(want_lens, expect.iter().map(|l| l + STEPS.len() as i64).collect::<Vec<_>>());
        check_close(&name, &ours, &want);
        check_changed(&name, &ours, &plain_logits(&model, &p, &STEPS));
    }
}

// ------------------------------------------------------------------------------------------------------------------
// SparseVLM
// ------------------------------------------------------------------------------------------------------------------

/// `cluster_and_merge` of SparseVLMs' `utils.py` for one batch row, without the density noise.
fn cluster_and_merge(x: &[Vec<f32>], clusters: usize) -> Vec<Vec<f32>> {
    let n = x.len();
    let c_dim = x[0].len() as f32;
    let dist: Vec<Vec<f32>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| x[i].iter().zip(&x[j]).map(|(a, b)| (a - b) * (a - b)).sum::<f32>().sqrt() / c_dim.sqrt())
                .collect()
        })
        .collect();
    let density: Vec<f32> = (0..n)
        .map(|i| {
            let mut d = dist[i].clone();
            d.sort_by(f32::total_cmp);
            (-(d[..clusters].iter().map(|v| v * v).sum::<f32>() / clusters as f32)).exp()
        })
        .collect();
    let dist_max = dist.iter().flatten().copied().fold(f32::MIN, f32::max);
    let score: Vec<f32> = (0..n)
        .map(|i| {
            // The reference adds `rand · 1e-6` to the densities so that none tie; equal densities (a mutual nearest
            // pair when κ = 2) are ordered by index here, one draw of that noise.
            let denser = |j: usize| density[j] > density[i] || (density[j] == density[i] && j < i);
            let delta = (0..n).map(|j| if denser(j) { dist[i][j] } else { dist_max }).fold(f32::INFINITY, f32::min);
            delta * density[i]
        })
        .collect();
    let centres = topk(&score, clusters);
    let mut assign: Vec<usize> = (0..n)
        .map(|i| {
            let to: Vec<f32> = centres.iter().map(|&c| dist[c][i]).collect();
            let min = to.iter().copied().fold(f32::INFINITY, f32::min);
            to.iter().position(|&v| v == min).unwrap()
        })
        .collect();
    for (c, &centre) in centres.iter().enumerate() {
        assign[centre] = c;
    }
    (0..clusters)
        .map(|c| {
            let members: Vec<usize> = (0..n).filter(|&i| assign[i] == c).collect();
            let weight = 1.0 / (members.len() as f32 + 1e-6);
            (0..x[0].len()).map(|k| members.iter().map(|&i| x[i][k] * weight).sum()).collect()
        })
        .collect()
}

/// `LlamaDynamicvitModel.forward` (v1) at inference: raters from the input embeddings, then at each pruning layer
/// the layer runs whole, its output is pruned by the raters' attention and the best pruned are recycled; `positions`
/// original (kept ids, recycled at the last visual id) or contiguous (the reference's `position_ids[:, :len]`).
fn sparsevlm_reference(
    r: &Reference,
    p: &Prompt,
    layers: &[usize],
    counts: &[usize],
    contiguous: bool,
    steps: &[i64],
) -> (Vec<Vec<f32>>, Vec<Vec<usize>>, Vec<i64>) {
    let s = p.x.size()[1];
    let mut positions: Vec<i64> = (0..s).collect();
    let x0 = p.x.get(0);
    let (v_start, mut v_num) = (p.span.start, p.span.len());
    let v_t = x0.narrow(0, v_start as i64, v_num as i64);
    let t_t = x0.narrow(0, (v_start + v_num) as i64, s - (v_start + v_num) as i64);
    let m = values(&v_t.matmul(&t_t.transpose(0, 1)).softmax(1, Kind::Float).mean_dim(
        [0i64].as_slice(),
        false,
        Kind::Float,
    ));
    let mean = m.iter().sum::<f32>() / m.len() as f32;
    let raters: Vec<usize> = (0..m.len()).filter(|&j| m[j] > mean).collect();
    let last_visual = (v_start + v_num - 1) as i64;
    let mut x = p.x.shallow_clone();
    let mut cache = RefCache::default();
    let mut kept_all = Vec::new();
    for l in 0..r.layers.len() {
        let out = r.layer(l, &x, &positions, None, None);
        cache.k.push(out.k);
        cache.v.push(out.v);
        x = out.x;
        let Some(stage) = layers.iter().position(|&pl| pl == l) else { continue };
        let text_start = v_start + v_num;
        let avg = out.probs.mean_dim([0i64].as_slice(), false, Kind::Float);
        let mut relation = vec![0f32; v_num];
        for &t in &raters {
            let row = values(&avg.get((text_start + t) as i64));
            relation.iter_mut().zip(&row[v_start..text_start]).for_each(|(a, b)| *a += b);
        }
        relation.iter_mut().for_each(|a| *a /= raters.len() as f32);
        let keep = counts[stage].min(v_num - 1);
        let mut kept = topk(&relation, keep);
        kept.sort_unstable();
        let pruned: Vec<usize> = (0..v_num).filter(|i| !kept.contains(i)).collect();
        let rows: Vec<Vec<f32>> = (0..x.size()[1] as usize).map(|i| row(&x.get(0), i)).collect();
        let recycled_count = (pruned.len() as f64 * 0.3) as usize + 1;
        let best = topk(&pruned.iter().map(|&i| relation[i]).collect::<Vec<_>>(), recycled_count);
        let candidates: Vec<Vec<f32>> = best.iter().map(|&b| rows[v_start + pruned[b]].clone()).collect();
        let clusters = recycled_count / 10 + 1;
        let merged = cluster_and_merge(&candidates, clusters);
        let mut new_rows: Vec<Vec<f32>> = rows[..v_start].to_vec();
        new_rows.extend(kept.iter().map(|&k| rows[v_start + k].clone()));
        new_rows.extend(merged);
        new_rows.extend(rows[text_start..].iter().cloned());
        positions = if contiguous {
            (0..new_rows.len() as i64).collect()
        } else {
            let mut p: Vec<i64> = positions[..v_start].to_vec();
            p.extend(kept.iter().map(|&k| positions[v_start + k]));
            p.extend(std::iter::repeat_n(last_visual, clusters));
            p.extend_from_slice(&positions[text_start..]);
            p
        };
        x = Tensor::from_slice(&new_rows.concat()).reshape([1, new_rows.len() as i64, -1]);
        v_num = kept.len() + clusters;
        kept_all.push(kept);
    }
    let mut logits = vec![r.logits(&x)];
    for (t, &token) in steps.iter().enumerate() {
        // Original ids continue after the prompt; the reference's contiguous decoding sits at each layer's length.
        let lens: Vec<i64> = cache.k.iter().map(|k| k.size()[2]).collect();
        let position = |l: usize| if contiguous { lens[l] } else { s + t as i64 };
        logits.push(r.step(&mut cache, token, &position, &mut |_, _| None));
    }
    let lens = cache.k.iter().map(|k| k.size()[2]).collect();
    (logits, kept_all, lens)
}

#[test]
fn sparsevlm_in_the_decoder_equals_its_transcription() {
    // (model, spec, deciding layers, counts, visual tokens, contiguous)
    let cases = [
        // 68 dropped: 21 recycled into 3 clusters.
        (fixture(), "sparsevlm:layers=0,counts=12", vec![0], vec![12], 80, false),
        // 72 dropped (3 clusters), then 21 of 27 (1 cluster), then 4 of 7 (1 cluster).
        (
            peaked_model().to_path_buf(),
            "sparsevlm:layers=0/1/2,counts=24/6/3",
            vec![0, 1, 2],
            vec![24, 6, 3],
            96,
            false,
        ),
        (
            peaked_model().to_path_buf(),
            "sparsevlm:layers=0/2,counts=20/5,positions=contiguous",
            vec![0, 2],
            vec![20, 5],
            96,
            true,
        ),
    ];
    for (dir, spec, layers, counts, n, contiguous) in cases {
        let (model, reference) = (Llama::from_hf_dir(&dir, Device::Cpu).unwrap(), Reference::load(&dir));
        let p = prompt(&reference, &[3, 4], n, &[7, 8, 9, 10, 11, 12], 3);
        let rule = InDecoder::from_spec(spec).unwrap();
        let mut kept = Vec::new();
        let (prefill, mut cache) = run_in_decoder(&model, &rule, &p, &mut kept);
        let lens: Vec<i64> = (0..model.config.layers).map(|l| cache.layer_len(l)).collect();
        let mut ours = vec![prefill];
        for &t in &STEPS {
            ours.push(values(&model.forward(&Tensor::from_slice(&[t]).unsqueeze(0), &mut cache).unwrap()));
        }
        let (want, want_kept, want_lens) = sparsevlm_reference(&reference, &p, &layers, &counts, contiguous, &STEPS);
        let name = format!("{spec} on {}", dir.display());
        assert_eq!(kept, want_kept, "{name}: the kept tokens at each stage");
        assert_eq!(lens.iter().map(|l| l + STEPS.len() as i64).collect::<Vec<_>>(), want_lens, "{name}: cache lengths");
        assert!(lens.last() < lens.first(), "{name}: later layers hold fewer tokens ({lens:?})");
        check_close(&name, &ours, &want);
        check_changed(&name, &ours, &plain_logits(&model, &p, &STEPS));
    }
}

// ------------------------------------------------------------------------------------------------------------------
// DyCoke dynamic KV
// ------------------------------------------------------------------------------------------------------------------

/// `PrunableDynamicCache` + `dycoke_pruning` over decode steps: at layer `L` of each step, layer `L − 1`'s attention
/// of the new token over the image span is compared with the last step's; below the threshold the top
/// `int(N·(1 − p))` are selected and layers `>= L` attend to prefix + selection + the rest. A stable step attends to
/// everything (`reuse = false`, the official code) or keeps the previous selection (`reuse = true`).
fn dycoke_reference(
    r: &Reference,
    p: &Prompt,
    layer: usize,
    prune: f64,
    threshold: f32,
    reuse: bool,
    steps: &[i64],
) -> Vec<Vec<f32>> {
    let s = p.x.size()[1];
    let positions: Vec<i64> = (0..s).collect();
    let mut x = p.x.shallow_clone();
    let mut cache = RefCache::default();
    for l in 0..r.layers.len() {
        let out = r.layer(l, &x, &positions, None, None);
        cache.k.push(out.k);
        cache.v.push(out.v);
        x = out.x;
    }
    let mut logits = vec![r.logits(&x)];
    let span = p.span.clone();
    let mut previous: Option<Vec<f32>> = None;
    let mut selection: Option<Vec<usize>> = None;
    for (t, &token) in steps.iter().enumerate() {
        let mut hook = |l: usize, row: &Tensor| -> Option<Tensor> {
            if l + 1 != layer {
                return None;
            }
            let row = values(row);
            let image = row[span.clone()].to_vec();
            // The reference compares with 0 on the first step against its hard-coded 0.9; the threshold is a
            // parameter here, so the first step selects whatever it is.
            let similarity = previous.as_ref().map(|prev| {
                let dot: f32 = prev.iter().zip(&image).map(|(a, b)| a * b).sum();
                let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
                dot / (norm(prev) * norm(&image)).max(1e-8)
            });
            previous = Some(image.clone());
            let keep = ((span.len() as f64 * (1.0 - prune)) as usize).max(1);
            let chosen = if similarity.is_none_or(|c| c < threshold) {
                selection = Some(topk(&image, keep));
                selection.clone()
            } else if reuse {
                selection.clone()
            } else {
                None
            };
            let visible: Vec<bool> = (0..row.len())
                .map(|k| !span.contains(&k) || chosen.as_ref().is_none_or(|c| c.contains(&(k - span.start))))
                .collect();
            Some(Tensor::from_slice(&visible))
        };
        logits.push(r.step(&mut cache, token, &|_| s + t as i64, &mut hook));
    }
    logits
}

#[test]
fn dycoke_kv_in_the_decoder_equals_its_transcription() {
    let steps = [5i64, 9, 17, 17, 17, 30];
    for (dir, layer) in [(fixture(), 1), (peaked_model().to_path_buf(), 2)] {
        let (model, reference) = (Llama::from_hf_dir(&dir, Device::Cpu).unwrap(), Reference::load(&dir));
        let p = prompt(&reference, &[3, 4], 20, &[7, 8, 9], 4);
        let plain = plain_logits(&model, &p, &steps);
        for (threshold, stable) in [(0.9f32, "reuse"), (0.9, "full"), (1.0, "reuse"), (-1.0, "reuse"), (-1.0, "full")] {
            let spec = format!("dycoke-kv:layer={layer},prune=0.5,threshold={threshold},stable={stable}");
            let InDecoder::DycokeKv(kv) = InDecoder::from_spec(&spec).unwrap() else { panic!() };
            let mut state = kv.state();
            let mut cache = KvCache::default();
            let positions: Vec<i64> = (0..p.x.size()[1]).collect();
            let mut ours =
                vec![values(&model.forward_embeds_at(p.x.shallow_clone(), &positions, &mut cache, None).unwrap())];
            let full = cache.layer_len(0);
            let mut restricted = 0;
            for &t in &steps {
                let mut select = |view: StepView<'_>| -> Result<Option<Vec<usize>>, RuleError> {
                    let kept = state.attend(view.row, view.span)?;
                    restricted += usize::from(kept.is_some());
                    Ok(kept)
                };
                let keys = StepKeys { layer: kv.layer, span: p.span.clone(), select: &mut select };
                ours.push(values(
                    &model.forward_step(&Tensor::from_slice(&[t]).unsqueeze(0), &mut cache, Some(keys)).unwrap(),
                ));
            }
            let name = format!("{spec} on {}", dir.display());
            assert_eq!(
                cache.layer_len(model.config.layers - 1),
                full + steps.len() as i64,
                "{name}: the full cache is kept"
            );
            let want = dycoke_reference(&reference, &p, layer, 0.5, threshold, stable == "reuse", &steps);
            check_close(&name, &ours, &want);
            if stable == "reuse" {
                assert_eq!(restricted, steps.len(), "{name}: every step attends to a selection");
            } else if threshold < 0.0 {
                assert_eq!(restricted, 1, "{name}: only the first step selects, the others attend to everything");
            }
            check_changed(&name, &ours, &plain);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// PyramidDrop and FastV
// ------------------------------------------------------------------------------------------------------------------

impl Reference {
    /// `pdrop_rank_drop`'s scores: layer `l`'s `input_layernorm`, `q_proj`/`k_proj` (with biases) and rotary
    /// embedding on its input `x` at `positions`, the last row's causal softmax (float32), mean over heads.
    fn own_last_row(&self, l: usize, x: &Tensor, positions: &[i64]) -> Vec<f32> {
        let w = &self.layers[l];
        let (s, dim) = (x.size()[1], x.size()[2]);
        let hd = dim / self.heads;
        let h = self.rms(x, &w.ln1);
        let split =
            |p: &(Tensor, Tensor), heads: i64| h.linear(&p.0, Some(&p.1)).reshape([1, s, heads, hd]).transpose(1, 2);
        let q = self.rope(&split(&w.q, self.heads), positions);
        let k = self.rope(&split(&w.k, self.kv_heads), positions);
        let k = k.repeat_interleave_self_int(self.heads / self.kv_heads, 1, None);
        // The last query sees every key: its causal mask row is all zeros.
        let scores = q.narrow(2, s - 1, 1).matmul(&k.transpose(2, 3)) / (hd as f64).sqrt();
        values(&scores.softmax(-1, Kind::Float).mean_dim([1i64].as_slice(), false, Kind::Float).reshape([-1]))
    }
}

/// What a drop transcription produced: logits of the prefill and of each step, kept offsets per stage (into the
/// span as it was at that stage), and each layer's cache length.
type DropRun = (Vec<Vec<f32>>, Vec<Vec<usize>>, Vec<i64>);

/// The rows a drop keeps, as gather indices: `0..start`, `start + kept`, then `end..len`.
fn spliced(start: usize, kept: &[usize], end: usize, len: usize) -> Vec<i64> {
    (0..start).chain(kept.iter().map(|&j| start + j)).chain(end..len).map(|i| i as i64).collect()
}

impl Reference {
    /// A transcription's [`DropRun`] after its prefill left `x` and `cache`: the prefill logits, then [`STEPS`]
    /// decoded with layer `l`'s position `position(l, t)` for step `t`, and every layer's cache length.
    fn decode_run(
        &self,
        x: &Tensor,
        mut cache: RefCache,
        kept: Vec<Vec<usize>>,
        position: &dyn Fn(usize, i64) -> i64,
    ) -> DropRun {
        let mut logits = vec![self.logits(x)];
        for (t, &token) in STEPS.iter().enumerate() {
            logits.push(self.step(&mut cache, token, &|l| position(l, t as i64), &mut |_, _| None));
        }
        (logits, kept, cache.k.iter().map(|k| k.size()[2]).collect())
    }
}

/// `pdrop_forward` in inference: after layer `K − 1` for `K` in `layers`, rank the image tokens still present by
/// layer `K`'s own q/k (`own`) or by layer `K − 1`'s attention row (`score=previous`), keep `int(N·ρ_s)` of the
/// original `N`, and renumber `arange(0, len)` (`contiguous`) or keep the kept ids. Decoding: `s + t`, minus, for the
/// layers after each stage, what the stages before them dropped (the official `position_ids - (cur - next)`).
fn pdrop_reference(
    r: &Reference,
    p: &Prompt,
    layers: &[usize],
    ratios: &[f64],
    own: bool,
    contiguous: bool,
) -> DropRun {
    let s = p.x.size()[1];
    let n = p.span.len();
    let counts: Vec<usize> = std::iter::once(n).chain(ratios.iter().map(|&f| (n as f64 * f) as usize)).collect();
    let mut positions: Vec<i64> = (0..s).collect();
    let mut x = p.x.shallow_clone();
    let mut cache = RefCache::default();
    let mut kept_per_stage = Vec::new();
    for l in 0..r.layers.len() {
        let out = r.layer(l, &x, &positions, None, None);
        cache.k.push(out.k);
        cache.v.push(out.v);
        x = out.x;
        let Some(stage) = layers.iter().position(|&k| k == l + 1) else { continue };
        let row = if own {
            r.own_last_row(l + 1, &x, &positions)
        } else {
            let avg = out.probs.mean_dim([0i64].as_slice(), false, Kind::Float);
            values(&avg.get(avg.size()[0] - 1))
        };
        let (start, present, keep) = (p.span.start, counts[stage], counts[stage + 1]);
        let mut top = topk(&row[start..start + present], keep);
        top.sort_unstable();
        let index = spliced(start, &top, start + present, x.size()[1] as usize);
        x = x.index_select(1, &Tensor::from_slice(&index));
        positions = if contiguous {
            (0..index.len() as i64).collect()
        } else {
            index.iter().map(|&i| positions[i as usize]).collect()
        };
        kept_per_stage.push(top);
    }
    let shift = |l: usize| -> i64 {
        if !contiguous {
            return 0;
        }
        layers.iter().enumerate().filter(|(_, &k)| k <= l).map(|(st, _)| (counts[st] - counts[st + 1]) as i64).sum()
    };
    r.decode_run(&x, cache, kept_per_stage, &|l, t| s + t - shift(l))
}

/// FastV's llava-hf `LlamaModel.forward` (`use_cache`, prefill): at layer `K`, layer `K − 1`'s attention (mean over
/// heads, last row, image columns), `topk(round(N·(1 − R)))`, `keep_indexs` sorted, `position_ids = keep_indexs`;
/// decoding continues at the original `s + t`.
fn fastv_reference(r: &Reference, p: &Prompt, k_layer: usize, ratio: f64) -> DropRun {
    let (s, n, start) = (p.x.size()[1], p.span.len(), p.span.start);
    let mut positions: Vec<i64> = (0..s).collect();
    let mut x = p.x.shallow_clone();
    let mut cache = RefCache::default();
    let mut last_probs: Option<Tensor> = None;
    let mut kept = Vec::new();
    for l in 0..r.layers.len() {
        if l == k_layer {
            let avg = last_probs.take().unwrap().mean_dim([0i64].as_slice(), false, Kind::Float);
            let row = values(&avg.get(avg.size()[0] - 1));
            let mut top = topk(&row[start..start + n], (n as f64 * (1.0 - ratio)).round_ties_even() as usize);
            top.sort_unstable();
            let index = spliced(start, &top, start + n, s as usize);
            x = x.index_select(1, &Tensor::from_slice(&index));
            positions = index;
            kept.push(top);
        }
        let out = r.layer(l, &x, &positions, None, None);
        if l + 1 == k_layer {
            last_probs = Some(out.probs.shallow_clone());
        }
        cache.k.push(out.k);
        cache.v.push(out.v);
        x = out.x;
    }
    r.decode_run(&x, cache, kept, &|_, t| s + t)
}

/// Runs `spec` through the decoder (prefill, then [`STEPS`]) and returns the same triple as the transcriptions.
fn decoder_run(model: &Llama, spec: &str, p: &Prompt) -> DropRun {
    let rule = InDecoder::from_spec(spec).unwrap();
    let mut kept = Vec::new();
    let (prefill, mut cache) = run_in_decoder(model, &rule, p, &mut kept);
    let mut logits = vec![prefill];
    for &t in &STEPS {
        logits.push(values(&model.forward(&Tensor::from_slice(&[t]).unsqueeze(0), &mut cache).unwrap()));
    }
    (logits, kept, (0..model.config.layers).map(|l| cache.layer_len(l)).collect())
}

fn check_run(name: &str, ours: &DropRun, want: &DropRun, model: &Llama, p: &Prompt) {
    assert_eq!(ours.1, want.1, "{name}: the kept tokens per stage");
    assert_eq!(ours.2, want.2, "{name}: every layer's cache length");
    check_close(name, &ours.0, &want.0);
    check_changed(name, &ours.0, &plain_logits(model, p, &STEPS));
}

#[test]
fn pyramid_drop_in_the_decoder_equals_its_transcription() {
    // 13 image tokens: int(13·0.5) = 6, int(13·0.25) = 3 (round-half-even would keep 6 and 3 too, but
    // int(13·0.75) = 9 where it would keep 10).
    let dir = peaked_model();
    let (model, reference) = (Llama::from_hf_dir(dir, Device::Cpu).unwrap(), Reference::load(dir));
    let p = prompt(&reference, &[3, 4, 5], 13, &[7, 8, 9, 10], 6);
    for (spec, layers, ratios, own, contiguous) in [
        ("pdrop:layers=1/3,lambda=0.5", vec![1, 3], vec![0.5, 0.25], true, true),
        ("pdrop:layers=1/2/3,ratios=0.75/0.5/0.25", vec![1, 2, 3], vec![0.75, 0.5, 0.25], true, true),
        ("pdrop:layers=2/3,lambda=0.5,score=previous", vec![2, 3], vec![0.5, 0.25], false, true),
        ("pdrop:layers=1/3,lambda=0.5,positions=original", vec![1, 3], vec![0.5, 0.25], true, false),
    ] {
        let ours = decoder_run(&model, spec, &p);
        let want = pdrop_reference(&reference, &p, &layers, &ratios, own, contiguous);
        check_run(spec, &ours, &want, &model, &p);
    }
    // The two readings differ: scoring with layer K's own q/k is not the same as layer K − 1's attention here.
    let own = decoder_run(&model, "pdrop:layers=2,lambda=0.5", &p);
    let previous = decoder_run(&model, "pdrop:layers=2,lambda=0.5,score=previous", &p);
    assert_ne!(own.1, previous.1, "own-layer and previous-layer scores pick the same tokens: the test is too weak");
}

#[test]
fn fastv_in_the_decoder_equals_its_transcription() {
    for (dir, layer, n) in [(fixture(), 1, 16), (peaked_model().to_path_buf(), 2, 13)] {
        let (model, reference) = (Llama::from_hf_dir(&dir, Device::Cpu).unwrap(), Reference::load(&dir));
        let p = prompt(&reference, &[3, 4], n, &[7, 8, 9], 7);
        for ratio in [0.5, 0.75] {
            let spec = format!("fastv:layer={layer},ratio={ratio}");
            let ours = decoder_run(&model, &spec, &p);
            check_run(
                &format!("{spec} on {}", dir.display()),
                &ours,
                &fastv_reference(&reference, &p, layer, ratio),
                &model,
                &p,
            );
        }
    }
}

/// ToDRE stage 2 as its paper states it (no public code): at check layer `ℓ`, the text queries' (every row after
/// the span) share of attention on the visual columns, `Σ_i Σ_{j∈V} A_ij / Σ_i Σ_j A_ij` (head mean); below `τ`
/// (the visual rows cannot see the text, so `α_{v→t} = 0`) every visual token leaves layers `> ℓ`; original ids.
fn todre_stage2_reference(r: &Reference, p: &Prompt, check: usize, tau: f64) -> DropRun {
    let (s, span) = (p.x.size()[1], p.span.clone());
    let mut positions: Vec<i64> = (0..s).collect();
    let mut x = p.x.shallow_clone();
    let mut cache = RefCache::default();
    let mut kept = Vec::new();
    for l in 0..r.layers.len() {
        let out = r.layer(l, &x, &positions, None, None);
        cache.k.push(out.k);
        cache.v.push(out.v);
        x = out.x;
        if l == check {
            let avg = out.probs.mean_dim([0i64].as_slice(), false, Kind::Float); // [S, T]
            let (mut visual, mut total) = (0.0f64, 0.0f64);
            for i in span.end..s as usize {
                let row = values(&avg.get(i as i64));
                visual += row[span.clone()].iter().map(|&v| v as f64).sum::<f64>();
                total += row.iter().map(|&v| v as f64).sum::<f64>();
            }
            let drop = visual / total < tau;
            let top: Vec<usize> = if drop { Vec::new() } else { (0..span.len()).collect() };
            let index = spliced(span.start, &top, span.end, s as usize);
            x = x.index_select(1, &Tensor::from_slice(&index));
            positions = index;
            kept.push(top);
        }
    }
    r.decode_run(&x, cache, kept, &|_, t| s + t)
}

#[test]
fn todre_stage2_in_the_decoder_equals_its_transcription() {
    let dir = peaked_model();
    let (model, reference) = (Llama::from_hf_dir(dir, Device::Cpu).unwrap(), Reference::load(dir));
    let p = prompt(&reference, &[3, 4], 10, &[7, 8, 9], 8);
    // τ = 1 always drops, τ = 0 never does; the ratio itself sits between.
    for (tau, drops) in [(1.0, true), (0.0, false)] {
        let spec = format!("todre-stage2:tau={tau},layer=1");
        let ours = decoder_run(&model, &spec, &p);
        let want = todre_stage2_reference(&reference, &p, 1, tau);
        assert_eq!(ours.1, want.1, "{spec}: the kept tokens");
        assert_eq!(ours.2, want.2, "{spec}: every layer's cache length");
        check_close(&spec, &ours.0, &want.0);
        assert_eq!(want.1[0].is_empty(), drops, "{spec}");
        if drops {
            check_changed(&spec, &ours.0, &plain_logits(&model, &p, &STEPS));
        }
    }
}

// ------------------------------------------------------------------------------------------------------------------
// Plans are checked
// ------------------------------------------------------------------------------------------------------------------

#[test]
fn malformed_plans_and_failing_rules_are_typed_errors() {
    let model = Llama::from_hf_dir(&fixture(), Device::Cpu).unwrap();
    let reference = Reference::load(&fixture());
    let p = prompt(&reference, &[3, 4], 6, &[7, 8], 5);
    let positions: Vec<i64> = (0..p.x.size()[1]).collect();
    let run = |rule: &mut dyn FnMut(StageView<'_>) -> Result<LayerPlan, RuleError>| {
        let plan = PrefillPlan {
            layers: vec![1],
            span: p.span.clone(),
            rows: QueryRows::Last,
            rule,
            positions: PositionMode::Original,
        };
        model.forward_embeds_planned(p.x.shallow_clone(), &positions, &mut KvCache::default(), Some(plan))
    };
    // The rule sees the span's hidden states entering layer 1.
    assert!(run(&mut |v: StageView<'_>| {
        assert_eq!(v.hidden.size(), vec![6, 32]);
        Ok(LayerPlan::keep(vec![0, 5]))
    })
    .is_ok());
    let unordered = run(&mut |_: StageView<'_>| Ok(LayerPlan::keep(vec![3, 1])));
    assert!(matches!(unordered, Err(LlamaError::Config { .. })), "{unordered:?}");
    let wide = run(&mut |_: StageView<'_>| {
        Ok(LayerPlan { kept: vec![0], replace: Some(Tensor::zeros([1, 31], (Kind::Float, Device::Cpu))), extra: None })
    });
    assert!(matches!(wide, Err(LlamaError::Config { .. })), "{wide:?}");
    let failing =
        run(&mut |_: StageView<'_>| Err(Box::new(tokensieve_pruners::PruneError::Backend("boom".into())) as RuleError));
    match failing {
        Err(LlamaError::Rule(source)) => assert!(source.downcast_ref::<tokensieve_pruners::PruneError>().is_some()),
        other => panic!("{other:?}"),
    }
    // Extra rows join the span and take the last original visual position.
    let mut seen = Vec::new();
    let plan = PrefillPlan {
        layers: vec![0, 1],
        span: p.span.clone(),
        rows: QueryRows::Last,
        rule: &mut |v: StageView<'_>| {
            seen.push(v.span.clone());
            Ok(if v.stage == 0 {
                LayerPlan {
                    kept: vec![1, 2],
                    replace: None,
                    extra: Some(Tensor::ones([3, 32], (Kind::Float, Device::Cpu))),
                }
            } else {
                LayerPlan::keep((0..v.span.len()).collect())
            })
        },
        positions: PositionMode::Original,
    };
    let mut cache = KvCache::default();
    let _logits = model.forward_embeds_planned(p.x.shallow_clone(), &positions, &mut cache, Some(plan)).unwrap();
    assert_eq!(seen, vec![2..8, 2..7], "2 kept + 3 extra rows form the next span");
    assert_eq!((cache.layer_len(0), cache.layer_len(1)), (9, 9));
    // Step rules: layer 0 has no previous layer; a rule's offsets must lie in the span.
    let mut cache = KvCache::default();
    let _logits = model.forward_embeds_at(p.x.shallow_clone(), &positions, &mut cache, None).unwrap();
    let token = Tensor::from_slice(&[5i64]).unsqueeze(0);
    let mut none = |_: StepView<'_>| -> Result<Option<Vec<usize>>, RuleError> { Ok(None) };
    let bad_layer = StepKeys { layer: 0, span: p.span.clone(), select: &mut none };
    assert!(matches!(model.forward_step(&token, &mut cache, Some(bad_layer)), Err(LlamaError::Config { .. })));
    let mut outside = |_: StepView<'_>| -> Result<Option<Vec<usize>>, RuleError> { Ok(Some(vec![9])) };
    let keys = StepKeys { layer: 1, span: p.span.clone(), select: &mut outside };
    assert!(matches!(model.forward_step(&token, &mut cache, Some(keys)), Err(LlamaError::Config { .. })));
    // Without keys a step is a plain forward.
    let mut a = KvCache::default();
    let mut b = KvCache::default();
    let _logits = model.forward_embeds_at(p.x.shallow_clone(), &positions, &mut a, None).unwrap();
    let _logits = model.forward_embeds_at(p.x.shallow_clone(), &positions, &mut b, None).unwrap();
    let plain = values(&model.forward(&token, &mut a).unwrap());
    let stepped = values(&model.forward_step(&token, &mut b, None).unwrap());
    assert_eq!(plain, stepped);
}
