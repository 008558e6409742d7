//! Frozen index files: `tests/data/fmindex-vN.bin` was written by format version N. A reader
//! change that can no longer load one, or a builder change that lays out the same documents
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
fn frozen_indexes_load_and_equal_a_fresh_build() {
    let fresh = FmIndex::build(
        &frozen_docs(),
        300,
        BuildOptions {
            sample_rate: 8,
            ..BuildOptions::default()
        },
    )
    .unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let current = data.join(format!("fmindex-v{FORMAT_VERSION}.bin"));
    if std::env::var_os("GENRET_BLESS").is_some() {
        fresh.save(&current).unwrap();
    }
    // Every format ever written still loads, to the same index.
    for version in 1..=FORMAT_VERSION {
        let path = data.join(format!("fmindex-v{version}.bin"));
        let loaded = FmIndex::load(&path)
            .unwrap_or_else(|e| panic!("format v{version} file must stay readable: {e}"));
        assert_eq!(loaded.docs(), 60);
        for (d, doc) in frozen_docs().iter().enumerate() {
            assert_eq!(&loaded.extract(d as u32).unwrap(), doc, "v{version}");
        }
        assert_eq!(loaded, fresh, "v{version}: same documents, different index");
        // From format 2 on, the file is used in place, not copied.
        assert_eq!(
            loaded.is_mapped(),
            version >= 2 && cfg!(target_endian = "little"),
            "v{version}"
        );
    }
    // The current format lays the same documents out byte for byte as frozen.
    let tmp = tempfile::tempdir().unwrap();
    fresh.save(&tmp.path().join("fresh.bin")).unwrap();
    assert!(
        std::fs::read(tmp.path().join("fresh.bin")).unwrap() == std::fs::read(&current).unwrap(),
        "the builder lays out the same documents differently: bump FORMAT_VERSION"
    );
}
