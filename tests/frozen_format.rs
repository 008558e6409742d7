//! Frozen index files: `tests/data/fmindex-v1.bin` was written by format version 1. A reader
//! change that can no longer load it, or a builder change that lays out the same documents
//! differently without a version bump, fails here.
//!
//! After a deliberate format change (with `FORMAT_VERSION` bumped and the old file kept),
//! write the new version's file with `GENRET_BLESS=1 cargo test --release --test frozen_format`.

use std::path::Path;

use genret::fmindex::{BuildOptions, FORMAT_VERSION, FmIndex};

fn frozen_docs() -> Vec<Vec<u32>> {
    (0..60u32)
        .map(|d| {
            (0..(d * 7) % 23)
                .map(|i| (d * 31 + i * i * 7) % 300)
                .collect()
        })
        .collect()
}

#[test]
fn frozen_v1_index_loads_and_equals_a_fresh_build() {
    let fresh = FmIndex::build(&frozen_docs(), 300, BuildOptions { sample_rate: 8 }).unwrap();
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("tests/data/fmindex-v{FORMAT_VERSION}.bin"));
    if std::env::var_os("GENRET_BLESS").is_some() {
        fresh.save(&path).unwrap();
    }
    let v1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fmindex-v1.bin");
    let loaded = FmIndex::load(&v1).expect("format v1 file must stay readable");
    assert_eq!(loaded.docs(), 60);
    for (d, doc) in frozen_docs().iter().enumerate() {
        assert_eq!(&loaded.extract(d as u32).unwrap(), doc);
    }
    if FORMAT_VERSION == 1 {
        assert_eq!(
            loaded, fresh,
            "same documents, same version, different index"
        );
    }
}
