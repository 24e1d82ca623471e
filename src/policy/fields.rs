//! Data minimisation (Law 133/2011 art. 4(1)(c)): the broker removes from a
//! JSON response every field the grant does not allow, before the consumer
//! sees it and before the receipt's digest is computed.
//!
//! A [`FieldSet`] is compiled once at load from paths such as
//! `address.locality`, `debts[].amount_mdl` or `persons[].idnp`. A path allows
//! the value it names and its whole subtree; its ancestors are kept only as
//! containers. `[]` marks an array for the reader; arrays are traversed
//! transparently, each element filtered by the same rules.
//!
//! A compiled set is shared, not copied: grants that allow the same fields of
//! the same service hold one `Arc` (the loader compiles each distinct list
//! once), which keeps loading 100k grants fast and their memory small.
//!
//! Invariant: minimisation fails closed. A value whose shape is not the one
//! the paths describe (a string where an object with allowed sub-fields was
//! expected) is removed, not kept; `null` is kept, since it reveals nothing.

use std::sync::Arc;

use serde_json::Value;

use crate::catalog::paths;

/// The set of response fields a grant allows for one service. Cloning is a
/// reference-count increment.
#[derive(Debug, Clone)]
pub struct FieldSet {
    /// `None` is the empty set, so that [`FieldSet::EMPTY`] can be a constant.
    inner: Option<Arc<Compiled>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Compiled {
    root: Node,
    /// The paths as written, for listings and the admin API.
    paths: Vec<String>,
}

/// One level of the field tree.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    /// The whole subtree below this node is allowed.
    all: bool,
    /// Allowed children, sorted by name for binary search.
    children: Vec<(Box<str>, Node)>,
}

impl Node {
    const EMPTY: Node = Node {
        all: false,
        children: Vec::new(),
    };

    fn child(&self, name: &str) -> Option<&Node> {
        self.children
            .binary_search_by(|(key, _)| (**key).cmp(name))
            .ok()
            .map(|i| &self.children[i].1)
    }

    fn insert(&mut self, segments: &[&str]) {
        if self.all {
            return;
        }
        let Some((head, rest)) = segments.split_first() else {
            // A path ending here allows everything below, which makes any
            // narrower paths below redundant.
            self.all = true;
            self.children = Vec::new();
            return;
        };
        let i = match self.children.binary_search_by(|(key, _)| (**key).cmp(head)) {
            Ok(i) => i,
            Err(i) => {
                self.children.insert(i, ((*head).into(), Node::EMPTY));
                i
            }
        };
        self.children[i].1.insert(rest);
    }
}

/// Equal when they allow the same fields written the same way, however they
/// were built (the constant empty set equals a compiled empty list).
impl PartialEq for FieldSet {
    fn eq(&self, other: &FieldSet) -> bool {
        self.root() == other.root() && self.paths() == other.paths()
    }
}

impl Eq for FieldSet {}

impl FieldSet {
    /// The set that allows nothing: every field is removed.
    pub const EMPTY: FieldSet = FieldSet { inner: None };

    /// Compiles a list of field paths. Errors name the malformed path.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<FieldSet, String> {
        let mut compiled = Compiled {
            root: Node::EMPTY,
            paths: Vec::new(),
        };
        for path in paths {
            let segments =
                paths::segments(path).ok_or_else(|| format!("malformed field path {path:?}"))?;
            compiled.root.insert(&segments);
            compiled.paths.push(path.to_owned());
        }
        Ok(FieldSet {
            inner: Some(Arc::new(compiled)),
        })
    }

    /// The set that allows everything (no minimisation).
    pub fn all() -> FieldSet {
        FieldSet {
            inner: Some(Arc::new(Compiled {
                root: Node {
                    all: true,
                    children: Vec::new(),
                },
                paths: Vec::new(),
            })),
        }
    }

    /// The paths as written in the grant.
    pub fn paths(&self) -> &[String] {
        self.inner.as_ref().map_or(&[], |c| c.paths.as_slice())
    }

    fn root(&self) -> &Node {
        static NOTHING: Node = Node::EMPTY;
        self.inner.as_ref().map_or(&NOTHING, |c| &c.root)
    }

    /// Whether the set allows the value at `path` (and so its subtree).
    pub fn allows(&self, path: &str) -> bool {
        let Some(segments) = paths::segments(path) else {
            return false;
        };
        let mut node = self.root();
        for segment in segments {
            if node.all {
                return true;
            }
            match node.child(segment) {
                Some(child) => node = child,
                None => return false,
            }
        }
        node.all
    }
}

/// Removes, in place, every field of `value` that `fields` does not allow.
/// A root that is not an object or array and is not allowed becomes `null`.
pub fn minimise(value: &mut Value, fields: &FieldSet) {
    if !retain(value, fields.root()) {
        *value = Value::Null;
    }
}

/// Filters `value` against `node`; returns whether the value itself is kept.
fn retain(value: &mut Value, node: &Node) -> bool {
    if node.all {
        return true;
    }
    match value {
        Value::Object(map) => {
            map.retain(|key, child| node.child(key).is_some_and(|sub| retain(child, sub)));
            true
        }
        Value::Array(items) => {
            items.retain_mut(|item| retain(item, node));
            true
        }
        Value::Null => true,
        // A scalar where only some sub-fields are allowed: the grant never
        // allowed this value as such, so it goes.
        Value::Bool(_) | Value::Number(_) | Value::String(_) => false,
    }
}
