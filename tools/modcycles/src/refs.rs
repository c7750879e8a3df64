//! The paths a module's own code writes: in `use` trees, in code (expressions, types,
//! patterns, trait bounds, ...), and multi-segment paths inside macro invocations.

use proc_macro2::{Spacing, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::visit::{self, Visit};
use syn::{Attribute, ExprPath, Item, ItemMod, ItemUse, Macro, Path, QSelf, TypePath, Visibility};

use crate::scope::UseLeaf;

/// One path written in a module.
#[derive(Debug, Clone)]
pub struct Reference {
    /// The path's segments, generic arguments dropped.
    pub segments: Vec<String>,
    /// The line it starts on (in the module's file).
    pub line: usize,
    /// The path as printed in reports.
    pub text: String,
    /// Where it was written.
    pub origin: Origin,
}

/// Where a [`Reference`] was written; it decides whether naming a module itself counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A `use` tree: `use crate::a;` depends on `a` even though it names only the module.
    Use,
    /// Code: here a path that stops at a module is no reference at all (it can only be a local
    /// variable that happens to share a module's name, or a `pub(in path)`).
    Code,
}

/// The references of a module: its `use` leaves, then the paths of its code, sorted by line.
pub fn references(items: &[Item], leaves: &[UseLeaf]) -> Vec<Reference> {
    let mut out: Vec<Reference> = leaves
        .iter()
        .map(|leaf| Reference {
            segments: leaf.segments.clone(),
            line: leaf.line,
            text: leaf.text(),
            origin: Origin::Use,
        })
        .collect();
    // A glob leaf's path is its module's path, so `use x::*` resolves to (and depends on) x.
    let mut collector = PathCollector { out: &mut out };
    for item in items {
        collector.visit_item(item);
    }
    out.sort_by_key(|r| r.line);
    out
}

/// Visits all paths of a module's items, except those of its `use` trees (already leaves),
/// attributes and visibilities, and of modules nested in blocks (not nodes of the tree).
struct PathCollector<'a> {
    out: &'a mut Vec<Reference>,
}

impl<'ast> Visit<'ast> for PathCollector<'_> {
    fn visit_path(&mut self, path: &'ast Path) {
        if path.leading_colon.is_none() {
            let segments: Vec<String> = path
                .segments
                .iter()
                .map(|s| s.ident.unraw().to_string())
                .collect();
            if let Some(first) = path.segments.first() {
                self.out.push(Reference {
                    text: segments.join("::"),
                    segments,
                    line: first.ident.span().start().line,
                    origin: Origin::Code,
                });
            }
        }
        // Generic arguments hold paths too: `Vec<crate::a::Thing>`.
        visit::visit_path(self, path);
    }

    fn visit_expr_path(&mut self, expr: &'ast ExprPath) {
        match &expr.qself {
            Some(qself) if qself.position == 0 => self.visit_qualified(qself, &expr.path),
            _ => visit::visit_expr_path(self, expr),
        }
    }

    fn visit_type_path(&mut self, ty: &'ast TypePath) {
        match &ty.qself {
            Some(qself) if qself.position == 0 => self.visit_qualified(qself, &ty.path),
            _ => visit::visit_type_path(self, ty),
        }
    }

    fn visit_macro(&mut self, mac: &'ast Macro) {
        self.visit_path(&mac.path);
        scan_tokens(mac.tokens.clone(), self.out);
    }

    fn visit_item_use(&mut self, _: &'ast ItemUse) {}

    fn visit_item_mod(&mut self, _: &'ast ItemMod) {}

    fn visit_attribute(&mut self, _: &'ast Attribute) {}

    fn visit_visibility(&mut self, _: &'ast Visibility) {}
}

impl PathCollector<'_> {
    /// `<T>::name...`: the segments after the `<T>` are associated items of T, not a path from
    /// this module, so only T and generic arguments are visited.
    fn visit_qualified(&mut self, qself: &QSelf, path: &Path) {
        self.visit_qself(qself);
        for segment in &path.segments {
            self.visit_path_arguments(&segment.arguments);
        }
    }
}

/// Finds the paths of at least two segments (`a::b`, `crate::x`, `$crate::x`) in a macro's
/// tokens. Macro bodies need not parse as Rust (`tokio::select!`, `macro_rules!` arms), so
/// this reads tokens rather than syntax; a single identifier is too likely to be a local to
/// count. Generic arguments end a path (`a::<T>::b` yields `a`): rare inside macros.
fn scan_tokens(tokens: TokenStream, out: &mut Vec<Reference>) {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    let mut at = 0;
    while at < tokens.len() {
        match &tokens[at] {
            TokenTree::Group(group) => {
                scan_tokens(group.stream(), out);
                at += 1;
            }
            TokenTree::Ident(ident) => {
                let after_colons = at >= 2 && is_path_sep(&tokens[at - 2], &tokens[at - 1]);
                let after_dollar = at >= 1 && is_punct(&tokens[at - 1], '$');
                // `::x` is an external path; `$x::y` starts with a macro variable.
                let skip = after_colons || (after_dollar && ident != "crate");
                let mut segments = vec![ident.unraw().to_string()];
                let mut end = at + 1;
                while end + 2 < tokens.len()
                    && is_path_sep(&tokens[end], &tokens[end + 1])
                    && matches!(tokens[end + 2], TokenTree::Ident(_))
                {
                    if let TokenTree::Ident(next) = &tokens[end + 2] {
                        segments.push(next.unraw().to_string());
                    }
                    end += 3;
                }
                if !skip && segments.len() >= 2 {
                    out.push(Reference {
                        text: segments.join("::"),
                        segments,
                        line: ident.span().start().line,
                        origin: Origin::Code,
                    });
                }
                at = end;
            }
            _ => at += 1,
        }
    }
}

fn is_punct(token: &TokenTree, c: char) -> bool {
    matches!(token, TokenTree::Punct(p) if p.as_char() == c)
}

/// Whether two tokens are `::`.
fn is_path_sep(first: &TokenTree, second: &TokenTree) -> bool {
    matches!(first, TokenTree::Punct(p) if p.as_char() == ':' && p.spacing() == Spacing::Joint)
        && is_punct(second, ':')
}
