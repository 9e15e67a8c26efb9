//! The module import graph of a crate: which of its modules uses which, read from the source.
//!
//! `cargo run -p xtask -- modules` prints it, and the tidy check `no_module_import_cycles` keeps
//! it free of cycles. The analysis is textual (std only, no Rust parser) but follows the path rules
//! closely enough for this codebase:
//!
//! - Each root (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`) is a graph of its own. Its modules are
//!   found by following `mod name;` (`name.rs` or `name/mod.rs`) and inline `mod name { ... }`.
//!   The root is called `crate`, `src/foo/bar.rs` is `foo::bar`.
//! - An edge is a `crate::…`, `super::…` or `self::…` path, in a `use` (grouped, nested, over
//!   several lines) or inline in code, resolved to the longest module prefix it names. A name that
//!   the root imports (`pub use x::Y;`) resolves to the module it comes from (`x`); anything else
//!   defined in the root resolves to `crate`.
//! - Comments, string and char literals and `#[cfg(test)]` items are blanked out first, and the
//!   root's own `mod` and `pub use` lines are not edges: the root is where the crate is assembled.
//!   Paths that do not start with `crate`, `super` or `self` (other crates, a bin using its own
//!   lib by name) are not edges either.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The name of a root module in the graph.
pub(crate) const ROOT: &str = "crate";

/// How far re-exports of re-exports are followed before giving up (guards against `use` loops).
const MAX_REEXPORT_HOPS: usize = 8;

/// One place where a module names another.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Import {
    pub(crate) from: String,
    pub(crate) to: String,
    /// The file, relative to the repository root, `/`-separated.
    pub(crate) file: String,
    /// 1-based.
    pub(crate) line: usize,
}

/// The module graph of one root of a crate.
#[derive(Debug)]
pub(crate) struct TargetGraph {
    /// The package folder name, e.g. `ck-web`.
    pub(crate) krate: String,
    /// `lib`, `bin` (for `src/main.rs`) or `bin <name>` (for `src/bin/<name>.rs`).
    pub(crate) kind: String,
    /// Every module and the file it lives in (relative to the repository root).
    pub(crate) modules: BTreeMap<String, String>,
    /// Every edge site, sorted; a module naming itself is not an edge.
    pub(crate) imports: Vec<Import>,
}

/// A set of modules that import each other, and one way round it.
#[derive(Debug)]
pub(crate) struct Cycle {
    /// Sorted.
    pub(crate) modules: Vec<String>,
    /// Edges from the first module back to it, each with every site that makes it.
    pub(crate) path: Vec<(String, String, Vec<Import>)>,
}

impl TargetGraph {
    /// Distinct `from -> to` edges with their sites, sorted.
    pub(crate) fn edges(&self) -> BTreeMap<(String, String), Vec<Import>> {
        let mut edges: BTreeMap<(String, String), Vec<Import>> = BTreeMap::new();
        for import in &self.imports {
            edges
                .entry((import.from.clone(), import.to.clone()))
                .or_default()
                .push(import.clone());
        }
        edges
    }

    /// The strongly connected components with more than one module (Tarjan), each with an example
    /// path round it.
    pub(crate) fn cycles(&self) -> Vec<Cycle> {
        let edges = self.edges();
        let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (from, to) in edges.keys() {
            next.entry(from.as_str()).or_default().push(to.as_str());
        }
        let nodes: Vec<&str> = self.modules.keys().map(String::as_str).collect();
        let mut tarjan = Tarjan {
            next: &next,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            on_stack: BTreeSet::new(),
            counter: 0,
            components: Vec::new(),
        };
        for node in &nodes {
            if !tarjan.index.contains_key(node) {
                tarjan.visit(node);
            }
        }
        let mut cycles: Vec<Cycle> = tarjan
            .components
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let mut modules: Vec<String> = component.iter().map(|m| (*m).to_owned()).collect();
                modules.sort();
                let path = path_round(&modules, &next)
                    .into_iter()
                    .map(|(from, to)| {
                        let sites = edges.get(&(from.clone(), to.clone())).cloned().unwrap_or_default();
                        (from, to, sites)
                    })
                    .collect();
                Cycle { modules, path }
            })
            .collect();
        cycles.sort_by(|a, b| a.modules.cmp(&b.modules));
        cycles
    }

    /// The report that `cargo run -p xtask -- modules` prints for this root.
    pub(crate) fn report(&self) -> String {
        let edges = self.edges();
        let root_file = self.modules.get(ROOT).map(String::as_str).unwrap_or("?");
        let mut out = format!(
            "# {} ({}, {}): {} modules, {} edges\n",
            self.krate,
            self.kind,
            root_file,
            self.modules.len(),
            edges.len()
        );
        for (from, to) in edges.keys() {
            let _ = writeln!(out, "{from} -> {to}");
        }
        let cycles = self.cycles();
        if cycles.is_empty() {
            out.push_str("no cycles\n");
        }
        for cycle in &cycles {
            let _ = writeln!(out, "cycle: {}", cycle.modules.join(", "));
            for (from, to, sites) in &cycle.path {
                let _ = writeln!(out, "  {from} -> {to}  ({})", describe_sites(sites));
            }
        }
        out
    }
}

/// `file:line` of the sites, the first few of them.
pub(crate) fn describe_sites(sites: &[Import]) -> String {
    const SHOWN: usize = 4;
    let mut text: Vec<String> = sites
        .iter()
        .take(SHOWN)
        .map(|s| format!("{}:{}", s.file, s.line))
        .collect();
    if sites.len() > SHOWN {
        text.push(format!("and {} more", sites.len() - SHOWN));
    }
    text.join(", ")
}

struct Tarjan<'a> {
    next: &'a BTreeMap<&'a str, Vec<&'a str>>,
    index: BTreeMap<&'a str, usize>,
    low: BTreeMap<&'a str, usize>,
    stack: Vec<&'a str>,
    on_stack: BTreeSet<&'a str>,
    counter: usize,
    components: Vec<Vec<&'a str>>,
}

impl<'a> Tarjan<'a> {
    // Recursive: module graphs are a few dozen nodes deep at most.
    fn visit(&mut self, node: &'a str) {
        self.index.insert(node, self.counter);
        self.low.insert(node, self.counter);
        self.counter += 1;
        self.stack.push(node);
        self.on_stack.insert(node);
        let next: &'a BTreeMap<&'a str, Vec<&'a str>> = self.next;
        for &to in next.get(node).map(Vec::as_slice).unwrap_or_default() {
            if !self.index.contains_key(to) {
                self.visit(to);
                let low = self.low[&node].min(self.low[&to]);
                self.low.insert(node, low);
            } else if self.on_stack.contains(to) {
                let low = self.low[&node].min(self.index[&to]);
                self.low.insert(node, low);
            }
        }
        if self.low[&node] == self.index[&node] {
            let mut component = Vec::new();
            while let Some(top) = self.stack.pop() {
                self.on_stack.remove(top);
                component.push(top);
                if top == node {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// The shortest path from the first of `modules` back to itself, staying inside `modules`
/// (breadth first, so the example is as short as it can be).
fn path_round(modules: &[String], next: &BTreeMap<&str, Vec<&str>>) -> Vec<(String, String)> {
    let Some(start) = modules.first() else {
        return Vec::new();
    };
    let inside: BTreeSet<&str> = modules.iter().map(String::as_str).collect();
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([start.as_str()]);
    let mut last = None;
    'search: while let Some(node) = queue.pop_front() {
        for &to in next.get(node).map(Vec::as_slice).unwrap_or_default() {
            if !inside.contains(to) {
                continue;
            }
            if to == start {
                last = Some(node);
                break 'search;
            }
            if !came_from.contains_key(to) {
                came_from.insert(to, node);
                queue.push_back(to);
            }
        }
    }
    let Some(mut node) = last else {
        return Vec::new();
    };
    let mut path = vec![(node.to_owned(), start.clone())];
    while node != start {
        let Some(&previous) = came_from.get(node) else {
            break;
        };
        path.push((previous.to_owned(), node.to_owned()));
        node = previous;
    }
    path.reverse();
    path
}

// ---------------------------------------------------------------------------
// Finding the crates and their roots.
// ---------------------------------------------------------------------------

/// The folders the graph is built for by default: every crate under `crates/`, then `xtask`.
pub(crate) fn default_crates(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(root.join("crates"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| entry.path().join("Cargo.toml").is_file())
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if root.join("xtask").join("Cargo.toml").is_file() {
        names.push("xtask".to_owned());
    }
    names
}

/// The folder of crate `name`: `crates/<name>`, or `xtask`.
pub(crate) fn crate_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let dir = if name == "xtask" {
        root.join("xtask")
    } else {
        root.join("crates").join(name)
    };
    dir.join("Cargo.toml").is_file().then_some(dir)
}

/// The graph of every root of crate `name` (lib first, then bins). An error if there is no such
/// crate or a file cannot be read.
pub(crate) fn crate_graphs(root: &Path, name: &str) -> Result<Vec<TargetGraph>, String> {
    let dir = crate_dir(root, name).ok_or_else(|| {
        format!("no crate `{name}`: expected crates/{name}/Cargo.toml (or xtask/Cargo.toml for `xtask`)")
    })?;
    let src = dir.join("src");
    let mut roots: Vec<(String, PathBuf)> = Vec::new();
    for (kind, file) in [("lib", src.join("lib.rs")), ("bin", src.join("main.rs"))] {
        if file.is_file() {
            roots.push((kind.to_owned(), file));
        }
    }
    if let Ok(entries) = fs::read_dir(src.join("bin")) {
        let mut bins: Vec<(String, PathBuf)> = entries
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let stem = path.file_stem()?.to_string_lossy().into_owned();
                if path.is_file() && path.extension().is_some_and(|ext| ext == "rs") {
                    Some((format!("bin {stem}"), path))
                } else if path.join("main.rs").is_file() {
                    Some((format!("bin {stem}"), path.join("main.rs")))
                } else {
                    None
                }
            })
            .collect();
        bins.sort();
        roots.extend(bins);
    }
    roots
        .into_iter()
        .map(|(kind, file)| target_graph(root, name, &kind, &file))
        .collect()
}

// ---------------------------------------------------------------------------
// Building one root's graph.
// ---------------------------------------------------------------------------

/// A path found in a module, made absolute (segments after `crate`), before resolution.
struct FoundPath {
    module: String,
    segments: Vec<String>,
    file: String,
    line: usize,
}

/// Builds the graph of the module tree rooted at `root_file`.
pub(crate) fn target_graph(root: &Path, krate: &str, kind: &str, root_file: &Path) -> Result<TargetGraph, String> {
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    let mut found: Vec<FoundPath> = Vec::new();
    // Names the root brings into its namespace with `use`: name -> absolute path.
    let mut root_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    // Files still to read: (module path, file, directory of its `mod x;` children).
    let root_dir = root_file.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut pending: Vec<(Vec<String>, PathBuf, PathBuf)> = vec![(Vec::new(), root_file.to_path_buf(), root_dir)];
    while let Some((module, file, child_dir)) = pending.pop() {
        let rel_file = rel(root, &file);
        let text = fs::read(&file)
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .map_err(|err| format!("{rel_file}: cannot read ({err})"))?;
        let scan = scan_module_file(&module, &text);
        for inline in &scan.modules {
            modules.insert(module_name(inline), rel_file.clone());
        }
        for (child, _line) in scan.declared {
            // `mod x;` inside an inline `mod a { }` of `m` lives in `<m's dir>/a/x.rs`.
            let mut dir = child_dir.clone();
            for inline in &child[module.len()..child.len() - 1] {
                dir.push(inline);
            }
            let Some(name) = child.last() else { continue };
            let (child_file, grandchild_dir) = if dir.join(format!("{name}.rs")).is_file() {
                (dir.join(format!("{name}.rs")), dir.join(name))
            } else {
                (dir.join(name).join("mod.rs"), dir.join(name))
            };
            if child_file.is_file() {
                pending.push((child, child_file, grandchild_dir));
            }
        }
        for path in scan.paths {
            found.push(FoundPath {
                module: module_name(&path.module),
                segments: path.segments,
                file: rel_file.clone(),
                line: path.line,
            });
        }
        if module.is_empty() {
            root_names = scan.root_names;
        }
    }
    let resolver = Resolver {
        modules: &modules,
        root_names: &root_names,
    };
    let mut imports: Vec<Import> = found
        .into_iter()
        .filter_map(|path| {
            let to = resolver.resolve(&path.segments, 0);
            (to != path.module).then_some(Import {
                from: path.module,
                to,
                file: path.file,
                line: path.line,
            })
        })
        .collect();
    imports.sort();
    imports.dedup();
    Ok(TargetGraph {
        krate: krate.to_owned(),
        kind: kind.to_owned(),
        modules,
        imports,
    })
}

fn module_name(segments: &[String]) -> String {
    if segments.is_empty() {
        ROOT.to_owned()
    } else {
        segments.join("::")
    }
}

struct Resolver<'a> {
    modules: &'a BTreeMap<String, String>,
    root_names: &'a BTreeMap<String, Vec<String>>,
}

impl Resolver<'_> {
    /// The module an absolute path names: its longest module prefix, or for a name imported at the
    /// root, the module that name comes from; else the root itself.
    fn resolve(&self, segments: &[String], hops: usize) -> String {
        for len in (1..=segments.len()).rev() {
            let name = segments[..len].join("::");
            if self.modules.contains_key(&name) {
                return name;
            }
        }
        if hops < MAX_REEXPORT_HOPS
            && let Some(first) = segments.first()
            && let Some(target) = self.root_names.get(first)
        {
            let mut full = target.clone();
            full.extend(segments[1..].iter().cloned());
            return self.resolve(&full, hops + 1);
        }
        ROOT.to_owned()
    }
}

// ---------------------------------------------------------------------------
// Reading one file.
// ---------------------------------------------------------------------------

/// What one file says about modules.
#[derive(Debug, Default)]
struct FileScan {
    /// Out-of-line `mod x;` declarations: the child's full path and the line.
    declared: Vec<(Vec<String>, usize)>,
    /// The file's own module and its inline modules, as full paths.
    modules: Vec<Vec<String>>,
    /// `crate`/`super`/`self` paths made absolute, with the module they appear in.
    paths: Vec<ScannedPath>,
    /// Names the crate root imports at its top level (only filled for the root): name -> path.
    root_names: BTreeMap<String, Vec<String>>,
}

#[derive(Debug)]
struct ScannedPath {
    module: Vec<String>,
    segments: Vec<String>,
    line: usize,
}

/// One leaf of a `use` tree.
#[derive(Debug, PartialEq)]
struct UseLeaf {
    /// The whole path, as written (first segment may be `crate`, `super`, `self` or a name).
    path: Vec<String>,
    /// The name it brings in (`as` alias or last segment); `None` for a glob or `as _`.
    name: Option<String>,
    line: usize,
}

fn scan_module_file(module: &[String], text: &str) -> FileScan {
    let tokens = tokens(text);
    let mut scan = FileScan {
        modules: vec![module.to_vec()],
        ..FileScan::default()
    };
    // Inline modules open at a brace depth: (module path, depth inside its braces).
    let mut stack: Vec<(Vec<String>, usize)> = vec![(module.to_vec(), 0)];
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let current = stack.last().map(|(m, _)| m.clone()).unwrap_or_default();
        match &tokens[i].kind {
            Kind::Punct('{') => depth += 1,
            Kind::Punct('}') => {
                if stack.len() > 1 && stack.last().is_some_and(|(_, d)| *d == depth) {
                    stack.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Kind::Ident(word) if word == "mod" => {
                if let Some(Kind::Ident(name)) = tokens.get(i + 1).map(|t| &t.kind) {
                    let mut child = current.clone();
                    child.push(name.clone());
                    match tokens.get(i + 2).map(|t| &t.kind) {
                        Some(Kind::Punct(';')) => scan.declared.push((child, tokens[i].line)),
                        Some(Kind::Punct('{')) => {
                            depth += 1;
                            scan.modules.push(child.clone());
                            stack.push((child, depth));
                            i += 3;
                            continue;
                        }
                        _ => {}
                    }
                }
            }
            Kind::Ident(word) if word == "use" && !is_punct(tokens.get(i + 1), '<') => {
                let is_pub = preceded_by_pub(&tokens, i);
                let top_of_root = current.is_empty() && depth == 0;
                let mut parser = UseParser {
                    tokens: &tokens,
                    at: i + 1,
                };
                let mut leaves = Vec::new();
                parser.tree(Vec::new(), &mut leaves);
                i = parser.at;
                for leaf in leaves {
                    let absolute = absolute(&current, &leaf.path);
                    if top_of_root && let Some(name) = &leaf.name {
                        // In the root, a relative path starts at the root too.
                        let target = absolute.clone().unwrap_or_else(|| leaf.path.clone());
                        scan.root_names.insert(name.clone(), target);
                    }
                    // The root's own re-exports assemble the crate; they are not edges.
                    if top_of_root && is_pub {
                        continue;
                    }
                    if let Some(segments) = absolute {
                        scan.paths.push(ScannedPath {
                            module: current.clone(),
                            segments,
                            line: leaf.line,
                        });
                    }
                }
                continue;
            }
            Kind::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && is_sep(tokens.get(i + 1))
                    && !is_punct(i.checked_sub(1).and_then(|p| tokens.get(p)), '$')
                    && !is_ident(i.checked_sub(1).and_then(|p| tokens.get(p)), "in") =>
            {
                let line = tokens[i].line;
                let mut path = vec![word.clone()];
                let mut at = i + 1;
                while is_sep(tokens.get(at)) {
                    match tokens.get(at + 1).map(|t| &t.kind) {
                        Some(Kind::Ident(segment)) => {
                            path.push(segment.clone());
                            at += 2;
                        }
                        _ => break,
                    }
                }
                if let Some(segments) = absolute(&current, &path) {
                    scan.paths.push(ScannedPath {
                        module: current.clone(),
                        segments,
                        line,
                    });
                }
                i = at;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// `path` made absolute (the segments after `crate`) from inside `module`, if it starts with
/// `crate`, `self` or `super`; `None` for a relative path or one that climbs above the root.
fn absolute(module: &[String], path: &[String]) -> Option<Vec<String>> {
    let first = path.first()?;
    match first.as_str() {
        "crate" => Some(path[1..].to_vec()),
        "self" => {
            let mut out = module.to_vec();
            out.extend(path[1..].iter().cloned());
            Some(out)
        }
        "super" => {
            let mut out = module.to_vec();
            let mut rest = path;
            while rest.first().is_some_and(|s| s == "super") {
                out.pop()?;
                rest = &rest[1..];
            }
            out.extend(rest.iter().cloned());
            Some(out)
        }
        _ => None,
    }
}

/// Whether the item whose first token is at `at` has a `pub` or `pub(...)` visibility.
fn preceded_by_pub(tokens: &[Token], at: usize) -> bool {
    let Some(mut before) = at.checked_sub(1) else {
        return false;
    };
    if is_punct(tokens.get(before), ')') {
        let mut depth = 0usize;
        loop {
            match tokens.get(before).map(|t| &t.kind) {
                Some(Kind::Punct(')')) => depth += 1,
                Some(Kind::Punct('(')) => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                None => return false,
                _ => {}
            }
            let Some(previous) = before.checked_sub(1) else {
                return false;
            };
            before = previous;
        }
        let Some(previous) = before.checked_sub(1) else {
            return false;
        };
        before = previous;
    }
    is_ident(tokens.get(before), "pub")
}

/// A recursive-descent reader of one `use` tree, up to its `;`.
struct UseParser<'a> {
    tokens: &'a [Token],
    at: usize,
}

impl UseParser<'_> {
    fn kind(&self) -> Option<&Kind> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn line(&self) -> usize {
        self.tokens.get(self.at).map_or(0, |t| t.line)
    }

    /// Reads `path::{...}`, `path::*`, `path as name` or `path`, pushing its leaves.
    fn tree(&mut self, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
        let line = self.line();
        let mut path = prefix;
        if matches!(self.kind(), Some(Kind::Sep)) {
            self.at += 1;
        }
        loop {
            match self.kind() {
                Some(Kind::Ident(segment)) => {
                    path.push(segment.clone());
                    self.at += 1;
                    if matches!(self.kind(), Some(Kind::Sep)) {
                        self.at += 1;
                    } else {
                        break;
                    }
                }
                Some(Kind::Punct('{')) => {
                    self.at += 1;
                    loop {
                        match self.kind() {
                            Some(Kind::Punct('}')) => {
                                self.at += 1;
                                break;
                            }
                            None => break,
                            _ => {}
                        }
                        let before = self.at;
                        self.tree(path.clone(), out);
                        if matches!(self.kind(), Some(Kind::Punct(','))) {
                            self.at += 1;
                        } else if self.at == before {
                            // Not a tree: skip the token so that a malformed group cannot loop.
                            self.at += 1;
                        }
                    }
                    self.finish_item();
                    return;
                }
                Some(Kind::Punct('*')) => {
                    self.at += 1;
                    out.push(UseLeaf { path, name: None, line });
                    self.finish_item();
                    return;
                }
                _ => break,
            }
        }
        let mut name = path.last().cloned();
        if path.last().is_some_and(|s| s == "self") {
            path.pop();
            name = path.last().cloned();
        }
        if is_ident(self.tokens.get(self.at), "as") {
            self.at += 1;
            name = match self.kind() {
                Some(Kind::Ident(alias)) if alias != "_" => Some(alias.clone()),
                _ => None,
            };
            self.at += 1;
        }
        if !path.is_empty() {
            out.push(UseLeaf { path, name, line });
        }
        self.finish_item();
    }

    /// At the top level, steps over the closing `;`.
    fn finish_item(&mut self) {
        if matches!(self.kind(), Some(Kind::Punct(';'))) {
            self.at += 1;
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens: the source without comments, literals and `#[cfg(test)]` items.
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A word: identifier, keyword, or number.
    Ident(String),
    /// `::`.
    Sep,
    /// Any other single character.
    Punct(char),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: Kind,
    /// 1-based.
    pub(crate) line: usize,
}

pub(crate) fn is_punct(token: Option<&Token>, c: char) -> bool {
    token.is_some_and(|t| t.kind == Kind::Punct(c))
}

pub(crate) fn is_ident(token: Option<&Token>, word: &str) -> bool {
    token.is_some_and(|t| matches!(&t.kind, Kind::Ident(w) if w == word))
}

fn is_sep(token: Option<&Token>) -> bool {
    token.is_some_and(|t| t.kind == Kind::Sep)
}

/// The tokens of `text` with comments, string and char literals and `#[cfg(test)]` items (a
/// `mod tests { ... }`, a `mod tests;`, a test-only `use` or `fn`) left out. A file that starts
/// with `#![cfg(test)]` has no tokens.
pub(crate) fn tokens(text: &str) -> Vec<Token> {
    let raw = raw_tokens(&strip_comments_and_literals(text));
    if is_punct(raw.first(), '#') && is_punct(raw.get(1), '!') && is_cfg_test(&raw[2..]) {
        return Vec::new();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if is_punct(raw.get(i), '#') && is_cfg_test(&raw[i + 1..]) {
            i = skip_item(&raw, i + 1 + CFG_TEST.len());
            continue;
        }
        out.push(raw[i].clone());
        i += 1;
    }
    out
}

/// The tokens of `[cfg(test)]`, as words or single characters.
const CFG_TEST: [&str; 6] = ["[", "cfg", "(", "test", ")", "]"];

/// Whether `tokens` start with `[cfg(test)]`.
fn is_cfg_test(tokens: &[Token]) -> bool {
    tokens.len() >= CFG_TEST.len()
        && tokens.iter().zip(CFG_TEST).all(|(token, expected)| match &token.kind {
            Kind::Ident(word) => word == expected,
            Kind::Punct(c) => expected.len() == 1 && expected.starts_with(*c),
            Kind::Sep => false,
        })
}

/// The index after the item that starts at `at` (after its attribute): further attributes, then
/// up to a `;` outside brackets or to the end of its first `{ ... }` block.
fn skip_item(tokens: &[Token], mut at: usize) -> usize {
    let mut depth = 0usize;
    while at < tokens.len() {
        match tokens[at].kind {
            Kind::Punct('(' | '[') => depth += 1,
            Kind::Punct(')' | ']') => depth = depth.saturating_sub(1),
            Kind::Punct(';') if depth == 0 => return at + 1,
            Kind::Punct('{') if depth == 0 => {
                let mut braces = 0usize;
                while at < tokens.len() {
                    match tokens[at].kind {
                        Kind::Punct('{') => braces += 1,
                        Kind::Punct('}') => {
                            braces -= 1;
                            if braces == 0 {
                                return at + 1;
                            }
                        }
                        _ => {}
                    }
                    at += 1;
                }
                return at;
            }
            _ => {}
        }
        at += 1;
    }
    at
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

fn raw_tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_word_char(c) {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let mut word: String = chars[start..i].iter().collect();
            // A raw identifier `r#type` is the word `type`.
            if word == "r" && chars.get(i) == Some(&'#') && chars.get(i + 1).is_some_and(|c| is_word_char(*c)) {
                let start = i + 1;
                i = start;
                while i < chars.len() && is_word_char(chars[i]) {
                    i += 1;
                }
                word = chars[start..i].iter().collect();
            }
            tokens.push(Token {
                kind: Kind::Ident(word),
                line,
            });
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push(Token { kind: Kind::Sep, line });
            i += 2;
        } else {
            tokens.push(Token {
                kind: Kind::Punct(c),
                line,
            });
            i += 1;
        }
    }
    tokens
}

/// `text` with every comment and string/char literal replaced by spaces; line breaks are kept so
/// that line numbers stay right.
pub(crate) fn strip_comments_and_literals(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, from: &[char]| {
        for &c in from {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |p| i + p);
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '/' && next == Some('*') {
            // Block comments nest.
            let mut depth = 0usize;
            let mut end = i;
            while end < chars.len() {
                if chars[end] == '/' && chars.get(end + 1) == Some(&'*') {
                    depth += 1;
                    end += 2;
                } else if chars[end] == '*' && chars.get(end + 1) == Some(&'/') {
                    depth -= 1;
                    end += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    end += 1;
                }
            }
            let end = end.min(chars.len());
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if let Some(end) = raw_string_end(&chars, i) {
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '"' {
            let mut end = i + 1;
            while end < chars.len() && chars[end] != '"' {
                end += if chars[end] == '\\' { 2 } else { 1 };
            }
            let end = (end + 1).min(chars.len());
            blank(&mut out, &chars[i..end]);
            i = end;
        } else if c == '\'' {
            // A char literal ('a', '\n', '\u{1F512}', '\''), else a lifetime or label: kept.
            let end = if next == Some('\\') {
                let mut end = i + 3;
                while end < chars.len() && chars[end] != '\'' && chars[end] != '\n' {
                    end += 1;
                }
                Some(end + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    let end = end.min(chars.len());
                    blank(&mut out, &chars[i..end]);
                    i = end;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// If a raw string (`r"…"`, `r#"…"#`, `br"…"`, `cr"…"`) starts at `at`, the index after it.
fn raw_string_end(chars: &[char], at: usize) -> Option<usize> {
    let mut i = at;
    if matches!(chars.get(i), Some('b' | 'c')) && chars.get(i + 1) == Some(&'r') {
        i += 1;
    }
    if chars.get(i) != Some(&'r') || (at > 0 && is_word_char(chars[at - 1])) {
        return None;
    }
    i += 1;
    let hashes = chars[i..].iter().take_while(|&&c| c == '#').count();
    i += hashes;
    if chars.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|&&c| c == '#').count() == hashes {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(chars.len())
}

/// `path` relative to the repository root, with `/` separators, for messages.
pub(crate) fn rel(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path);
    relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A crate tree in the system temporary directory, deleted on drop.
    struct Tree {
        root: PathBuf,
    }

    impl Tree {
        fn new(files: &[(&str, &str)]) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let root = std::env::temp_dir().join(format!(
                "certkeeper-xtask-modgraph-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&root);
            let tree = Self { root };
            tree.write("crates/demo/Cargo.toml", "[package]\nname = \"demo\"\n");
            for (rel, text) in files {
                tree.write(&format!("crates/demo/{rel}"), text);
            }
            tree
        }

        fn write(&self, rel: &str, text: &str) {
            let path = self.root.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        fn graphs(&self) -> Vec<TargetGraph> {
            crate_graphs(&self.root, "demo").unwrap()
        }

        /// `from -> to` of the lib's graph.
        fn edges(&self) -> Vec<String> {
            let graphs = self.graphs();
            graphs[0]
                .edges()
                .keys()
                .map(|(from, to)| format!("{from} -> {to}"))
                .collect()
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.root);
        }
    }

    #[test]
    fn grouped_nested_and_inline_paths_are_edges() {
        let tree = Tree::new(&[
            (
                "src/lib.rs",
                "//! Demo.\nmod a;\nmod b;\nmod c;\nmod d;\npub struct Root;\n",
            ),
            (
                "src/a.rs",
                "use crate::{\n    b::{B, self},\n    c::C as Renamed,\n};\nuse std::fmt;\n\
                 fn f() { let _ = crate::d::D::default(); let _: crate::Root; }\n",
            ),
            ("src/b.rs", "pub struct B;\n"),
            ("src/c.rs", "pub struct C;\n"),
            ("src/d.rs", "#[derive(Default)] pub struct D;\n"),
        ]);
        assert_eq!(tree.edges(), ["a -> b", "a -> c", "a -> crate", "a -> d"]);
        let graph = &tree.graphs()[0];
        let to_c = graph.imports.iter().find(|i| i.to == "c").unwrap();
        assert_eq!((to_c.file.as_str(), to_c.line), ("crates/demo/src/a.rs", 3));
        assert!(graph.report().contains("no cycles"));
    }

    #[test]
    fn comments_literals_and_tests_are_ignored() {
        let tree = Tree::new(&[
            ("src/lib.rs", "//! Demo.\nmod a;\nmod b;\n"),
            (
                "src/a.rs",
                "//! Uses crate::b::X in a doc.\n// use crate::b::X;\n/* crate::b::X /* nested */ crate::b */\n\
                 const S: &str = \"crate::b::X\";\nconst R: &str = r#\"use crate::b::X;\"#;\n\
                 const C: char = '\"'; fn f<'a>(x: &'a str) -> &'a str { x }\n\
                 #[cfg(test)]\nmod tests {\n    use crate::b::X;\n    fn g() { crate::b::f() }\n}\n\
                 #[cfg(test)]\nuse crate::b::Y;\n",
            ),
            ("src/b.rs", "pub struct X;\n#[cfg(test)]\nmod tests;\n"),
            ("src/b/tests.rs", "use crate::a::Z;\n"),
        ]);
        assert_eq!(tree.edges(), Vec::<String>::new());
        assert_eq!(tree.graphs()[0].modules.len(), 3);
    }

    #[test]
    fn root_reexports_resolve_to_their_module() {
        let tree = Tree::new(&[
            (
                "src/lib.rs",
                "//! Demo.\nmod a;\nmod b;\nmod c;\npub use a::Alpha;\npub(crate) use b::{Beta, Gamma as G};\n\
                 use c::*;\npub struct Own;\n",
            ),
            ("src/a.rs", "pub struct Alpha;\n"),
            ("src/b.rs", "pub struct Beta;\npub struct Gamma;\n"),
            (
                "src/c.rs",
                "use crate::{Alpha, Own};\nfn f() -> crate::G { crate::Beta::new() }\n",
            ),
        ]);
        // The root's own `mod` and `pub use` lines are not edges.
        assert_eq!(tree.edges(), ["c -> a", "c -> b", "c -> crate"]);
    }

    #[test]
    fn super_self_and_nested_modules_resolve() {
        let tree = Tree::new(&[
            ("src/lib.rs", "//! Demo.\nmod outer;\n"),
            (
                "src/outer/mod.rs",
                "mod inner;\nmod deep { use super::O; }\npub struct O;\n",
            ),
            (
                "src/outer/inner.rs",
                "use super::O;\nuse super::super::outer::deep;\nfn f() { self::g(); super::super::top(); }\n",
            ),
        ]);
        assert_eq!(
            tree.edges(),
            [
                "outer::deep -> outer",
                "outer::inner -> crate",
                "outer::inner -> outer",
                "outer::inner -> outer::deep"
            ]
        );
        assert!(tree.graphs()[0].cycles().is_empty());
    }

    #[test]
    fn a_cycle_is_found_with_its_sites() {
        let tree = Tree::new(&[
            ("src/lib.rs", "//! Demo.\nmod config;\nmod email;\nmod leaf;\n"),
            (
                "src/config.rs",
                "use crate::leaf::L;\n\nfn build() { crate::email::Email::new(); }\n",
            ),
            (
                "src/email.rs",
                "use crate::config::{\n    Settings,\n};\nuse crate::leaf::L;\n",
            ),
            ("src/leaf.rs", "pub struct L;\n"),
        ]);
        let graph = &tree.graphs()[0];
        let cycles = graph.cycles();
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].modules, ["config", "email"]);
        let path: Vec<String> = cycles[0]
            .path
            .iter()
            .map(|(from, to, sites)| format!("{from} -> {to} at {}", describe_sites(sites)))
            .collect();
        assert_eq!(
            path,
            [
                "config -> email at crates/demo/src/config.rs:3",
                "email -> config at crates/demo/src/email.rs:2"
            ]
        );
        let report = graph.report();
        assert!(report.contains("cycle: config, email\n"), "{report}");
        assert!(!report.contains("no cycles"), "{report}");
    }

    #[test]
    fn lib_and_bins_are_separate_roots() {
        let tree = Tree::new(&[
            ("src/lib.rs", "//! Demo.\npub mod shared;\n"),
            ("src/shared.rs", "pub fn f() {}\n"),
            (
                "src/main.rs",
                "//! Bin.\nmod cli;\nfn main() { demo::shared::f(); cli::run(); }\n",
            ),
            ("src/cli.rs", "use crate::main;\nuse demo::shared;\n"),
            ("src/bin/other.rs", "//! Other.\n"),
            ("src/bin/tool/main.rs", "//! Tool.\nmod helper;\n"),
            ("src/bin/tool/helper.rs", "use crate::X;\n"),
        ]);
        let graphs = tree.graphs();
        let kinds: Vec<&str> = graphs.iter().map(|g| g.kind.as_str()).collect();
        assert_eq!(kinds, ["lib", "bin", "bin other", "bin tool"]);
        assert_eq!(graphs[0].modules.keys().collect::<Vec<_>>(), ["crate", "shared"]);
        assert!(graphs[0].imports.is_empty());
        assert_eq!(graphs[1].modules.keys().collect::<Vec<_>>(), ["cli", "crate"]);
        let bin_edges: Vec<(String, String)> = graphs[1].edges().into_keys().collect();
        assert_eq!(bin_edges, [("cli".to_owned(), "crate".to_owned())]);
        assert_eq!(graphs[3].modules.keys().collect::<Vec<_>>(), ["crate", "helper"]);
        assert_eq!(graphs[3].imports.len(), 1);
    }

    #[test]
    fn stripping_keeps_lines_and_code() {
        let text = "let a = \"x\\\"y\"; // c\nlet b = '\\''; let c = b'a';\n/* a\nb */ let d = br##\"q\"#\"##;";
        let stripped = strip_comments_and_literals(text);
        assert_eq!(stripped.lines().count(), text.lines().count());
        let words: Vec<String> = raw_tokens(&stripped)
            .into_iter()
            .filter_map(|t| match t.kind {
                Kind::Ident(w) => Some(w),
                _ => None,
            })
            .collect();
        assert_eq!(words, ["let", "a", "let", "b", "let", "c", "b", "let", "d"]);
    }
}
