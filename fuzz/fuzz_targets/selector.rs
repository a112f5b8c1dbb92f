//! The selection (`scatter::select`): a JSON Pointer parsed once (`Selector::parse`), then the
//! number it finds in each backend body (`Selector::select`) and whether a reply counts
//! (`Selection::judge`).
//!
//! The input is a pointer, a newline, then a body (no newline: the pointer is `/price` and the
//! whole input is the body). Asserted, beyond "no panic":
//! - `select` returns only finite numbers, and the same bits with a fresh scratch, with a second
//!   one, and with one reused after a longer body, a shorter one and a broken one.
//! - It agrees with serde_json: for a valid pointer and a body serde_json reads, the number at
//!   `Value::pointer`, parsed from its literal with Rust's correctly rounded `str::parse`, or
//!   nothing when that is not a finite number.
//! - `judge` counts only status 200, that number, and never one worse than the floor.
#![no_main]

use libfuzzer_sys::fuzz_target;
use splitter_fuzz::Rng;
use splitter_user::http1::response::Coding;
use splitter_user::scatter::exchange::Reply;
use splitter_user::scatter::select::{Prefer, Scratch, Selection, Selector};

/// A whole reply of `status` with `body`, not encoded.
struct Plain<'b>(u16, &'b [u8]);

impl Reply for Plain<'_> {
    fn status(&self) -> u16 {
        self.0
    }
    fn body(&self) -> &[u8] {
        self.1
    }
    fn coding(&self) -> Coding {
        Coding::Identity
    }
}

fuzz_target!(|input: &[u8]| {
    let (pointer, body) = match input.iter().position(|&b| b == b'\n') {
        Some(at) => (String::from_utf8_lossy(&input[..at]), &input[at + 1..]),
        None => ("/price".into(), input),
    };
    let Ok(selector) = Selector::parse(&pointer) else {
        return;
    };
    let bits = |found: Option<f64>| found.map(f64::to_bits);

    let mut one = Scratch::default();
    let found = selector.select(body, Prefer::Max, &mut one);
    assert!(found.is_none_or(f64::is_finite), "{found:?}");
    let mut other = Scratch::default();
    assert_eq!(
        bits(selector.select(body, Prefer::Max, &mut other)),
        bits(found),
        "second scratch"
    );
    // Reuse after bodies that leave different leftovers: longer, shorter, not JSON.
    let mut longer = body.to_vec();
    longer.extend_from_slice(b" [1, {\"price\": 2.5}, \"\\u00e9\"]   ");
    selector.select(&longer, Prefer::Max, &mut one);
    assert_eq!(
        bits(selector.select(body, Prefer::Max, &mut one)),
        bits(found),
        "after a longer body"
    );
    selector.select(&body[..body.len() / 2], Prefer::Max, &mut other);
    selector.select(b"{\"price\": [1, 2", Prefer::Max, &mut other);
    assert_eq!(
        bits(selector.select(body, Prefer::Max, &mut other)),
        bits(found),
        "after a shorter body"
    );

    check_against_serde_json(&pointer, body, found);
    check_judge(selector, body, found, &mut Rng::new(input, 4), &mut one);
});

fn check_against_serde_json(pointer: &str, body: &[u8], found: Option<f64>) {
    // A `*` segment is kept out of the comparison: a wildcard would select among several values,
    // where `Value::pointer` reads one member literally named `*`.
    if pointer.split('/').any(|segment| segment == "*") {
        return;
    }
    // Bodies serde_json refuses are left out: strings with lone surrogates and nesting deeper
    // than its 128 levels, as well as invalid JSON, which the product refuses too (the unit
    // tests hold that).
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return;
    };
    // Duplicate member names are compared too: both sides let the last one win.
    let expected = value
        .pointer(pointer)
        .and_then(serde_json::Value::as_number)
        .map(|number| {
            let literal = number.to_string();
            literal
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{literal}: {e}"))
        })
        // The product refuses numbers beyond f64's range rather than ranking an infinity.
        .filter(|number| number.is_finite());
    // `==`, not bits: `-0` may come out as 0.0 on one side and -0.0 on the other, the same price.
    assert!(
        found == expected,
        "select {found:?}, serde_json {expected:?} for {pointer:?} in {:?}",
        String::from_utf8_lossy(body)
    );
}

fn check_judge(
    selector: Selector,
    body: &[u8],
    found: Option<f64>,
    rng: &mut Rng,
    scratch: &mut Scratch,
) {
    let prefer = if rng.below(2) == 0 {
        Prefer::Max
    } else {
        Prefer::Min
    };
    let floor = match rng.below(3) {
        0 => None,
        // Near the number found, so that both sides of the floor are met.
        1 => found.map(|n| n + (rng.below(3) as f64 - 1.0)),
        _ => Some(rng.below(100) as f64 - 50.0),
    };
    // The best number by this `prefer` (with `*`, the max and the min differ).
    let found = selector.select(body, prefer, scratch);
    let selection = Selection {
        selector,
        prefer,
        max_decoded: 1 << 20,
    };
    for status in [199, 201, 204, 404, 500] {
        assert_eq!(
            selection.judge(&Plain(status, body), floor, scratch).ok(),
            None,
            "status {status}"
        );
    }
    let judged = selection.judge(&Plain(200, body), floor, scratch).ok();
    match judged {
        Some(value) => {
            assert_eq!(Some(value), found);
            assert!(value.is_finite());
            assert!(
                floor.is_none_or(|floor| !prefer.is_better(floor, value)),
                "below the floor"
            );
        }
        None => assert!(
            found.is_none() || floor.is_some_and(|floor| prefer.is_better(floor, found.unwrap())),
            "valid {found:?} not counted, floor {floor:?}"
        ),
    }
}
