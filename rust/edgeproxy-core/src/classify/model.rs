//! A trained task classifier, its scoring, and its file format.
//!
//! # File format (version 1)
//!
//! All integers little-endian. A file is exactly:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `\x89EPTASK\n` (the `\x89` and the newline catch text-mode mangling) |
//! | 2 | `u16` format version, `1` |
//! | 1 | `bits`: buckets are `2^bits` |
//! | 1, 1 | `char_min`, `char_max`: character n-gram lengths |
//! | 1 | `word_max`: word n-gram length |
//! | 2 | `u16` number of tasks `T` (2..=64) |
//! | 4 | `u32` `max_bytes`: longer texts are cut to their head and tail |
//! | per task | `u8` length, then the task name (1..=64 bytes of `[A-Za-z0-9_.-]`, starting alphanumeric) |
//! | 4 × T | `f32` bias per task |
//! | 4 × T | `f32` weight scale per task (finite, > 0) |
//! | 2 × T × 2^bits | `i16` weights, bucket-major: bucket `b`'s weights for the T tasks are adjacent |
//! | 16 | XXH3-128 of every byte before it |
//!
//! Loading checks all of it (magic, version, bounds, names, exact length, checksum, finite
//! numbers) and says what is wrong; a corrupt or foreign file is an error, never a panic.

use twox_hash::XxHash3_128;

use super::features::{for_each_feature, FeatureConfig};
use crate::Error;

/// The first bytes of every model file.
pub const MAGIC: &[u8; 8] = b"\x89EPTASK\n";
/// The file format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// The most tasks a model may tell apart.
pub const MAX_TASKS: usize = 64;
const MAX_NAME_BYTES: usize = 64;
const FIXED_HEADER: usize = 20;
const CHECKSUM_BYTES: usize = 16;

/// A model's answer for one text.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// The index (into [`TaskModel::labels`]) of the most probable task.
    pub label: usize,
    /// Its softmax probability, in `[0, 1]`.
    pub confidence: f32,
}

/// A trained multinomial logistic regression over hashed n-grams.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskModel {
    pub(super) config: FeatureConfig,
    pub(super) labels: Vec<String>,
    pub(super) bias: Vec<f32>,
    pub(super) scale: Vec<f32>,
    pub(super) weights: Vec<i16>, // buckets × tasks, bucket-major
    pub(super) digest: u128,      // of the file's bytes (the checksum)
}

/// Why `name` cannot be a task name, if it cannot.
pub(super) fn name_problem(name: &str) -> Option<String> {
    let ok_len = !name.is_empty() && name.len() <= MAX_NAME_BYTES;
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    let ok_first = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_first {
        None
    } else {
        Some(format!(
            "a task name is 1 to {MAX_NAME_BYTES} characters of letters, digits, '_', '.' and '-', \
             starting with a letter or digit"
        ))
    }
}

impl TaskModel {
    /// Builds a model from its parts (the trainer's output), computing its digest.
    pub(super) fn from_parts(
        config: FeatureConfig,
        labels: Vec<String>,
        bias: Vec<f32>,
        scale: Vec<f32>,
        weights: Vec<i16>,
    ) -> TaskModel {
        let mut model = TaskModel {
            config,
            labels,
            bias,
            scale,
            weights,
            digest: 0,
        };
        let bytes = model.to_bytes();
        model.digest = u128::from_le_bytes(
            bytes[bytes.len() - CHECKSUM_BYTES..]
                .try_into()
                .expect("16 bytes"),
        );
        model
    }

    /// The task names, in the order of the model's outputs.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// How texts become features.
    pub fn config(&self) -> &FeatureConfig {
        &self.config
    }

    /// The XXH3-128 checksum of the model's file: equal digests, equal models.
    pub fn digest(&self) -> u128 {
        self.digest
    }

    /// The raw scores (logits) of each task for `text`.
    pub fn logits(&self, text: &str) -> Vec<f32> {
        let tasks = self.labels.len();
        let mut acc = vec![0i64; tasks];
        let weights = &self.weights;
        let n = match tasks {
            // The common sizes get a fixed-width row (no bounds check per weight).
            2 => sum_rows::<2>(text, &self.config, weights, &mut acc),
            3 => sum_rows::<3>(text, &self.config, weights, &mut acc),
            4 => sum_rows::<4>(text, &self.config, weights, &mut acc),
            5 => sum_rows::<5>(text, &self.config, weights, &mut acc),
            6 => sum_rows::<6>(text, &self.config, weights, &mut acc),
            8 => sum_rows::<8>(text, &self.config, weights, &mut acc),
            _ => for_each_feature(text, &self.config, |b| {
                let row = &weights[b * tasks..(b + 1) * tasks];
                for (a, &w) in acc.iter_mut().zip(row) {
                    *a += i64::from(w);
                }
            }),
        };
        // Each occurrence weighs 1/sqrt(n): a text's length does not swamp its content.
        let norm = if n > 0 { 1.0 / (n as f64).sqrt() } else { 0.0 };
        (0..tasks)
            .map(|k| self.bias[k] + (acc[k] as f64 * f64::from(self.scale[k]) * norm) as f32)
            .collect()
    }

    /// The probability of each task for `text` (softmax of the logits; they sum to 1).
    pub fn probabilities(&self, text: &str) -> Vec<f32> {
        softmax(&self.logits(text))
    }

    /// The most probable task for `text` and its probability (ties: the first label).
    pub fn predict(&self, text: &str) -> Prediction {
        let p = self.probabilities(text);
        let mut best = 0;
        for (k, &v) in p.iter().enumerate() {
            if v > p[best] {
                best = k;
            }
        }
        Prediction {
            label: best,
            confidence: p[best],
        }
    }

    /// The model as a file (see the module docs).
    pub fn to_bytes(&self) -> Vec<u8> {
        let tasks = self.labels.len();
        let mut out = Vec::with_capacity(
            FIXED_HEADER + tasks * (MAX_NAME_BYTES + 9) + self.weights.len() * 2 + CHECKSUM_BYTES,
        );
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let c = &self.config;
        out.extend_from_slice(&[c.bits, c.char_min, c.char_max, c.word_max]);
        out.extend_from_slice(&(tasks as u16).to_le_bytes());
        out.extend_from_slice(&c.max_bytes.to_le_bytes());
        for name in &self.labels {
            out.push(name.len() as u8);
            out.extend_from_slice(name.as_bytes());
        }
        for v in self.bias.iter().chain(&self.scale) {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for w in &self.weights {
            out.extend_from_slice(&w.to_le_bytes());
        }
        let digest = XxHash3_128::oneshot(&out);
        out.extend_from_slice(&digest.to_le_bytes());
        out
    }

    /// Reads a model file, checking everything (see the module docs).
    pub fn from_bytes(data: &[u8]) -> Result<TaskModel, Error> {
        let bad = |reason: String| Error::TaskModel { reason };
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            return Err(bad(
                "not an edgeproxy task model (it does not start with the model file's magic bytes)"
                    .to_owned(),
            ));
        }
        if data.len() < FIXED_HEADER + CHECKSUM_BYTES {
            return Err(bad(format!("truncated: {} bytes", data.len())));
        }
        let version = u16::from_le_bytes([data[8], data[9]]);
        if version != FORMAT_VERSION {
            return Err(bad(format!(
                "model file format version {version}; this build reads version {FORMAT_VERSION} \
                 (retrain it with this build's `edgeproxy tasks train`)"
            )));
        }
        let config = FeatureConfig {
            bits: data[10],
            char_min: data[11],
            char_max: data[12],
            word_max: data[13],
            max_bytes: u32::from_le_bytes(data[16..20].try_into().expect("4 bytes")),
        };
        if let Some(problem) = config.problem() {
            return Err(bad(format!("bad feature settings: {problem}")));
        }
        let tasks = usize::from(u16::from_le_bytes([data[14], data[15]]));
        if !(2..=MAX_TASKS).contains(&tasks) {
            return Err(bad(format!(
                "it names {tasks} tasks; a model tells 2 to {MAX_TASKS} apart"
            )));
        }
        let mut at = FIXED_HEADER;
        let mut labels: Vec<String> = Vec::with_capacity(tasks);
        for i in 0..tasks {
            let len = usize::from(
                *data
                    .get(at)
                    .ok_or_else(|| bad("truncated in the task names".into()))?,
            );
            let raw = data
                .get(at + 1..at + 1 + len)
                .ok_or_else(|| bad("truncated in the task names".into()))?;
            let name = std::str::from_utf8(raw)
                .ok()
                .filter(|n| name_problem(n).is_none())
                .ok_or_else(|| bad(format!("task {i}'s name is not a valid task name")))?;
            if labels.iter().any(|l| l == name) {
                return Err(bad(format!("the task {name:?} is named twice")));
            }
            labels.push(name.to_owned());
            at += 1 + len;
        }
        let weights = config.buckets() * tasks;
        let expected = at + 8 * tasks + 2 * weights + CHECKSUM_BYTES;
        if data.len() != expected {
            return Err(bad(format!(
                "{} bytes where its header says {expected}: truncated or padded",
                data.len()
            )));
        }
        let body = &data[..expected - CHECKSUM_BYTES];
        let stored = u128::from_le_bytes(data[expected - CHECKSUM_BYTES..].try_into().expect("16"));
        if XxHash3_128::oneshot(body) != stored {
            return Err(bad(
                "corrupt: its checksum does not match its contents".to_owned()
            ));
        }
        let floats = |from: usize| -> Vec<f32> {
            data[from..from + 4 * tasks]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect()
        };
        let bias = floats(at);
        let scale = floats(at + 4 * tasks);
        if bias.iter().any(|v| !v.is_finite()) || scale.iter().any(|v| !v.is_finite() || *v <= 0.0)
        {
            return Err(bad(
                "a bias or scale is not a finite number (scales must be > 0)".to_owned(),
            ));
        }
        let from = at + 8 * tasks;
        let weights = data[from..from + 2 * weights]
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(TaskModel {
            config,
            labels,
            bias,
            scale,
            weights,
            digest: stored,
        })
    }
}

fn sum_rows<const T: usize>(
    text: &str,
    config: &FeatureConfig,
    weights: &[i16],
    acc: &mut [i64],
) -> usize {
    let mut sums = [0i64; T];
    let n = for_each_feature(text, config, |b| {
        let row: &[i16; T] = weights[b * T..(b + 1) * T]
            .try_into()
            .expect("a row is T weights");
        for (sum, &w) in sums.iter_mut().zip(row) {
            *sum += i64::from(w);
        }
    });
    acc.copy_from_slice(&sums);
    n
}

pub(super) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exp.iter().sum();
    exp.iter().map(|&v| v / sum).collect()
}
