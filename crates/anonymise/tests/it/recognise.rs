//! Properties of the US SSN recogniser: every number SSA can assign, written with separators, is
//! found exactly where it is in any surrounding text that does not glue letters or digits to it;
//! numbers SSA cannot assign, unseparated numbers without a context word, and numbers inside
//! words, e-mail addresses, longer numbers and phone numbers are never found.

use std::sync::LazyLock;

use proptest::prelude::*;
use proptest::sample::select;
use tutela_anonymise::{Pack, Recogniser};

/// Characters that never touch a number as part of a word: whatever is around them.
const NON_GLUE: &[char] = &[
    ' ', ',', '.', ';', ':', '!', '?', '(', ')', '[', ']', '"', '\'', '\n', '\t', '@', '#', '/',
    '-', '+', '=', '*', '…', '«', '»', '—',
];

/// Letters and digits: glue.
const GLUE: &[char] = &[
    'a', 'b', 'e', 'k', 'q', 'x', 'z', 'A', 'G', 'N', 'Z', 'é', 'ß', 'Ж', '_', '0', '1', '5', '9',
];

fn text_of(alphabet: Vec<char>, len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(select(alphabet), len).prop_map(|c| c.into_iter().collect())
}

/// Any text: letters (context words included now and then), digits, punctuation, spaces.
fn any_text() -> impl Strategy<Value = String> {
    let mut alphabet: Vec<char> = NON_GLUE.to_vec();
    alphabet.extend(GLUE);
    alphabet.extend(['s', 'S', 'n', 'N', '-', ' ', '2', '3']);
    prop_oneof![
        text_of(alphabet, 0..40),
        Just("SSN ".to_owned()),
        Just("social security number 078-05-1120 and ".to_owned()),
    ]
}

/// Text before a number that does not glue to it: empty, or ending in a non-glue character.
fn before() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (any_text(), select(NON_GLUE)).prop_map(|(t, c)| format!("{t}{c}")),
    ]
}

/// Text after a number that does not glue to it: empty, or starting with a non-glue character.
fn after() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        (select(NON_GLUE), any_text()).prop_map(|(c, t)| format!("{c}{t}")),
    ]
}

/// (area, group, serial) SSA can assign.
fn assignable() -> impl Strategy<Value = (u32, u32, u32)> {
    (
        (1u32..=899).prop_filter("666 is never assigned", |a| *a != 666),
        1u32..=99,
        1u32..=9999,
    )
}

/// (area, group, serial) of the right shape that SSA never assigns.
fn unassignable() -> impl Strategy<Value = (u32, u32, u32)> {
    prop_oneof![
        (
            prop_oneof![Just(0u32), Just(666), 900u32..=999],
            0u32..=99,
            0u32..=9999
        ),
        (0u32..=999, Just(0u32), 0u32..=9999),
        (0u32..=999, 0u32..=99, Just(0u32)),
    ]
}

fn separated((area, group, serial): (u32, u32, u32), sep: char) -> String {
    format!("{area:03}{sep}{group:02}{sep}{serial:04}")
}

fn unseparated((area, group, serial): (u32, u32, u32)) -> String {
    format!("{area:03}{group:02}{serial:04}")
}

/// Built once: compiling the expressions costs far more than a case.
static SSN: LazyLock<Recogniser> = LazyLock::new(|| Recogniser::us_ssn().unwrap());
static PACK: LazyLock<Pack> = LazyLock::new(|| {
    Pack::new(vec![SSN.clone(), Recogniser::pattern("x", "x+").unwrap()]).unwrap()
});

fn spans(text: &str) -> Vec<std::ops::Range<usize>> {
    SSN.find_iter(text).collect()
}

/// One phone number in a common national or international format.
fn phone() -> impl Strategy<Value = String> {
    let d = |n: usize| text_of(('0'..='9').collect(), n..n + 1);
    prop_oneof![
        (d(2), d(4), d(4)).prop_map(|(a, b, c)| format!("0{a} {b} {c}")),
        (d(2), d(4), d(4)).prop_map(|(a, b, c)| format!("+44 {a} {b} {c}")),
        (d(3), d(6)).prop_map(|(a, b)| format!("07{a} {b}")),
        (d(3), d(3), d(4)).prop_map(|(a, b, c)| format!("({a}) {b}-{c}")),
        (d(3), d(3), d(4)).prop_map(|(a, b, c)| format!("{a}-{b}-{c}")),
        (d(3), d(3), d(4)).prop_map(|(a, b, c)| format!("+1 {a} {b} {c}")),
        (d(3), d(3), d(4)).prop_map(|(a, b, c)| format!("{a}.{b}.{c}")),
        (d(2), d(2), d(2), d(2)).prop_map(|(a, b, c, e)| format!("+33 6 {a} {b} {c} {e}")),
        d(10),
        d(11).prop_map(|n| format!("+{n}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_assignable_separated_number_is_found_exactly_where_it_is(
        number in assignable(),
        sep in select(vec!['-', ' ']),
        before in before(),
        after in after(),
    ) {
        let written = separated(number, sep);
        let text = format!("{before}{written}{after}");
        let at = before.len()..before.len() + written.len();
        prop_assert!(spans(&text).contains(&at), "{text:?}: {:?}", spans(&text));
        prop_assert!(PACK.find(&text).iter().any(|f| f.recogniser == 0 && f.span == at));
    }

    #[test]
    fn an_assignable_unseparated_number_is_found_beside_its_context_word(
        number in assignable(),
        word in select(vec!["SSN", "ssn:", "Social Security No.", "soc. sec.", "SS#", "S.S.N."]),
        gap in text_of(vec![' ', ':', '(', ')', '-', '#', '\n'], 0..6),
        first in any::<bool>(),
        before in before(),
        after in after(),
    ) {
        let n = unseparated(number);
        let (text, at) = if first {
            let head = format!("{before}{word}{gap} ");
            (format!("{head}{n}{after}"), head.len()..head.len() + 9)
        } else {
            (format!("{before}{n} {gap}{word}{after}"), before.len()..before.len() + 9)
        };
        prop_assert!(spans(&text).contains(&at), "{text:?}: {:?}", spans(&text));
    }

    #[test]
    fn numbers_ssa_never_assigns_are_not_found_even_beside_a_context_word(
        number in unassignable(),
        form in 0..3u8,
        around in text_of(NON_GLUE.to_vec(), 0..4),
    ) {
        let n = match form {
            0 => separated(number, '-'),
            1 => separated(number, ' '),
            _ => unseparated(number),
        };
        let text = format!("SSN{around} {n}{around}");
        prop_assert!(spans(&text).is_empty(), "{text:?}");
    }

    #[test]
    fn an_unseparated_number_without_a_context_word_is_not_found(
        number in assignable(),
        // No `s`: no context word can be formed; no digits: no other number either.
        before in text_of(NON_GLUE.iter().copied().chain("abcNoqrtxyzCompany".chars()).filter(|c| !c.is_ascii_digit()).collect(), 0..30),
        after in text_of(NON_GLUE.iter().copied().chain("eilmnop".chars()).collect(), 0..30),
    ) {
        let text = format!("{before} {} {after}", unseparated(number));
        prop_assert!(spans(&text).is_empty(), "{text:?}");
    }

    #[test]
    fn a_number_inside_a_word_an_address_or_a_longer_number_is_not_found(
        number in assignable(),
        sep in select(vec!['-', ' ', '\0']),
        glue_before in text_of(GLUE.to_vec(), 0..4),
        glue_after in text_of(GLUE.to_vec(), 0..4),
        shape in 0..3u8,
    ) {
        prop_assume!(!glue_before.is_empty() || !glue_after.is_empty());
        let n = if sep == '\0' { unseparated(number) } else { separated(number, sep) };
        let text = match shape {
            0 => format!("SSN {glue_before}{n}{glue_after} here"),
            1 => format!("mail SSN {glue_before}x{n}{glue_after}@example.org"),
            _ => format!("ssn #{glue_before}{n}{glue_after}"),
        };
        prop_assert!(spans(&text).is_empty(), "{text:?}");
    }

    #[test]
    fn phone_numbers_are_not_found(
        phone in phone(),
        // No `s`: no context word can be formed, which would make a ten-digit run no SSN anyway.
        words in text_of(NON_GLUE.iter().copied().chain("abcdefghijklmnopqrtuvwxyz".chars()).collect(), 0..20),
    ) {
        let text = format!("{words} call {phone}, {words}");
        prop_assert!(spans(&text).is_empty(), "{text:?}");
    }
}
