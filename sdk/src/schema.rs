//! Tool argument schemas in the strict subset of JSON Schema that OpenAI
//! function calling accepts with `strict: true`.
//!
//! Strict mode wants every object closed (`additionalProperties: false`)
//! with every property listed in `required`; optional properties are
//! expressed as nullable instead. It rejects keywords outside a small set
//! (`default`, `title`, `$schema`, most `format`s, `minLength`, ...), `oneOf`,
//! `allOf`, and keywords beside a `$ref`. [`make_strict`] rewrites a schema
//! into that shape; [`schema_for`] generates one from a Rust type.
//!
//! Map types (`HashMap<String, T>`) cannot be expressed in strict mode: their
//! objects are closed like any other, so use a list of pairs instead.

use schemars::{JsonSchema, generate::SchemaSettings};
use serde_json::{Map, Value, json};

/// Keywords strict mode accepts; everything else is dropped.
const KEPT: &[&str] = &[
    "type",
    "description",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "anyOf",
    "$ref",
    "$defs",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "pattern",
    "format",
    "minItems",
    "maxItems",
];

/// String formats strict mode knows; others (and all numeric ones like
/// schemars' `uint32`) are dropped.
const STRING_FORMATS: &[&str] = &[
    "date-time",
    "time",
    "date",
    "duration",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uuid",
];

/// The strict JSON Schema of `T`, with the type's doc comment as the root
/// `description`. Subschemas are inlined; only recursive types keep `$defs`.
pub fn schema_for<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .for_deserialize()
        .into_generator();
    let mut schema = generator.into_root_schema_for::<T>().to_value();
    make_strict(&mut schema);
    schema
}

/// Rewrite `schema` in place into strict-mode form (see the module docs).
/// The root always ends up an object schema, as tool parameters must be.
pub fn make_strict(schema: &mut Value) {
    if !schema.as_object().is_some_and(is_object_schema) {
        // A unit struct or `()` means "no arguments": an empty closed object.
        let description = schema.get("description").cloned();
        *schema = json!({ "type": "object", "properties": {} });
        if let Some(d) = description {
            schema["description"] = d;
        }
    }
    strictify(schema);
}

fn strictify(node: &mut Value) {
    let Some(obj) = node.as_object_mut() else {
        return;
    };

    // `oneOf` -> `anyOf`: for argument parsing the difference does not matter.
    if let Some(Value::Array(alternatives)) = obj.remove("oneOf") {
        match obj.get_mut("anyOf") {
            Some(Value::Array(any)) => any.extend(alternatives),
            _ => {
                obj.insert("anyOf".into(), Value::Array(alternatives));
            }
        }
    }
    // `allOf` is folded into the node itself.
    if let Some(Value::Array(parts)) = obj.remove("allOf") {
        for part in parts {
            if let Value::Object(part) = part {
                merge_into(obj, part);
            }
        }
    }
    // Nothing may sit beside a `$ref`; a description moves onto a wrapper.
    if let Some(reference) = obj.remove("$ref") {
        let description = obj.remove("description");
        obj.clear();
        match description {
            Some(d) => {
                obj.insert("description".into(), d);
                obj.insert("anyOf".into(), json!([{ "$ref": reference }]));
            }
            None => {
                obj.insert("$ref".into(), reference);
            }
        }
        return;
    }

    obj.retain(|k, _| KEPT.contains(&k.as_str()));
    if let Some(Value::String(d)) = obj.get_mut("description") {
        *d = unwrap_lines(d);
    }
    let keep_format = obj
        .get("format")
        .and_then(Value::as_str)
        .is_some_and(|f| STRING_FORMATS.contains(&f))
        && type_names(obj).contains(&"string");
    if !keep_format {
        obj.remove("format");
    }

    if is_object_schema(obj) {
        let was_required: Vec<String> = obj
            .get("required")
            .and_then(Value::as_array)
            .map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let properties = obj
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if !properties.is_object() {
            *properties = Value::Object(Map::new());
        }
        let properties = properties.as_object_mut().expect("just made an object");
        for (name, property) in properties.iter_mut() {
            strictify(property);
            if !was_required.contains(name) {
                make_nullable(property);
            }
        }
        let all: Vec<Value> = properties
            .keys()
            .map(|k| Value::String(k.clone()))
            .collect();
        obj.insert("required".into(), Value::Array(all));
        obj.insert("additionalProperties".into(), Value::Bool(false));
        if !obj.contains_key("type") {
            obj.insert("type".into(), json!("object"));
        }
    }

    if let Some(items) = obj.get_mut("items") {
        strictify(items);
    }
    if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
        any.iter_mut().for_each(strictify);
    }
    if let Some(Value::Object(defs)) = obj.get_mut("$defs") {
        defs.values_mut().for_each(strictify);
    }
}

/// Doc comments arrive hard-wrapped: join the lines of each paragraph.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn type_names(obj: &Map<String, Value>) -> Vec<&str> {
    match obj.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn is_object_schema(obj: &Map<String, Value>) -> bool {
    type_names(obj).contains(&"object") || obj.contains_key("properties")
}

fn accepts_null(node: &Value) -> bool {
    let Some(obj) = node.as_object() else {
        return true; // `true` accepts anything
    };
    type_names(obj).contains(&"null")
        || obj.get("const").is_some_and(Value::is_null)
        || obj
            .get("anyOf")
            .and_then(Value::as_array)
            .is_some_and(|any| any.iter().any(accepts_null))
}

/// Let `node` also accept `null`, the strict-mode way of saying "optional".
fn make_nullable(node: &mut Value) {
    if accepts_null(node) {
        return;
    }
    let Some(obj) = node.as_object_mut() else {
        return;
    };
    let plain_type = !obj.contains_key("const") && !obj.contains_key("$ref");
    match obj.get_mut("type") {
        Some(Value::String(t)) if plain_type => {
            let t = std::mem::take(t);
            obj.insert("type".into(), json!([t, "null"]));
            add_null_to_enum(obj);
            return;
        }
        Some(Value::Array(ts)) if plain_type => {
            ts.push(json!("null"));
            add_null_to_enum(obj);
            return;
        }
        _ => {}
    }
    if let Some(Value::Array(any)) = obj.get_mut("anyOf") {
        any.push(json!({ "type": "null" }));
        return;
    }
    // Wrap anything else (a `$ref`, a `const`, an untyped schema).
    let description = obj.remove("description");
    let inner = Value::Object(std::mem::take(obj));
    let mut wrapper = Map::new();
    if let Some(d) = description {
        wrapper.insert("description".into(), d);
    }
    wrapper.insert("anyOf".into(), json!([inner, { "type": "null" }]));
    *node = Value::Object(wrapper);
}

fn add_null_to_enum(obj: &mut Map<String, Value>) {
    if let Some(Value::Array(values)) = obj.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
}

fn merge_into(target: &mut Map<String, Value>, part: Map<String, Value>) {
    for (key, value) in part {
        match (key.as_str(), target.get_mut(&key), value) {
            ("properties", Some(Value::Object(mine)), Value::Object(theirs)) => mine.extend(theirs),
            ("required", Some(Value::Array(mine)), Value::Array(theirs)) => {
                for name in theirs {
                    if !mine.contains(&name) {
                        mine.push(name);
                    }
                }
            }
            (_, Some(_), _) => {} // the node's own keyword wins
            (_, None, value) => {
                target.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::{BTreeMap, HashSet};

    /// Find things
    /// (wrapped).
    ///
    /// Second paragraph.
    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Args {
        /// Required text.
        title: String,
        /// Optional number.
        limit: Option<u32>,
        /// Defaulted list.
        #[serde(default)]
        tags: HashSet<String>,
        /// Defaulted number with a default value in the schema.
        #[serde(default = "five")]
        count: u8,
        /// Nested struct.
        inner: Option<Inner>,
        /// An enum.
        sort: Option<Direction>,
        /// Documented enum variants become `oneOf`.
        mode: Mode,
        /// A date.
        when: Option<Date>,
        /// A map (not expressible in strict mode).
        #[serde(default)]
        extra: BTreeMap<String, String>,
    }

    fn five() -> u8 {
        5
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        id: i64,
        note: Option<String>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Direction {
        Asc,
        Desc,
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    enum Mode {
        /// Quick.
        Fast,
        /// Thorough.
        Slow,
    }

    #[derive(Deserialize, JsonSchema)]
    #[schemars(transparent)]
    #[allow(dead_code)]
    struct Date(#[schemars(with = "String", extend("format" = "date"))] String);

    /// A tree.
    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Node {
        name: String,
        children: Vec<Node>,
        parent: Option<Box<Node>>,
    }

    const FORBIDDEN: &[&str] = &[
        "$schema",
        "title",
        "default",
        "oneOf",
        "allOf",
        "uniqueItems",
        "minLength",
        "maxLength",
        "examples",
    ];

    /// Walk every subschema and check the strict-mode rules.
    fn assert_strict(node: &Value, at: &str) {
        let Some(obj) = node.as_object() else { return };
        for key in obj.keys() {
            assert!(
                !FORBIDDEN.contains(&key.as_str()),
                "{at}: forbidden `{key}` in {node}"
            );
            assert!(KEPT.contains(&key.as_str()), "{at}: unknown `{key}`");
        }
        if obj.contains_key("$ref") {
            assert_eq!(obj.len(), 1, "{at}: siblings beside $ref");
        }
        if let Some(f) = obj.get("format") {
            assert!(
                STRING_FORMATS.contains(&f.as_str().unwrap()),
                "{at}: format {f}"
            );
        }
        if is_object_schema(obj) {
            assert_eq!(obj["additionalProperties"], json!(false), "{at}");
            let props = obj["properties"].as_object().unwrap();
            let required: Vec<&str> = obj["required"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            assert_eq!(required.len(), props.len(), "{at}: every property required");
            for (name, p) in props {
                assert!(required.contains(&name.as_str()));
                assert_strict(p, &format!("{at}.{name}"));
            }
        }
        if let Some(items) = obj.get("items") {
            assert_strict(items, &format!("{at}[]"));
        }
        for key in ["anyOf", "$defs"] {
            match obj.get(key) {
                Some(Value::Array(a)) => a
                    .iter()
                    .for_each(|s| assert_strict(s, &format!("{at}/{key}"))),
                Some(Value::Object(m)) => m
                    .iter()
                    .for_each(|(k, s)| assert_strict(s, &format!("{at}/{key}/{k}"))),
                _ => {}
            }
        }
    }

    #[test]
    fn struct_schema_is_strict() {
        let s = schema_for::<Args>();
        assert_strict(&s, "$");
        assert_eq!(s["type"], "object");
        assert_eq!(
            s["description"],
            "Find things (wrapped).\n\nSecond paragraph."
        );
        let p = &s["properties"];
        // Required stays non-nullable.
        assert_eq!(p["title"]["type"], "string");
        assert_eq!(p["title"]["description"], "Required text.");
        // Option<u32> is nullable, numeric format gone, minimum kept.
        assert_eq!(p["limit"]["type"], json!(["integer", "null"]));
        assert_eq!(p["limit"]["minimum"], 0);
        // serde(default) fields become nullable too.
        assert_eq!(p["tags"]["type"], json!(["array", "null"]));
        assert_eq!(p["count"]["type"], json!(["integer", "null"]));
        // Nested structs are inlined and closed.
        let inner = &p["inner"];
        assert_eq!(inner["type"], json!(["object", "null"]));
        assert_eq!(inner["required"], json!(["id", "note"]));
        assert_eq!(inner["properties"]["id"]["type"], "integer");
        assert_eq!(
            inner["properties"]["note"]["type"],
            json!(["string", "null"])
        );
        assert!(s.get("$defs").is_none(), "non-recursive types are inlined");
        // Enums keep their values, with null when optional.
        let sort = &p["sort"];
        assert!(accepts_null(sort));
        assert_eq!(sort["enum"], json!(["Asc", "Desc", null]));
        assert!(p["tags"].get("uniqueItems").is_none());
        // Documented variants: oneOf became anyOf.
        assert!(p["mode"].get("anyOf").is_some());
        // Known string formats survive.
        assert!(p["when"].to_string().contains("\"date\""));
        // Maps are closed like every object.
        assert_eq!(p["extra"]["additionalProperties"], json!(false));
    }

    #[test]
    fn recursive_types_keep_strict_defs() {
        let s = schema_for::<Node>();
        assert_strict(&s, "$");
        assert!(s.to_string().contains("$ref"));
    }

    #[test]
    fn unit_and_empty_args_are_empty_objects() {
        #[derive(Deserialize, JsonSchema)]
        /// Nothing needed.
        struct NoArgs {}
        let s = schema_for::<NoArgs>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["properties"], json!({}));
        assert_eq!(s["required"], json!([]));
        assert_eq!(s["additionalProperties"], json!(false));
        let s = schema_for::<()>();
        assert_eq!(s["type"], "object");
        assert_eq!(s["additionalProperties"], json!(false));
    }

    #[test]
    fn hand_written_schema_is_fixed() {
        let mut s = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "X",
            "type": "object",
            "properties": {
                "a": { "$ref": "#/$defs/A", "description": "an A" },
                "b": { "allOf": [{ "type": "object", "properties": { "c": { "type": "string", "minLength": 2 } } }] },
                "d": { "const": "fixed" },
                "e": { "type": "string", "enum": ["x", "y"], "default": "x" }
            },
            "required": ["b"],
            "$defs": { "A": { "type": "object", "properties": { "z": { "type": "number", "format": "double" } } } }
        });
        make_strict(&mut s);
        assert_strict(&s, "$");
        let p = &s["properties"];
        assert_eq!(
            p["a"],
            json!({ "description": "an A", "anyOf": [{ "$ref": "#/$defs/A" }, { "type": "null" }] })
        );
        assert_eq!(p["b"]["type"], "object");
        assert_eq!(p["b"]["required"], json!(["c"]));
        assert_eq!(p["d"]["anyOf"][1], json!({ "type": "null" }));
        assert_eq!(p["e"]["enum"], json!(["x", "y", null]));
        assert_eq!(s["$defs"]["A"]["required"], json!(["z"]));
    }
}
