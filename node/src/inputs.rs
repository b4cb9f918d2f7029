//! Reading segment inputs: ezkl's JSON format, or the previous segment's proof file.

use std::path::Path;

use anyhow::{bail, Context, Result};
use provnet_kernels::{Model, ProofFile};

/// Reads `{"input_data": [[floats]]}` (ezkl's format) as a flat vector.
pub fn read_float_input(path: &Path) -> Result<Vec<f64>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    parse_float_input(&bytes).with_context(|| format!("{}", path.display()))
}

fn parse_float_input(bytes: &[u8]) -> Result<Vec<f64>> {
    let v: serde_json::Value =
        serde_json::from_slice(bytes).context("not JSON (expected {\"input_data\": [[...]]})")?;
    let data = v
        .get("input_data")
        .and_then(|d| d.as_array())
        .context("missing \"input_data\" (expected {\"input_data\": [[...]]})")?;
    let mut out = Vec::new();
    for row in data {
        let row = row
            .as_array()
            .context("\"input_data\" must be a list of lists")?;
        for x in row {
            let f = x.as_f64().context("\"input_data\" holds a non-number")?;
            if !f.is_finite() {
                bail!("\"input_data\" holds a non-finite number");
            }
            out.push(f);
        }
    }
    Ok(out)
}

/// The quantized input of `segment`: from ezkl JSON (floats, quantized at the model's
/// scale) or, for a later segment, from the proof file of the segment before it, which is
/// verified first (with the keys in `model_dir`, for the context it names): an output is
/// taken as input only if a valid proof says the model computes it.
pub fn segment_input(
    model: &Model,
    model_dir: &Path,
    segment: usize,
    path: &Path,
) -> Result<Vec<i64>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if let Ok(prev) = ProofFile::from_bytes(&bytes) {
        if prev.model_id != model.id() {
            bail!("{}: that proof is for a different model", path.display());
        }
        if prev.segment as usize + 1 != segment {
            bail!(
                "{}: that proof is for segment {}; its output feeds segment {}, not {segment}",
                path.display(),
                prev.segment,
                prev.segment + 1
            );
        }
        let keys = provnet_kernels::ModelKeys::open(model_dir, model)?;
        let (vk, vk_id) = keys.verifying_key(prev.segment as usize)?;
        provnet_kernels::SegmentVerifier::new(prev.segment as usize, vk, vk_id)
            .verify(model, &prev, &prev.context())
            .with_context(|| {
                format!(
                    "{}: the segment {} proof does not verify, so its output is not an input",
                    path.display(),
                    prev.segment
                )
            })?;
        return Ok(prev.output);
    }
    let floats = parse_float_input(&bytes).with_context(|| format!("{}", path.display()))?;
    Ok(model.quantize(&floats))
}
