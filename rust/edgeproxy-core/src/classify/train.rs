//! Training: averaged stochastic gradient descent on the multinomial log loss.
//!
//! Each epoch visits the examples in an order shuffled from the seed; each visit featurises the
//! text again (cheaper than holding every example's features in memory: a 2 KB text takes tens
//! of microseconds) and moves the weights of its buckets against the gradient. The model kept is
//! the average of the weights over every step (Polyak averaging, with the constant-time trick of
//! Daumé's averaged perceptron), which makes a constant learning rate converge and the result
//! insensitive to the last few examples seen. Single-threaded, no fast-math: the same examples,
//! options and seed give the same model, byte for byte.

use super::features::{for_each_feature, FeatureConfig};
use super::model::{name_problem, softmax, TaskModel, MAX_TASKS};
use crate::Error;

/// How a model is trained.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainOptions {
    /// How texts become features (stored in the model).
    pub features: FeatureConfig,
    /// Passes over the examples (1..=1000).
    pub epochs: u32,
    /// Seeds the order the examples are visited in.
    pub seed: u64,
    /// The SGD step size (finite, > 0).
    pub learning_rate: f32,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            features: FeatureConfig::default(),
            epochs: 10,
            seed: 0,
            learning_rate: 0.5,
        }
    }
}

/// SplitMix64: a small, well-mixed generator, so the shuffle needs no dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`), by Lemire's multiply-shift (bias below 2^-32 here).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

fn check(
    texts: &[&str],
    labels: &[usize],
    names: &[String],
    options: &TrainOptions,
) -> Result<(), String> {
    if texts.len() != labels.len() {
        return Err(format!("{} texts but {} labels", texts.len(), labels.len()));
    }
    if texts.is_empty() {
        return Err("no examples".to_owned());
    }
    if !(2..=MAX_TASKS).contains(&names.len()) {
        return Err(format!(
            "{} tasks; a model tells 2 to {MAX_TASKS} apart",
            names.len()
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if let Some(problem) = name_problem(name) {
            return Err(format!("task {i}: {problem}"));
        }
        if names[..i].contains(name) {
            return Err(format!("the task {name:?} is named twice"));
        }
    }
    if let Some((i, label)) = labels.iter().enumerate().find(|(_, &l)| l >= names.len()) {
        return Err(format!(
            "example {i} has label {label}, but there are {} tasks",
            names.len()
        ));
    }
    if let Some(problem) = options.features.problem() {
        return Err(problem);
    }
    if !(1..=1000).contains(&options.epochs) {
        return Err(format!("epochs must be 1..=1000, got {}", options.epochs));
    }
    if !(options.learning_rate.is_finite() && options.learning_rate > 0.0) {
        return Err("the learning rate must be a finite number > 0".to_owned());
    }
    Ok(())
}

/// Trains a model on `texts` labelled `labels` (indices into `names`).
pub fn train(
    texts: &[&str],
    labels: &[usize],
    names: &[String],
    options: &TrainOptions,
) -> Result<TaskModel, Error> {
    check(texts, labels, names, options).map_err(|reason| Error::TaskTraining { reason })?;
    let tasks = names.len();
    let config = options.features;
    let size = config.buckets() * tasks;
    // w: the current weights; u: the sum of step × update, so that the average of w over every
    // step is w - u / steps (no pass over all weights per step).
    let mut w = vec![0f64; size];
    let mut u = vec![0f64; size];
    let mut wb = vec![0f64; tasks];
    let mut ub = vec![0f64; tasks];
    let rate = f64::from(options.learning_rate);
    let mut rng = SplitMix64(options.seed);
    let mut order: Vec<usize> = (0..texts.len()).collect();
    let mut buckets: Vec<usize> = Vec::new();
    let mut logits = vec![0f32; tasks];
    let mut dots = vec![0f64; tasks];
    let mut deltas = vec![0f64; tasks];
    let mut steps = 1f64;
    for _ in 0..options.epochs {
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for &example in &order {
            buckets.clear();
            let n = for_each_feature(texts[example], &config, |b| buckets.push(b));
            let x = if n > 0 { 1.0 / (n as f64).sqrt() } else { 0.0 };
            dots.iter_mut().for_each(|d| *d = 0.0);
            for &b in &buckets {
                for (d, &v) in dots.iter_mut().zip(&w[b * tasks..(b + 1) * tasks]) {
                    *d += v;
                }
            }
            for k in 0..tasks {
                logits[k] = (wb[k] + dots[k] * x) as f32;
            }
            let p = softmax(&logits);
            for k in 0..tasks {
                let target = if labels[example] == k { 1.0 } else { 0.0 };
                deltas[k] = -rate * (f64::from(p[k]) - target);
                wb[k] += deltas[k];
                ub[k] += steps * deltas[k];
                deltas[k] *= x;
            }
            for &b in &buckets {
                let row = b * tasks..(b + 1) * tasks;
                for ((wv, uv), &d) in w[row.clone()].iter_mut().zip(&mut u[row]).zip(&deltas) {
                    *wv += d;
                    *uv += steps * d;
                }
            }
            steps += 1.0;
        }
    }
    let average = |w: &[f64], u: &[f64]| -> Vec<f64> {
        w.iter().zip(u).map(|(w, u)| w - u / steps).collect()
    };
    let weights = average(&w, &u);
    let bias: Vec<f32> = average(&wb, &ub).iter().map(|&v| v as f32).collect();
    // One scale per task: its largest weight becomes ±32767.
    let scale: Vec<f32> = (0..tasks)
        .map(|k| {
            let largest = (0..config.buckets())
                .map(|b| weights[b * tasks + k].abs())
                .fold(0.0, f64::max);
            if largest > 0.0 {
                (largest / f64::from(i16::MAX)) as f32
            } else {
                1.0
            }
        })
        .map(|s| {
            if s > 0.0 && s.is_finite() {
                s
            } else {
                f32::MIN_POSITIVE
            }
        })
        .collect();
    let quantised = weights
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let q = (v / f64::from(scale[i % tasks])).round();
            q.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
        })
        .collect();
    Ok(TaskModel::from_parts(
        config,
        names.to_vec(),
        bias,
        scale,
        quantised,
    ))
}
