//! ARCHITECTURE.md's module map is the map of `crates/gateway/src`: every module declared in `lib.rs` has its row in
//! the table (and every row names a module that exists), and every file of a module's folder is named in the document
//! by its path (`openai/responses/input.rs`). Tests (`tests.rs`, `tests/`) are not part of the map. And no two top-level
//! modules import each other, directly or through others (issue 15: no import cycle in `crates/gateway/src`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
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

/// Non-test source of every top-level module: (module, file path from `src`, text with comments and the trailing
/// `#[cfg(test)] mod …` block cut off).
fn module_sources() -> Vec<(String, String, String)> {
    let mut files = Vec::new();
    folder_files(&root().join("src"), "", &mut files);
    for m in declared_modules() {
        if root().join(format!("src/{m}.rs")).is_file() {
            files.push(m);
        }
    }
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(root().join(format!("src/{f}.rs"))).unwrap();
            let lines: Vec<&str> = text.lines().collect();
            let mut kept = Vec::new();
            for (i, line) in lines.iter().enumerate() {
                let next_is_mod = lines
                    .get(i + 1)
                    .is_some_and(|n| n.trim_start().starts_with("mod "));
                if line.trim() == "#[cfg(test)]" && next_is_mod {
                    break;
                }
                kept.push(line.split("//").next().unwrap_or(""));
            }
            let module = f.split('/').next().unwrap().to_string();
            (module, format!("{f}.rs"), kept.join("\n"))
        })
        .collect()
}

/// `crate::X` references between top-level modules: module → (module it names → first place).
fn module_imports() -> BTreeMap<String, BTreeMap<String, String>> {
    let modules = declared_modules();
    let mut deps: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (module, file, text) in module_sources() {
        for (n, line) in text.lines().enumerate() {
            for part in line.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if name != module && modules.contains(&name) {
                    deps.entry(module.clone())
                        .or_default()
                        .entry(name)
                        .or_insert_with(|| format!("{file}:{}", n + 1));
                }
            }
        }
    }
    deps
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let deps = module_imports();
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from.to_string()];
        while let Some(m) = stack.pop() {
            for next in deps.get(&m).into_iter().flat_map(|d| d.keys()) {
                if seen.insert(next.clone()) {
                    stack.push(next.clone());
                }
            }
        }
        seen
    };
    let mut cycles = Vec::new();
    for (module, imports) in &deps {
        for (other, place) in imports {
            if reach(other).contains(module) {
                cycles.push(format!("{module} -> {other} ({place})"));
            }
        }
    }
    assert!(
        cycles.is_empty(),
        "imports that close a cycle between modules of crates/gateway/src: {cycles:#?}"
    );
    // The scan sees the real graph: the proxy names the pool, and the pool does not name the proxy.
    assert!(deps["proxy"].contains_key("pool"), "{deps:?}");
    assert!(!reach("pool").contains("proxy"), "{deps:?}");
}
