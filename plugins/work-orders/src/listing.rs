//! The work order list the model sees, read straight from the backend's
//! answer: each field the summary keeps is borrowed as raw JSON text and
//! written back unchanged, and everything else is skipped, so no `Value`
//! tree is built for records the summary mostly throws away. In the host
//! this halved the guest's share of a `view_work_orders` call
//! (docs/performance.md).
//!
//! The output is the JSON value that `summarize` in `lib.rs` builds, keys in
//! the same (sorted) order. Kept fields are written as the backend wrote
//! them, where the `Value` path would normalise them: string escapes, number
//! spelling (`1E2`), integers beyond 64 bits (kept exact), and the layout of
//! an object or list in a kept field. The tests check that both paths give
//! the same JSON value. An answer is first checked as strictly as parsing it
//! into a `Value` would (nesting depth, number range, escapes), so what the
//! `Value` path refuses goes that way and is reported as a backend error.
//! Then one pass reads the page, its list and the fields of each record
//! together (it used to take three: the page, the list, each record).

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

#[derive(Serialize)]
pub struct Listing<'a> {
    pub items: Vec<Summary<'a>>,
    pub total: u64,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// One work order for the model; keys in sorted order, as `json!` writes them.
#[derive(Serialize)]
pub struct Summary<'a> {
    #[serde(borrow)]
    asset: Option<&'a RawValue>,
    code: Option<&'a RawValue>,
    #[serde(rename = "dueDate")]
    due_date: Option<&'a RawValue>,
    id: Option<&'a RawValue>,
    priority: Option<&'a RawValue>,
    status: Option<&'a RawValue>,
    title: Title<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Title<'a> {
    Given(&'a RawValue),
    Default(&'static str),
}

/// A present key keeps its raw value, `null` included (`Option<&RawValue>`
/// alone would turn `null` into an absent key).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkOrderIn<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    code: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    custom_id: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    title: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    description: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    priority: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    status: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    due_date: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    asset: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssetIn<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    custom_id: Option<&'a RawValue>,
}

/// The `Visitor` methods for every JSON scalar (booleans, numbers, strings,
/// `null`), each answering `$value`.
macro_rules! scalars_are {
    ($value:expr) => {
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The search answer as an object: its records are read in the same pass.
#[derive(Deserialize)]
struct PageIn<'a> {
    #[serde(default, borrow)]
    results: Option<Results<'a>>,
    #[serde(default, borrow, deserialize_with = "present")]
    total: Option<&'a RawValue>,
}

/// The `results` of an answer: a list of items, or any other value, which
/// holds no records.
enum Results<'a> {
    List(Vec<Item<'a>>),
    Other,
}

/// One element of the list: a work order (an object) or anything else,
/// which the summary skips.
enum Item<'a> {
    Record(WorkOrderIn<'a>),
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for Results<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ResultsVisitor)
    }
}

struct ResultsVisitor;

impl<'de> Visitor<'de> for ResultsVisitor {
    type Value = Results<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Results<'de>, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Item<'de>>()? {
            items.push(item);
        }
        Ok(Results::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Results<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Results::Other)
    }
    scalars_are!(Results::Other);
}

impl<'de: 'a, 'a> Deserialize<'de> for Item<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> Visitor<'de> for ItemVisitor {
    type Value = Item<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Item<'de>, A::Error> {
        WorkOrderIn::deserialize(MapAccessDeserializer::new(map)).map(Item::Record)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Item::Other)
    }
    scalars_are!(Item::Other);
}

/// Shown to the model: present, not `null` and not `""`.
fn text(v: Option<&RawValue>) -> Option<&RawValue> {
    v.filter(|r| !matches!(r.get(), "null" | "\"\""))
}

fn is_object(r: &RawValue) -> bool {
    r.get().starts_with('{')
}

fn summary<'a>(wo: &WorkOrderIn<'a>) -> Result<Summary<'a>, serde_json::Error> {
    let asset = match wo.asset {
        Some(a) if is_object(a) => {
            let a = serde_json::from_str::<AssetIn<'_>>(a.get())?;
            a.name.or(a.custom_id)
        }
        Some(a) if a.get() == "null" => None,
        other => other,
    };
    Ok(Summary {
        asset,
        code: text(wo.code).or(text(wo.custom_id)).or(wo.id),
        due_date: wo.due_date,
        id: wo.id,
        priority: wo.priority,
        status: wo.status,
        title: match text(wo.title).or(text(wo.description)) {
            Some(t) => Title::Given(t),
            None => Title::Default("Work order"),
        },
    })
}

/// Reads any JSON through `deserialize_any`, keeping nothing: serde_json
/// then applies the checks a `Value` gets (depth, number range, string
/// escapes), which raw and skipped values do not get.
struct Valid;

impl<'de> Deserialize<'de> for Valid {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Valid)
    }
}

impl<'de> Visitor<'de> for Valid {
    type Value = Valid;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    scalars_are!(Valid);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Valid, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
        Ok(Valid)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Valid, A::Error> {
        while map.next_entry::<Valid, Valid>()?.is_some() {}
        Ok(Valid)
    }
}

/// The first `limit` work orders of a search answer (a list, or an object
/// with `results` and `total`). `None` if the answer does not parse this way;
/// the caller then takes the `Value` path, which reports what is wrong.
pub fn summarize(answer: &str, limit: usize) -> Option<Listing<'_>> {
    serde_json::from_str::<Valid>(answer).ok()?;
    // One more pass reads the list and its records together.
    let (results, total): (Results<'_>, Option<u64>) = match answer.trim_start().as_bytes() {
        [b'[', ..] => (serde_json::from_str(answer).ok()?, None),
        [b'{', ..] => {
            let page: PageIn<'_> = serde_json::from_str(answer).ok()?;
            (
                page.results.unwrap_or(Results::Other),
                page.total.and_then(|t| t.get().parse().ok()),
            )
        }
        // Any other JSON value has no results.
        _ => (Results::Other, None),
    };
    let records = match &results {
        Results::List(items) => items.as_slice(),
        Results::Other => &[],
    };
    let items: Vec<Summary<'_>> = records
        .iter()
        .filter_map(|item| match item {
            Item::Record(wo) => Some(summary(wo)),
            Item::Other => None,
        })
        .take(limit)
        .collect::<Result<_, _>>()
        .ok()?;
    Some(Listing {
        total: total.unwrap_or(items.len() as u64),
        items,
        kind: "work_orders",
    })
}
