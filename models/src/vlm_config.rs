//! What a `llava` / `llava_onevision` `config.json` says about the visual tokens, read without any backend: the
//! placeholder ids, which tower layer and tokens feed the projector, and OneVision's any-resolution geometry. The
//! libtorch model ([`crate::llava`]) and the ONNX backend read it the same way.

use serde_json::Value;

/// OneVision's additions.
#[derive(Debug, Clone, PartialEq)]
pub struct OneVisionConfig {
    /// Any-resolution grid pinpoints `(height, width)` in pixels.
    pub pinpoints: Vec<(usize, usize)>,
    /// `anyres_max_<N>`: the tile map is shrunk to about N tiles' worth of tokens.
    pub max_patches: usize,
    /// Id of the video placeholder token.
    pub video_token_id: i64,
}

/// The visual-token settings of a LLaVA-family checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct VlmConfig {
    /// Id of the image placeholder token.
    pub image_token_id: i64,
    /// Tower layer whose hidden states are projected (negative counts from the end).
    pub feature_layer: i64,
    /// `vision_feature_select_strategy == "full"`: the CLS token is projected too.
    pub keep_cls: bool,
    /// The tower's input side.
    pub image_size: usize,
    /// `Some` for `llava_onevision`.
    pub onevision: Option<OneVisionConfig>,
}

impl VlmConfig {
    /// Reads the parsed `config.json`; the error says which key is missing or unsupported.
    pub fn from_json(json: &Value) -> Result<Self, String> {
        let image_token_id = json["image_token_id"]
            .as_i64()
            .or_else(|| json["image_token_index"].as_i64())
            .ok_or("no image_token_id")?;
        let is_onevision = json["model_type"].as_str() == Some("llava_onevision");
        if let Some(act) = json["projector_hidden_act"].as_str() {
            if act != "gelu" {
                return Err(format!("projector_hidden_act `{act}` is not supported (gelu)"));
            }
        }
        let onevision = if is_onevision {
            let pinpoints = json["image_grid_pinpoints"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|p| Some((p[0].as_u64()? as usize, p[1].as_u64()? as usize)))
                        .collect::<Vec<_>>()
                })
                .filter(|p| !p.is_empty())
                .ok_or("no image_grid_pinpoints")?;
            let aspect = json["vision_aspect_ratio"].as_str().unwrap_or("anyres_max_9");
            Some(OneVisionConfig {
                pinpoints,
                max_patches: crate::onevision::parse_max_patches(aspect)
                    .ok_or_else(|| format!("vision_aspect_ratio `{aspect}` is not anyres_max_<N>"))?,
                video_token_id: json["video_token_id"]
                    .as_i64()
                    .or_else(|| json["video_token_index"].as_i64())
                    .ok_or("no video_token_id")?,
            })
        } else {
            None
        };
        Ok(VlmConfig {
            image_token_id,
            feature_layer: json["vision_feature_layer"].as_i64().unwrap_or(if is_onevision { -1 } else { -2 }),
            keep_cls: json["vision_feature_select_strategy"].as_str() == Some("full"),
            image_size: json["vision_config"]["image_size"].as_u64().unwrap_or(224) as usize,
            onevision,
        })
    }
}
