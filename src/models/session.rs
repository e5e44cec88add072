//! A BERT-family ONNX session: which inputs it takes, padding a batch of encodings to its longest
//! item, and running it (serialised, since an ort run needs `&mut Session`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::{RunOptions, Session, SessionInputValue};
use ort::value::TensorRef;
use tokenizers::Encoding;

use super::RuntimeConfig;
use super::error::ModelError;
use super::runtime::OrtRuntime;

/// Token ids, attention mask and type ids of a batch, padded to its longest item (row-major).
pub(crate) struct TokenBatch {
    rows: usize,
    cols: usize,
    ids: Vec<i64>,
    mask: Vec<i64>,
    types: Vec<i64>,
}

impl TokenBatch {
    pub fn new(encodings: &[&Encoding], pad_id: u32) -> Self {
        let rows = encodings.len();
        let cols = encodings.iter().map(|e| e.len()).max().unwrap_or(0);
        let mut ids = vec![i64::from(pad_id); rows * cols];
        let mut mask = vec![0i64; rows * cols];
        let mut types = vec![0i64; rows * cols];
        for (r, enc) in encodings.iter().enumerate() {
            let row = r * cols;
            for (c, ((&id, &m), &t)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .zip(enc.get_type_ids())
                .enumerate()
            {
                ids[row + c] = i64::from(id);
                mask[row + c] = i64::from(m);
                types[row + c] = i64::from(t);
            }
        }
        Self {
            rows,
            cols,
            ids,
            mask,
            types,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn mask(&self) -> &[i64] {
        &self.mask
    }
}

/// Splits items into runs of similar length: `order` lists item indices, `lengths[i]` is item i's
/// token count. Returns groups of indices, shortest first, each at most `max_rows` items, and cut
/// where padding every item to the group's longest would waste more than a quarter of the run
/// (plus a little slack, so short texts still batch together).
pub(crate) fn length_groups(lengths: &[usize], max_rows: usize) -> Vec<Vec<usize>> {
    /// Padded slots allowed beyond 5/4 of the real tokens, so tiny texts are not run one by one.
    const SLACK_TOKENS: usize = 32;
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut real = 0;
    for i in order {
        let len = lengths[i];
        // Sorted ascending, so `len` is the length the group would pad to.
        let padded = (current.len() + 1) * len;
        let fits =
            current.len() < max_rows.max(1) && padded * 4 <= (real + len) * 5 + SLACK_TOKENS * 4;
        if !fits && !current.is_empty() {
            groups.push(std::mem::take(&mut current));
            real = 0;
        }
        current.push(i);
        real += len;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// What feeds each model input.
#[derive(Clone, Copy, Debug)]
enum Feed {
    Ids,
    Mask,
    Types,
}

pub(crate) struct ModelSession {
    session: Mutex<Session>,
    path: PathBuf,
    feeds: Vec<(String, Feed)>,
    output: String,
}

impl ModelSession {
    /// Loads `path`; `outputs` lists the wanted output names in preference order (else the first).
    pub fn load(
        runtime: &OrtRuntime,
        path: &Path,
        config: &RuntimeConfig,
        outputs: &[&str],
    ) -> Result<Self, ModelError> {
        let session = runtime.session(path, config)?;
        let unsupported = |message: String| ModelError::UnsupportedModel {
            path: path.to_path_buf(),
            message,
        };
        // Read from the session, not assumed: e.g. DistilBERT-style models take no token_type_ids.
        let mut feeds = Vec::new();
        for input in session.inputs() {
            let feed = match input.name() {
                "input_ids" => Feed::Ids,
                "attention_mask" => Feed::Mask,
                "token_type_ids" => Feed::Types,
                other => {
                    return Err(unsupported(format!(
                        "unknown input `{other}` (expected input_ids, attention_mask, token_type_ids)"
                    )));
                }
            };
            feeds.push((input.name().to_string(), feed));
        }
        if !feeds.iter().any(|(_, f)| matches!(f, Feed::Ids)) {
            return Err(unsupported("the model has no `input_ids` input".into()));
        }
        let names: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        let output = outputs
            .iter()
            .find(|want| names.contains(want))
            .or(names.first())
            .map(|s| s.to_string())
            .ok_or_else(|| unsupported("the model has no outputs".into()))?;
        Ok(Self {
            session: Mutex::new(session),
            path: path.to_path_buf(),
            feeds,
            output,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the model reads `token_type_ids`.
    pub fn takes_token_type_ids(&self) -> bool {
        self.feeds.iter().any(|(_, f)| matches!(f, Feed::Types))
    }

    /// Runs one batch and hands the chosen output (shape, values) to `read`, which runs while the
    /// output is borrowed, so nothing is copied. `options` lets another thread terminate the run.
    pub fn run<R>(
        &self,
        batch: &TokenBatch,
        options: &RunOptions,
        read: impl FnOnce(&[usize], &[f32]) -> Result<R, ModelError>,
    ) -> Result<R, ModelError> {
        let err = |message: String| ModelError::Inference {
            path: self.path.clone(),
            message,
        };
        let shape = [batch.rows, batch.cols];
        let mut inputs: Vec<(String, SessionInputValue<'_>)> = Vec::with_capacity(self.feeds.len());
        for (name, feed) in &self.feeds {
            let data = match feed {
                Feed::Ids => &batch.ids,
                Feed::Mask => &batch.mask,
                Feed::Types => &batch.types,
            };
            let tensor = TensorRef::from_array_view((shape, data.as_slice()))
                .map_err(|e| err(e.to_string()))?;
            inputs.push((name.clone(), tensor.into()));
        }
        let mut session = self
            .session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let outputs = session
            .run_with_options(inputs, options)
            .map_err(|e| err(e.to_string()))?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| err(format!("no output named `{}`", self.output)))?;
        let (dims, values) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| err(e.to_string()))?;
        let dims: Vec<usize> = dims
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(0))
            .collect();
        read(&dims, values)
    }
}

#[cfg(test)]
mod tests {
    use super::length_groups;

    #[test]
    fn groups_cover_every_item_once_within_max_rows() {
        let lengths = [5, 40, 7, 12, 90, 6, 33, 8, 8, 100, 3];
        let groups = length_groups(&lengths, 4);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        assert!(groups.iter().all(|g| !g.is_empty() && g.len() <= 4));
    }

    #[test]
    fn long_items_do_not_pad_short_ones() {
        // Ten short items and two long ones: the long ones must not share a run with the short.
        let mut lengths = vec![10; 10];
        lengths.extend([200, 210]);
        let groups = length_groups(&lengths, 32);
        for g in &groups {
            let longest = g.iter().map(|&i| lengths[i]).max().unwrap();
            let real: usize = g.iter().map(|&i| lengths[i]).sum();
            assert!(longest * g.len() * 4 <= real * 5 + 32 * 4, "{g:?}");
        }
        assert!(
            groups.iter().any(|g| g.len() == 10),
            "short items still batch: {groups:?}"
        );
    }

    #[test]
    fn similar_lengths_fill_whole_runs() {
        let lengths = vec![60; 10];
        assert_eq!(length_groups(&lengths, 16).len(), 1);
        assert_eq!(length_groups(&lengths, 4).len(), 3);
    }
}
