//! ARCHITECTURE.md's module map is the map of `crates/gateway/src`: every module declared in `lib.rs` has its row in
//! the table (and every row names a module that exists), and every file of a module's folder is named in the document
//! by its path (`openai/responses/input.rs`). Tests (`tests.rs`, `tests/`) are not part of the map.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn architecture() -> String {
    std::fs::read_to_string(root().join("../../ARCHITECTURE.md")).unwrap()
}

/// The modules `lib.rs` declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix("mod ")?
                .strip_suffix(';')
                .map(str::to_string)
        })
        .collect()
}

/// The names in backticks in the first cell of each row of the module table.
fn mapped_modules(doc: &str) -> BTreeSet<String> {
    let table = doc
        .split("## Modules of `claude_gateway`")
        .nth(1)
        .expect("ARCHITECTURE.md has a section \"Modules of `claude_gateway`\"");
    let table = table.split("\n## ").next().unwrap();
    table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .flat_map(|l| {
            let cell = format!("`{}", l.split('|').next().unwrap());
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Every `.rs` file below a module's folder (`src/<module>/…`), as its path from `src` without `.rs`; tests left out.
fn folder_files(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if name != "tests" {
                folder_files(&path, &format!("{prefix}{name}/"), out);
            }
        } else if let Some(stem) = name.strip_suffix(".rs") {
            if stem != "tests" && !prefix.is_empty() {
                out.push(format!("{prefix}{stem}"));
            }
        }
    }
}

#[test]
fn every_module_has_its_row_in_the_module_map_and_every_row_a_module() {
    let declared = declared_modules();
    let mapped = mapped_modules(&architecture());
    let missing: Vec<_> = declared.difference(&mapped).collect();
    let stale: Vec<_> = mapped.difference(&declared).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "ARCHITECTURE.md's module map: no row for {missing:?}; rows for no module: {stale:?}"
    );
    assert!(
        declared.contains("refresh") && declared.len() > 30,
        "{declared:?}"
    );
}

#[test]
fn every_file_of_a_module_folder_is_named_in_architecture_md() {
    let doc = architecture();
    let mut files = Vec::new();
    folder_files(&root().join("src"), "", &mut files);
    let unnamed: Vec<_> = files.iter().filter(|f| !doc.contains(f.as_str())).collect();
    assert!(
        unnamed.is_empty(),
        "files ARCHITECTURE.md does not name (write them as `dir/file.rs` where their module is described): {unnamed:?}"
    );
    assert!(files.iter().any(|f| f == "refresh/flight"), "{files:?}");
}
