//! Time of an aggregate release (suppression and the audit included) over 100,000 responses to
//! 10 questions of mixed kinds (ratings, single and multiple choice, numbers) in ~50 cohorts of
//! uneven size (a few below the minimum cohort size), with rare options so that small cells,
//! complements and the audit have work to do. Target: at most 1 s.
//!
//! `cargo bench -p tutela-anonymise --bench aggregate` prints the time of the best of a few
//! runs, the target and whether it was met.

use std::hint::black_box;
use std::time::{Duration, Instant};

use tutela_anonymise::aggregate::{Answer, Body, Question, QuestionKind, Response, Rules, release};
// A fixed seed: the same responses on every run.
use tutela_anonymise::corpus::Rng;

/// Skewed: index i has weight 2^-(i+1), so the last options are rare.
fn skewed(rng: &mut Rng, n: u16) -> u16 {
    let lead = (rng.next_u64() | 1 << 40).trailing_zeros() as u16;
    lead.min(n - 1)
}

const RESPONSES: usize = 100_000;
const COHORTS: usize = 50;
const TARGET: Duration = Duration::from_secs(1);

fn questions() -> Vec<Question> {
    use QuestionKind::*;
    let kinds = [
        Rating { scale: 5 },
        Rating { scale: 10 },
        SingleChoice { options: 4 },
        SingleChoice { options: 12 },
        MultipleChoice { options: 6 },
        MultipleChoice { options: 10 },
        Number {
            min: 0.0,
            max: 100.0,
        },
        Rating { scale: 7 },
        SingleChoice { options: 8 },
        Number {
            min: 18.0,
            max: 80.0,
        },
    ];
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, kind)| Question {
            id: format!("q{i}"),
            kind,
        })
        .collect()
}

fn responses(questions: &[Question]) -> Vec<Response> {
    let mut rng = Rng::new(0x9e37_79b9_7f4a_7c15);
    (0..RESPONSES)
        .map(|_| {
            // Cohort sizes fall off: cohort c is drawn about (c+1)^-1.5 as often, so the tail
            // holds cohorts of a handful of responses.
            let mut cohort = rng.below(COHORTS);
            if rng.below(3) > 0 {
                cohort = cohort * rng.below(COHORTS) / COHORTS;
            }
            if rng.below(2000) == 0 {
                cohort = COHORTS + rng.below(5); // a few tiny cohorts, withheld
            }
            let answers = questions
                .iter()
                .map(|q| {
                    if rng.below(10) == 0 {
                        return None; // skipped
                    }
                    Some(match q.kind {
                        QuestionKind::Rating { scale } => {
                            Answer::Rating(1 + skewed(&mut rng, scale))
                        }
                        QuestionKind::SingleChoice { options } => {
                            Answer::Choice(skewed(&mut rng, options))
                        }
                        QuestionKind::MultipleChoice { options } => Answer::Choices(
                            (0..1 + rng.below(3))
                                .map(|_| skewed(&mut rng, options))
                                .collect(),
                        ),
                        QuestionKind::Number { min, max } => {
                            Answer::Number(min + (max - min) * rng.below(1001) as f64 / 1000.0)
                        }
                    })
                })
                .collect();
            Response {
                cohort: format!("run-{cohort:02}"),
                answers,
            }
        })
        .collect()
}

fn main() {
    let questions = questions();
    let responses = responses(&questions);
    let rules = Rules::default();
    let mut best = Duration::MAX;
    let mut out = None;
    for _ in 0..5 {
        let start = Instant::now();
        let release = release(black_box(&questions), black_box(&responses), &rules);
        best = best.min(start.elapsed());
        out = Some(release);
    }
    let Some(Ok(release)) = out else {
        eprintln!("the release failed: {out:?}");
        std::process::exit(1);
    };
    let (mut tables, mut suppressed) = (0usize, 0usize);
    for q in &release.questions {
        let ts: Vec<_> = match &q.body {
            Body::Distribution { table, .. } => vec![table],
            Body::MultipleChoice { options } => options.iter().collect(),
            Body::Number { .. } => Vec::new(),
        };
        for t in ts {
            tables += 1;
            suppressed += t
                .cells
                .iter()
                .flatten()
                .filter(|c| c.is_suppressed())
                .count()
                + t.row_totals.iter().filter(|c| c.is_suppressed()).count()
                + t.col_totals.iter().filter(|c| c.is_suppressed()).count();
        }
    }
    println!(
        "aggregate release: {} responses, {} questions, {} cohorts released, {} withheld, {tables} tables, {suppressed} values suppressed",
        responses.len(),
        questions.len(),
        release.cohorts.len(),
        release.withheld.len()
    );
    println!(
        "time {:.1} ms (best of 5), target {} ms, met: {}",
        best.as_secs_f64() * 1e3,
        TARGET.as_millis(),
        best <= TARGET
    );
}
