//! Field paths (`address.locality`, `debts[].amount_mdl`) and whether a JSON
//! Schema describes them. Used to check data elements in the catalog and the
//! allowed fields of grants at load time, so a typo in a grant is an error
//! rather than a silently empty response.
//!
//! Invariant: a `[]` suffix marks an array for the reader and changes nothing:
//! arrays are traversed transparently, so `debts[].amount_mdl` and
//! `debts.amount_mdl` name the same values.

use serde_json::Value;

/// `$ref` chains deeper than this are treated as not found, so a schema that
/// refers to itself cannot loop the walker.
const MAX_DEPTH: usize = 32;

/// Splits a field path into its property names, dropping `[]` markers.
/// Returns `None` for an empty path or an empty segment.
pub(crate) fn segments(path: &str) -> Option<Vec<&str>> {
    let mut out = Vec::new();
    for segment in path.split('.') {
        let name = segment.strip_suffix("[]").unwrap_or(segment);
        if name.is_empty() || name.contains("[]") {
            return None;
        }
        out.push(name);
    }
    Some(out)
}

/// Whether `schema` (a whole schema document, so local `$ref`s resolve
/// against it) describes a value at `path`.
pub(crate) fn schema_has_path(schema: &Value, path: &str) -> bool {
    let Some(segments) = segments(path) else {
        return false;
    };
    let mut nodes = expand(schema, schema, 0);
    for segment in segments {
        let mut next = Vec::new();
        for node in nodes {
            if let Some(child) = node.get("properties").and_then(|p| p.get(segment)) {
                next.extend(expand(schema, child, 0));
            }
        }
        if next.is_empty() {
            return false;
        }
        nodes = next;
    }
    true
}

/// The schema nodes a value matching `node` may be described by: `node`
/// itself, its `$ref` target, its `allOf`/`anyOf`/`oneOf` branches and, for
/// arrays, its `items` (arrays being transparent in field paths).
fn expand<'a>(root: &'a Value, node: &'a Value, depth: usize) -> Vec<&'a Value> {
    if depth > MAX_DEPTH {
        return Vec::new();
    }
    let mut out = vec![node];
    if let Some(target) = node
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.strip_prefix('#'))
        .and_then(|pointer| root.pointer(pointer))
    {
        out.extend(expand(root, target, depth + 1));
    }
    for keyword in ["allOf", "anyOf", "oneOf"] {
        if let Some(branches) = node.get(keyword).and_then(Value::as_array) {
            for branch in branches {
                out.extend(expand(root, branch, depth + 1));
            }
        }
    }
    if let Some(items) = node.get("items") {
        out.extend(expand(root, items, depth + 1));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_in_schemas() {
        let schema = json!({
            "type": "object",
            "properties": {
                "address": {"$ref": "#/$defs/address"},
                "debts": {"type": "array", "items": {"type": "object", "properties": {"amount_mdl": {"type": "number"}}}},
                "either": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"x": {}}}]}
            },
            "$defs": {"address": {"type": "object", "properties": {"locality": {"type": "string"}}}}
        });
        for (path, found) in [
            ("address", true),
            ("address.locality", true),
            ("address.street", false),
            ("debts[].amount_mdl", true),
            ("debts.amount_mdl", true),
            ("debts[]", true),
            ("either.x", true),
            ("nothing", false),
            ("", false),
            ("a..b", false),
        ] {
            assert_eq!(schema_has_path(&schema, path), found, "{path}");
        }
    }
}
