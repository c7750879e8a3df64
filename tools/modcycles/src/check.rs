//! Checking one crate root: its module graph, and the cycles in it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::graph::strongly_connected;
use crate::refs::{Origin, references};
use crate::resolve::Resolver;
use crate::scope::{Scope, use_leaves};
use crate::tree::ModuleTree;

/// One dependency between two modules, with the first reference that makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The referring module, as `crate::a::b`.
    pub from: String,
    /// The module referred to.
    pub to: String,
    /// The file and line of the example reference.
    pub file: PathBuf,
    pub line: usize,
    /// The example reference's path as written (generic arguments dropped).
    pub text: String,
}

/// A set of modules that all depend on one another (a strongly connected component of more
/// than one module), and the edges among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// The modules, in tree order (parents before children).
    pub modules: Vec<String>,
    /// Every edge between two of the modules.
    pub edges: Vec<Edge>,
}

/// The result of checking one crate root.
#[derive(Debug, Clone)]
pub struct RootReport {
    /// The package name.
    pub crate_name: String,
    /// The root file relative to the crate directory (`src/lib.rs`).
    pub root: PathBuf,
    /// How many modules the tree has, the root included.
    pub modules: usize,
    /// Every edge of the graph, by referring module then referred module.
    pub edges: Vec<Edge>,
    /// The cycles, empty when the graph is acyclic.
    pub cycles: Vec<Cycle>,
}

impl RootReport {
    /// Whether the module graph has no cycle.
    pub fn is_acyclic(&self) -> bool {
        self.cycles.is_empty()
    }

    /// The one-line summary, then each cycle with one example reference per edge; files are
    /// shown relative to `base` when they lie under it.
    pub fn render(&self, base: &Path) -> String {
        let verdict = match self.cycles.len() {
            0 => "acyclic".to_owned(),
            1 => "1 cycle".to_owned(),
            n => format!("{n} cycles"),
        };
        let mut out = format!(
            "{} ({}): {} modules, {} edges, {verdict}\n",
            self.crate_name,
            self.root.display(),
            self.modules,
            self.edges.len()
        );
        for (i, cycle) in self.cycles.iter().enumerate() {
            // Writing to a String cannot fail.
            let _ = writeln!(
                out,
                "  cycle {} ({} modules): {}",
                i + 1,
                cycle.modules.len(),
                cycle.modules.join(", ")
            );
            for edge in &cycle.edges {
                let file = edge.file.strip_prefix(base).unwrap_or(&edge.file);
                let _ = writeln!(
                    out,
                    "    {}:{}: {} -> {} ({})",
                    file.display(),
                    edge.line,
                    edge.from,
                    edge.to,
                    edge.text
                );
            }
        }
        out
    }
}

/// Checks the crate root `crate_dir/root` (such as `src/lib.rs`) of package `crate_name`.
pub fn check_root(crate_name: &str, crate_dir: &Path, root: &Path) -> Result<RootReport> {
    let tree = ModuleTree::load(&crate_dir.join(root))?;
    let leaves: Vec<_> = tree.modules.iter().map(|m| use_leaves(&m.items)).collect();
    let scopes: Vec<Scope> = tree
        .modules
        .iter()
        .zip(&leaves)
        .map(|(m, l)| Scope::new(&m.items, l))
        .collect();
    let resolver = Resolver::new(&tree, &scopes);

    // (from, to) -> the edge with its first reference (references come sorted by line).
    let mut first: BTreeMap<(usize, usize), Edge> = BTreeMap::new();
    for (from, module) in tree.modules.iter().enumerate() {
        for reference in references(&module.items, &leaves[from]) {
            let Some(target) = resolver.resolve(from, &reference.segments) else {
                continue;
            };
            if target.module == from || (reference.origin == Origin::Code && target.rest.is_empty())
            {
                continue;
            }
            first.entry((from, target.module)).or_insert_with(|| Edge {
                from: module.path.clone(),
                to: tree.modules[target.module].path.clone(),
                file: module.file.clone(),
                line: reference.line,
                text: reference.text,
            });
        }
    }

    let mut adjacency = vec![Vec::new(); tree.modules.len()];
    for &(from, to) in first.keys() {
        adjacency[from].push(to);
    }
    let mut components: Vec<Vec<usize>> = strongly_connected(&adjacency)
        .into_iter()
        .filter(|c| c.len() > 1)
        .collect();
    components.sort();
    let cycles = components
        .iter()
        .map(|component| Cycle {
            modules: component
                .iter()
                .map(|&m| tree.modules[m].path.clone())
                .collect(),
            edges: first
                .iter()
                .filter(|((from, to), _)| component.contains(from) && component.contains(to))
                .map(|(_, edge)| edge.clone())
                .collect(),
        })
        .collect();

    Ok(RootReport {
        crate_name: crate_name.to_owned(),
        root: root.to_path_buf(),
        modules: tree.modules.len(),
        edges: first.into_values().collect(),
        cycles,
    })
}
