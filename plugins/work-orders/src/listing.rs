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
//! the same JSON value. Every value, kept or skipped, is checked as strictly
//! as parsing it into a `Value` would check it (nesting depth, number range,
//! escapes), so what the `Value` path refuses goes that way and is reported
//! as a backend error. One pass reads the page, its list and the fields of
//! each record and checks them together (it used to take four: a check of
//! the whole answer, then the page, the list, each record).

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
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

/// One record's fields, each kept as it was written (`null` included).
#[derive(Default)]
struct WorkOrderIn<'a> {
    id: Option<&'a RawValue>,
    code: Option<&'a RawValue>,
    custom_id: Option<&'a RawValue>,
    title: Option<&'a RawValue>,
    description: Option<&'a RawValue>,
    priority: Option<&'a RawValue>,
    status: Option<&'a RawValue>,
    due_date: Option<&'a RawValue>,
    asset: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RecordKey {
    Id,
    Code,
    CustomId,
    Title,
    Description,
    Priority,
    Status,
    DueDate,
    Asset,
    #[serde(other)]
    Other,
}

/// Reads a record's map, which `ItemVisitor` has already opened.
struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = WorkOrderIn<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a work order object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WorkOrderIn<'de>, A::Error> {
        let mut wo = WorkOrderIn::default();
        while let Some(key) = map.next_key::<RecordKey>()? {
            let slot = match key {
                RecordKey::Id => &mut wo.id,
                RecordKey::Code => &mut wo.code,
                RecordKey::CustomId => &mut wo.custom_id,
                RecordKey::Title => &mut wo.title,
                RecordKey::Description => &mut wo.description,
                RecordKey::Priority => &mut wo.priority,
                RecordKey::Status => &mut wo.status,
                RecordKey::DueDate => &mut wo.due_date,
                RecordKey::Asset => &mut wo.asset,
                RecordKey::Other => {
                    map.next_value::<Valid>()?;
                    continue;
                }
            };
            keep_once(slot, &mut map)?;
        }
        Ok(wo)
    }
}

/// Reads a kept field's value into `slot`. A repeated key is refused, as
/// serde's derived structs refuse it (a `Value` keeps the last one): the
/// caller then takes the `Value` path.
fn keep_once<'de, A: MapAccess<'de>>(
    slot: &mut Option<&'de RawValue>,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(serde::de::Error::custom("repeated key"));
    }
    *slot = Some(map.next_value::<Kept<'de>>()?.0);
    Ok(())
}

/// A kept value, checked as a `Value` would check it. Raw values are only
/// checked for syntax by serde_json, so the text is read once more through
/// `Valid`; it is small (a scalar, or the asset). Nesting is judged apart:
/// the check starts at depth 0 where the value sits a few levels down, so a
/// container with more than `KEPT_BRACKETS` brackets in its text is refused
/// here (the `Value` path then judges it), which is never near the limit.
struct Kept<'a>(&'a RawValue);

/// Far below serde_json's nesting limit (128) less the depth of any kept
/// value in an answer (at most 3).
const KEPT_BRACKETS: usize = 64;

impl<'de: 'a, 'a> Deserialize<'de> for Kept<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&RawValue>::deserialize(d)?;
        let text = raw.get();
        if plainly_valid(text) {
            return Ok(Kept(raw));
        }
        if matches!(text.as_bytes().first(), Some(b'{' | b'['))
            && text.bytes().filter(|b| matches!(b, b'{' | b'[')).count() > KEPT_BRACKETS
        {
            return Err(serde::de::Error::custom("nested too deep to keep"));
        }
        serde_json::from_str::<Valid>(text).map_err(serde::de::Error::custom)?;
        Ok(Kept(raw))
    }
}

/// Raw JSON (already read as such) that a `Value` takes without a second
/// look: a string with no escape, a literal, an integer of at most 18
/// digits. Most kept fields are one of these.
fn plainly_valid(text: &str) -> bool {
    match text.as_bytes() {
        [b'"', rest @ ..] => !rest.contains(&b'\\'),
        b"null" | b"true" | b"false" => true,
        [b'-', digits @ ..] | digits => {
            !digits.is_empty() && digits.len() <= 18 && digits.iter().all(u8::is_ascii_digit)
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AssetIn<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    name: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "present")]
    custom_id: Option<&'a RawValue>,
}

/// A present key keeps its raw value, `null` included (`Option<&RawValue>`
/// alone would turn `null` into an absent key).
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
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
struct PageIn<'a> {
    results: Option<Results<'a>>,
    total: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum PageKey {
    Results,
    Total,
    #[serde(other)]
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for PageIn<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(PageVisitor)
    }
}

struct PageVisitor;

impl<'de> Visitor<'de> for PageVisitor {
    type Value = PageIn<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a search page")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PageIn<'de>, A::Error> {
        let mut page = PageIn {
            results: None,
            total: None,
        };
        while let Some(key) = map.next_key::<PageKey>()? {
            match key {
                PageKey::Results if page.results.is_none() => {
                    page.results = Some(map.next_value()?);
                }
                PageKey::Total => keep_once(&mut page.total, &mut map)?,
                PageKey::Other => {
                    map.next_value::<Valid>()?;
                }
                PageKey::Results => return Err(serde::de::Error::custom("repeated key")),
            }
        }
        Ok(page)
    }
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
        while map.next_entry::<Valid, Valid>()?.is_some() {}
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
        RecordVisitor.visit_map(map).map(Item::Record)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Item<'de>, A::Error> {
        while seq.next_element::<Valid>()?.is_some() {}
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
/// escapes), which `IgnoredAny` and raw values do not get. Every value the
/// listing skips is read this way.
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
        _ => {
            serde_json::from_str::<Valid>(answer).ok()?;
            (Results::Other, None)
        }
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
