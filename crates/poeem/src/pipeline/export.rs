//! Export of the index a model learned: the item tower's embeddings encoded with the indexing
//! layer's codec, no k-means and no OPQ.

use std::time::Instant;

use serde_json::json;

use super::{ItemIds, PipelineError};
use crate::build::index_from_codec;
use crate::pq::Par;
use crate::search::{IndexMetadata, IndexParts, ItemKeys, Metric};
use crate::train::Model;

/// The metadata entry an exported index carries about its model (an object with `item_ids`,
/// `"tokens"` or `"dense"`, and the model's shape and training state).
pub const MODEL_METADATA_KEY: &str = "poeem_model";

/// What [`export_index`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// Items indexed: every item of the model.
    pub n_items: usize,
    /// Which ids the index gives the items.
    pub item_ids: ItemIds,
    /// Seconds spent embedding the items with the item tower.
    pub embed_seconds: f64,
    /// Seconds spent encoding them with the learned codec and laying out the index (the export
    /// proper: what a post-hoc build replaces by k-means, OPQ and encoding).
    pub encode_seconds: f64,
    /// Mean squared quantization error over the vector's mean squared norm.
    pub relative_distortion: f64,
    /// Whether the model normalises item embeddings before the layer. Then the index's score
    /// `⟨q̂, τ(x)⟩` approximates the model's `cos(q, x)`; otherwise it ranks by `⟨q̂, τ(v)⟩`,
    /// which differs from the model's `cos(q, τ(v))` by the item norms.
    pub normalized_items: bool,
}

impl ExportReport {
    /// Seconds of the whole export, embedding included.
    pub fn total_seconds(&self) -> f64 {
        self.embed_seconds + self.encode_seconds
    }
}

/// The index a model learned, ready for [`write_index`](crate::search::write_index).
///
/// Every item is embedded by the item tower ([`Model::embed_items`]: the pre-quantization
/// embeddings, normalised when the model normalises before the layer) and encoded with the
/// layer's codec ([`Model::item_codec`]) under the inner-product metric. Queries embedded by
/// [`Model::embed_queries`] (normalised) then score `⟨q̂, τ(x)⟩`, the quantized form of the
/// model's cosine. Item ids follow [`ItemIds::for_vocab`]: the data's integer ids, or dense
/// indices with the data's ids attached as the index's item keys.
///
/// # Errors
/// [`PipelineError::NoCodec`] for a model trained without the indexing layer or whose layer has
/// not finished its warm start; the search crate's errors from encoding.
pub fn export_index(model: &Model, par: Par) -> Result<(IndexParts, ExportReport), PipelineError> {
    let layer = model.layer().ok_or_else(|| PipelineError::NoCodec {
        reason: "the model was trained without the indexing layer, so it has no learned index \
                 to export; build one post hoc from its item embeddings instead \
                 (`poeem embed --side item`, then `poeem build`)"
            .to_owned(),
    })?;
    let codec = model.item_codec().ok_or_else(|| PipelineError::NoCodec {
        reason: format!(
            "the indexing layer has not learned a codec yet: it is in its {:?} phase after {} \
             steps (warm-up of {} steps, then {} rows buffered for the k-means init); train \
             longer or with a shorter warm-up",
            layer.phase(),
            layer.steps(),
            layer.config().warmup_steps,
            layer.config().buffer_size
        ),
    })?;
    if codec.dim() != model.dim() {
        return Err(PipelineError::Mismatch {
            reason: format!(
                "the layer's codec has dimension {}, the model {}",
                codec.dim(),
                model.dim()
            ),
        });
    }
    let items = model.items();
    let item_ids = ItemIds::for_vocab(items);
    let ids = item_ids.ids(items)?;

    let start = Instant::now();
    let all: Vec<u32> = (0..items.len() as u32).collect();
    let vectors = model.embed_items(&all, par)?;
    let embed_seconds = start.elapsed().as_secs_f64();

    let start = Instant::now();
    let normalized_items = model.config().normalize_item_before_layer;
    let mut metadata = IndexMetadata::new();
    let model_entry = json!({
        "item_ids": item_ids.name(),
        "n_items": items.len(),
        "n_queries": model.n_queries(),
        "dim": model.dim(),
        "layer_steps": layer.steps(),
        "rotation": layer.config().rotation,
        "normalized_items": normalized_items,
    });
    // Every JSON value is a metadata value, so the conversion cannot fail.
    metadata.extra.insert(
        MODEL_METADATA_KEY.to_owned(),
        serde_json::from_value(model_entry).unwrap_or_default(),
    );
    let mut parts = index_from_codec(
        &codec,
        &vectors,
        Some(&ids),
        Metric::InnerProduct,
        metadata,
        par,
    )?;
    if item_ids == ItemIds::Dense {
        parts.item_keys = Some(ItemKeys::new(items.tokens())?);
    }
    let encode_seconds = start.elapsed().as_secs_f64();
    let relative_distortion = parts.metadata.relative_distortion.unwrap_or(f64::NAN);
    let report = ExportReport {
        n_items: items.len(),
        item_ids,
        embed_seconds,
        encode_seconds,
        relative_distortion,
        normalized_items,
    };
    Ok((parts, report))
}

/// The [`ItemIds`] recorded in an index's metadata by [`export_index`]; `None` for an index
/// built elsewhere.
pub fn exported_item_ids(metadata: &IndexMetadata) -> Option<ItemIds> {
    metadata
        .extra
        .get(MODEL_METADATA_KEY)?
        .get("item_ids")?
        .as_str()?
        .parse()
        .ok()
}
