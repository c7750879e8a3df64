//! What names a module's own code can use: its `use` imports (named and glob) and the items it
//! defines. Resolution needs this to follow `use` imports and re-exports to the module that
//! really defines an item.

use std::collections::{HashMap, HashSet};

use syn::ext::IdentExt;
use syn::visit::Visit;
use syn::{Item, ItemUse, UseTree};

/// One leaf of a `use` tree, flattened: `use a::{b, c as d, e::*};` has three.
pub struct UseLeaf {
    /// The full path, `self` leaves folded into their prefix (`use a::{self}` is `a`).
    pub segments: Vec<String>,
    /// What the leaf brings into scope.
    pub kind: UseKind,
    /// The line of the leaf's last identifier (or `*`).
    pub line: usize,
    /// Whether the `use` stands directly in the module rather than inside a function body or
    /// other block; only those can be named from outside the module.
    pub top_level: bool,
}

/// What a [`UseLeaf`] binds.
pub enum UseKind {
    /// `use a::b;` or `use a::b as c;`: the name it binds.
    Named(String),
    /// `use a::b as _;`: nothing, but it still depends on `a::b`.
    Anonymous,
    /// `use a::*;`: every name of `a`.
    Glob,
}

impl UseLeaf {
    /// The path as written, for reports.
    pub fn text(&self) -> String {
        let path = self.segments.join("::");
        match &self.kind {
            UseKind::Named(name) if self.segments.last() == Some(name) => path,
            UseKind::Named(name) => format!("{path} as {name}"),
            UseKind::Anonymous => format!("{path} as _"),
            UseKind::Glob => format!("{path}::*"),
        }
    }
}

/// A name bound by a named `use`.
pub struct Binding {
    pub segments: Vec<String>,
    pub top_level: bool,
}

/// A glob import's module path.
pub struct Glob {
    pub segments: Vec<String>,
    pub top_level: bool,
}

/// The names a module's code can use besides its child modules.
#[derive(Default)]
pub struct Scope {
    /// Named imports. When a name is imported twice (say into the type and value namespaces),
    /// the first top-level one wins: this tool does not tell namespaces apart.
    pub named: HashMap<String, Binding>,
    /// Glob imports, in source order.
    pub globs: Vec<Glob>,
    /// Items the module defines itself (`fn`, `struct`, `macro_rules!`, ...): a path to one of
    /// them stays in the module.
    pub locals: HashSet<String>,
}

impl Scope {
    /// The scope made by a module's items and their `use` leaves (from [`use_leaves`]).
    pub fn new(items: &[Item], leaves: &[UseLeaf]) -> Self {
        let mut scope = Scope::default();
        for leaf in leaves {
            match &leaf.kind {
                UseKind::Named(name) => {
                    let binding = Binding {
                        segments: leaf.segments.clone(),
                        top_level: leaf.top_level,
                    };
                    match scope.named.get(name) {
                        Some(old) if old.top_level || !leaf.top_level => {}
                        _ => {
                            scope.named.insert(name.clone(), binding);
                        }
                    }
                }
                UseKind::Glob => scope.globs.push(Glob {
                    segments: leaf.segments.clone(),
                    top_level: leaf.top_level,
                }),
                UseKind::Anonymous => {}
            }
        }
        for item in items {
            if let Some(name) = defined_name(item) {
                scope.locals.insert(name);
            }
        }
        scope
    }
}

/// Every `use` leaf in a module's items, nested ones (in function bodies and other blocks)
/// included, and `extern crate self as x;` as an import of `crate`; `use ::x` (always an
/// external crate) is left out.
pub fn use_leaves(items: &[Item]) -> Vec<UseLeaf> {
    let mut out = Vec::new();
    for item in items {
        match item {
            Item::Use(u) => flatten_use(u, true, &mut out),
            Item::ExternCrate(e) => out.extend(extern_self_alias(e, true)),
            other => {
                let mut nested = NestedUses { out: &mut out };
                nested.visit_item(other);
            }
        }
    }
    out
}

/// Collects `use` declarations inside blocks.
struct NestedUses<'a> {
    out: &'a mut Vec<UseLeaf>,
}

impl<'ast> Visit<'ast> for NestedUses<'_> {
    fn visit_item_use(&mut self, u: &'ast ItemUse) {
        flatten_use(u, false, self.out);
    }

    fn visit_item_mod(&mut self, _: &'ast syn::ItemMod) {
        // A module inside a block is not a node of the tree; its uses are not this module's.
    }
}

fn flatten_use(u: &ItemUse, top_level: bool, out: &mut Vec<UseLeaf>) {
    if u.leading_colon.is_none() {
        flatten(&u.tree, &mut Vec::new(), top_level, out);
    }
}

fn flatten(tree: &UseTree, prefix: &mut Vec<String>, top_level: bool, out: &mut Vec<UseLeaf>) {
    match tree {
        UseTree::Path(p) => {
            prefix.push(p.ident.unraw().to_string());
            flatten(&p.tree, prefix, top_level, out);
            prefix.pop();
        }
        UseTree::Name(n) => {
            let name = n.ident.unraw().to_string();
            let line = n.ident.span().start().line;
            if let Some(leaf) = named_leaf(prefix, &name, None, line, top_level) {
                out.push(leaf);
            }
        }
        UseTree::Rename(r) => {
            let name = r.ident.unraw().to_string();
            let rename = r.rename.unraw().to_string();
            let line = r.rename.span().start().line;
            if let Some(leaf) = named_leaf(prefix, &name, Some(rename), line, top_level) {
                out.push(leaf);
            }
        }
        UseTree::Glob(g) => out.push(UseLeaf {
            segments: prefix.clone(),
            kind: UseKind::Glob,
            line: g.star_token.spans[0].start().line,
            top_level,
        }),
        UseTree::Group(g) => {
            for tree in &g.items {
                flatten(tree, prefix, top_level, out);
            }
        }
    }
}

/// The leaf for `prefix::name [as rename]`; `self` stands for the prefix itself.
fn named_leaf(
    prefix: &[String],
    name: &str,
    rename: Option<String>,
    line: usize,
    top_level: bool,
) -> Option<UseLeaf> {
    let mut segments = prefix.to_vec();
    if name != "self" {
        segments.push(name.to_owned());
    }
    let bound = rename.or_else(|| segments.last().cloned())?;
    let kind = if bound == "_" {
        UseKind::Anonymous
    } else {
        UseKind::Named(bound)
    };
    Some(UseLeaf {
        segments,
        kind,
        line,
        top_level,
    })
}

/// The name an item defines in its module, for items other than `use`, `mod` and
/// `extern crate` (an external crate is never resolved; `extern crate self as x` is an import).
fn defined_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::Fn(i) => &i.sig.ident,
        Item::Macro(i) => i.ident.as_ref()?,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(ident.unraw().to_string())
}

/// The leaf of `extern crate self as name;`, which makes `name::...` a path into this crate.
fn extern_self_alias(item: &syn::ItemExternCrate, top_level: bool) -> Option<UseLeaf> {
    if item.ident != "self" {
        return None;
    }
    let (_, alias) = item.rename.as_ref()?;
    Some(UseLeaf {
        segments: vec!["crate".to_owned()],
        kind: UseKind::Named(alias.unraw().to_string()),
        line: alias.span().start().line,
        top_level,
    })
}
