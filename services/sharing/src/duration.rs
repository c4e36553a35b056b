//! ISO-8601 durations of whole calendar units, as agreements state a partner's retention and
//! access periods (S4): `P1Y`, `P12M`, `P6W`, `P90D`, `P1Y6M`. Calendar units stay calendar
//! units (a year is not 365 days), so a period ends on the same day of the month it would on
//! paper. Time-of-day parts (`PT12H`) and fractions are refused: a retention period measured in
//! hours is a mistake, not a term of an agreement.

use std::fmt;

use chrono::{DateTime, Days, Months, Utc};

/// The longest period accepted, in years: longer is a typing mistake, not an agreement.
const MAX_YEARS: u32 = 100;

/// A parsed duration of years, months, weeks and days; at least one is not zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoDuration {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
}

impl IsoDuration {
    /// Parses `text` (surrounding spaces ignored). The error says what is wrong, without
    /// repeating the text.
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        const SHAPE: &str =
            "an ISO-8601 duration of years, months, weeks and days, e.g. P1Y, P12M or P90D";
        let body = text.trim().strip_prefix('P').ok_or(SHAPE)?;
        if body.contains('T') {
            return Err("whole days at least: hours, minutes and seconds (PT...) are not accepted");
        }
        let mut d = Self {
            years: 0,
            months: 0,
            weeks: 0,
            days: 0,
        };
        let mut number = String::new();
        // The designators in the order ISO 8601 writes them; each at most once.
        let mut next_unit = 0;
        for c in body.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let unit = match c {
                'Y' => 0,
                'M' => 1,
                'W' => 2,
                'D' => 3,
                _ => return Err(SHAPE),
            };
            if number.is_empty() || unit < next_unit {
                return Err(SHAPE);
            }
            let n: u32 = number.parse().map_err(|_| "too long a period")?;
            number.clear();
            next_unit = unit + 1;
            match unit {
                0 => d.years = n,
                1 => d.months = n,
                2 => d.weeks = n,
                _ => d.days = n,
            }
        }
        if !number.is_empty() || next_unit == 0 {
            return Err(SHAPE);
        }
        if d == Self::ZERO {
            return Err("must be longer than zero");
        }
        if d.approximate_days() > u64::from(MAX_YEARS) * 366 {
            return Err("at most 100 years");
        }
        Ok(d)
    }

    const ZERO: Self = Self {
        years: 0,
        months: 0,
        weeks: 0,
        days: 0,
    };

    fn approximate_days(&self) -> u64 {
        u64::from(self.years) * 366
            + u64::from(self.months) * 31
            + u64::from(self.weeks) * 7
            + u64::from(self.days)
    }

    /// When a period of this length that starts at `start` ends (calendar arithmetic; the last
    /// day of a shorter month when the day does not exist, as chrono adds months).
    pub fn after(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        let months = self.years.saturating_mul(12).saturating_add(self.months);
        let days = u64::from(self.weeks) * 7 + u64::from(self.days);
        start
            .checked_add_months(Months::new(months))
            .and_then(|t| t.checked_add_days(Days::new(days)))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// The canonical spelling: units in ISO order, zeros left out (`P1Y6M`).
impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("P")?;
        for (n, unit) in [
            (self.years, 'Y'),
            (self.months, 'M'),
            (self.weeks, 'W'),
            (self.days, 'D'),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_periods_of_real_agreements_parse() {
        for (text, canonical) in [
            ("P1Y", "P1Y"),
            ("P12M", "P12M"),
            (" P90D ", "P90D"),
            ("P6W", "P6W"),
            ("P1Y6M", "P1Y6M"),
            ("P0Y2D", "P2D"),
        ] {
            assert_eq!(IsoDuration::parse(text).unwrap().to_string(), canonical);
        }
        for bad in [
            "",
            "P",
            "1Y",
            "P1",
            "PY",
            "P1H",
            "PT12H",
            "P1M1Y",
            "P1Y1Y",
            "P0D",
            "P1.5Y",
            "P-1Y",
            "P101Y",
            "p1y",
            "P99999999999Y",
        ] {
            assert!(IsoDuration::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn periods_end_by_the_calendar() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().to_utc();
        let start = at("2026-01-31T09:00:00Z");
        let p = |s| IsoDuration::parse(s).unwrap();
        assert_eq!(p("P1M").after(start), at("2026-02-28T09:00:00Z"));
        assert_eq!(p("P1Y").after(start), at("2027-01-31T09:00:00Z"));
        assert_eq!(p("P12M").after(start), p("P1Y").after(start));
        assert_eq!(p("P2W").after(start), at("2026-02-14T09:00:00Z"));
    }

    proptest! {
        #[test]
        fn every_duration_reads_back_as_itself(
            years in 0u32..=50, months in 0u32..=24, weeks in 0u32..=52, days in 0u32..=400,
        ) {
            let d = IsoDuration { years, months, weeks, days };
            prop_assume!(d != IsoDuration::ZERO);
            prop_assert_eq!(IsoDuration::parse(&d.to_string()), Ok(d));
        }

        #[test]
        fn no_text_makes_the_parser_panic_and_what_parses_is_canonical_again(text in ".{0,24}") {
            if let Ok(d) = IsoDuration::parse(&text) {
                prop_assert_eq!(IsoDuration::parse(&d.to_string()), Ok(d));
                prop_assert!(d.after(DateTime::<Utc>::MIN_UTC) > DateTime::<Utc>::MIN_UTC);
            }
        }
    }
}
