//! A survey's questions: checked from the request once, stored as JSON, and the rule every answer
//! is checked against.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tutela_policy::validate::{Checks, Field};
use tutela_proto::survey::{Question, QuestionKind, RespondentAttribute};

/// The most questions a survey has.
pub(crate) const MAX_QUESTIONS: usize = 100;
/// The fewest and the most points of a rating scale.
const SCALE: std::ops::RangeInclusive<u32> = 2..=10;
/// The fewest and the most options of a choice.
const OPTIONS: std::ops::RangeInclusive<usize> = 2..=30;

/// The kind of a question, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Rating,
    SingleChoice,
    MultipleChoice,
    Number,
    FreeText,
}

impl Kind {
    fn of(kind: i32) -> Option<Self> {
        Some(match QuestionKind::try_from(kind).ok()? {
            QuestionKind::Unspecified => return None,
            QuestionKind::Rating => Self::Rating,
            QuestionKind::SingleChoice => Self::SingleChoice,
            QuestionKind::MultipleChoice => Self::MultipleChoice,
            QuestionKind::Number => Self::Number,
            QuestionKind::FreeText => Self::FreeText,
        })
    }

    pub(crate) fn number(self) -> QuestionKind {
        match self {
            Self::Rating => QuestionKind::Rating,
            Self::SingleChoice => QuestionKind::SingleChoice,
            Self::MultipleChoice => QuestionKind::MultipleChoice,
            Self::Number => QuestionKind::Number,
            Self::FreeText => QuestionKind::FreeText,
        }
    }
}

/// One question as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) id: String,
    pub(crate) text: String,
    pub(crate) kind: Kind,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) scale_points: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) options: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bounds: Option<(f64, f64)>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Stored {
    /// The question as the API shows it.
    pub(crate) fn to_proto(&self) -> Question {
        let (min, max) = self.bounds.unwrap_or_default();
        Question {
            question_id: self.id.clone(),
            text: self.text.clone(),
            kind: self.kind.number() as i32,
            scale_points: self.scale_points,
            options: self.options.clone(),
            min,
            max,
        }
    }
}

/// The questions a survey row stores.
pub(crate) fn of_survey(row: &crate::entity::survey::Model) -> tutela_policy::Result<Vec<Stored>> {
    serde_json::from_str(&row.questions)
        .map_err(|_| tutela_policy::Error::internal("a survey's stored questions do not parse"))
}

/// The respondent attributes (short names) a survey row declares.
pub(crate) fn attributes_of(
    row: &crate::entity::survey::Model,
) -> tutela_policy::Result<Vec<String>> {
    serde_json::from_str(&row.attributes)
        .map_err(|_| tutela_policy::Error::internal("a survey's stored attributes do not parse"))
}

/// The questions of a CreateSurveyRequest at `field` (`survey.questions`), checked: unique ids,
/// a kind, and what the kind needs (and nothing another kind needs).
pub(crate) fn parse(c: &mut Checks, questions: &[Question], field: &str) -> Field<Vec<Stored>> {
    let before = c.len();
    if questions.is_empty() || questions.len() > MAX_QUESTIONS {
        c.fail(field, format!("1 to {MAX_QUESTIONS} questions"));
    }
    let mut ids = HashSet::new();
    let mut stored = Vec::with_capacity(questions.len());
    for (i, q) in questions.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        let id = c.required(&q.question_id, &at("question_id"), 64);
        if let Ok(id) = id
            && !ids.insert(id.to_owned())
        {
            c.fail(at("question_id"), "used by an earlier question");
        }
        let text = c.required(&q.text, &at("text"), 500);
        let kind = c.parse(
            Kind::of(q.kind),
            &at("kind"),
            "required: rating, single choice, multiple choice, number or free text",
        );
        let scale_points = match kind {
            Ok(Kind::Rating) => {
                c.ensure(
                    SCALE.contains(&q.scale_points),
                    &at("scale_points"),
                    "a rating needs 2 to 10 points",
                );
                q.scale_points
            }
            _ => {
                c.ensure(
                    q.scale_points == 0,
                    &at("scale_points"),
                    "only a rating has a scale",
                );
                0
            }
        };
        let options = match kind {
            Ok(Kind::SingleChoice | Kind::MultipleChoice) => options(c, &q.options, &at("options")),
            _ => {
                c.ensure(
                    q.options.is_empty(),
                    &at("options"),
                    "only a choice has options",
                );
                Vec::new()
            }
        };
        let bounds = match kind {
            Ok(Kind::Number) => {
                c.ensure(q.min.is_finite(), &at("min"), "must be a finite number");
                c.ensure(
                    q.max.is_finite() && q.max > q.min,
                    &at("max"),
                    "must be a finite number above min",
                );
                Some((q.min, q.max))
            }
            _ => {
                c.ensure(q.min == 0.0, &at("min"), "only a number has bounds");
                c.ensure(q.max == 0.0, &at("max"), "only a number has bounds");
                None
            }
        };
        if let (Ok(id), Ok(text), Ok(kind)) = (id, text, kind) {
            stored.push(Stored {
                id: id.to_owned(),
                text: text.to_owned(),
                kind,
                scale_points,
                options,
                bounds,
            });
        }
    }
    c.clean_since(before, || stored)
}

/// The options of a choice: 2 to 30, distinct, none empty.
fn options(c: &mut Checks, options: &[String], field: &str) -> Vec<String> {
    if !OPTIONS.contains(&options.len()) {
        c.fail(field, "a choice needs 2 to 30 options");
    }
    let mut seen = HashSet::new();
    let mut kept = Vec::with_capacity(options.len());
    for (j, option) in options.iter().enumerate() {
        let at = format!("{field}[{j}]");
        if let Ok(option) = c.required(option, &at, 200) {
            if !seen.insert(option.to_lowercase()) {
                c.fail(at, "the same as an earlier option");
            }
            kept.push(option.to_owned());
        }
    }
    kept
}

/// The respondent attributes a survey declares, by short name, each at most once.
pub(crate) fn attributes(c: &mut Checks, attributes: &[i32], field: &str) -> Field<Vec<String>> {
    let before = c.len();
    let mut names: Vec<String> = Vec::with_capacity(attributes.len());
    for (i, a) in attributes.iter().enumerate() {
        let name = match RespondentAttribute::try_from(*a) {
            Ok(RespondentAttribute::AgeBand) => "age_band",
            Ok(RespondentAttribute::Gender) => "gender",
            Ok(RespondentAttribute::Country) => "country",
            Ok(RespondentAttribute::Organisation) => "organisation",
            Ok(RespondentAttribute::Unspecified) | Err(_) => {
                c.fail(
                    format!("{field}[{i}]"),
                    "one of age band, gender, country, organisation",
                );
                continue;
            }
        };
        if names.iter().any(|n| n == name) {
            c.fail(format!("{field}[{i}]"), "declared already");
        }
        names.push(name.to_owned());
    }
    c.clean_since(before, || names)
}

/// Stored attribute names as the API's numbers.
pub(crate) fn attribute_numbers(names: &[String]) -> Vec<i32> {
    names
        .iter()
        .map(|n| match n.as_str() {
            "age_band" => RespondentAttribute::AgeBand,
            "gender" => RespondentAttribute::Gender,
            "country" => RespondentAttribute::Country,
            "organisation" => RespondentAttribute::Organisation,
            _ => RespondentAttribute::Unspecified,
        } as i32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rating(id: &str) -> Question {
        Question {
            question_id: id.into(),
            text: "How was it?".into(),
            kind: QuestionKind::Rating as i32,
            scale_points: 5,
            ..Default::default()
        }
    }

    fn fields(questions: &[Question]) -> Vec<String> {
        let mut c = Checks::new();
        let _ = parse(&mut c, questions, "survey.questions");
        crate::violated_fields(c)
    }

    #[test]
    fn each_kind_needs_its_own_parts_and_no_other() {
        assert!(fields(&[rating("q1")]).is_empty());
        let mut no_scale = rating("q1");
        no_scale.scale_points = 11;
        assert_eq!(fields(&[no_scale]), ["survey.questions[0].scale_points"]);
        let mut choice = rating("q2");
        choice.kind = QuestionKind::SingleChoice as i32;
        choice.scale_points = 0;
        choice.options = vec!["Yes".into(), "yes".into()];
        assert_eq!(
            fields(&[rating("q1"), choice]),
            ["survey.questions[1].options[1]"]
        );
        let mut number = rating("q3");
        number.kind = QuestionKind::Number as i32;
        number.scale_points = 0;
        number.min = 5.0;
        number.max = 5.0;
        assert_eq!(fields(&[number]), ["survey.questions[0].max"]);
        let mut text = rating("q4");
        text.kind = QuestionKind::FreeText as i32;
        assert_eq!(fields(&[text]), ["survey.questions[0].scale_points"]);
    }

    #[test]
    fn ids_are_unique_and_a_survey_has_questions() {
        assert_eq!(
            fields(&[rating("q1"), rating("q1")]),
            ["survey.questions[1].question_id"]
        );
        assert_eq!(fields(&[]), ["survey.questions"]);
    }
}
