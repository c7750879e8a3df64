//! Path resolution: which module of the crate a path written in some module refers into.
//!
//! This is a deliberately small subset of Rust's name resolution, enough for module-level
//! dependencies: it knows modules, `use` imports (named and glob) and the names of items, not
//! types, traits or namespaces. Paths it cannot place (std, external crates, local variables,
//! generic parameters, `Self`) resolve to nothing and make no edge.

use crate::scope::Scope;
use crate::tree::{ModId, ModuleTree, ROOT};

/// How many `use` indirections a resolution follows: re-export chains are short, and the cap
/// turns a loop of imports (legal with globs) into an answer instead of a hang.
const MAX_DEPTH: usize = 16;

/// Where a path leads: the deepest module it names, and the rest of it (the item in that
/// module, then perhaps associated items), empty when the path names the module itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub module: ModId,
    pub rest: Vec<String>,
}

/// What a name or path leads to.
enum Found {
    /// Into the crate.
    In(Target),
    /// Out of it, through an import of an external item (`pub use other_crate::Thing`) or
    /// one that loops.
    Outside,
    /// To nothing this resolver knows: std and external crates named directly, locals,
    /// generic parameters, or past [`MAX_DEPTH`] indirections.
    Unknown,
}

/// Resolves paths in one crate root's module tree.
pub struct Resolver<'a> {
    tree: &'a ModuleTree,
    scopes: &'a [Scope],
}

impl<'a> Resolver<'a> {
    /// `scopes[m]` is the scope of `tree.modules[m]`.
    pub fn new(tree: &'a ModuleTree, scopes: &'a [Scope]) -> Self {
        Resolver { tree, scopes }
    }

    /// Resolves a path written in module `from` (without a leading `::`): `None` when it
    /// leads outside the crate or to nothing this resolver knows.
    pub fn resolve(&self, from: ModId, segments: &[String]) -> Option<Target> {
        match self.resolve_at(from, segments, 0) {
            Found::In(target) => Some(target),
            Found::Outside | Found::Unknown => None,
        }
    }

    fn resolve_at(&self, from: ModId, segments: &[String], depth: usize) -> Found {
        let Some((first, mut rest)) = segments.split_first() else {
            return Found::Unknown;
        };
        if depth > MAX_DEPTH {
            return Found::Unknown;
        }
        let start = match first.as_str() {
            "crate" => ROOT,
            "self" => from,
            "super" => {
                let Some(mut module) = self.tree.parent(from) else {
                    return Found::Unknown;
                };
                while rest.first().map(String::as_str) == Some("super") {
                    let Some(parent) = self.tree.parent(module) else {
                        return Found::Unknown;
                    };
                    module = parent;
                    rest = &rest[1..];
                }
                module
            }
            name => {
                return match self.lookup(from, name, true, depth) {
                    Found::In(found) => {
                        let mut path = found.rest;
                        path.extend_from_slice(rest);
                        self.walk(found.module, path, depth)
                    }
                    other => other,
                };
            }
        };
        self.walk(start, rest.to_vec(), depth)
    }

    /// Where `name` leads as seen by code of `module` (`inner`: also imports inside its
    /// function bodies) or as a path segment after `module` from outside it (`!inner`: only
    /// its top-level imports).
    ///
    /// Rust's order: child modules, named imports and the module's own items all shadow glob
    /// imports, so a named import that leads outside the crate answers [`Found::Outside`]
    /// without trying the globs.
    fn lookup(&self, module: ModId, name: &str, inner: bool, depth: usize) -> Found {
        if depth > MAX_DEPTH {
            return Found::Unknown;
        }
        if let Some(&child) = self.tree.modules[module].children.get(name) {
            return Found::In(Target {
                module: child,
                rest: Vec::new(),
            });
        }
        let scope = &self.scopes[module];
        if let Some(binding) = scope.named.get(name).filter(|b| inner || b.top_level) {
            // Followed whatever the import's visibility: a path that compiles can only name a
            // private import from inside the importing module's subtree, and what it depends on
            // is the module that defines the item, not the one that imports it.
            // An import this resolver cannot place imports from outside the crate.
            return match self.resolve_at(module, &binding.segments, depth + 1) {
                Found::Unknown => Found::Outside,
                found => found,
            };
        }
        if scope.locals.contains(name) {
            return Found::In(Target {
                module,
                rest: vec![name.to_owned()],
            });
        }
        for glob in scope.globs.iter().filter(|g| inner || g.top_level) {
            let Found::In(source) = self.resolve_at(module, &glob.segments, depth + 1) else {
                continue;
            };
            // A glob of an enum's variants (rest not empty) brings no module's names.
            if !source.rest.is_empty() || source.module == module {
                continue;
            }
            match self.lookup(source.module, name, false, depth + 1) {
                Found::Unknown => continue,
                found => return found,
            }
        }
        Found::Unknown
    }

    /// Descends from `module` along `path` as far as its segments name modules, following
    /// re-exports: a segment that `module` imports leads to where the import leads, and out of
    /// the crate when the import does.
    fn walk(&self, mut module: ModId, path: Vec<String>, depth: usize) -> Found {
        let mut at = 0;
        while let Some(segment) = path.get(at) {
            if let Some(&child) = self.tree.modules[module].children.get(segment) {
                module = child;
                at += 1;
                continue;
            }
            match self.lookup(module, segment, false, depth + 1) {
                Found::In(found) if found.module != module => {
                    let mut next = found.rest;
                    next.extend_from_slice(&path[at + 1..]);
                    return self.walk(found.module, next, depth + 1);
                }
                Found::Outside => return Found::Outside,
                // Defined here, a name we do not track, or past the depth cap.
                Found::In(_) | Found::Unknown => break,
            }
        }
        Found::In(Target {
            module,
            rest: path[at..].to_vec(),
        })
    }
}
