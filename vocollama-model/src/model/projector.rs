//! The multimodal projector: `linear` or `mlpNx_gelu` (Linear, GELU, Linear, ...).

use burn::module::Module;
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor};

use super::linear::{Linear, linear, zeros};
use super::precision::in_f32;
use crate::checkpoint::config::ProjectorType;
use crate::checkpoint::weights::KeyMap;

#[derive(Module, Debug)]
pub struct Projector {
    pub layers: Vec<Linear>,
}

impl Projector {
    /// `linear` for one layer, `mlpNx_gelu` for N.
    pub fn kind(&self) -> ProjectorType {
        match self.layers.len() {
            1 => ProjectorType::Linear,
            n => ProjectorType::MlpGelu(n),
        }
    }

    pub fn init(kind: ProjectorType, vision_hidden: usize, text_hidden: usize, bias: bool, device: &Device) -> Self {
        let layers = (0..kind.num_linears())
            .map(|i| {
                let input = if i == 0 { vision_hidden } else { text_hidden };
                zeros(input, text_hidden, bias, device)
            })
            .collect();
        Self { layers }
    }

    /// Module paths of the linear layers (`layers.{i}`), with the layers.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        self.layers.iter().enumerate().map(|(i, l)| (format!("layers.{i}"), l)).collect()
    }

    /// Quantized weights packed for the CPU's loops ([`Linear::pack`]).
    pub fn pack(&mut self) {
        self.layers.iter_mut().for_each(Linear::pack);
    }

    /// `[.., vision_hidden]` → `[.., text_hidden]`; GELU is the exact (erf) form, as `nn.GELU()`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let mut x = x;
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                x = in_f32(x, gelu);
            }
            x = linear(layer, x);
        }
        x
    }

    /// Names in the LLaVA code base: `model.mm_projector.{0,2,4..}` (an `nn.Sequential`
    /// with GELUs between), or `model.mm_projector.*` for a bare `linear`.
    pub fn original_key_map(kind: ProjectorType) -> KeyMap {
        match kind {
            ProjectorType::Linear => KeyMap::new([("model.mm_projector.", "layers.0.")]),
            ProjectorType::MlpGelu(n) => {
                KeyMap::new((0..n).map(|i| (format!("model.mm_projector.{}.", 2 * i), format!("layers.{i}."))))
            }
        }
    }

    /// llava-hf names: `multi_modal_projector.linear_{1,2}` under an optional prefix.
    pub fn hf_key_map(prefix: &str) -> KeyMap {
        KeyMap::new([
            (format!("{prefix}multi_modal_projector.linear_1."), "layers.0.".to_string()),
            (format!("{prefix}multi_modal_projector.linear_2."), "layers.1.".to_string()),
        ])
    }
}
