//! Data loading, splits, the synthetic tutorial and ranking metrics.

use std::path::{Path, PathBuf};

use faer::Par;
use poeem_train::TrainError;
use poeem_train::data::{
    DataConfig, Dataset, Delimiter, FeatureSource, Field, FieldKind, FieldSpec, InteractionsSource,
    Separator, SplitConfig, TextFormat, Vocab, fnv1a_64, hash_bucket, split_pairs,
};
use poeem_train::metrics::{HeldOut, ranking_metrics, ranking_metrics_judged, top_k_inner_product};
use poeem_train::synthetic::{
    ScaledTutorial, TUTORIAL_VOCAB, tutorial_brute_force_precision, tutorial_dataset,
    tutorial_is_relevant, tutorial_pairs, tutorial_precision, tutorial_relevant,
};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tempfile::TempDir;

fn write(dir: &TempDir, name: &str, text: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn ids(vocab: &Vocab) -> Vec<&str> {
    vocab.tokens().iter().map(String::as_str).collect()
}

fn entity_tokens(field: &Field) -> Vec<Vec<u32>> {
    (0..field.n_entities())
        .map(|e| field.tokens_of(e).to_vec())
        .collect()
}

fn load(path: &Path, query: &str, item: &str, time: Option<&str>) -> Result<Dataset, TrainError> {
    let mut source = InteractionsSource::new(path, query, item);
    source.time_column = time.map(str::to_owned);
    Dataset::load(&DataConfig::new(source))
}

#[test]
fn recbole_inter_file_is_read_by_column_name() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "x.inter",
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n\
          u1\ti9\t5\t100\n\
          u2\ti8\t4\t50\n\
          u1\ti8\t4\t300\n\
          u1\ti7\t1\t200\n",
    );
    let data = load(&path, "user_id", "item_id", Some("timestamp")).unwrap();
    assert_eq!(ids(&data.queries), ["u1", "u2"]);
    assert_eq!(ids(&data.items), ["i9", "i8", "i7"]);
    // u1's latest is (u1, i8) at 300; u2 has one interaction and stays in training.
    assert_eq!(data.test, vec![(0, 1)]);
    assert_eq!(data.train, vec![(0, 0), (1, 1), (0, 2)]);
    assert_eq!(data.item_counts, vec![1, 1, 1]);
    assert_eq!(data.query_features.fields.len(), 1);
    assert_eq!(data.query_features.fields[0], Field::ids("user_id", 2));
    assert_eq!(data.item_features.fields[0].name, "item_id");
    assert_eq!(data.item_features.n_entities, 3);

    // The whole header cell names the column too; the rating column can serve as a time.
    let again = load(&path, "user_id:token", "item_id", Some("rating")).unwrap();
    assert_eq!(again.test, vec![(0, 0)]);
}

#[test]
fn csv_quotes_escapes_and_line_breaks() {
    let dir = TempDir::new().unwrap();
    let path = write(
        &dir,
        "x.csv",
        "\u{feff}\"user\",item,time\r\n\
         \"a,b\",\"say \"\"hi\"\"\",1\r\n\
         plain , \"two\nlines\" ,2\r\n\
         \r\n\
         \"a,b\",x\"y,3\r\n"
            .as_bytes(),
    );
    let data = load(&path, "user", "item", Some("time")).unwrap();
    assert_eq!(ids(&data.queries), ["a,b", "plain"]);
    assert_eq!(ids(&data.items), ["say \"hi\"", "two\nlines", "x\"y"]);
    assert_eq!(data.test, vec![(0, 2)]);

    // With quoting off, quotes are ordinary characters and commas split.
    let path = write(&dir, "y.csv", b"q,i\n\"a,b\"\n");
    let mut source = InteractionsSource::new(&path, "q", "i");
    source.format.quotes = false;
    let data = Dataset::load(&DataConfig::new(source)).unwrap();
    assert_eq!(ids(&data.queries), ["\"a"]);
    assert_eq!(ids(&data.items), ["b\""]);
}

#[test]
fn tsv_and_semicolon_files_are_detected_or_given() {
    let dir = TempDir::new().unwrap();
    let tsv = write(&dir, "x.tsv", b"q\ti,x\n1\t2,3\n");
    let data = load(&tsv, "q", "i,x", None).unwrap();
    assert_eq!(ids(&data.items), ["2,3"]);

    let semi = write(&dir, "x.csv", b"q;i;note\n1;2;a,b\n1;3;c\n");
    let data = load(&semi, "q", "i", None).unwrap();
    assert_eq!(ids(&data.items), ["2", "3"]);
    assert_eq!(
        data.test,
        vec![(0, 1)],
        "no time column: the later row is held out"
    );

    // A given delimiter overrides detection: the header then has one column.
    let mut source = InteractionsSource::new(&semi, "q", "i");
    source.format = TextFormat {
        delimiter: Delimiter::Comma,
        quotes: true,
    };
    match Dataset::load(&DataConfig::new(source)) {
        Err(TrainError::MissingColumn {
            column, available, ..
        }) => {
            assert_eq!(column, "q");
            assert_eq!(available, ["q;i;note"]);
        }
        other => panic!("expected a missing column, got {other:?}"),
    }
}

#[test]
fn feature_files_give_categorical_multi_valued_numeric_and_hashed_fields() {
    let dir = TempDir::new().unwrap();
    let inter = write(
        &dir,
        "d.inter",
        b"user_id:token\titem_id:token\nu1\t10\nu2\t20\nu1\t30\n",
    );
    let items = write(
        &dir,
        "d.item",
        "item_id:token\tgenre:token_seq\tyear:float\tstudio:token\ttags:token\tzip:token\n\
         20\tDrama  Comedy\t1990\tA\tx|y|x\ta\n\
         10\tComedy\t2000\t\t\tfoobar\n\
         40\t\t1980\tB\ty\ta\n"
            .as_bytes(),
    );
    let users = write(&dir, "d.user", b"user_id,age:float\nu9,30\nu2,40\n");
    let mut config = DataConfig::new(InteractionsSource::new(&inter, "user_id", "item_id"));
    config.split = SplitConfig::None;
    let mut item_source = FeatureSource::new(&items, "item_id");
    item_source.fields = Some(vec![
        FieldSpec::auto("genre"),
        FieldSpec::new("year", FieldKind::Numeric { buckets: 2 }),
        FieldSpec::auto("studio"),
        FieldSpec::new(
            "tags",
            FieldKind::MultiValued {
                separator: Separator::Char('|'),
            },
        ),
        FieldSpec::new(
            "zip",
            FieldKind::Hashed {
                buckets: 1000,
                separator: None,
            },
        ),
    ]);
    config.item_features = Some(item_source);
    config.query_features = Some(FeatureSource::new(&users, "user_id"));
    let data = Dataset::load(&config).unwrap();

    // Item 40 exists only in the feature file: appended as a catalogue item. User u9 is dropped.
    assert_eq!(ids(&data.items), ["10", "20", "30", "40"]);
    assert_eq!(ids(&data.queries), ["u1", "u2"]);
    assert_eq!(data.item_counts, vec![1, 1, 1, 0]);
    let f = &data.item_features;
    assert_eq!(f.n_entities, 4);
    let names: Vec<&str> = f.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["item_id", "genre", "year", "studio", "tags", "zip"]);
    assert_eq!(f.fields[0], Field::ids("item_id", 4));
    // genre tokens in first-seen order: Drama 0, Comedy 1; item 30 is absent from the file.
    assert_eq!(f.fields[1].n_tokens, 2);
    assert_eq!(
        entity_tokens(&f.fields[1]),
        [vec![1], vec![0, 1], vec![], vec![]]
    );
    // years 1980, 1990, 2000 in two buckets: the edge is the value of rank 1 (1990).
    assert_eq!(f.fields[2].n_tokens, 2);
    assert_eq!(
        entity_tokens(&f.fields[2]),
        [vec![1], vec![1], vec![], vec![0]]
    );
    // An empty categorical cell gives no token.
    assert_eq!(
        entity_tokens(&f.fields[3]),
        [vec![], vec![0], vec![], vec![1]]
    );
    assert_eq!(
        entity_tokens(&f.fields[4]),
        [vec![], vec![0, 1, 0], vec![], vec![1]]
    );
    // Hashed: FNV-1a-64 mod 1000, constants computed independently.
    assert_eq!(f.fields[5].n_tokens, 1000);
    assert_eq!(
        entity_tokens(&f.fields[5]),
        [vec![968], vec![996], vec![], vec![996]]
    );

    // The untyped plain-CSV header: `age:float` is typed, so it is bucketised (one value).
    let q = &data.query_features;
    assert_eq!(q.fields.len(), 2);
    assert_eq!(q.fields[1].name, "age");
    assert_eq!(q.fields[1].n_tokens, 1);
    assert_eq!(entity_tokens(&q.fields[1]), [vec![], vec![0]]);

    // All columns by default, and the whole dataset survives a JSON round trip.
    config.item_features = Some(FeatureSource::new(&items, "item_id"));
    let all = Dataset::load(&config).unwrap();
    assert_eq!(all.item_features.fields.len(), 6);
    assert_eq!(
        all.item_features.fields[2].n_tokens, 3,
        "year, auto: 10 buckets, 3 values"
    );
    let json = serde_json::to_string(&all).unwrap();
    let back: Dataset = serde_json::from_str(&json).unwrap();
    assert_eq!(back, all);
    assert_eq!(back.items.get("40"), Some(3));
}

#[test]
fn hashing_is_stable_fnv1a() {
    assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    assert_eq!(hash_bucket("drama", 1000), 672);
    assert_eq!(hash_bucket("comedy", 16), 2);
    assert_eq!(hash_bucket("85711", 1000), 85);
    assert_eq!(hash_bucket("anything", 1), 0);
}

#[test]
fn numeric_fields_are_bucketised_by_quantiles() {
    let dir = TempDir::new().unwrap();
    let inter = write(&dir, "i.csv", b"q,i\n0,0\n");
    let mut rows = String::from("i,x,xs\n");
    // Ten items with x = 1..10 and xs = "x x+10".
    for x in 1..=10 {
        rows.push_str(&format!("{},{x}.0,{x} {}\n", x - 1, x + 10));
    }
    let items = write(&dir, "f.csv", rows.as_bytes());
    let mut config = DataConfig::new(InteractionsSource::new(&inter, "q", "i"));
    let mut source = FeatureSource::new(&items, "i");
    source.fields = Some(vec![
        FieldSpec::new("x", FieldKind::Numeric { buckets: 5 }),
        FieldSpec::new(
            "xs",
            FieldKind::NumericSeq {
                buckets: 4,
                separator: Separator::Whitespace,
            },
        ),
        FieldSpec::new("x", FieldKind::Numeric { buckets: 1 }),
    ]);
    config.item_features = Some(source.clone());
    // The same column twice is refused.
    assert!(matches!(
        Dataset::load(&config),
        Err(TrainError::InvalidConfig { name: "fields", .. })
    ));
    source.fields.as_mut().unwrap().pop();
    config.item_features = Some(source.clone());
    let data = Dataset::load(&config).unwrap();
    let x = &data.item_features.fields[1];
    assert_eq!(x.n_tokens, 5);
    assert_eq!(
        entity_tokens(x).concat(),
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4],
        "two values per bucket"
    );
    // xs: values 1..=20, edges at ranks 5, 10, 15 → 6, 11, 16.
    let xs = &data.item_features.fields[2];
    assert_eq!(xs.n_tokens, 4);
    assert_eq!(entity_tokens(xs)[0], [0, 2]);
    assert_eq!(entity_tokens(xs)[5], [1, 3]);
    assert_eq!(entity_tokens(xs)[9], [1, 3]);

    // Zero buckets are refused.
    source.fields = Some(vec![FieldSpec::new("x", FieldKind::Numeric { buckets: 0 })]);
    config.item_features = Some(source);
    assert!(matches!(
        Dataset::load(&config),
        Err(TrainError::InvalidConfig {
            name: "buckets",
            ..
        })
    ));
}

#[test]
fn leave_last_out_takes_the_latest_with_ties_to_the_later_row() {
    let pairs = [
        (0, 10),
        (1, 11),
        (0, 12),
        (0, 13),
        (1, 14),
        (2, 15),
        (1, 16),
    ];
    let times = [5.0, 1.0, 9.0, 9.0, 3.0, 7.0, 2.0];
    let (train, test) = split_pairs(&pairs, Some(&times), 3, SplitConfig::LeaveLastOut).unwrap();
    // Query 0: rows 2 and 3 tie at 9, the later row (3) is held out. Query 1: row 4 (time 3).
    // Query 2 has one interaction and is not held out.
    assert_eq!(test, vec![(0, 13), (1, 14)]);
    assert_eq!(train, vec![(0, 10), (1, 11), (0, 12), (2, 15), (1, 16)]);

    let (_, test) = split_pairs(&pairs, None, 3, SplitConfig::LeaveLastOut).unwrap();
    assert_eq!(test, vec![(0, 13), (1, 16)]);
    let (train, test) = split_pairs(&pairs, None, 3, SplitConfig::None).unwrap();
    assert_eq!((train.len(), test.len()), (7, 0));
    assert!(matches!(
        split_pairs(&pairs, Some(&times[..3]), 3, SplitConfig::LeaveLastOut),
        Err(TrainError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        split_pairs(&pairs, None, 2, SplitConfig::LeaveLastOut),
        Err(TrainError::OutOfRange { index: 2, .. })
    ));
}

#[test]
fn random_split_is_seeded_exact_and_disjoint() {
    let pairs: Vec<(u32, u32)> = (0..1000).map(|i| (i % 37, i)).collect();
    let split = |seed| {
        split_pairs(
            &pairs,
            None,
            37,
            SplitConfig::Random {
                test_fraction: 0.2,
                seed,
            },
        )
        .unwrap()
    };
    let (train, test) = split(7);
    assert_eq!(split(7), (train.clone(), test.clone()));
    assert_ne!(split(8).1, test);
    assert_eq!(test.len(), 200);
    assert_eq!(train.len(), 800);
    let mut all: Vec<_> = train.iter().chain(&test).copied().collect();
    all.sort_unstable();
    let mut sorted = pairs.clone();
    sorted.sort_unstable();
    assert_eq!(all, sorted, "disjoint and complete");
    assert!(test.is_sorted_by_key(|p| p.1), "file order kept");
    for bad in [1.0, -0.1, f64::NAN] {
        let config = SplitConfig::Random {
            test_fraction: bad,
            seed: 0,
        };
        assert!(matches!(
            split_pairs(&pairs, None, 37, config),
            Err(TrainError::InvalidConfig {
                name: "test_fraction",
                ..
            })
        ));
    }
}

#[test]
fn bad_files_give_specific_errors() {
    let dir = TempDir::new().unwrap();
    let err = |name: &str, text: &[u8]| {
        let path = write(&dir, name, text);
        load(&path, "q", "i", Some("t")).unwrap_err()
    };
    match err("empty.csv", b"") {
        TrainError::EmptyData { reason, .. } => assert_eq!(reason, "the file is empty"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        err("blank.csv", b"\n  \n"),
        TrainError::EmptyData { .. }
    ));
    match err("header.csv", b"q,i,t\n\n") {
        TrainError::EmptyData { reason, .. } => {
            assert_eq!(reason, "the file has a header but no rows");
        }
        other => panic!("{other:?}"),
    }
    match err("missing.csv", b"q,item,t\n1,2,3\n") {
        TrainError::MissingColumn {
            column, available, ..
        } => {
            assert_eq!(column, "i");
            assert_eq!(available, ["q", "item", "t"]);
        }
        other => panic!("{other:?}"),
    }
    let e = err("ragged.csv", b"q,i,t\n1,2,3\n1,2\n");
    assert!(
        matches!(&e, TrainError::Malformed { line: 3, reason, .. } if reason.contains("2 cells")),
        "{e:?}"
    );
    assert!(e.to_string().contains("ragged.csv:3:"), "{e}");
    let e = err("open.csv", b"q,i,t\n1,2,3\n\"1,2,3\n4,5,6\n");
    assert!(
        matches!(&e, TrainError::Malformed { line: 3, reason, .. } if reason.contains("never closed")),
        "{e:?}"
    );
    let e = err("after.csv", b"q,i,t\n\"1\"x,2,3\n");
    assert!(matches!(e, TrainError::Malformed { line: 2, .. }), "{e:?}");
    let e = err("utf8.csv", b"q,i,t\n1,2,3\n1,\xff,3\n");
    assert!(matches!(e, TrainError::Malformed { line: 3, .. }), "{e:?}");
    let e = err("emptyid.csv", b"q,i,t\n1,,3\n");
    assert!(matches!(e, TrainError::Malformed { line: 2, .. }), "{e:?}");
    let e = err("dupname.csv", b"q,i,q\n1,2,3\n");
    assert!(matches!(e, TrainError::Malformed { line: 1, .. }), "{e:?}");
    for (name, time) in [("time.csv", "noon"), ("nan.csv", "NaN"), ("inf.csv", "inf")] {
        let text = format!("q,i,t\n1,2,3\n1,2,{time}\n");
        match err(name, text.as_bytes()) {
            TrainError::BadValue {
                line,
                column,
                value,
                ..
            } => assert_eq!((line, column.as_str(), value.as_str()), (3, "t", time)),
            other => panic!("{other:?}"),
        }
    }
    let e = load(&dir.path().join("absent.csv"), "q", "i", None).unwrap_err();
    assert!(matches!(e, TrainError::Io { .. }), "{e:?}");
}

#[test]
fn bad_feature_files_give_specific_errors() {
    let dir = TempDir::new().unwrap();
    let inter = write(&dir, "i.csv", b"q,i\n0,a\n0,b\n");
    let run = |text: &[u8], fields: Option<Vec<FieldSpec>>| {
        let path = write(&dir, "f.csv", text);
        let mut config = DataConfig::new(InteractionsSource::new(&inter, "q", "i"));
        let mut source = FeatureSource::new(path, "i");
        source.fields = fields;
        config.item_features = Some(source);
        Dataset::load(&config)
    };
    let numeric = || Some(vec![FieldSpec::new("x", FieldKind::Numeric { buckets: 4 })]);
    match run(b"i,x\na,1.5\nb,NaN\n", numeric()) {
        Err(TrainError::BadValue {
            line,
            column,
            value,
            ..
        }) => assert_eq!((line, column.as_str(), value.as_str()), (3, "x", "NaN")),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        run(b"i,x\na,1.5\nb,abc\n", numeric()),
        Err(TrainError::BadValue { line: 3, .. })
    ));
    // An empty numeric cell is a missing value: no token.
    let data = run(b"i,x\na,\nb,2\n", numeric()).unwrap();
    assert_eq!(
        entity_tokens(&data.item_features.fields[1]),
        [vec![], vec![0]]
    );
    assert!(matches!(
        run(b"i,x\na,1\na,2\n", numeric()),
        Err(TrainError::Malformed { line: 3, .. })
    ));
    assert!(matches!(
        run(b"i,x\n", numeric()),
        Err(TrainError::EmptyData { .. })
    ));
    assert!(matches!(
        run(b"i,x\na,1\n", Some(vec![FieldSpec::auto("y")])),
        Err(TrainError::MissingColumn { .. })
    ));
    assert!(matches!(
        run(b"i,x\na,1\n", Some(vec![FieldSpec::auto("i")])),
        Err(TrainError::InvalidConfig { name: "fields", .. })
    ));
}

#[test]
fn recbole_layout_loads_all_three_files() {
    let dir = TempDir::new().unwrap();
    write(
        &dir,
        "toy.inter",
        b"user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t10\n1\t6\t3\t5\n2\t5\t4\t1\n",
    );
    write(
        &dir,
        "toy.user",
        b"user_id:token\tage:token\tgender:token\n1\t24\tM\n2\t53\tF\n",
    );
    write(
        &dir,
        "toy.item",
        b"item_id:token\tmovie_title:token_seq\tclass:token_seq\n5\tToy Story\tAnimation Comedy\n6\tHeat\tAction\n",
    );
    let config = DataConfig::recbole(dir.path(), "toy");
    assert!(config.query_features.is_some() && config.item_features.is_some());
    let data = Dataset::load(&config).unwrap();
    assert_eq!(data.test, vec![(0, 0)]);
    assert_eq!(data.train, vec![(0, 1), (1, 0)]);
    let fields: Vec<(&str, usize)> = data
        .item_features
        .fields
        .iter()
        .map(|f| (f.name.as_str(), f.n_tokens))
        .collect();
    assert_eq!(fields, [("item_id", 2), ("movie_title", 3), ("class", 3)]);
    assert_eq!(data.query_features.fields.len(), 3);
    let missing = DataConfig::recbole(dir.path(), "other");
    assert!(missing.query_features.is_none());
}

#[test]
fn from_pairs_checks_ranges_and_counts_items() {
    let data = Dataset::from_pairs(3, 4, vec![(0, 1), (2, 1), (1, 3)], vec![(0, 2)]).unwrap();
    assert_eq!(data.item_counts, vec![0, 2, 0, 1]);
    assert_eq!(data.queries.get("2"), Some(2));
    assert_eq!(data.n_items(), 4);
    assert_eq!(data.item_features.fields, vec![Field::ids("item_id", 4)]);
    assert!(matches!(
        Dataset::from_pairs(3, 4, vec![(3, 0)], vec![]),
        Err(TrainError::OutOfRange { what: "query", .. })
    ));
    assert!(matches!(
        Dataset::from_pairs(3, 4, vec![], vec![(0, 4)]),
        Err(TrainError::OutOfRange { what: "item", .. })
    ));
}

#[test]
fn vocab_round_trips_and_rejects_repeats() {
    let vocab = Vocab::from_tokens(vec!["b".into(), "a".into()]).unwrap();
    assert_eq!((vocab.get("a"), vocab.token(0)), (Some(1), "b"));
    let json = serde_json::to_string(&vocab).unwrap();
    assert_eq!(json, r#"["b","a"]"#);
    assert_eq!(serde_json::from_str::<Vocab>(&json).unwrap(), vocab);
    assert!(serde_json::from_str::<Vocab>(r#"["a","a"]"#).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        rng_seed: RngSeed::Fixed(0x5eed),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Any bytes as an interactions or feature file give a dataset or an error, never a panic.
    #[test]
    fn arbitrary_files_never_panic(
        inter in proptest::collection::vec(
            prop::sample::select(b"q,i;t\t\"\n\r :1a\xff.".to_vec()), 0..80),
        feats in proptest::collection::vec(
            prop::sample::select(b"i,x\t\"\n 1a|".to_vec()), 0..60),
    ) {
        let dir = TempDir::new().unwrap();
        let mut header = b"q,i,t\n".to_vec();
        header.extend_from_slice(&inter);
        for text in [inter.clone(), header] {
            let path = write(&dir, "i.csv", &text);
            let f = write(&dir, "f.csv", &[b"i,x\n".as_slice(), &feats].concat());
            let mut config = DataConfig::new(
                InteractionsSource::new(&path, "q", "i").with_time_column("t"));
            let mut source = FeatureSource::new(&f, "i");
            source.fields = Some(vec![
                FieldSpec::new("x", FieldKind::Numeric { buckets: 3 }),
            ]);
            config.item_features = Some(source);
            if let Ok(data) = Dataset::load(&config) {
                prop_assert_eq!(data.train.len() + data.test.len() > 0, true);
                for field in &data.item_features.fields {
                    prop_assert_eq!(field.n_entities(), data.n_items());
                }
            }
        }
    }
}

#[test]
fn tutorial_pairs_are_seeded_in_range_and_relevant() {
    let pairs = tutorial_pairs(20_000, 3);
    assert_eq!(pairs, tutorial_pairs(20_000, 3));
    assert_ne!(pairs, tutorial_pairs(20_000, 4));
    let mut tail_seen = [false; 100];
    let mut head_seen = [false; 100];
    for &(q, i) in &pairs {
        assert!(q < TUTORIAL_VOCAB && i < TUTORIAL_VOCAB);
        assert!(tutorial_is_relevant(q, i), "({q}, {i})");
        // The query's last two digits are digits at two distinct positions of the item.
        let d = [i / 1000, i / 100 % 10, i / 10 % 10, i % 10];
        let (x, y) = (q / 10 % 10, q % 10);
        let found = (0..4).any(|a| (0..4).any(|b| a != b && d[a] == x && d[b] == y));
        assert!(found, "({q}, {i})");
        head_seen[(q / 100) as usize] = true;
        tail_seen[(q % 100) as usize] = true;
    }
    assert!(head_seen.iter().all(|&s| s), "query prefixes cover 00..99");
    assert!(tail_seen.iter().all(|&s| s));
    let data = tutorial_dataset(1000, 3);
    assert_eq!((data.n_queries(), data.n_items()), (10_000, 10_000));
    assert_eq!(data.queries.get("1234"), Some(1234));
    assert_eq!(data.train, tutorial_pairs(1000, 3));
    assert!(data.test.is_empty());
}

#[test]
fn tutorial_relevance_counts() {
    for q in [12, 9_987, 4_501, 7_790] {
        assert_eq!(tutorial_relevant(q).len(), 1_808, "query {q}");
    }
    for q in [0, 33, 5_599, 9_999] {
        assert_eq!(tutorial_relevant(q).len(), 523, "query {q}");
    }
    assert!(tutorial_is_relevant(12, 1200));
    assert!(tutorial_is_relevant(12, 1100));
    assert!(!tutorial_is_relevant(12, 1345));
    assert!(!tutorial_is_relevant(33, 3456));
    assert!(!tutorial_is_relevant(12, 10_000));
}

#[test]
fn the_scaled_tutorial_at_10_000_items_is_the_tutorial() {
    assert_eq!(
        ScaledTutorial::new(TUTORIAL_VOCAB),
        ScaledTutorial::TUTORIAL
    );
    let rule = ScaledTutorial::TUTORIAL;
    let counts = rule.relevant_counts();
    for q in 0..100u32 {
        let expected = tutorial_relevant(q).len() as u32;
        assert_eq!(counts[q as usize], expected, "type {q}");
    }
    for &(q, i) in &rule.pairs(5_000, 1) {
        assert!(tutorial_is_relevant(q, i), "({q}, {i})");
    }
}

#[test]
fn scaled_tutorial_shapes_rule_and_counts() {
    let rule = ScaledTutorial::new(2_000_000);
    assert_eq!(rule.base, 38);
    assert_eq!(rule.queries % (38 * 38), 0);
    assert!(rule.queries <= 2_000_000 && rule.queries > 2_000_000 - 38 * 38);
    // An odd size: base 8 (7⁴ = 2,401 < 3,001 ≤ 4,096), 3,001 items.
    let rule = ScaledTutorial::new(3_001);
    assert_eq!((rule.base, rule.queries), (8, 2_944));
    assert_eq!(rule.digits(3_000), [5, 6, 7, 0]);
    let counts = rule.relevant_counts();
    for t in 0..64u32 {
        let brute = (0..rule.items).filter(|&i| rule.is_relevant(t, i)).count() as u32;
        assert_eq!(counts[t as usize], brute, "type {t}");
        // Every query of the type has the same relevant items.
        assert!(
            (0..rule.items).all(|i| rule.is_relevant(t, i) == rule.is_relevant(t + 64 * 45, i))
        );
    }
    assert!(!rule.is_relevant(rule.queries, 0));
    assert!(!rule.is_relevant(0, rule.items));
}

#[test]
fn scaled_tutorial_pairs_are_seeded_relevant_and_thread_independent() {
    let rule = ScaledTutorial::new(50_000);
    let n = 200_000; // several generation chunks
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let two = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let pairs = one.install(|| rule.pairs(n, 5));
    assert_eq!(pairs, two.install(|| rule.pairs(n, 5)));
    assert_ne!(pairs, rule.pairs(n, 6));
    let mut items_seen = vec![false; rule.items as usize];
    for &(q, i) in &pairs {
        assert!(q < rule.queries && i < rule.items);
        assert!(rule.is_relevant(q, i), "({q}, {i})");
        items_seen[i as usize] = true;
    }
    // 200,000 uniform draws over 50,000 items miss about e⁻⁴ ≈ 1.8 % of them.
    let missed = items_seen.iter().filter(|&&s| !s).count();
    assert!((500..1_500).contains(&missed), "{missed} items never drawn");
    let data = rule.dataset(1_000, 5);
    assert_eq!(
        (data.n_queries(), data.n_items()),
        (rule.queries as usize, 50_000)
    );
    assert_eq!(data.train, rule.pairs(1_000, 5));
}

#[test]
fn judged_metrics_equal_listed_metrics() {
    let rule = ScaledTutorial::new(3_001);
    let counts = rule.relevant_counts();
    let width = 20;
    let queries: Vec<u32> = (0..200).map(|q| q * 13 % rule.queries).collect();
    let rankings: Vec<u32> = (0..queries.len() * width)
        .map(|i| ((i as u64 * 2_654_435_761) % u64::from(rule.items)) as u32)
        .collect();
    let relevant: Vec<Vec<u32>> = queries
        .iter()
        .map(|&q| {
            (0..rule.items)
                .filter(|&i| rule.is_relevant(q, i))
                .collect()
        })
        .collect();
    let listed = ranking_metrics(
        rankings
            .chunks(width)
            .zip(&relevant)
            .map(|(r, v)| (r, v.as_slice())),
        &[5, 20],
    )
    .unwrap();
    let judged = ranking_metrics_judged(
        rankings.chunks(width).zip(&queries).map(|(r, &q)| {
            let (x, y) = rule.query_type(q);
            (
                r,
                move |i| rule.is_relevant(q, i),
                counts[(x * rule.base + y) as usize] as usize,
            )
        }),
        &[5, 20],
    )
    .unwrap();
    assert_eq!(listed, judged);
}

#[test]
fn a_random_ranking_scores_about_0_168() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut items: Vec<u32> = (0..TUTORIAL_VOCAB).collect();
    let mut rankings = Vec::with_capacity(100 * TUTORIAL_VOCAB as usize);
    for _ in 0..TUTORIAL_VOCAB {
        let (chosen, _) = items.partial_shuffle(&mut rng, 100);
        rankings.extend_from_slice(chosen);
    }
    let p = tutorial_precision(&rankings, 100, 100);
    // Expected 0.9 · 0.1808 + 0.1 · 0.0523 = 0.16795; the standard error is about 0.0004.
    assert!((p - 0.16795).abs() < 0.003, "precision {p}");
    // A perfect ranking scores 1.
    let perfect: Vec<u32> = (0..TUTORIAL_VOCAB)
        .flat_map(|q| tutorial_relevant(q).into_iter().take(100))
        .collect();
    assert_eq!(tutorial_precision(&perfect, 100, 100), 1.0);
}

#[test]
fn brute_force_precision_of_digit_count_embeddings_is_perfect() {
    // Item vector: how often each digit value occurs in the item; query vector: the indicator
    // of its last two digits. The score is the number of item digits in the query's set, so
    // every item scoring 2 or more is relevant, and each query has at least 523 of them.
    let dim = 10;
    let mut items = vec![0.0f32; TUTORIAL_VOCAB as usize * dim];
    let mut queries = vec![0.0f32; TUTORIAL_VOCAB as usize * dim];
    for id in 0..TUTORIAL_VOCAB as usize {
        for d in [id / 1000, id / 100 % 10, id / 10 % 10, id % 10] {
            items[id * dim + d] += 1.0;
        }
        queries[id * dim + id / 10 % 10] = 1.0;
        queries[id * dim + id % 10] = 1.0;
    }
    let p = tutorial_brute_force_precision(&queries, &items, dim, 100, Par::Seq);
    assert_eq!(p, 1.0);
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn metrics_match_hand_computed_values() {
    let l2 = |x: f64| 1.0 / x.log2();
    let ranked = [5u32, 2, 9, 7];
    let relevant = [7u32, 2, 8];
    let m = ranking_metrics([(&ranked[..], &relevant[..])], &[1, 2, 4, 10]).unwrap();
    assert_eq!(m[0].n_queries, 1);
    assert!(close(m[0].recall, 0.0) && close(m[0].precision, 0.0) && close(m[0].ndcg, 0.0));
    assert!(close(m[1].recall, 1.0 / 3.0));
    assert!(close(m[1].precision, 0.5));
    assert!(close(m[1].ndcg, l2(3.0) / (1.0 + l2(3.0))));
    assert!(close(m[2].recall, 2.0 / 3.0));
    assert!(close(m[2].precision, 0.5));
    assert!(close(
        m[2].ndcg,
        (l2(3.0) + l2(5.0)) / (1.0 + l2(3.0) + l2(4.0))
    ));
    // K beyond the list: not rescaled.
    assert!(close(m[3].precision, 0.2));

    // Averages over queries; a query without relevant items is skipped.
    let m = ranking_metrics(
        [
            (&[1u32, 2][..], &[1u32][..]),
            (&[3u32, 4][..], &[4u32][..]),
            (&[5u32, 6][..], &[][..]),
        ],
        &[2],
    )
    .unwrap();
    assert_eq!(m[0].n_queries, 2);
    assert!(close(m[0].recall, 1.0));
    assert!(close(m[0].precision, 0.5));
    assert!(close(m[0].ndcg, (1.0 + l2(3.0)) / 2.0));
    assert!(matches!(
        ranking_metrics([(&[1u32][..], &[1u32][..])], &[0]),
        Err(TrainError::InvalidConfig { name: "k", .. })
    ));
}

fn naive_top_k(queries: &[f32], items: &[f32], dim: usize, k: usize) -> Vec<u32> {
    let mut out = Vec::new();
    for q in queries.chunks_exact(dim) {
        let mut scored: Vec<(f32, u32)> = items
            .chunks_exact(dim)
            .enumerate()
            .map(|(i, v)| (q.iter().zip(v).map(|(a, b)| a * b).sum(), i as u32))
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out.extend(scored.iter().take(k).map(|s| s.1));
    }
    out
}

#[test]
fn top_k_matches_a_naive_sort_with_ties() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let dim = 6;
    // Small integers: every dot product is exact in f32, and ties are frequent.
    let mut ints = |n: usize| -> Vec<f32> {
        (0..n * dim)
            .map(|_| rng.random_range(-2i32..=2) as f32)
            .collect()
    };
    let queries = ints(150);
    let items = ints(4500);
    for k in [1, 7, 100, 700] {
        let want = naive_top_k(&queries, &items, dim, k);
        assert_eq!(
            top_k_inner_product(&queries, &items, dim, k, Par::Seq),
            want,
            "k {k}"
        );
        let par = Par::rayon(2);
        assert_eq!(top_k_inner_product(&queries, &items, dim, k, par), want);
    }
    // k beyond the catalogue returns every item.
    let few = &items[..5 * dim];
    let got = top_k_inner_product(&queries[..dim], few, dim, 9, Par::Seq);
    assert_eq!(got, naive_top_k(&queries[..dim], few, dim, 9));
    assert_eq!(got.len(), 5);
    // NaN scores rank last.
    let items = [1.0, f32::NAN, 2.0, -1.0];
    assert_eq!(
        top_k_inner_product(&[1.0], &items, 1, 4, Par::Seq),
        [2, 0, 3, 1]
    );
}

#[test]
fn held_out_evaluation_excludes_training_items() {
    // Items 0..4 on a line: item i has vector [i]. Query 0 scores items by +x, query 1 by −x.
    let train = [(0, 4), (0, 3), (1, 0), (2, 1)];
    let test = [(0, 2), (1, 1), (0, 3)];
    let held = HeldOut::from_pairs(&train, &test, true);
    assert_eq!(held.queries(), [0, 1]);
    assert_eq!(held.relevant(0), [2, 3]);
    assert_eq!(held.excluded(0), [4], "a held-out item is never excluded");
    assert_eq!(held.excluded(1), [0]);
    assert_eq!(held.max_excluded(), 1);
    let items = [0.0, 1.0, 2.0, 3.0, 4.0];
    let queries = [1.0, -1.0];
    let m = held
        .evaluate(&queries, &items, 1, &[1, 2], Par::Seq)
        .unwrap();
    // Query 0 ranks 3, 2, 1, 0 (4 excluded): both relevant items on top.
    // Query 1 ranks 1, 2, 3, 4 (0 excluded): its one relevant item first.
    assert!(close(m[0].recall, (0.5 + 1.0) / 2.0));
    assert!(close(m[1].recall, 1.0));
    assert!(close(m[1].precision, (1.0 + 0.5) / 2.0));
    assert!(close(m[1].ndcg, 1.0));

    let keep = HeldOut::from_pairs(&train, &test, false);
    assert!(keep.excluded(0).is_empty());
    let m = keep.evaluate(&queries, &items, 1, &[1], Par::Seq).unwrap();
    assert!(close(m[0].recall, 0.0), "items 4 and 0 come first");

    // Given rankings (e.g. from an index) are filtered the same way; u32::MAX is an empty slot.
    let rankings = [4, 3, 2, u32::MAX, 0, 1];
    let m = held.score_rankings(&rankings, 3, &[2]).unwrap();
    assert!(close(m[0].recall, (1.0 + 1.0) / 2.0));
    assert!(matches!(
        held.score_rankings(&rankings, 2, &[2]),
        Err(TrainError::DimensionMismatch { .. })
    ));
    assert!(matches!(
        held.evaluate(&queries[..1], &items, 1, &[1], Par::Seq),
        Err(TrainError::DimensionMismatch { .. })
    ));

    let data = Dataset::from_pairs(3, 5, train.to_vec(), test.to_vec()).unwrap();
    assert_eq!(HeldOut::new(&data, true), held);
}

mod parquet_input {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder, StringDictionaryBuilder};
    use arrow_array::types::Int32Type;
    use arrow_array::{
        ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray, TimestampSecondArray,
    };
    use parquet::arrow::ArrowWriter;
    use poeem_train::data::read_known_pairs;

    use super::*;

    fn write_parquet(dir: &TempDir, name: &str, columns: Vec<(&str, ArrayRef)>) -> PathBuf {
        let path = dir.path().join(name);
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let mut writer =
            ArrowWriter::try_new(std::fs::File::create(&path).unwrap(), batch.schema(), None)
                .unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        path
    }

    /// A Parquet table loads as the same table written as TSV: string, integer and timestamp
    /// ids and times; list, float and dictionary feature columns with nulls.
    #[test]
    fn parquet_files_load_like_their_text_equivalent() {
        let dir = TempDir::new().unwrap();
        let users = ["ü 1", "u \"2\"", "ü 1", "ü 1", "u \"2\""];
        let items = [10i64, 20, 30, 20, 10];
        let times = [5i64, 1, 9, 7, 2];
        let inter = write_parquet(
            &dir,
            "inter.parquet",
            vec![
                (
                    "user",
                    Arc::new(StringArray::from(users.to_vec())) as ArrayRef,
                ),
                ("item", Arc::new(Int64Array::from(items.to_vec()))),
                ("ts", Arc::new(TimestampSecondArray::from(times.to_vec()))),
            ],
        );
        let mut text = String::from("user\titem\tts\n");
        for ((u, i), t) in users.iter().zip(items).zip(times) {
            text += &format!("{u}\t{i}\t{t}\n");
        }
        let tsv = write(&dir, "inter.tsv", text.as_bytes());

        let mut genres = ListBuilder::new(StringBuilder::new());
        for row in [&["Drama", "Comedy"][..], &[], &["Comedy"]] {
            for g in row {
                genres.values().append_value(g);
            }
            genres.append(true);
        }
        let mut studio = StringDictionaryBuilder::<Int32Type>::new();
        studio.append_value("A");
        studio.append_null();
        studio.append_value("A");
        let features = write_parquet(
            &dir,
            "items.parquet",
            vec![
                (
                    "item",
                    Arc::new(Int64Array::from(vec![20i64, 10, 40])) as ArrayRef,
                ),
                ("genre", Arc::new(genres.finish())),
                (
                    "year",
                    Arc::new(Float64Array::from(vec![Some(1990.0), None, Some(1980.5)])),
                ),
                ("studio", Arc::new(studio.finish())),
            ],
        );
        let features_tsv = write(
            &dir,
            "items.tsv",
            b"item:token\tgenre:token_seq\tyear:float\tstudio:token\n\
              20\tDrama Comedy\t1990\tA\n\
              10\t\t\t\n\
              40\tComedy\t1980.5\tA\n",
        );
        let config = |inter: &Path, features: &Path| {
            let mut config = DataConfig::new(
                InteractionsSource::new(inter, "user", "item").with_time_column("ts"),
            );
            config.item_features = Some(FeatureSource::new(features, "item"));
            config
        };
        let from_parquet = Dataset::load(&config(&inter, &features)).unwrap();
        let from_text = Dataset::load(&config(&tsv, &features_tsv)).unwrap();
        assert_eq!(from_parquet, from_text);
        assert_eq!(ids(&from_parquet.queries), ["ü 1", "u \"2\""]);
        assert_eq!(ids(&from_parquet.items), ["10", "20", "30", "40"]);
        assert_eq!(from_parquet.test, vec![(0, 2), (1, 0)]);
        assert_eq!(from_parquet.item_features.fields.len(), 4);

        // Known-id pairs read from Parquet; an unknown or missing id is named.
        let pairs = read_known_pairs(
            &config(&inter, &features).interactions,
            &from_text.queries,
            &from_text.items,
        )
        .unwrap();
        assert_eq!(pairs.len(), 5);
        let err = read_known_pairs(
            &InteractionsSource::new(&inter, "user", "item"),
            &Vocab::from_tokens(vec!["ü 1".into()]).unwrap(),
            &from_text.items,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("inter.parquet:2: column user: \"u \\\"2\\\"\" is not an id"),
            "{err}"
        );
        let err = load(&inter, "user_id", "item", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no column \"user_id\" (available: user, item, ts)"),
            "{err}"
        );

        // Something that starts like Parquet but is not.
        let fake = write(&dir, "fake.parquet", b"PAR1 and then text\n");
        let err = load(&fake, "user", "item", None).unwrap_err().to_string();
        assert!(err.contains("not a readable Parquet file"), "{err}");
    }
}
