//! Answer policy: mask secrets and card numbers before an answer reaches the
//! user. Bearer tokens, JWT-like strings, API keys (`sk-...`) and
//! Luhn-valid card numbers are replaced; an answer with none passes as is.
//!
//! Hand-written scanners rather than a regex engine keep the plugin small.

use atlas_agent_sdk::prelude::*;

/// The `[config]` table of `answer-guard.policy.toml`.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Mask `Bearer <token>` and JWT-like strings.
    pub mask_tokens: bool,
    /// Mask API keys starting with one of `key_prefixes`.
    pub mask_api_keys: bool,
    /// Mask Luhn-valid card numbers (13-19 digits, spaces or dashes allowed).
    pub mask_cards: bool,
    /// Prefixes that start an API key.
    pub key_prefixes: Vec<String>,
    /// Characters after the prefix for it to count as a key.
    pub min_key_chars: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mask_tokens: true,
            mask_api_keys: true,
            mask_cards: true,
            key_prefixes: vec!["sk-".into()],
            min_key_chars: 16,
        }
    }
}

pub const TOKEN_MASK: &str = "[REDACTED TOKEN]";
pub const KEY_MASK: &str = "[REDACTED KEY]";

/// Replace the byte ranges `spans` (sorted, non-overlapping) of `text`;
/// `None` when there are none, so an answer without secrets is not copied.
fn replace_spans(text: &str, spans: &[(usize, usize, String)]) -> Option<String> {
    if spans.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end, with) in spans {
        out.push_str(&text[at..*start]);
        out.push_str(with);
        at = *end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// Finds where a needle occurs in a text from a given position on. Case
/// sensitive needles use `memchr`'s substring search (a vector scan for the
/// needle's rarest bytes); `bearer`, matched in any case, scans for either
/// case of its first letter and compares the window.
struct Finder<'n> {
    needle: &'n [u8],
    /// The substring searcher, for a case-sensitive needle.
    exact: Option<memchr::memmem::Finder<'n>>,
}

impl<'n> Finder<'n> {
    /// `needle` must not be empty.
    fn new(needle: &'n [u8], any_case: bool) -> Self {
        debug_assert!(!needle.is_empty());
        Finder {
            needle,
            exact: (!any_case).then(|| memchr::memmem::Finder::new(needle)),
        }
    }

    /// Where the needle next starts in `hay` at or after `from`.
    fn find(&self, hay: &[u8], mut from: usize) -> Option<usize> {
        if let Some(exact) = &self.exact {
            return Some(from + exact.find(hay.get(from..)?)?);
        }
        let first = self.needle[0];
        let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
        loop {
            let i = from + memchr::memchr2(lower, upper, hay.get(from..)?)?;
            if hay
                .get(i..i + self.needle.len())?
                .eq_ignore_ascii_case(self.needle)
            {
                return Some(i);
            }
            from = i + 1;
        }
    }
}

/// Whether the byte before `i` ends a word (so a match starting at `i` is a
/// whole word, not the tail of something longer).
fn at_word_start(text: &str, i: usize) -> bool {
    text[..i]
        .chars()
        .next_back()
        .is_none_or(|c| !c.is_alphanumeric() && c != '_' && c != '-')
}

fn token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b'+' | b'/' | b'=')
}

fn b64url_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_')
}

/// `Bearer <token>` (any case): the token is masked, the word kept.
fn mask_bearer(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let finder = Finder::new(b"bearer", true);
    let mut from = 0;
    while let Some(start) = finder.find(bytes, from) {
        from = start + 6;
        if !at_word_start(text, start) {
            continue;
        }
        let mut i = from;
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b'\t' || bytes[i] == b':') {
            i += 1;
        }
        let token_start = i;
        while i < bytes.len() && token_char(bytes[i]) {
            i += 1;
        }
        // At least one separator after the word, and a token worth the name.
        if token_start > from && i - token_start >= 8 {
            spans.push((token_start, i, TOKEN_MASK.to_owned()));
            from = i;
        }
    }
    replace_spans(text, &spans)
}

/// `eyJ<header>.<payload>.<signature>`: base64url JSON header, the usual JWT shape.
fn mask_jwts(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let finder = Finder::new(b"eyJ", false);
    let mut from = 0;
    while let Some(start) = finder.find(bytes, from) {
        from = start + 3;
        if !at_word_start(text, start) {
            continue;
        }
        // Three base64url segments; the signature may be empty (`alg: none`).
        let mut i = start;
        let mut lengths = Vec::new();
        loop {
            let seg = i;
            while i < bytes.len() && b64url_char(bytes[i]) {
                i += 1;
            }
            lengths.push(i - seg);
            if lengths.len() == 3 || i >= bytes.len() || bytes[i] != b'.' {
                break;
            }
            i += 1;
        }
        if lengths.len() == 3 && lengths[0] >= 10 && lengths[1] >= 2 {
            spans.push((start, i, TOKEN_MASK.to_owned()));
            from = i;
        }
    }
    replace_spans(text, &spans)
}

/// API keys: a configured prefix at a word start followed by enough key characters.
fn mask_keys(text: &str, prefixes: &[String], min_chars: usize) -> Option<String> {
    let bytes = text.as_bytes();
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    for prefix in prefixes.iter().filter(|p| !p.is_empty()) {
        let finder = Finder::new(prefix.as_bytes(), false);
        let mut from = 0;
        while let Some(start) = finder.find(bytes, from) {
            from = start + prefix.len();
            if !at_word_start(text, start) {
                continue;
            }
            let mut i = from;
            while i < bytes.len() && b64url_char(bytes[i]) {
                i += 1;
            }
            let overlaps = spans.iter().any(|(s, e, _)| start < *e && *s < i);
            if i - from >= min_chars.max(1) && !overlaps {
                spans.push((start, i, KEY_MASK.to_owned()));
                from = i;
            }
        }
    }
    spans.sort_by_key(|s| s.0);
    replace_spans(text, &spans)
}

/// Luhn checksum over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d - b'0');
            if !i.is_multiple_of(2) {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Card numbers: runs of digit groups joined by single spaces or dashes. In
/// each run, the longest Luhn-valid stretch of whole groups with 13-19 digits
/// is masked, keeping the last four digits.
fn mask_cards(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    // The digit groups of the run at hand: (start, end) of each. One vector
    // for all runs, so dates, times and ids (most runs) cost no allocation.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while let Some(next) = bytes[i..].iter().position(u8::is_ascii_digit) {
        i += next;
        if !at_word_start(text, i) {
            i += 1;
            continue;
        }
        groups.clear();
        let mut total = 0;
        let mut j = i;
        loop {
            let start = j;
            while j < bytes.len() && bytes[j].is_ascii_digit() {
                j += 1;
            }
            groups.push((start, j));
            total += j - start;
            let joined = j + 1 < bytes.len()
                && matches!(bytes[j], b' ' | b'-')
                && bytes[j + 1].is_ascii_digit();
            if !joined {
                break;
            }
            j += 1;
        }
        // Shorter than any card.
        if total < 13 {
            i = j;
            continue;
        }
        // A run glued to letters (an id like `ABC1234567890123`) is not a card.
        let ends_word = text[j..]
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric());
        let mut g = 0;
        while ends_word && g < groups.len() {
            let mut digits = Vec::new();
            let mut best = None;
            for (k, (s, e)) in groups.iter().enumerate().skip(g) {
                digits.extend_from_slice(&bytes[*s..*e]);
                if digits.len() > 19 {
                    break;
                }
                if digits.len() >= 13 && luhn_valid(&digits) {
                    best = Some((k, digits.clone()));
                }
            }
            match best {
                Some((k, digits)) => {
                    let last4 = String::from_utf8_lossy(&digits[digits.len() - 4..]).into_owned();
                    spans.push((
                        groups[g].0,
                        groups[k].1,
                        format!("[REDACTED CARD ending {last4}]"),
                    ));
                    g = k + 1;
                }
                None => g += 1,
            }
        }
        i = j.max(i + 1);
    }
    replace_spans(text, &spans)
}

/// `answer` with everything the config asks for masked.
pub fn mask(answer: &str, config: &Config) -> String {
    masked(answer, config).unwrap_or_else(|| answer.to_owned())
}

/// `answer` masked as the config asks, or `None` if nothing was masked.
fn masked(answer: &str, config: &Config) -> Option<String> {
    let mut out: Option<String> = None;
    let mut step = |f: &dyn Fn(&str) -> Option<String>| {
        if let Some(next) = f(out.as_deref().unwrap_or(answer)) {
            out = Some(next);
        }
    };
    if config.mask_tokens {
        step(&mask_bearer);
        step(&mask_jwts);
    }
    if config.mask_api_keys {
        step(&|t| mask_keys(t, &config.key_prefixes, config.min_key_chars));
    }
    if config.mask_cards {
        step(&mask_cards);
    }
    out
}

pub struct AnswerGuard;

impl Policy for AnswerGuard {
    fn hooks(&self) -> &'static [Hook] {
        &[Hook::Answer]
    }

    fn check_answer(&self, ctx: &Context, answer: &str) -> Decision {
        let config: Config = match ctx.config() {
            Ok(c) => c,
            // Fail closed: without a valid config the answer cannot be checked.
            Err(e) => {
                return Decision::deny(format!("answer guard is misconfigured: {}", e.message()));
            }
        };
        match masked(answer, &config) {
            Some(text) if text != answer => {
                log::info("masked sensitive content in an answer");
                Decision::Rewrite(text)
            }
            _ => Decision::Allow,
        }
    }
}

atlas_agent_sdk::export_policy!(AnswerGuard);

#[cfg(test)]
mod tests;
