//! The keyword classifier on 64 KB prompts: throughput in MB/s, with and without ignoring
//! separators, against the bare Aho-Corasick search of the same text (the normalisation's cost).
//!
//! `cargo bench --bench risk`

use std::hint::black_box;
use std::time::Duration;

use aho_corasick::AhoCorasick;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_maas::risk::{Classified, Classifier, KeywordClassifier, Side};

/// A 64 KB prompt of English and Chinese prose with none of the terms.
fn prompt() -> String {
    let sentence = "The quick brown fox jumps over the lazy dog, then naps in the sun. 快速的棕色狐狸跳过了懒狗。 ";
    sentence.repeat(64 * 1024 / sentence.len() + 1)[..64 * 1024 - 6].to_owned() + "done."
}

/// A thousand terms, as a moderation list might hold.
fn terms() -> Vec<String> {
    (0..1000)
        .map(|i| format!("forbidden phrase number {i:04}"))
        .collect()
}

fn classify(c: &mut Criterion) {
    let text = prompt();
    let mut group = c.benchmark_group("keyword classifier, 64 KB prompt, 1000 terms");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));

    let bare = AhoCorasick::new(terms()).unwrap();
    group.bench_function("aho-corasick alone (no normalisation)", |b| {
        b.iter(|| black_box(bare.find(black_box(text.as_str()))))
    });
    for separators in [false, true] {
        let classifier = terms()
            .into_iter()
            .fold(KeywordClassifier::builder(), |b, t| b.term("list", t))
            .ignore_separators(separators)
            .build()
            .unwrap();
        let name = if separators {
            "KeywordClassifier, ignoring separators"
        } else {
            "KeywordClassifier"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let Classified::Now(verdict) = classifier.classify(Side::Input, black_box(&text))
                else {
                    unreachable!("keyword classification is local")
                };
                black_box(verdict.unwrap())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, classify);
criterion_main!(benches);
