use proptest::prelude::*;

use super::*;
use crate::Error;

fn buckets_of(text: &str, config: &FeatureConfig) -> Vec<usize> {
    let mut out = Vec::new();
    let n = for_each_feature(text, config, |b| out.push(b));
    assert_eq!(n, out.len());
    out
}

fn sorted(mut v: Vec<usize>) -> Vec<usize> {
    v.sort_unstable();
    v
}

/// The number of features the module docs promise for a text of ASCII words separated by
/// single spaces: character n-grams over the text padded with a space at each end, plus words
/// and word pairs.
fn expected_count(text: &str, config: &FeatureConfig) -> usize {
    let len = text.len() + 2;
    let chars: usize = (config.char_min..=config.char_max)
        .map(|n| (len + 1).saturating_sub(usize::from(n)))
        .sum();
    let words = text.split(' ').filter(|w| !w.is_empty()).count();
    let word_grams: usize = (1..=usize::from(config.word_max))
        .map(|n| (words + 1).saturating_sub(n))
        .sum();
    chars + word_grams
}

#[test]
fn counts_follow_the_documented_n_grams() {
    let config = FeatureConfig::default();
    for text in [
        "a",
        "ab",
        "hello",
        "hello world",
        "fill the fields of this form as json",
    ] {
        assert_eq!(
            buckets_of(text, &config).len(),
            expected_count(text, &config),
            "{text:?}"
        );
    }
    let words_only = FeatureConfig {
        char_min: 0,
        char_max: 0,
        word_max: 3,
        ..config
    };
    // three words: 3 unigrams, 2 bigrams, 1 trigram
    assert_eq!(buckets_of("one two three", &words_only).len(), 6);
}

#[test]
fn normalisation_ignores_case_digits_and_spacing() {
    let config = FeatureConfig::default();
    let a = buckets_of("Invoice 2024-118: Total EUR 1,530.00", &config);
    let b = buckets_of("invoice   9999-000:\ttotal eur 7,777.77\n", &config);
    assert_eq!(a, b);
    assert_ne!(
        a,
        buckets_of("invoice 2024-118: total usd 1,530.00", &config)
    );
    // Non-ASCII letters lowercase too; non-ASCII digits become 0.
    assert_eq!(
        buckets_of("ÉTÉ ١٢٣", &config),
        buckets_of("été 000", &config)
    );
}

#[test]
fn long_texts_are_cut_to_head_and_tail() {
    let config = FeatureConfig {
        max_bytes: 64,
        ..FeatureConfig::default()
    };
    let head = "x".repeat(32);
    let tail = "y".repeat(32);
    let a = format!("{head}{}{tail}", "middle ".repeat(100));
    let b = format!("{head}{}{tail}", "other words entirely ".repeat(50));
    assert_eq!(buckets_of(&a, &config), buckets_of(&b, &config));
    // Only the kept pieces count: the cost is bounded by max_bytes.
    let n = buckets_of(&"word ".repeat(100_000), &config).len();
    assert!(n < 64 * 5, "{n}");
}

#[test]
fn cuts_respect_character_boundaries() {
    let config = FeatureConfig {
        max_bytes: 64,
        ..FeatureConfig::default()
    };
    for pad in 0..4 {
        let text = format!("{}{}", "a".repeat(pad), "é😀".repeat(40));
        buckets_of(&text, &config); // no panic on a cut inside a character
    }
}

#[test]
fn word_order_matters_through_bigrams() {
    let config = FeatureConfig {
        char_min: 0,
        char_max: 0,
        word_max: 2,
        ..FeatureConfig::default()
    };
    let a = sorted(buckets_of("extract fields", &config));
    let b = sorted(buckets_of("fields extract", &config));
    assert_ne!(a, b);
    let unigrams = FeatureConfig {
        word_max: 1,
        ..config
    };
    assert_eq!(
        sorted(buckets_of("extract fields", &unigrams)),
        sorted(buckets_of("fields extract", &unigrams))
    );
}

#[test]
fn feature_config_bounds_are_checked() {
    let good = FeatureConfig::default();
    assert!(good.problem().is_none());
    for bad in [
        FeatureConfig { bits: 7, ..good },
        FeatureConfig { bits: 25, ..good },
        FeatureConfig {
            char_min: 4,
            char_max: 3,
            ..good
        },
        FeatureConfig {
            char_max: 9,
            ..good
        },
        FeatureConfig {
            word_max: 4,
            ..good
        },
        FeatureConfig {
            char_min: 0,
            char_max: 0,
            word_max: 0,
            ..good
        },
        FeatureConfig {
            max_bytes: 10,
            ..good
        },
    ] {
        assert!(bad.problem().is_some(), "{bad:?}");
    }
}

fn toy() -> (Vec<&'static str>, Vec<usize>, Vec<String>) {
    let texts = vec![
        "extract the invoice number and total as json",
        "fill these fields from the form: name, email, date",
        "return a json object with the order id",
        "parse the address into street, city and zip fields",
        "what does the contract say about termination?",
        "according to the document, when was the policy updated?",
        "which section of the handbook covers parental leave?",
        "in the attached report, who approved the budget?",
        "draft a product spec for the new onboarding flow",
        "write a launch announcement for the mobile app",
        "compose a design document for the billing service",
        "write a long blog post about our migration",
    ];
    let labels = vec![0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2];
    let names = vec!["extraction".into(), "qa".into(), "writing".into()];
    (texts, labels, names)
}

fn small_options() -> TrainOptions {
    TrainOptions {
        features: FeatureConfig {
            bits: 12,
            ..FeatureConfig::default()
        },
        epochs: 30,
        seed: 7,
        learning_rate: 0.5,
    }
}

#[test]
fn training_fits_a_small_separable_set() {
    let (texts, labels, names) = toy();
    let model = train(&texts, &labels, &names, &small_options()).unwrap();
    assert_eq!(model.labels(), names.as_slice());
    for (text, &label) in texts.iter().zip(&labels) {
        let p = model.predict(text);
        assert_eq!(p.label, label, "{text}");
        assert!(p.confidence > 1.0 / 3.0 && p.confidence <= 1.0);
    }
    // Unseen texts in the same words go the same way.
    assert_eq!(model.predict("extract the email field as json").label, 0);
    assert_eq!(model.predict("draft a spec for the billing flow").label, 2);
}

#[test]
fn training_is_deterministic_given_the_seed() {
    let (texts, labels, names) = toy();
    let a = train(&texts, &labels, &names, &small_options()).unwrap();
    let b = train(&texts, &labels, &names, &small_options()).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
    assert_eq!(a.digest(), b.digest());
    let other = TrainOptions {
        seed: 8,
        ..small_options()
    };
    let c = train(&texts, &labels, &names, &other).unwrap();
    assert_ne!(a.to_bytes(), c.to_bytes()); // another visiting order, another average
}

#[test]
fn training_refuses_bad_input() {
    let (texts, labels, names) = toy();
    let opts = small_options();
    let refused = |r: Result<TaskModel, Error>| match r {
        Err(Error::TaskTraining { reason }) => reason,
        other => panic!("expected TaskTraining, got {other:?}"),
    };
    assert!(refused(train(&[], &[], &names, &opts)).contains("no examples"));
    assert!(refused(train(&texts, &labels[1..], &names, &opts)).contains("labels"));
    assert!(refused(train(&texts, &labels, &names[..1], &opts)).contains("2 to"));
    let dup = vec!["qa".to_owned(), "qa".to_owned(), "x".to_owned()];
    assert!(refused(train(&texts, &labels, &dup, &opts)).contains("twice"));
    let bad_name = vec!["qa".to_owned(), "no spaces".to_owned(), "x".to_owned()];
    assert!(refused(train(&texts, &labels, &bad_name, &opts)).contains("task name"));
    let mut out_of_range = labels.clone();
    out_of_range[3] = 3;
    assert!(refused(train(&texts, &out_of_range, &names, &opts)).contains("label 3"));
    let zero = TrainOptions { epochs: 0, ..opts };
    assert!(refused(train(&texts, &labels, &names, &zero)).contains("epochs"));
    let nan = TrainOptions {
        learning_rate: f32::NAN,
        ..opts
    };
    assert!(refused(train(&texts, &labels, &names, &nan)).contains("learning rate"));
}

fn toy_model() -> TaskModel {
    let (texts, labels, names) = toy();
    train(&texts, &labels, &names, &small_options()).unwrap()
}

#[test]
fn a_model_file_round_trips() {
    let model = toy_model();
    let bytes = model.to_bytes();
    assert_eq!(&bytes[..8], MAGIC);
    let again = TaskModel::from_bytes(&bytes).unwrap();
    assert_eq!(again, model);
    assert_eq!(again.to_bytes(), bytes);
    let text = "what does the report say about the budget?";
    assert_eq!(again.probabilities(text), model.probabilities(text));
}

fn refused_file(data: &[u8]) -> String {
    match TaskModel::from_bytes(data) {
        Err(Error::TaskModel { reason }) => reason,
        other => panic!("expected TaskModel error, got {other:?}"),
    }
}

#[test]
fn foreign_truncated_and_corrupt_files_are_refused_with_the_reason() {
    let bytes = toy_model().to_bytes();
    assert!(refused_file(b"").contains("not an edgeproxy task model"));
    assert!(refused_file(b"version: 1\nproviders: {}\n").contains("not an edgeproxy task model"));
    assert!(refused_file(&bytes[..30]).contains("bytes"));
    assert!(refused_file(&bytes[..bytes.len() - 1]).contains("truncated or padded"));
    let mut padded = bytes.clone();
    padded.push(0);
    assert!(refused_file(&padded).contains("truncated or padded"));
    let mut flipped = bytes.clone();
    let last_weight = bytes.len() - 20;
    flipped[last_weight] ^= 0x40;
    assert!(refused_file(&flipped).contains("checksum"));
    let mut newer = bytes.clone();
    newer[8] = 2;
    assert!(refused_file(&newer).contains("format version 2"));
    let mut bits = bytes.clone();
    bits[10] = 40;
    assert!(refused_file(&bits).contains("bits"));
}

#[test]
fn a_hand_made_file_with_bad_numbers_is_refused() {
    // A file with a valid checksum but a NaN bias: someone wrote it by hand, not our trainer.
    let mut model = toy_model();
    model.bias[0] = f32::NAN;
    let bytes = model.to_bytes();
    assert!(refused_file(&bytes).contains("finite"));
    let mut model = toy_model();
    model.scale[1] = 0.0;
    assert!(refused_file(&model.to_bytes()).contains("scale"));
}

#[test]
fn patterns_match_linearly_and_refuse_what_they_cannot_compile() {
    let p = TextPattern::regex(r"(?i)\b(draft|write)\b.*\bspec").unwrap();
    assert!(p.is_match("Please DRAFT a product spec"));
    assert!(!p.is_match("redraft nothing"));
    // The classic catastrophic pattern for a backtracking engine: here it is linear.
    let evil = TextPattern::regex(r"^(a+)+$").unwrap();
    let text = format!("{}!", "a".repeat(100_000));
    assert!(!evil.is_match(&text));
    let refused = |r: Result<TextPattern, Error>| match r {
        Err(Error::TaskPattern { reason }) => reason,
        other => panic!("expected TaskPattern, got {other:?}"),
    };
    let look = refused(TextPattern::regex(r"foo(?=bar)"));
    assert!(look.contains("look-around"), "{look}");
    assert!(!look.contains('\n'), "{look}");
    assert!(refused(TextPattern::regex(r"(unclosed")).contains("not a valid pattern"));
    assert!(refused(TextPattern::regex(r"\1")).contains("not a valid pattern"));
    assert!(refused(TextPattern::regex(r"a{1000}{1000}")).contains("simplify"));
    assert!(refused(TextPattern::regex(&"a".repeat(MAX_PATTERN_BYTES + 1))).contains("longer"));
}

#[test]
fn keywords_are_case_insensitive_whole_words() {
    let k = TextPattern::keywords(&["spec", "C++", "json schema"]).unwrap();
    assert!(k.is_match("Write the SPEC."));
    assert!(!k.is_match("a special case"));
    assert!(k.is_match("I like c++!"));
    assert!(k.is_match("validate against the JSON Schema"));
    assert!(!k.is_match("jsonschema"));
    // Regex syntax in a keyword is literal text.
    let dots = TextPattern::keywords(&["a.b"]).unwrap();
    assert!(dots.is_match("see a.b"));
    assert!(!dots.is_match("see axb"));
    // A keyword ending in a non-word character that Rust calls alphanumeric ('²' is a
    // number, not a decimal digit) still matches: boundaries follow the regex's `\w`.
    assert!(TextPattern::keywords(&["m²"])
        .unwrap()
        .is_match("price per m² here"));
    assert!(TextPattern::keywords(&["²"])
        .unwrap()
        .is_match("see ² here"));
    assert!(TextPattern::keywords::<&str>(&[]).is_err());
    assert!(TextPattern::keywords(&["  "]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any text, any cut: no panic, the count is the number of calls, buckets are in range,
    /// and case and digits never matter.
    #[test]
    fn features_of_any_text(text in any::<String>(), max_bytes in 64u32..512, bits in 8u8..=20) {
        let config = FeatureConfig { bits, max_bytes, ..FeatureConfig::default() };
        let got = buckets_of(&text, &config);
        prop_assert!(got.iter().all(|&b| b < config.buckets()));
        let ascii_upper = text.to_ascii_uppercase();
        prop_assert_eq!(&got, &buckets_of(&ascii_upper, &config));
        let digits: String = text.chars().map(|c| if c.is_ascii_digit() { '7' } else { c }).collect();
        prop_assert_eq!(&got, &buckets_of(&digits, &config));
    }

    /// Bytes that are not a model file are refused, never a panic.
    #[test]
    fn arbitrary_bytes_are_refused(data in proptest::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(TaskModel::from_bytes(&data).is_err());
        let mut framed = MAGIC.to_vec();
        framed.extend_from_slice(&data);
        prop_assert!(TaskModel::from_bytes(&framed).is_err());
    }

    /// Probabilities are a distribution for any text.
    #[test]
    fn probabilities_are_a_distribution(text in ".{0,400}") {
        let model = toy_model();
        let p = model.probabilities(&text);
        prop_assert_eq!(p.len(), 3);
        prop_assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
        prop_assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-5);
        let best = model.predict(&text);
        prop_assert!((best.confidence - p[best.label]).abs() < 1e-6);
    }
}

#[test]
fn any_single_byte_change_of_a_model_file_is_refused() {
    let bytes = toy_model().to_bytes();
    // Every byte of the header and names, and a sample of the weights and the checksum.
    let positions: Vec<usize> = (0..60)
        .chain((60..bytes.len()).step_by(997))
        .chain(bytes.len() - 16..bytes.len())
        .collect();
    for at in positions {
        let mut changed = bytes.clone();
        changed[at] ^= 0x01;
        assert!(TaskModel::from_bytes(&changed).is_err(), "byte {at}");
    }
}
