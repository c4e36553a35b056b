//! A response's answers: checked against the survey's questions, stored as JSON under the
//! respondent's key, and shown back only to the respondent (their export).

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use tutela_policy::validate::{Checks, Field};
use tutela_proto::survey::{Answer, answer};

use crate::questions::{Kind, Stored as Question};

/// The value of one answer, as stored. Free text is stored scrubbed only: the raw comment is
/// never kept, so nothing can release it.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Value {
    Rating(u32),
    Choice(u32),
    Choices(Vec<u32>),
    Number(f64),
    Text(String),
}

/// One answer as stored.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Stored {
    /// The question's id.
    pub(crate) q: String,
    #[serde(flatten)]
    pub(crate) value: Value,
}

// Answers are personal data: Debug shows the question only.
impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answer")
            .field("q", &self.q)
            .field("value", &"[redacted]")
            .finish()
    }
}

impl Stored {
    /// The answer as JSON for the respondent's own export.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// What a response seals under the respondent's key: the answers, and the respondent attributes
/// the survey declared (by short name: `age_band`, `country`...), as read when they responded
/// and already generalised as releases use them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Sealed {
    pub(crate) answers: Vec<Stored>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub(crate) attributes: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("answers", &self.answers.len())
            .field("attributes", &"[redacted]")
            .finish()
    }
}

/// The answers of a SubmitResponseRequest at `field` (`answers`), checked against `questions`:
/// each names a question once and carries a value of its kind, within its range.
pub(crate) fn parse(
    c: &mut Checks,
    answers: &[Answer],
    questions: &[Question],
    field: &str,
) -> Field<Vec<Stored>> {
    let before = c.len();
    if answers.is_empty() {
        c.fail(field, "at least one answer");
    }
    let mut seen = HashSet::new();
    let mut stored = Vec::with_capacity(answers.len());
    for (i, a) in answers.iter().enumerate() {
        let at = |name: &str| format!("{field}[{i}].{name}");
        let Ok(id) = c.required(&a.question_id, &at("question_id"), 64) else {
            continue;
        };
        let Some(question) = questions.iter().find(|q| q.id == id) else {
            c.fail(at("question_id"), "not a question of this survey");
            continue;
        };
        if !seen.insert(id.to_owned()) {
            c.fail(at("question_id"), "answered by an earlier answer");
            continue;
        }
        if let Ok(value) = value(c, a.value.as_ref(), question, &at) {
            stored.push(Stored {
                q: id.to_owned(),
                value,
            });
        }
    }
    c.clean_since(before, || stored)
}

/// One answer's value, of its question's kind.
fn value(
    c: &mut Checks,
    value: Option<&answer::Value>,
    q: &Question,
    at: &dyn Fn(&str) -> String,
) -> Field<Value> {
    use answer::Value as V;
    let options = u32::try_from(q.options.len()).unwrap_or(u32::MAX);
    match (q.kind, value) {
        (Kind::Rating, Some(V::Rating(r))) => c.parse(
            (1..=q.scale_points)
                .contains(r)
                .then_some(Value::Rating(*r)),
            &at("rating"),
            &format!("a rating from 1 to {}", q.scale_points),
        ),
        (Kind::SingleChoice, Some(V::Choice(i))) => c.parse(
            (*i < options).then_some(Value::Choice(*i)),
            &at("choice"),
            &format!("an option index from 0 to {}", options.saturating_sub(1)),
        ),
        (Kind::MultipleChoice, Some(V::Choices(chosen))) => {
            let mut distinct = chosen.indexes.clone();
            distinct.sort_unstable();
            distinct.dedup();
            c.parse(
                (distinct.len() == chosen.indexes.len() && distinct.iter().all(|i| *i < options))
                    .then_some(Value::Choices(distinct)),
                &at("choices.indexes"),
                &format!(
                    "distinct option indexes from 0 to {}",
                    options.saturating_sub(1)
                ),
            )
        }
        (Kind::Number, Some(V::Number(n))) => {
            let (min, max) = q.bounds.unwrap_or_default();
            c.parse(
                (n.is_finite() && (min..=max).contains(n)).then_some(Value::Number(*n)),
                &at("number"),
                &format!("a number from {min} to {max}"),
            )
        }
        (Kind::FreeText, Some(V::Text(t))) => c
            .required(t, &at("text"), 4000)
            .map(|t| Value::Text(t.to_owned())),
        (kind, _) => Err(c.flag(
            at(expected(kind)),
            format!("required: the question takes {}", expected(kind)),
        )),
    }
}

/// The name of the `value` field a question's kind takes.
fn expected(kind: Kind) -> &'static str {
    match kind {
        Kind::Rating => "rating",
        Kind::SingleChoice => "choice",
        Kind::MultipleChoice => "choices",
        Kind::Number => "number",
        Kind::FreeText => "text",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tutela_proto::survey::Choices;

    fn questions() -> Vec<Question> {
        vec![
            Question {
                id: "r".into(),
                text: "Rate it".into(),
                kind: Kind::Rating,
                scale_points: 5,
                options: vec![],
                bounds: None,
            },
            Question {
                id: "m".into(),
                text: "Which parts?".into(),
                kind: Kind::MultipleChoice,
                scale_points: 0,
                options: vec!["a".into(), "b".into(), "c".into()],
                bounds: None,
            },
            Question {
                id: "n".into(),
                text: "Hours a week".into(),
                kind: Kind::Number,
                scale_points: 0,
                options: vec![],
                bounds: Some((0.0, 40.0)),
            },
        ]
    }

    fn answer(q: &str, value: answer::Value) -> Answer {
        Answer {
            question_id: q.into(),
            value: Some(value),
        }
    }

    fn violations(answers: &[Answer]) -> Vec<String> {
        let mut c = Checks::new();
        let _ = parse(&mut c, answers, &questions(), "answers");
        crate::violated_fields(c)
    }

    #[test]
    fn answers_are_of_their_questions_kind_and_range() {
        use answer::Value as V;
        assert!(
            violations(&[
                answer("r", V::Rating(5)),
                answer(
                    "m",
                    V::Choices(Choices {
                        indexes: vec![2, 0]
                    })
                ),
                answer("n", V::Number(12.5)),
            ])
            .is_empty()
        );
        assert_eq!(
            violations(&[answer("r", V::Rating(0))]),
            ["answers[0].rating"]
        );
        assert_eq!(
            violations(&[answer(
                "m",
                V::Choices(Choices {
                    indexes: vec![1, 1]
                })
            )]),
            ["answers[0].choices.indexes"]
        );
        assert_eq!(
            violations(&[answer("n", V::Number(f64::NAN))]),
            ["answers[0].number"]
        );
        assert_eq!(
            violations(&[answer("r", V::Choice(1))]),
            ["answers[0].rating"]
        );
        assert_eq!(
            violations(&[answer("x", V::Rating(1))]),
            ["answers[0].question_id"]
        );
        assert_eq!(
            violations(&[answer("r", V::Rating(1)), answer("r", V::Rating(2))]),
            ["answers[1].question_id"]
        );
        assert_eq!(violations(&[]), ["answers"]);
    }
}
