//! Errors of weight loading; each names the tensor (or the `quantization_config` field) and says
//! what was expected.

/// A weight or quantization config that cannot be used as stored.
#[derive(Debug, thiserror::Error)]
pub enum QuantError {
    /// The file layer's own error: a missing tensor, a wrong shape or dtype. These name the
    /// tensor and the file.
    #[error(transparent)]
    Tensor(#[from] nano_infer_tensor::TensorError),
    /// A quantized layer lacks one of the tensors its format needs (a scale, the zero points).
    /// Such a layer is never run: its codes alone mean nothing.
    #[error("tensor `{tensor}` is missing: {reason}")]
    MissingTensor {
        /// The tensor's name.
        tensor: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// `quantization_config` asks for something this engine does not implement or is malformed.
    #[error("quantization_config.{field}: {reason}")]
    Config {
        /// The `quantization_config` field at fault.
        field: String,
        /// What is wrong, in words.
        reason: String,
    },
    /// The quantization group does not divide the layer's input features.
    #[error(
        "tensor `{tensor}`: group size {group_size} does not divide in_features {in_features}"
    )]
    GroupSize {
        /// The tensor's name.
        tensor: String,
        /// The quantization group size.
        group_size: usize,
        /// The layer's input features.
        in_features: usize,
    },
    /// Anything else that is wrong with a tensor (inconsistent shapes between the parts of one
    /// quantized layer, a layer stored in another format than the config says).
    #[error("tensor `{tensor}`: {reason}")]
    Invalid {
        /// The tensor's name.
        tensor: String,
        /// What is wrong, in words.
        reason: String,
    },
}

impl QuantError {
    pub(crate) fn config(field: &str, reason: impl Into<String>) -> Self {
        QuantError::Config {
            field: field.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(tensor: &str, reason: impl Into<String>) -> Self {
        QuantError::Invalid {
            tensor: tensor.to_owned(),
            reason: reason.into(),
        }
    }

    pub(crate) fn missing(tensor: &str, reason: impl Into<String>) -> Self {
        QuantError::MissingTensor {
            tensor: tensor.to_owned(),
            reason: reason.into(),
        }
    }
}
