//! The module tree of one crate root, loaded the way rustc finds module files.
//!
//! Each module owns the items written directly in it; the items of its child modules (inline
//! `mod x { ... }` blocks included) are moved into the children, so that "code in A" never
//! includes code of A's children, which are nodes of their own in the graph.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use syn::ext::IdentExt;
use syn::{Attribute, Expr, Item, Lit, Meta};

/// Index of a module in [`ModuleTree::modules`]; the crate root is [`ROOT`].
pub type ModId = usize;

/// The crate root's id.
pub const ROOT: ModId = 0;

/// One module of the tree.
pub struct Module {
    /// The full path, `crate::a::b`, as printed in reports.
    pub path: String,
    /// The parent module; `None` only for the root.
    pub parent: Option<ModId>,
    /// Child modules by name. A name declared twice (alternatives under different `#[cfg]`s)
    /// keeps its first declaration here; the others are still loaded and checked as modules.
    pub children: BTreeMap<String, ModId>,
    /// The file holding the module's items (for an inline module, its parent's file).
    pub file: PathBuf,
    /// The items written directly in the module; child modules' items are not among them.
    pub items: Vec<Item>,
}

/// All modules of one crate root, the root first, parents before their children.
pub struct ModuleTree {
    pub modules: Vec<Module>,
}

impl ModuleTree {
    /// Loads the tree rooted at `root_file` (a `lib.rs` or `main.rs`), following every
    /// `mod x;` into its file.
    pub fn load(root_file: &Path) -> Result<Self> {
        let items = parse_file(root_file)?;
        let dir = root_file.parent().unwrap_or(Path::new(".")).to_path_buf();
        let mut tree = ModuleTree {
            modules: Vec::new(),
        };
        tree.add(
            None,
            "crate",
            root_file,
            items,
            Dirs {
                children: dir,
                file_level: true,
            },
        )?;
        Ok(tree)
    }

    /// The module's parent, `None` for the root.
    pub fn parent(&self, id: ModId) -> Option<ModId> {
        self.modules[id].parent
    }

    /// Adds a module with its items, recursively adding the child modules they declare.
    fn add(
        &mut self,
        parent: Option<ModId>,
        name: &str,
        file: &Path,
        items: Vec<Item>,
        dirs: Dirs,
    ) -> Result<ModId> {
        let id = self.modules.len();
        let path = match parent {
            Some(p) => format!("{}::{name}", self.modules[p].path),
            None => name.to_owned(),
        };
        self.modules.push(Module {
            path,
            parent,
            children: BTreeMap::new(),
            file: file.to_path_buf(),
            items: Vec::new(),
        });
        let mut own = Vec::with_capacity(items.len());
        for item in items {
            let Item::Mod(decl) = item else {
                own.push(item);
                continue;
            };
            let child_name = decl.ident.unraw().to_string();
            let line = decl.ident.span().start().line;
            let path_attr = path_attribute(&decl.attrs)
                .with_context(|| format!("{}:{line}: `mod {child_name}`", file.display()))?;
            let child = match decl.content {
                Some((_, content)) => {
                    // Inline: its own `mod y;` files live in a directory named after it (or
                    // after its `#[path]`), inside this module's directory.
                    let children = dirs
                        .children
                        .join(path_attr.as_deref().unwrap_or(&child_name));
                    let child_dirs = Dirs {
                        children,
                        file_level: false,
                    };
                    self.add(Some(id), &child_name, file, content, child_dirs)?
                }
                None => {
                    let (child_file, child_dirs) =
                        locate(file, &dirs, &child_name, path_attr.as_deref()).with_context(
                            || format!("{}:{line}: `mod {child_name};`", file.display()),
                        )?;
                    let content = parse_file(&child_file).with_context(|| {
                        format!("{}:{line}: `mod {child_name};`", file.display())
                    })?;
                    self.add(Some(id), &child_name, &child_file, content, child_dirs)?
                }
            };
            self.modules[id].children.entry(child_name).or_insert(child);
        }
        self.modules[id].items = own;
        Ok(id)
    }
}

/// Where a module's `mod y;` declarations look for their files.
struct Dirs {
    /// The directory of `y.rs` and `y/mod.rs` for a declaration without `#[path]`.
    children: PathBuf,
    /// Whether the module is the top of its file (a file root rather than an inline block):
    /// a `#[path]` there is relative to the file's directory, in an inline block relative to
    /// `children` (rustc's rule).
    file_level: bool,
}

/// The file of `mod name;` declared in a module of `file` with `dirs`, and the directories its
/// own declarations use.
fn locate(
    file: &Path,
    dirs: &Dirs,
    name: &str,
    path_attr: Option<&str>,
) -> Result<(PathBuf, Dirs)> {
    if let Some(relative) = path_attr {
        let base = if dirs.file_level {
            file.parent().unwrap_or(Path::new("."))
        } else {
            &dirs.children
        };
        let target = base.join(relative);
        if !target.is_file() {
            bail!("module file {} (from #[path]) not found", target.display());
        }
        // rustc treats a file named by `#[path]` like a `mod.rs`: its children sit beside it.
        let children = target.parent().unwrap_or(Path::new(".")).to_path_buf();
        return Ok((
            target,
            Dirs {
                children,
                file_level: true,
            },
        ));
    }
    let flat = dirs.children.join(format!("{name}.rs"));
    let nested = dirs.children.join(name).join("mod.rs");
    let target = match (flat.is_file(), nested.is_file()) {
        (true, false) => flat,
        (false, true) => nested,
        (true, true) => bail!(
            "module `{name}` has two files, {} and {}",
            flat.display(),
            nested.display()
        ),
        (false, false) => bail!(
            "module file not found: neither {} nor {} exists",
            flat.display(),
            nested.display()
        ),
    };
    let children = dirs.children.join(name);
    Ok((
        target,
        Dirs {
            children,
            file_level: true,
        },
    ))
}

/// The value of a `#[path = "..."]` attribute, if there is one.
fn path_attribute(attrs: &[Attribute]) -> Result<Option<String>> {
    let Some(attr) = attrs.iter().find(|a| a.path().is_ident("path")) else {
        return Ok(None);
    };
    let Meta::NameValue(nv) = &attr.meta else {
        bail!("#[path] without `= \"...\"`");
    };
    let Expr::Lit(lit) = &nv.value else {
        bail!("#[path] whose value is not a string literal");
    };
    let Lit::Str(s) = &lit.lit else {
        bail!("#[path] whose value is not a string literal");
    };
    Ok(Some(s.value()))
}

/// The items of a source file; a syntax error names the file, line and column.
fn parse_file(path: &Path) -> Result<Vec<Item>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    match syn::parse_file(&text) {
        Ok(file) => Ok(file.items),
        Err(e) => {
            let at = e.span().start();
            // syn counts columns from 0; editors and rustc from 1.
            Err(anyhow::Error::new(e)).with_context(|| {
                format!("parsing {}:{}:{}", path.display(), at.line, at.column + 1)
            })
        }
    }
}
