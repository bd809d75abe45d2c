//! Every method on the ndarray and the libtorch backend over the same inputs: identical kept indices and merged
//! features within 1e-5. Runs on CUDA when the machine has it, else on libtorch's CPU (and says which).

#![cfg(feature = "torch")]

mod common;

use common::{inputs, token_set};
use tokensieve_pruners::{prune, Backend, Budget, CpuBackend, Method, Pruner, TchBackend, METHODS};

#[test]
fn every_method_matches_between_ndarray_and_tch() {
    let torch = TchBackend::cuda_if_available();
    eprintln!("parity against {} (CUDA available: {})", torch.name(), tch::Cuda::is_available());
    for (seed, frames, h, w, d) in [(11u64, 4, 6, 6, 32), (12, 8, 4, 5, 48)] {
        let data = inputs(seed, frames, h, w, d);
        let cpu_set = token_set(&CpuBackend, &data);
        let tch_set = token_set(&torch, &data);
        for info in METHODS {
            let (method, _) = Method::build(info.name, &[]).unwrap();
            // DyCoke's official rule keeps (1 - 0.7) of each compared frame whatever the budget: give it budgets
            // that cover its count, so both backends are compared on what it keeps.
            let budgets = match info.name {
                "dycoke" => [Budget::Ratio(0.9), Budget::Ratio(0.75)],
                _ => [Budget::Ratio(0.5), Budget::Ratio(0.3)],
            };
            for budget in budgets {
                let a = prune(&CpuBackend, &method, &cpu_set, budget).unwrap();
                let b = prune(&torch, &method, &tch_set, budget).unwrap();
                let name = method.name();
                assert_eq!(a.kept, b.kept, "{name} at {budget}: kept indices differ");
                assert_eq!(a.sizes, b.sizes, "{name} at {budget}: sizes differ");
                match (&a.merged, &b.merged) {
                    (None, None) => {}
                    (Some(x), Some(y)) => {
                        let y = torch.download(y).unwrap();
                        let worst =
                            x.iter().zip(y.iter()).map(|(p, q)| (p - q).abs() / (1.0 + p.abs())).fold(0f32, f32::max);
                        assert!(worst <= 1e-5, "{name} at {budget}: merged features differ by {worst}");
                    }
                    _ => panic!("{name}: one backend merged, the other did not"),
                }
            }
        }
    }
}

#[test]
fn half_precision_inputs_are_scored_in_f32() {
    let torch = TchBackend::cuda_if_available();
    let data = inputs(13, 2, 4, 4, 16);
    let half = torch.upload(data.features.view()).unwrap().to_kind(tch::Kind::Half);
    let adopted = torch.adopt(&half).unwrap();
    assert_eq!(adopted.kind(), tch::Kind::Float);
    let set = tokensieve_pruners::TokenSet::new(&torch, adopted).unwrap();
    let (m, _) = Method::from_spec("todre:pivot=random").unwrap();
    assert_eq!(prune(&torch, &m, &set, Budget::Keep(5)).unwrap().kept.len(), 5);
}
