//! Every file of the fuzz targets' committed corpus (`fuzz/corpus/<target>/`), replayed on
//! stable through the same entry points the cargo-fuzz targets call (`agentrack_server::fuzzing`):
//! each corpus file, crashes found and minimised included, stays a regression test.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()))
        .map(|entry| {
            let path = entry
                .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
                .path();
            let bytes = std::fs::read(&path).unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            (
                path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
                bytes,
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 10,
        "the {target} corpus in {} has only {} files",
        dir.display(),
        files.len()
    );
    files
}

fn replay(target: &str, entry: fn(&[u8])) {
    for (name, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| entry(&bytes));
        assert!(
            outcome.is_ok(),
            "fuzz/corpus/{target}/{name} fails the {target} target (see the panic above)"
        );
    }
}

#[test]
fn request_body_corpus() {
    replay("request_body", agentrack_server::fuzzing::request_body);
}

#[test]
fn stored_rows_corpus() {
    replay("stored_rows", agentrack_server::fuzzing::stored_rows);
}
