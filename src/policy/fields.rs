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
//! Invariant: minimisation fails closed. A value whose shape is not the one
//! the paths describe (a string where an object with allowed sub-fields was
//! expected) is removed, not kept; `null` is kept, since it reveals nothing.

use serde_json::Value;

use crate::catalog::paths;

/// The set of response fields a grant allows for one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSet {
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

impl FieldSet {
    /// The set that allows nothing: every field is removed.
    pub const EMPTY: FieldSet = FieldSet {
        root: Node::EMPTY,
        paths: Vec::new(),
    };

    /// Compiles a list of field paths. Errors name the malformed path.
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Result<FieldSet, String> {
        let mut set = FieldSet::EMPTY;
        for path in paths {
            let segments =
                paths::segments(path).ok_or_else(|| format!("malformed field path {path:?}"))?;
            set.root.insert(&segments);
            set.paths.push(path.to_owned());
        }
        Ok(set)
    }

    /// The set that allows everything (no minimisation).
    pub fn all() -> FieldSet {
        FieldSet {
            root: Node {
                all: true,
                children: Vec::new(),
            },
            paths: Vec::new(),
        }
    }

    /// The paths as written in the grant.
    pub fn paths(&self) -> &[String] {
        &self.paths
    }

    /// Whether the set allows the value at `path` (and so its subtree).
    pub fn allows(&self, path: &str) -> bool {
        let Some(segments) = paths::segments(path) else {
            return false;
        };
        let mut node = &self.root;
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
    if !retain(value, &fields.root) {
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
