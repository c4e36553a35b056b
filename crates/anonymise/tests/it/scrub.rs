//! The survey scrubber: recall and precision per kind on the generated labelled corpus, each
//! recogniser's edge cases, and properties over arbitrary text.

use std::sync::LazyLock;

use proptest::prelude::*;
use tutela_anonymise::corpus;
use tutela_anonymise::{EntityKind, Risk, Scrubber};

const KNOWN: &[&str] = &[
    "José Álvarez",
    "Siobhán Ó Briain",
    "Will Hope",
    "Grace May",
    "Anna de Vries",
    "Mark Okonkwo-Hart",
    "Zoë Łukasiewicz",
    "Li Wei",
];

static SCRUBBER: LazyLock<Scrubber> = LazyLock::new(|| Scrubber::new(KNOWN).unwrap());

fn scrub(text: &str) -> String {
    SCRUBBER.scrub(text).text
}

fn kinds(text: &str) -> Vec<EntityKind> {
    SCRUBBER.scrub(text).hits.iter().map(|h| h.kind).collect()
}

#[test]
fn recall_and_precision_on_the_generated_corpus() {
    let corpus = corpus::generate(0x7e57, 400_000);
    let scrubber = Scrubber::new(&corpus.known_names).unwrap();
    let eval = corpus::evaluate(&scrubber, &corpus.comments);
    println!("{eval}");
    for (kind, tally) in &eval.kinds {
        assert!(tally.labels > 50, "{kind}: only {} labels", tally.labels);
        let recall = if *kind == EntityKind::Name {
            0.95
        } else {
            0.98
        };
        assert!(
            tally.recall() >= recall,
            "{kind}: recall {}",
            tally.recall()
        );
        assert!(
            tally.precision() >= 0.95,
            "{kind}: precision {}",
            tally.precision()
        );
    }
}

#[test]
fn placeholders_and_stable_names() {
    for kind in EntityKind::ALL {
        let p = kind.placeholder();
        assert!(p.starts_with('[') && p.ends_with(']'));
        assert_eq!(kind.to_string(), kind.as_str());
    }
    assert_eq!(EntityKind::NhsNumber.as_str(), "nhs_number");
    assert_eq!(
        scrub("Mail jose@example.org or call 07700 900123."),
        "Mail [EMAIL] or call [PHONE]."
    );
}

#[test]
fn debug_never_prints_the_text_or_the_names() {
    let scrubbed = SCRUBBER.scrub("My friend José, my number 07700 900123 @me");
    let debug = format!("{scrubbed:?} {:?}", *SCRUBBER);
    assert!(debug.contains("[redacted]"));
    for secret in ["José", "friend", "0770", "Álvarez", "PHONE"] {
        assert!(!debug.contains(secret), "{debug}");
    }
}

#[test]
fn emails_urls_and_handles_overlap_longest_first() {
    assert_eq!(
        scrub("write to a.b+c@mail.example.co.uk."),
        "write to [EMAIL]."
    );
    assert_eq!(
        scrub("see https://example.org/u?mail=a@b.com, thanks"),
        "see [URL], thanks"
    );
    assert_eq!(scrub("(www.example.com/path)"), "([URL])");
    assert_eq!(scrub("follow @jose_99!"), "follow [HANDLE]!");
    assert_eq!(scrub("meet @10am"), "meet @10am");
    assert_eq!(kinds("x jose@example.org"), [EntityKind::Email]);
}

#[test]
fn phones_in_uk_us_and_international_formats() {
    for phone in [
        "07700 900123",
        "07700900123",
        "020 7946 0958",
        "(020) 7946 0958",
        "+44 7700 900123",
        "+44 (0)20 7946 0958",
        "(212) 555-1234",
        "212-555-1234",
        "212.555.1234",
        "+1 212 555 1234",
        "+1 (212) 555-1234",
        "+33 6 12 34 56 78",
        "+49 30 1234567",
    ] {
        assert_eq!(
            scrub(&format!("call {phone} now")),
            "call [PHONE] now",
            "{phone}"
        );
    }
    for not in [
        "12/03/2026",
        "2026-11-24",
        "10:30:00",
        "£1,250.00",
        "order 12345",
        "pages 10-120",
    ] {
        assert_eq!(kinds(not), [], "{not}");
    }
}

#[test]
fn postcodes_and_ninos_by_allocation_rules() {
    for ok in [
        "SW1A 1AA", "M1 1AE", "B33 8TH", "CR2 6XH", "DN55 1PT", "EC1A1BB", "sw1a 1aa",
    ] {
        assert_eq!(kinds(&format!("at {ok}.")), [EntityKind::Postcode], "{ok}");
    }
    // Q first, I second, C/I/K/M/O/V in the inward letters, lower case without a space.
    for bad in ["Q1 2AB", "AI1 2AB", "SW1 2CA", "sw1a1aa", "CS101 AB"] {
        assert!(!kinds(bad).contains(&EntityKind::Postcode), "{bad}");
    }
    for ok in ["AB 12 34 56 C", "AB123456C", "ab123456c"] {
        assert_eq!(kinds(&format!("NI {ok}")), [EntityKind::Nino], "{ok}");
    }
    for bad in [
        "DA123456C",
        "AO123456C",
        "GB123456C",
        "AB123456E",
        "XAB123456C",
    ] {
        assert_eq!(kinds(bad), [], "{bad}");
    }
}

#[test]
fn nhs_numbers_need_their_check_digit_and_their_shape_or_context() {
    // 943 476 5919 is the NHS's own example of a valid number.
    assert_eq!(kinds("ref 943 476 5919."), [EntityKind::NhsNumber]);
    assert_eq!(kinds("ref 943-476-5919."), [EntityKind::NhsNumber]);
    assert_eq!(kinds("NHS number: 9434765919"), [EntityKind::NhsNumber]);
    assert_eq!(kinds("9434765919 (nhs)"), [EntityKind::NhsNumber]);
    // A wrong check digit, an unseparated run without "NHS", mixed separators.
    assert!(!kinds("NHS 943 476 5918").contains(&EntityKind::NhsNumber));
    assert_eq!(kinds("order 9434765919"), []);
    assert!(!kinds("ref 943 476-5919").contains(&EntityKind::NhsNumber));
}

#[test]
fn ssns_are_the_guards_recogniser() {
    assert_eq!(scrub("SSN 078-05-1120."), "SSN [SSN].");
    assert_eq!(scrub("my ssn: 123456789"), "my ssn: [SSN]");
    assert_eq!(kinds("666-12-3456"), []);
    assert_eq!(kinds("Company no. 123456789"), []);
}

#[test]
fn cards_need_luhn_and_ibans_mod_97() {
    for card in [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "3782 822463 10005",
        "5555555555554444",
    ] {
        assert_eq!(scrub(&format!("card {card}.")), "card [CARD].", "{card}");
    }
    assert_eq!(kinds("card 4111 1111 1111 1112"), []);
    // A year after the number is not swallowed.
    assert_eq!(scrub("card 4111 1111 1111 1111 2026"), "card [CARD] 2026");
    for iban in [
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "DE89 3704 0044 0532 0130 00",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 00",
    ] {
        assert_eq!(
            scrub(&format!("IBAN {iban}, ok")),
            "IBAN [IBAN], ok",
            "{iban}"
        );
    }
    assert_eq!(kinds("GB82 WEST 1234 5698 7654 33"), []);
}

#[test]
fn ip_addresses_but_not_versions_or_times() {
    assert_eq!(scrub("host 192.168.0.12."), "host [IP].");
    assert_eq!(scrub("at 2001:db8::8a2e:370:7334 today"), "at [IP] today");
    assert_eq!(scrub("fe80:0:0:0:202:b3ff:fe1e:8329"), "[IP]");
    assert_eq!(kinds("256.1.1.1"), []);
    assert_eq!(kinds("version 1.2.3"), []);
    assert_eq!(kinds("from 10:30:00 to 11:45"), []);
}

#[test]
fn known_names_ignore_case_and_diacritics_on_word_boundaries() {
    for text in [
        "Thanks to José Álvarez!",
        "Thanks to jose alvarez!",
        "Thanks to JOSE ALVAREZ!",
        "Thanks to Jose\u{301} A\u{301}lvarez!",
    ] {
        assert_eq!(scrub(text), "Thanks to [NAME]!", "{text}");
    }
    assert_eq!(scrub("Thanks to Alvarez."), "Thanks to [NAME].");
    assert_eq!(scrub("thanks to alvarez."), "thanks to [NAME].");
    assert_eq!(scrub("Alvarezes and Joséphine"), "Alvarezes and Joséphine");
    assert_eq!(scrub("Zoë Łukasiewicz, zoe lukasiewicz"), "[NAME], [NAME]");
    assert_eq!(scrub("Ask Siobhán Ó Briain"), "Ask [NAME]");
    assert_eq!(scrub("met de Vries"), "met [NAME]");
    assert_eq!(
        scrub("Mark Okonkwo-Hart, Okonkwo and a hart"),
        "[NAME], [NAME] and a hart"
    );
}

#[test]
fn common_words_are_names_only_when_written_as_names() {
    // Lower case, sentence start, capitals alone: words.
    assert_eq!(
        scrub("I hope you will come, may I say"),
        "I hope you will come, may I say"
    );
    assert_eq!(
        scrub("May I say more? Will do."),
        "May I say more? Will do."
    );
    assert_eq!(scrub("GREAT, WILL COME BACK"), "GREAT, WILL COME BACK");
    // Title case mid-sentence, or beside another name part: names.
    assert_eq!(
        scrub("Thanks to Hope and Grace."),
        "Thanks to [NAME] and [NAME]."
    );
    assert_eq!(scrub("Will Hope was great"), "[NAME] was great");
    assert_eq!(scrub("will alvarez was great"), "[NAME] was great");
    assert_eq!(scrub("WILL ÁLVAREZ WAS GREAT"), "[NAME] WAS GREAT");
    assert_eq!(
        scrub("The Young Professionals and a Grace period"),
        "The Young Professionals and a Grace period"
    );
    // Two-letter parts are weak too.
    assert_eq!(scrub("li is a word here"), "li is a word here");
    assert_eq!(scrub("ask Li Wei"), "ask [NAME]");
}

#[test]
fn titles_take_the_unknown_name_after_them() {
    assert_eq!(scrub("Mr Smith was late"), "Mr [NAME] was late");
    assert_eq!(scrub("ask Dr. Jones today"), "ask Dr. [NAME] today");
    assert_eq!(scrub("Professor Maria Lopez"), "Professor [NAME]");
    assert_eq!(scrub("thanks Dame Ñúñez!"), "thanks Dame [NAME]!");
    assert_eq!(scrub("MRS PATEL"), "MRS [NAME]");
    assert_eq!(
        scrub("Mrs brown's cake, Drsmith"),
        "Mrs brown's cake, Drsmith"
    );
}

#[test]
fn hits_are_spans_of_the_input() {
    let text = "José: jose@x.org, +44 7700 900123";
    let scrubbed = SCRUBBER.scrub(text);
    let found: Vec<_> = scrubbed
        .hits
        .iter()
        .map(|h| (h.kind, &text[h.span.clone()]))
        .collect();
    assert_eq!(
        found,
        [
            (EntityKind::Name, "José"),
            (EntityKind::Email, "jose@x.org"),
            (EntityKind::Phone, "+44 7700 900123"),
        ]
    );
}

#[test]
fn residual_risks_hold_text_for_review() {
    let cases: &[(&str, &[Risk])] = &[
        ("Great course, thanks!", &[]),
        ("It was 8/10, on 2026-11-24 at 10:30, £1,250.", &[]),
        ("order 1234567", &[Risk::DigitRun]),
        ("ref 123 456 789", &[Risk::DigitRun]),
        ("write to me at gmail dot com @ someone", &[Risk::AtSign]),
        ("Hi, my name is Bartholomew", &[Risk::SelfIntroduction]),
        ("call me Bart", &[Risk::SelfIntroduction]),
        ("I live at 12 High Street", &[Risk::StreetAddress]),
        ("DOB: 01/02/1990", &[Risk::DateOfBirth]),
        ("my name is José", &[]),
    ];
    for (text, risks) in cases {
        let scrubbed = SCRUBBER.scrub(text);
        assert_eq!(&scrubbed.risks, risks, "{text:?} -> {:?}", scrubbed.risks);
        assert_eq!(scrubbed.needs_review(), !risks.is_empty());
        let debug = format!("{:?}", scrubbed.risks);
        assert!(!debug.contains("Bart") && !debug.contains("High"));
    }
}

#[test]
fn no_known_names_is_fine() {
    let scrubber = Scrubber::new(Vec::<String>::new()).unwrap();
    assert_eq!(scrubber.scrub("Dr Who, jose").text, "Dr [NAME], jose");
}

/// Identifiers to plant in arbitrary text.
fn identifier() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "jose@example.org",
        "07700 900123",
        "+44 20 7946 0958",
        "SW1A 1AA",
        "AB123456C",
        "943 476 5919",
        "078-05-1120",
        "4111 1111 1111 1111",
        "GB82WEST12345698765432",
        "https://example.org/x",
        "192.168.1.1",
        "@someone",
        "José Álvarez",
        "JOSE ALVAREZ",
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_panics_and_spans_are_on_char_boundaries(text in "\\PC{0,200}") {
        let scrubbed = SCRUBBER.scrub(&text);
        let mut end = 0;
        for hit in &scrubbed.hits {
            prop_assert!(hit.span.start >= end && hit.span.start < hit.span.end);
            prop_assert!(text.is_char_boundary(hit.span.start) && text.is_char_boundary(hit.span.end));
            end = hit.span.end;
        }
    }

    #[test]
    fn planted_identifiers_never_survive(
        before in "[a-z ,.!?éø]{0,30}",
        id in identifier(),
        after in "[a-z ,.!?éø]{0,30}",
    ) {
        let text = format!("{before} {id} {after}");
        let scrubbed = SCRUBBER.scrub(&text);
        prop_assert!(!scrubbed.text.contains(id), "{:?}", scrubbed.hits);
        // Whatever was replaced is gone from the output too.
        for hit in &scrubbed.hits {
            let replaced = &text[hit.span.clone()];
            prop_assert!(replaced.len() < 4 || !scrubbed.text.contains(replaced));
        }
    }
}
