//! The `onnx` backend's vision encoder against the torch backend (which equals transformers): the tiny LLaVA
//! exported by `models/export/export_onnx.py` (`fixtures/tiny_llava_onnx`) gives the same visual tokens, CLS
//! attention and keys on the fixture's two reference images.

#![cfg(all(feature = "onnx", feature = "torch"))]

use std::path::Path;
use tch::{Device, Tensor};
use tokensieve_models::llava::Llava;
use tokensieve_models::onnx_encoder::{OnnxOptions, OnnxVisionEncoder};
use tokensieve_models::safetensors::Safetensors;

fn max_diff(a: &Tensor, b: &[f32]) -> f64 {
    let a: Vec<f32> = Vec::try_from(a.reshape([-1]).to_device(Device::Cpu)).unwrap();
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs() as f64).fold(0.0, f64::max)
}

#[test]
fn onnx_vision_encoder_equals_the_torch_backend() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = Safetensors::open(&fixtures.join("tiny_llava/reference.safetensors")).unwrap();
    let (pixels, shape) = reference.tensor_f32("two_pixels").unwrap();
    let torch = Llava::load(&fixtures.join("tiny_llava"), Device::Cpu).unwrap();
    let batch = Tensor::from_slice(&pixels).reshape(shape.iter().map(|&s| s as i64).collect::<Vec<_>>().as_slice());
    let (features, out) = torch.image_features(&batch).unwrap();
    for options in [OnnxOptions::default(), OnnxOptions { intra_threads: 1, memory_pattern: false, optimization: 0 }] {
        let path = fixtures.join("tiny_llava_onnx/onnx/vision_encoder.onnx");
        let mut onnx = OnnxVisionEncoder::load(&path, &options).unwrap();
        let got = onnx.encode(&pixels, 2, 32).unwrap();
        assert_eq!(got.features.shape, vec![2, 16, 32]);
        let d = max_diff(&features, &got.features.data);
        assert!(d <= 1e-4, "{options:?}: visual tokens differ by {d}");
        let cls = got.cls_attention.expect("CLIP exports the CLS attention");
        assert!(max_diff(out.cls_attention.as_ref().unwrap(), &cls.data) <= 1e-5, "{options:?}: CLS attention");
        let keys = got.keys.expect("the export writes the keys");
        assert_eq!(keys.shape, vec![2, 17, 8]);
        assert!(max_diff(&out.keys, &keys.data) <= 1e-5, "{options:?}: keys");
        // A wrong pixel count is a typed error naming the file.
        let err = onnx.encode(&pixels[..10], 2, 32).unwrap_err().to_string();
        assert!(err.contains("vision_encoder.onnx") && err.contains("10 pixel values"), "{err}");
    }
    assert!(OnnxVisionEncoder::load(&fixtures.join("missing.onnx"), &OnnxOptions::default()).is_err());
}
