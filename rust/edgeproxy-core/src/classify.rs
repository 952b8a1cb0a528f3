//! Task classification: a small linear model over hashed n-grams, and the patterns of task rules.
//!
//! The proxy gives each request a task (docs/tasks.md). Rules in the policy decide most
//! requests; what they leave goes to a learned classifier whose features and scoring live here
//! because they run once per request and must cost microseconds, not milliseconds:
//!
//! - [`features`]: a text becomes hashed character n-grams (3 to 5 characters by default) and
//!   word n-grams (words and word pairs), each an index into `2^bits` buckets. Nothing is
//!   allocated per feature and nothing is deduplicated: scoring adds one weight row per
//!   occurrence.
//! - [`TaskModel`]: multinomial logistic regression over those buckets; `predict` gives the
//!   best task and its softmax probability. Weights are `i16` with one scale per task (half
//!   of the memory of `f32`, so more of the model stays in cache while scoring).
//! - [`train`]: averaged SGD on the log loss, deterministic given a seed.
//! - The model file format (versioned, checksummed, checked on load): [`TaskModel::from_bytes`].
//! - [`TextPattern`]: a task rule's regex or keywords, compiled once with `regex-automata`
//!   (finite automata, no backtracking): matching is linear in the text for every pattern, so a
//!   pattern in a policy cannot stall the proxy however it is written.

mod features;
mod model;
mod pattern;
mod train;

pub use features::{for_each_feature, FeatureConfig};
pub use model::{Prediction, TaskModel, FORMAT_VERSION, MAGIC, MAX_TASKS};
pub use pattern::{TextPattern, MAX_PATTERN_BYTES};
pub use train::{train, TrainOptions};

#[cfg(test)]
mod tests;
