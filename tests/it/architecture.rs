//! The shape of the code, as ARCHITECTURE.md states it: the modules of `src/` import each other
//! without a cycle, each from its own layer or those below ([`LAYERS`]), and no file outside the
//! two modules that need it (`daemon/` and `os/sys.rs`) says `unsafe` (the crate root denies it;
//! this keeps the allowance from spreading).
//! Read from the source text: `crate::name` paths outside `#[cfg(test)]` code, grouped by
//! top-level module (`src/worker/accept.rs` is `worker`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively (bounded: the tree is small).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate root, `main.rs` and
/// the binaries under `src/bin/` (they may use anything).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
    match first.as_str() {
        "lib.rs" | "main.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_owned()),
    }
}

/// The file's text without its `#[cfg(test)]` items (from the first such attribute on, which
/// is where the test modules start in this code base) and without comments.
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod ").next().unwrap();
    text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n")
}

/// The top-level modules named by `crate::…` paths in `code`.
fn crate_paths(code: &str) -> BTreeSet<String> {
    code.match_indices("crate::")
        .map(|(at, _)| {
            let rest = &code[at + "crate::".len()..];
            rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>()
        })
        .filter(|m| !m.is_empty() && m.chars().next().is_some_and(|c| c.is_ascii_lowercase()))
        .collect()
}

fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let imports = crate_paths(&code_of(&fs::read_to_string(file).unwrap()));
        let edges = graph.entry(module.clone()).or_default();
        edges.extend(imports.into_iter().filter(|m| *m != module));
    }
    graph
}

/// A cycle in `graph`, if there is one (depth-first search; the graph has a few dozen nodes).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// The leaves the layers share: modules that import nothing of the crate. ARCHITECTURE.md lists
/// the same (`map.rs` checks it).
pub const LEAVES: &[&str] = &[
    "alarm",
    "buffer",
    "client_table",
    "clock",
    "observe",
    "os",
    "proxy_protocol",
    "rows",
    "side",
    "signals",
    "wheel",
];

/// Every top-level module of `src/`, by layer from the bottom, as ARCHITECTURE.md's code map
/// lists them: a module imports only from its own layer or those below. The first layer is the
/// leaves and the modules over them only.
const LAYERS: &[(&str, &[&[&str]])] = &[
    ("leaves", &[LEAVES, &["activation", "bounded", "close_reason", "handover", "notify"]]),
    ("configuration", &[&["config", "daemon", "error", "logging", "upstream"]]),
    ("sockets and their state", &[&["cancel", "conn", "listener", "metrics", "relay"]]),
    ("the loop", &[&["worker"]]),
    ("the process", &[&["app", "cli", "control", "ctl", "supervisor", "upgrade"]]),
];

#[test]
fn the_modules_import_each_other_without_a_cycle() {
    let graph = import_graph();
    assert!(graph.len() > 10, "the source tree was not found: {graph:?}");
    if let Some(cycle) = find_cycle(&graph) {
        panic!("import cycle: {}\ngraph: {graph:#?}", cycle.join(" → "));
    }
    // The relay state machine knows nothing of the loop that drives it.
    let loop_side = ["worker", "wheel", "clock", "listener", "config"];
    let knows: Vec<_> = graph["conn"].iter().filter(|m| loop_side.contains(&m.as_str())).collect();
    assert!(knows.is_empty(), "conn imports {knows:?}");
    // The bounded-request server under the control socket and the metrics endpoint knows
    // nothing of what they ask and answer: below both, beside the sockets.
    let serves = ["control", "metrics", "supervisor", "config"];
    let knows: Vec<_> = graph["bounded"].iter().filter(|m| serves.contains(&m.as_str())).collect();
    assert!(knows.is_empty(), "bounded imports {knows:?}");
    assert!(graph["control"].contains("bounded") && graph["metrics"].contains("bounded"));
    // The leaves the layers share import nothing of the crate.
    for &leaf in LEAVES {
        assert!(graph[leaf].is_empty(), "{leaf} is a leaf, yet imports {:?}", graph[leaf]);
    }
}

#[test]
fn every_module_imports_only_from_its_layer_or_below() {
    let graph = import_graph();
    let layer_of = |module: &str| {
        LAYERS.iter().position(|(_, groups)| groups.iter().any(|modules| modules.contains(&module)))
    };
    let unlisted: Vec<_> = graph.keys().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unlisted.is_empty(),
        "modules in no layer (add them to LAYERS and ARCHITECTURE.md): {unlisted:?}"
    );
    for (module, imports) in &graph {
        let at = layer_of(module).unwrap();
        for import in imports {
            let Some(to) = layer_of(import) else {
                panic!("{module} imports {import}, which is in no layer")
            };
            assert!(
                to <= at,
                "{module} ({}) imports {import} ({}), a higher layer",
                LAYERS[at].0,
                LAYERS[to].0
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let edge = |a: &str, b: &str| (a.to_owned(), BTreeSet::from([b.to_owned()]));
    let graph = BTreeMap::from([edge("a", "b"), edge("b", "c"), edge("c", "a")]);
    assert_eq!(find_cycle(&graph).map(|c| c.len()), Some(4));
    let graph = BTreeMap::from([edge("a", "b"), edge("b", "c")]);
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn unsafe_code_stays_in_the_two_modules_that_need_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let allowed = |f: &PathBuf| f.starts_with(src.join("daemon")) || *f == src.join("os/sys.rs");
    for file in files.iter().filter(|f| !allowed(f)) {
        let code = code_of(&fs::read_to_string(file).unwrap());
        assert!(
            !code.contains("unsafe {") && !code.contains("allow(unsafe_code)"),
            "{} uses unsafe: only daemon/ and os/sys.rs may",
            file.display()
        );
    }
    let root = fs::read_to_string(src.join("lib.rs")).unwrap();
    assert!(root.contains("#![deny(unsafe_code)]"), "the crate root denies unsafe code");
}
