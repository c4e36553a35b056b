//! The generalisation hierarchies of the respondent attributes a microdata release uses, by
//! name and version (a release records the label, so a later version is told apart):
//!
//! * `age_band/v1`: the bands respondents were sealed with (`16-24`, …) → `under_25`, `25-44`,
//!   `45-64`, `65+` → `*`;
//! * `country-region/v1`: ISO 3166-1 alpha-2 code → continent (UN M49's regions, with the
//!   Americas as one) → `*`;
//! * `gender/v1`, `organisation/v1`: the value → `*` (there is no sector data to group
//!   organisations by, so an organisation is kept or withheld).
//!
//! `unknown` (enrolment had no value) generalises to itself until the top level, so an unknown
//! value is never mixed into a band it is not in.

use tutela_anonymise::microdata::{ANY, Hierarchy};

/// The value of an attribute enrolment did not give (as `crate::people` seals it).
const UNKNOWN: &str = "unknown";

/// The hierarchy of `attribute` over the `values` the release's rows hold (every one of them
/// must be in it); `None` for an attribute with no hierarchy.
pub(crate) fn of(attribute: &str, values: &[&str]) -> Option<Hierarchy> {
    /// The middle level of a three-level hierarchy, from the value.
    type Middle = fn(&str) -> &'static str;
    let (label, middle): (&str, Option<Middle>) = match attribute {
        "age_band" => ("age_band/v1", Some(wider_age_band)),
        "country" => ("country-region/v1", Some(region)),
        "gender" => ("gender/v1", None),
        "organisation" => ("organisation/v1", None),
        _ => return None,
    };
    let rows: Vec<Vec<String>> = values
        .iter()
        .map(|v| {
            let mut row = vec![(*v).to_owned()];
            if let Some(middle) = middle {
                row.push(if *v == UNKNOWN { UNKNOWN } else { middle(v) }.to_owned());
            }
            row.push(ANY.to_owned());
            row
        })
        .collect();
    // The values come from the rows' own distinct values and the middle level is a function of
    // the value, so the table is always a valid hierarchy.
    Hierarchy::from_table(label, &rows).ok()
}

fn wider_age_band(band: &str) -> &'static str {
    match band {
        "under_16" | "16-24" => "under_25",
        "25-34" | "35-44" => "25-44",
        "45-54" | "55-64" => "45-64",
        "65+" => "65+",
        _ => UNKNOWN,
    }
}

/// Continents by ISO 3166-1 alpha-2 code.
const REGIONS: [(&str, &str); 5] = [
    (
        "Europe",
        "AD AL AT AX BA BE BG BY CH CY CZ DE DK EE ES FI FO FR GB GG GI GR HR HU IE IM IS IT JE LI \
         LT LU LV MC MD ME MK MT NL NO PL PT RO RS RU SE SI SJ SK SM UA VA XK",
    ),
    (
        "Africa",
        "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG EH ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG \
         ML MR MU MW MZ NA NE NG RE RW SC SD SH SL SN SO SS ST SZ TD TG TN TZ UG YT ZA ZM ZW",
    ),
    (
        "Asia",
        "AE AF AM AZ BD BH BN BT CN GE HK ID IL IN IQ IR JO JP KG KH KP KR KW KZ LA LB LK MM MN MO \
         MV MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE",
    ),
    (
        "Americas",
        "AG AI AR AW BB BL BM BO BQ BR BS BZ CA CL CO CR CU CW DM DO EC FK GD GF GL GP GT GY HN HT \
         JM KN KY LC MF MQ MS MX NI PA PE PM PR PY SR SV SX TC TT US UY VC VE VG VI",
    ),
    (
        "Oceania",
        "AS AU CK FJ FM GU KI MH MP NC NF NR NU NZ PF PG PN PW SB TK TO TV VU WF WS",
    ),
];

fn region(code: &str) -> &'static str {
    let code = code.trim();
    REGIONS
        .iter()
        .find(|(_, codes)| {
            code.len() == 2
                && codes
                    .split_whitespace()
                    .any(|c| c.eq_ignore_ascii_case(code))
        })
        .map_or("other", |(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attribute_generalises_to_withheld_and_unknown_stays_apart() {
        let age = of("age_band", &["16-24", "25-34", "unknown", "65+"]).unwrap();
        assert_eq!(age.label(), "age_band/v1");
        assert_eq!(age.generalise("16-24", 1), Some("under_25"));
        assert_eq!(age.generalise("unknown", 1), Some("unknown"));
        assert_eq!(age.generalise("25-34", age.height()), Some(ANY));

        let country = of("country", &["GB", "fr", "JP", "ZZ", "unknown"]).unwrap();
        assert_eq!(country.generalise("GB", 1), Some("Europe"));
        assert_eq!(country.generalise("fr", 1), Some("Europe"));
        assert_eq!(country.generalise("JP", 1), Some("Asia"));
        assert_eq!(country.generalise("ZZ", 1), Some("other"));
        assert_eq!(country.generalise("unknown", 1), Some("unknown"));

        let gender = of("gender", &["female", "male"]).unwrap();
        assert_eq!(gender.height(), 1);
        assert_eq!(gender.generalise("female", 1), Some(ANY));
        assert!(of("shoe_size", &["9"]).is_none());
    }

    #[test]
    fn no_country_is_in_two_regions() {
        let mut seen = std::collections::HashSet::new();
        for (_, codes) in REGIONS {
            for code in codes.split_whitespace() {
                assert!(seen.insert(code), "{code} twice");
            }
        }
        assert!(seen.len() > 240, "{}", seen.len());
    }
}
