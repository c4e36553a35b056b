//! The course's people as the survey service reads them: through the enrolment service's gRPC
//! API (`tutela-enrolment-client`), as a `service` principal of the caller's tenant, for
//! `quality_assurance`, so that enrolment's guard (Cedar, the register's categories for the
//! purpose, restriction) applies to every read and audits it there. Three reads, each of only
//! what it needs: the invitees' given and family names and the survey's course's staff names
//! (together the scrubber's known names), and the respondent's profile fields behind the
//! attributes the survey declares.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use tutela_enrolment_client::{Asked, Enrolment};
use tutela_policy::{Error, Result};
use tutela_proto::enrolment::ConsentCheck;

/// The purpose both reads are for.
const PURPOSE: &str = "quality_assurance";

/// The most learner ids one StreamLearners call names.
const MAX_IDS_PER_READ: usize = 10_000;

/// The enrolment service's client, if this process has one. Cheap to clone.
#[derive(Clone, Default)]
pub struct People {
    enrolment: Option<Arc<Enrolment>>,
}

impl std::fmt::Debug for People {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("People").finish_non_exhaustive()
    }
}

impl People {
    /// People read through `enrolment`; `None` (a command that does not serve, and no endpoint
    /// configured) fails every read with UNAVAILABLE.
    pub fn new(enrolment: Option<Arc<Enrolment>>) -> Self {
        Self { enrolment }
    }

    fn enrolment(&self) -> Result<&Enrolment> {
        self.enrolment.as_deref().ok_or_else(|| {
            Error::Unavailable("the survey service has no enrolment service to read from".into())
        })
    }

    /// The learners `ids` of `tenant` with the profile fields `mask` only, for [`PURPOSE`].
    async fn read(
        &self,
        tenant: &str,
        ids: Vec<String>,
        mask: Vec<String>,
    ) -> Result<Vec<tutela_proto::enrolment::Learner>> {
        let asked = Asked {
            ids,
            mask,
            records: Vec::new(),
            course_id: String::new(),
            consent: ConsentCheck::Unspecified,
        };
        Ok(self
            .enrolment()?
            .learners(tenant, PURPOSE, asked, "")
            .await?
            .learners)
    }

    /// The full names ("given family") of the learners `ids` of `tenant` that enrolment returns;
    /// a learner it withholds (restricted, erased) has no name to know.
    pub(crate) async fn names(&self, tenant: &str, ids: &[String]) -> Result<Vec<String>> {
        let mut names = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(MAX_IDS_PER_READ) {
            let mask = vec!["given_name".into(), "family_name".into()];
            for learner in self.read(tenant, chunk.to_vec(), mask).await? {
                let Some(p) = learner.profile else { continue };
                let full = format!("{} {}", p.given_name.trim(), p.family_name.trim());
                let full = full.trim();
                if !full.is_empty() {
                    names.push(full.to_owned());
                }
            }
        }
        Ok(names)
    }

    /// The names of the staff of `tenant`'s course `course_id`, their titles left off (see
    /// [`without_titles`]). None when enrolment has no such course: a survey's course id is the
    /// caller's label, never looked up when the survey was made, and a course unknown to
    /// enrolment names no staff. Enrolment unreachable (or refusing) fails, as for the invitees.
    pub(crate) async fn staff_names(&self, tenant: &str, course_id: &str) -> Result<Vec<String>> {
        let staff = self
            .enrolment()?
            .course_staff_names(tenant, course_id)
            .await?
            .unwrap_or_default();
        Ok(staff
            .iter()
            .map(|name| without_titles(name))
            .filter(|name| !name.is_empty())
            .collect())
    }

    /// The respondent attributes `declared` (short names) of the learner `learner_id` of
    /// `tenant`, by short name, read from the profile fields behind them only: the age band as
    /// of `today` (never the date of birth itself), the others as given; "unknown" for an empty
    /// field or a learner enrolment withholds.
    pub(crate) async fn attributes(
        &self,
        tenant: &str,
        learner_id: &str,
        declared: &[String],
        today: NaiveDate,
    ) -> Result<BTreeMap<String, String>> {
        let mask: Vec<String> = declared
            .iter()
            .filter_map(|a| profile_field(a))
            .map(str::to_owned)
            .collect();
        if mask.is_empty() {
            return Ok(BTreeMap::new());
        }
        let profile = self
            .read(tenant, vec![learner_id.to_owned()], mask)
            .await?
            .into_iter()
            .find(|l| l.learner_id == learner_id)
            .and_then(|l| l.profile)
            .unwrap_or_default();
        let given = |v: &str| match v.trim() {
            "" => UNKNOWN.to_owned(),
            v => v.to_owned(),
        };
        Ok(declared
            .iter()
            .filter_map(|a| {
                let value = match a.as_str() {
                    "age_band" => age_band(&profile.date_of_birth, today),
                    "gender" => given(&profile.gender),
                    "country" => given(&profile.country),
                    "organisation" => given(&profile.organisation),
                    _ => return None,
                };
                Some((a.clone(), value))
            })
            .collect())
    }
}

/// Titles a staff name may begin with ("Dr Ada Lovelace"), folded to lower case, without a dot:
/// the ones the scrubber's own title rule knows.
const TITLES: &[&str] = &[
    "mr",
    "mrs",
    "ms",
    "mx",
    "miss",
    "dr",
    "prof",
    "professor",
    "sir",
    "dame",
];

/// `name` without the titles it begins with. The scrubber matches every part of a known name on
/// its own, so a title kept in would make "miss", "sir" or "professor" a name wherever they are
/// written; a titled mention ("Dr Lovelace") is still found, by the name part and by the
/// scrubber's title rule, which keeps the title ("Dr [NAME]").
pub(crate) fn without_titles(name: &str) -> String {
    let mut words = name.split_whitespace().peekable();
    while words
        .peek()
        .is_some_and(|w| TITLES.contains(&w.trim_end_matches('.').to_lowercase().as_str()))
    {
        words.next();
    }
    words.collect::<Vec<_>>().join(" ")
}

/// A value enrolment did not give.
const UNKNOWN: &str = "unknown";

/// The profile field (proto name) a respondent attribute is derived from.
fn profile_field(attribute: &str) -> Option<&'static str> {
    match attribute {
        "age_band" => Some("date_of_birth"),
        "gender" => Some("gender"),
        "country" => Some("country"),
        "organisation" => Some("organisation"),
        _ => None,
    }
}

/// The age band of someone born on `date_of_birth` (`YYYY-MM-DD`) on `today`: a band wide enough
/// that it is a group, not a person; "under_16" below the bands, "unknown" without a date.
pub(crate) fn age_band(date_of_birth: &str, today: NaiveDate) -> String {
    let Ok(born) = NaiveDate::parse_from_str(date_of_birth.trim(), "%Y-%m-%d") else {
        return UNKNOWN.into();
    };
    let mut age = today.year() - born.year();
    if (today.month(), today.day()) < (born.month(), born.day()) {
        age -= 1;
    }
    match age {
        i32::MIN..=-1 => UNKNOWN,
        0..=15 => "under_16",
        16..=24 => "16-24",
        25..=34 => "25-34",
        35..=44 => "35-44",
        45..=54 => "45-54",
        55..=64 => "55-64",
        _ => "65+",
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_age_band_counts_birthdays_and_hides_the_date() {
        let today = NaiveDate::from_ymd_opt(2026, 6, 15).unwrap();
        assert_eq!(age_band("2010-06-16", today), "under_16");
        assert_eq!(age_band("2010-06-15", today), "16-24");
        assert_eq!(age_band("2001-06-16", today), "16-24");
        assert_eq!(age_band("2001-06-15", today), "25-34");
        assert_eq!(age_band("1990-01-01", today), "35-44");
        assert_eq!(age_band("1980-01-01", today), "45-54");
        assert_eq!(age_band("1970-01-01", today), "55-64");
        assert_eq!(age_band("1961-06-15", today), "65+");
        assert_eq!(age_band("", today), "unknown");
        assert_eq!(age_band("15/06/1990", today), "unknown");
        assert_eq!(age_band("2030-01-01", today), "unknown");
    }

    #[test]
    fn a_staff_name_loses_its_leading_titles_only() {
        assert_eq!(without_titles("Dr Ada Lovelace"), "Ada Lovelace");
        assert_eq!(without_titles("  PROF. Dr.  Sam  Patel "), "Sam Patel");
        assert_eq!(without_titles("Miss"), "");
        assert_eq!(without_titles("Drew Sirling"), "Drew Sirling");
        assert_eq!(without_titles("Ada Lovelace, Dr"), "Ada Lovelace, Dr");
    }
}
