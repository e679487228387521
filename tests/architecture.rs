//! The plan of `src/`, checked against the tree: rooms import downward only,
//! no file imports itself back through others, and the README's "Layout"
//! names every file there is and no file there is not.
//!
//! The import graph is read from the source text: every `use` and every
//! `crate::`/`super::` path, resolved to the file that defines the item
//! (through a `mod.rs`'s `pub use` re-exports), test modules left out.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The rooms, lowest first: a room may import from itself and those below it.
const ROOMS: [&str; 6] = ["support", "settings", "audio", "wire", "call", "freeswitch"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/`, by its path relative to `src/`.
fn source_files() -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                out.push(path.strip_prefix(root).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut files = Vec::new();
    walk(&src_dir(), &src_dir(), &mut files);
    files.sort();
    files
}

/// The module path of a file: `audio/media.rs` is `["audio", "media"]`.
fn module_of(file: &str) -> Vec<String> {
    let trimmed = file.trim_end_matches(".rs");
    let mut parts: Vec<String> = trimmed.split('/').map(str::to_string).collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file that holds a module, if there is one.
fn file_of(module: &[String], files: &BTreeSet<String>) -> Option<String> {
    if module.is_empty() {
        return Some("lib.rs".into());
    }
    let joined = module.join("/");
    [format!("{joined}.rs"), format!("{joined}/mod.rs")].into_iter().find(|candidate| files.contains(candidate))
}

/// The source without comments, string literals and `#[cfg(test)]` modules.
fn code_of(text: &str) -> String {
    let mut code = String::new();
    let mut skip_depth: Option<usize> = None;
    let mut depth = 0usize;
    let mut pending_test = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("//") {
            continue;
        }
        let line = match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        };
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        if pending_test && skip_depth.is_none() && trimmed.starts_with("mod ") {
            skip_depth = Some(depth);
        }
        pending_test = false;
        depth = (depth + opens).saturating_sub(closes);
        if let Some(start) = skip_depth {
            if depth <= start && (closes > 0 || trimmed.ends_with(';')) {
                skip_depth = None;
            }
            continue;
        }
        // String literals can hold `crate::` in messages; drop them.
        let mut cleaned = String::new();
        let mut in_string = false;
        let mut previous = ' ';
        for c in line.chars() {
            if c == '"' && previous != '\\' {
                in_string = !in_string;
            } else if !in_string {
                cleaned.push(c);
            }
            previous = c;
        }
        code.push_str(&cleaned);
        code.push('\n');
    }
    code
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand_use(tree: &str) -> Vec<String> {
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(open) = tree.find('{') else {
        return vec![tree.split(" as ").next().unwrap_or(&tree).to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (at, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|part| !part.is_empty())
        .flat_map(|part| expand_use(part).into_iter().map(move |tail| format!("{prefix}{tail}")))
        .collect()
}

/// Every path the code names, made absolute from the crate root.
/// `super` is resolved from the file's module path, which for a `mod.rs` is its folder.
fn paths_named(code: &str, module: &[String]) -> Vec<Vec<String>> {
    let mut raw = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + 4..];
        rest = tail;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = tail.find(';') {
            raw.extend(expand_use(&tail[..end]));
        }
    }
    for word in code.split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("crate::") || word.starts_with("super::") {
            raw.push(word.to_string());
        }
    }
    raw.into_iter()
        .filter_map(|path| {
            let segments: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            match segments.first() {
                Some(&"crate") => Some(segments[1..].iter().map(|s| s.to_string()).collect()),
                Some(&"super") => {
                    let mut base = module.to_vec();
                    let mut rest = &segments[..];
                    while rest.first() == Some(&"super") {
                        base.pop();
                        rest = &rest[1..];
                    }
                    base.extend(rest.iter().map(|s| s.to_string()));
                    Some(base)
                }
                Some(&"self") => {
                    let mut base = module.to_vec();
                    base.extend(segments[1..].iter().map(|s| s.to_string()));
                    Some(base)
                }
                _ => None,
            }
        })
        .collect()
}

/// `pub use child::{Name, ...}` in a module file: each name to the child that defines it.
fn reexports(code: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut rest = code;
    while let Some(at) = rest.find("pub use ") {
        let tail = &rest[at + 8..];
        rest = tail;
        let Some(end) = tail.find(';') else { continue };
        for path in expand_use(&tail[..end]) {
            let segments: Vec<&str> = path.split("::").collect();
            if segments.len() >= 2 && !matches!(segments[0], "crate" | "super" | "self" | "std") {
                map.insert(segments.last().unwrap().to_string(), segments[0].to_string());
            }
        }
    }
    map
}

struct Graph {
    /// file -> files it imports from.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn import_graph() -> Graph {
    let files: BTreeSet<String> = source_files().into_iter().filter(|f| !f.starts_with("bin/")).collect();
    let codes: BTreeMap<String, String> =
        files.iter().map(|f| (f.clone(), code_of(&fs::read_to_string(src_dir().join(f)).unwrap()))).collect();
    let reexport_maps: BTreeMap<String, BTreeMap<String, String>> =
        codes.iter().map(|(f, code)| (f.clone(), reexports(code))).collect();
    let mut edges = BTreeMap::new();
    for (file, code) in &codes {
        let module = module_of(file);
        let is_mod_file = file.ends_with("mod.rs") || file == "lib.rs";
        let mut targets = BTreeSet::new();
        for path in paths_named(code, &module) {
            // Walk down as far as the path names modules, then through re-exports.
            let mut current: Vec<String> = Vec::new();
            let mut target = file_of(&current, &files);
            for segment in &path {
                let mut next = current.clone();
                next.push(segment.clone());
                if let Some(found) = file_of(&next, &files) {
                    current = next;
                    target = Some(found);
                    continue;
                }
                let via = target.as_ref().and_then(|t| reexport_maps.get(t)).and_then(|m| m.get(segment));
                if let Some(child) = via {
                    let mut next = current.clone();
                    next.push(child.clone());
                    if let Some(found) = file_of(&next, &files) {
                        target = Some(found);
                    }
                }
                break;
            }
            if let Some(target) = target {
                // A module file naming its own children declares them; that is not an import.
                let declares_child = is_mod_file && module_of(&target).starts_with(&module) && target != *file;
                if target != *file && target != "lib.rs" && !declares_child {
                    targets.insert(target);
                }
            }
        }
        edges.insert(file.clone(), targets);
    }
    Graph { edges }
}

fn room_of(file: &str) -> Option<usize> {
    let first = file.split('/').next()?;
    ROOMS.iter().position(|room| *room == first)
}

/// Strongly connected components of two or more files (Tarjan).
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        state.index.insert(node, state.next);
        state.low.insert(node, state.next);
        state.next += 1;
        state.stack.push(node);
        state.on_stack.insert(node);
        let graph = state.graph;
        for target in graph.edges.get(node).into_iter().flatten() {
            let target = target.as_str();
            if !state.index.contains_key(target) {
                visit(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(top) = state.stack.pop() {
                state.on_stack.remove(top);
                component.push(top.to_string());
                if top == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for node in graph.edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn every_file_is_in_a_room() {
    let loose: Vec<String> = source_files()
        .into_iter()
        .filter(|f| f != "lib.rs" && !f.starts_with("bin/") && room_of(f).is_none())
        .collect();
    assert!(loose.is_empty(), "files outside the rooms {ROOMS:?}: {loose:?}");
}

#[test]
fn rooms_import_downward_only() {
    let graph = import_graph();
    let mut upward = Vec::new();
    for (file, targets) in &graph.edges {
        let Some(room) = room_of(file) else { continue };
        for target in targets {
            if room_of(target).is_some_and(|target_room| target_room > room) {
                upward.push(format!("{file} -> {target}"));
            }
        }
    }
    assert!(upward.is_empty(), "imports upward ({}): {upward:#?}", ROOMS.join(" < "));
}

/// Circles known and not yet mended, each to be taken off this list by the
/// change that breaks it (the FreeSWITCH room's two are mended). A new
/// circle fails, and so does one listed here that is gone, so the list only
/// shrinks.
const KNOWN_CIRCLES: &[&[&str]] = &[];

#[test]
fn no_import_circles() {
    let graph = import_graph();
    let found = circles(&graph);
    let edges: usize = graph.edges.values().map(BTreeSet::len).sum();
    println!("import graph: {} files, {edges} imports, {} circles", graph.edges.len(), found.len());
    let known: Vec<Vec<String>> =
        KNOWN_CIRCLES.iter().map(|circle| circle.iter().map(|f| f.to_string()).collect()).collect();
    let new: Vec<&Vec<String>> = found.iter().filter(|circle| !known.contains(circle)).collect();
    let mended: Vec<&Vec<String>> = known.iter().filter(|circle| !found.contains(circle)).collect();
    assert!(new.is_empty(), "new import circles: {new:#?}");
    assert!(mended.is_empty(), "circles mended: take them off KNOWN_CIRCLES: {mended:#?}");
}

#[test]
fn the_checker_sees_a_circle_and_an_upward_import() {
    // The checker itself must be able to fail: a made-up pair of files.
    let mut edges = BTreeMap::new();
    edges.insert("audio/a.rs".to_string(), BTreeSet::from(["audio/b.rs".to_string(), "call/c.rs".to_string()]));
    edges.insert("audio/b.rs".to_string(), BTreeSet::from(["audio/a.rs".to_string()]));
    edges.insert("call/c.rs".to_string(), BTreeSet::new());
    let graph = Graph { edges };
    assert_eq!(circles(&graph), vec![vec!["audio/a.rs".to_string(), "audio/b.rs".to_string()]]);
    assert!(room_of("call/c.rs") > room_of("audio/a.rs"));
    assert_eq!(expand_use("crate::a::{b, c::{d, e}}"), vec!["crate::a::b", "crate::a::c::d", "crate::a::c::e"]);
}

/// The file names in the README's "Layout" block, with their folders.
fn readme_layout_files() -> (BTreeSet<String>, String) {
    let readme = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme.split("\n## Layout").nth(1).expect("README has a Layout section");
    let section = section.split("\n## ").next().unwrap().to_string();
    let block = section.split("```").nth(1).expect("the Layout section has a code block");
    let mut files = BTreeSet::new();
    // Indentation gives the folder: two spaces a level, under `src/`.
    let mut folders: Vec<(usize, String)> = Vec::new();
    let mut in_src = false;
    for line in block.lines() {
        let indent = line.len() - line.trim_start().len();
        let first = line.split_whitespace().next().unwrap_or("");
        if indent == 0 {
            in_src = first == "src/";
            folders.clear();
            continue;
        }
        if !in_src {
            continue;
        }
        folders.retain(|(level, _)| *level < indent);
        let prefix: String = folders.iter().map(|(_, f)| f.as_str()).collect();
        if first.ends_with('/') {
            folders.push((indent, first.to_string()));
            continue;
        }
        // A line may list several files before its description.
        for word in line.split_whitespace() {
            if let Some(name) = word.strip_suffix(".rs") {
                files.insert(format!("{prefix}{name}.rs"));
            } else {
                break;
            }
        }
    }
    (files, section)
}

#[test]
fn the_readme_layout_is_the_tree() {
    let (listed, section) = readme_layout_files();
    let actual: BTreeSet<String> = source_files().into_iter().collect();
    let missing: Vec<&String> = actual.difference(&listed).collect();
    let stale: Vec<&String> = listed.difference(&actual).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "README Layout: not listed {missing:?}; listed but absent {stale:?}"
    );
    // The path of a header to the first WebSocket byte, in at most 10 hops.
    let path_line = section.lines().find(|l| l.contains('→')).expect("the Layout names the header's path");
    let paragraph: String =
        section.split("\n\n").find(|p| p.contains(path_line)).unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
    let hops = paragraph.matches('→').count();
    assert!((1..=10).contains(&hops), "the header's path has {hops} hops: {paragraph}");
}

#[test]
fn lib_docs_list_every_module() {
    let lib = fs::read_to_string(src_dir().join("lib.rs")).unwrap();
    let docs: String = lib.lines().filter(|l| l.starts_with("//!")).collect::<Vec<_>>().join("\n");
    let mut unlisted = Vec::new();
    for file in source_files() {
        if file == "lib.rs" || file.starts_with("bin/") {
            continue;
        }
        let module = module_of(&file);
        let name = module.last().unwrap();
        if !docs.contains(&format!("`{name}`")) && !docs.contains(&format!("[`{name}`]")) {
            unlisted.push(file);
        }
    }
    assert!(unlisted.is_empty(), "lib.rs's docs do not name: {unlisted:?}");
}
