//! Properties every registered method must have (ALGORITHMS.md §5.2): budgets honoured, indices ascending and
//! unique, deterministic, aligned outputs, conservation for pure merges, permutation equivariance where the method
//! is position-free, and typed errors for bad input.

mod common;

use common::{inputs, token_set, Inputs};
use ndarray::Array2;
use tokensieve_pruners::{prune, Budget, CpuBackend, Layout, Method, PruneError, Pruner, Signal, TokenSet, METHODS};

fn all_methods() -> Vec<Method> {
    METHODS.iter().map(|m| Method::build(m.name, &[]).unwrap().0).collect()
}

#[test]
fn every_method_honours_the_budget_and_the_output_contract() {
    let data = inputs(1, 4, 6, 6, 32);
    let tokens = token_set(&CpuBackend, &data);
    let n = tokens.len();
    for method in all_methods() {
        for budget in [Budget::Ratio(0.5), Budget::Ratio(0.25), Budget::Keep(40)] {
            let k = budget.resolve(n).unwrap().k;
            let s = match prune(&CpuBackend, &method, &tokens, budget) {
                Ok(s) => s,
                Err(PruneError::BudgetTooSmall { .. }) if method.name() == "dycoke" => continue,
                Err(e) => panic!("{} at {budget}: {e}", method.name()),
            };
            let name = method.name();
            assert!(s.kept.windows(2).all(|w| w[0] < w[1]), "{name}: not ascending/unique");
            assert!(s.kept.iter().all(|&i| i < n), "{name}: index out of range");
            if method.exact_budget() {
                assert_eq!(s.kept.len(), k, "{name} at {budget}");
            } else {
                assert!(!s.kept.is_empty() && s.kept.len() <= k, "{name} at {budget}: {} > {k}", s.kept.len());
            }
            assert_eq!(s.sizes.len(), s.kept.len(), "{name}: sizes misaligned");
            assert_eq!(s.requested, k);
            if let Some(m) = &s.merged {
                assert_eq!(m.dim(), (s.kept.len(), 32), "{name}: merged misaligned");
                assert!(m.iter().all(|v| v.is_finite()), "{name}: non-finite merged");
            }
            // Pure merges account for every token at most once.
            if ["tome", "pool", "dcode", "fastvid"].contains(&name) {
                let total: usize = s.sizes.iter().sum();
                assert!(total <= n, "{name}: sizes sum to {total} > {n}");
            }
            if ["tome", "pool"].contains(&name) {
                assert_eq!(s.sizes.iter().sum::<usize>(), n, "{name}: a merge lost or double-counted tokens");
            }
            let again = prune(&CpuBackend, &method, &tokens, budget).unwrap();
            assert_eq!(again.kept, s.kept, "{name}: not deterministic");
        }
    }
}

#[test]
fn keep_one_returns_one_token_where_the_method_allows_it() {
    let data = inputs(2, 4, 4, 4, 16);
    let tokens = token_set(&CpuBackend, &data);
    for method in all_methods() {
        match prune(&CpuBackend, &method, &tokens, Budget::Keep(1)) {
            Ok(s) => assert!(s.kept.len() == 1 || !method.exact_budget() && s.kept.len() <= 1, "{}", method.name()),
            // Both keep whole frames: DyCoke each window's first, EVS the first frame.
            Err(PruneError::BudgetTooSmall { method: "dycoke" | "evs", .. }) => {}
            Err(e) => panic!("{}: {e}", method.name()),
        }
    }
}

#[test]
fn identity_when_the_budget_covers_everything_and_empty_for_no_tokens() {
    let data = inputs(3, 2, 3, 3, 8);
    let tokens = token_set(&CpuBackend, &data);
    let empty = TokenSet::from_array(Array2::zeros((0, 8))).unwrap();
    for method in all_methods() {
        let s = prune(&CpuBackend, &method, &tokens, Budget::Keep(100)).unwrap();
        assert_eq!(s.kept, (0..18).collect::<Vec<_>>(), "{}", method.name());
        assert!(s.clamped && s.merged.is_none());
        assert!(prune(&CpuBackend, &method, &empty, Budget::Ratio(0.5)).unwrap().kept.is_empty());
    }
}

#[test]
fn zero_vectors_and_duplicates_do_not_break_any_method() {
    let mut data = inputs(4, 4, 4, 4, 16);
    for i in 0..8 {
        data.features.row_mut(i).fill(0.0);
    }
    let copy = data.features.row(20).to_owned();
    data.features.row_mut(21).assign(&copy);
    data.features.row_mut(22).assign(&copy);
    let tokens = token_set(&CpuBackend, &data);
    for method in all_methods() {
        // DyCoke's official count here (4 frames, dycoke_k = 0.7) is 40 of 64 tokens, above half.
        let ratio = if method.name() == "dycoke" { 0.75 } else { 0.5 };
        let s = prune(&CpuBackend, &method, &tokens, Budget::Ratio(ratio)).unwrap();
        assert!(!s.kept.is_empty(), "{}", method.name());
        if let Some(m) = s.merged {
            assert!(m.iter().all(|v| v.is_finite()), "{}: non-finite output", method.name());
        }
    }
}

#[test]
fn position_free_methods_are_permutation_equivariant() {
    let data = inputs(5, 1, 1, 60, 24);
    let n = 60;
    // A fixed permutation: i -> (7i + 3) mod 60 (7 is coprime with 60).
    let perm: Vec<usize> = (0..n).map(|i| (7 * i + 3) % n).collect();
    let permuted = Inputs {
        features: data.features.select(ndarray::Axis(0), &perm),
        keys: data.keys.select(ndarray::Axis(0), &perm),
        query: data.query.clone(),
        cls: perm.iter().map(|&p| data.cls[p]).collect(),
        importance: perm.iter().map(|&p| data.importance[p]).collect(),
        layout: Layout::Flat,
    };
    let original = Inputs { layout: Layout::Flat, ..data };
    let (a, b) = (token_set(&CpuBackend, &original), token_set(&CpuBackend, &permuted));
    for name in ["todre", "kcenter", "mmr", "divprune", "cdpruner", "query"] {
        let (method, _) = Method::build(
            name,
            &[("pivot".into(), "cls".into())]
                .into_iter()
                .filter(|_| name == "todre" || name == "kcenter")
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let sa = prune(&CpuBackend, &method, &a, Budget::Keep(12)).unwrap();
        let sb = prune(&CpuBackend, &method, &b, Budget::Keep(12)).unwrap();
        let mut mapped: Vec<usize> = sb.kept.iter().map(|&i| perm[i]).collect();
        mapped.sort_unstable();
        assert_eq!(mapped, sa.kept, "{name} is not permutation-equivariant");
    }
}

#[test]
fn bad_inputs_are_typed_errors() {
    let mut x = Array2::<f32>::ones((4, 3));
    x[[2, 1]] = f32::NAN;
    assert!(matches!(TokenSet::from_array(x), Err(PruneError::NonFinite { tensor: "features", index: 7, .. })));
    let t = TokenSet::from_array(Array2::ones((4, 3))).unwrap();
    assert!(matches!(
        t.with_cls_attention(vec![1.0, f32::INFINITY, 0.0, 0.0]),
        Err(PruneError::NonFinite { tensor: "cls attention", index: 1, .. })
    ));
    let t = TokenSet::from_array(Array2::ones((4, 3))).unwrap();
    assert!(matches!(t.with_query(&CpuBackend, Array2::ones((2, 5))), Err(PruneError::Shape { tensor: "query", .. })));
    let t = TokenSet::from_array(Array2::ones((4, 3))).unwrap();
    assert!(matches!(t.with_layout(Layout::frames(2, 2, 2)), Err(PruneError::Layout { .. })));
    let t = TokenSet::from_array(Array2::ones((4, 3))).unwrap();
    let (vz, _) = Method::build("visionzip", &[]).unwrap();
    assert!(matches!(
        prune(&CpuBackend, &vz, &t, Budget::Keep(2)),
        Err(PruneError::MissingSignal { signal: Signal::ClsAttention, .. })
    ));
    let (dy, _) = Method::build("dycoke", &[]).unwrap();
    assert!(matches!(
        prune(&CpuBackend, &dy, &t, Budget::Keep(2)),
        Err(PruneError::MissingSignal { signal: Signal::FrameGrid, .. })
    ));
    assert!(matches!(prune(&CpuBackend, &vz, &t, Budget::Keep(0)), Err(PruneError::Budget { .. })));
    assert!(matches!(Method::from_spec("nope"), Err(PruneError::UnknownMethod(_))));
    assert!(matches!(Method::from_spec("mmr:lambda=2"), Err(PruneError::Param { .. })));
    assert!(matches!(Method::from_spec("mmr:alpha=0.2"), Err(PruneError::Param { .. })));
    assert!(matches!(Method::from_spec("mmr:lambda"), Err(PruneError::Param { .. })));
}

#[test]
fn batches_run_independently() {
    let a = token_set(&CpuBackend, &inputs(6, 2, 4, 4, 8));
    let b = TokenSet::from_array(Array2::zeros((0, 8))).unwrap();
    let (m, _) = Method::from_spec("divprune").unwrap();
    let out = tokensieve_pruners::prune_batch(&CpuBackend, &m, &[a, b], Budget::Ratio(0.25));
    assert_eq!(out[0].as_ref().unwrap().kept.len(), 8);
    assert!(out[1].as_ref().unwrap().kept.is_empty());
}
