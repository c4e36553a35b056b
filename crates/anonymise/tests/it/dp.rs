//! Differentially private releases: the noise has the scale the ε asks for (statistically, with
//! a generous fixed tolerance), released values stay within their bounds, and the budget
//! accounting never lets spends pass the total.

use proptest::prelude::*;
use tutela_anonymise::aggregate::{Answer, Question, QuestionKind, Response};
use tutela_anonymise::dp::{
    Budget, DpError, DpRequest, Mechanism, MicroEpsilon, PicoDelta, Spend, check, plan, release_dp,
    remaining,
};

fn laplace(epsilon: u64) -> Spend {
    Spend {
        epsilon: MicroEpsilon(epsilon),
        delta: PicoDelta(0),
        mechanism: Mechanism::Laplace,
    }
}

fn roomy() -> Budget {
    Budget {
        epsilon_total: MicroEpsilon(u64::MAX / 2),
        delta_total: PicoDelta(0),
    }
}

#[test]
fn laplace_counts_have_the_scale_epsilon_asks_for() {
    // One single-choice question, ε = 0.1: scale 10, so the mean absolute error of a count is
    // about 10 (9.98 for the discrete Laplace). Counts of 200 keep clear of the clamp at 0.
    let questions = vec![Question {
        id: "q".into(),
        kind: QuestionKind::SingleChoice { options: 10 },
    }];
    let responses: Vec<Response> = (0..2000)
        .map(|i| Response {
            cohort: "a".into(),
            answers: vec![Some(Answer::Choice((i % 10) as u16))],
        })
        .collect();
    let request = DpRequest {
        epsilon: MicroEpsilon(100_000),
        cohorts: vec!["a".into()],
        max_choices: 1,
    };
    let (mut error, mut draws) = (0.0, 0u32);
    for _ in 0..400 {
        let out = release_dp(&questions, &responses, &request, &roomy(), &[]).unwrap();
        let q = &out.questions[0];
        assert!((q.count_scale - 10.0).abs() < 1e-6);
        for &c in &q.counts[0] {
            error += (c as f64 - 200.0).abs();
            draws += 1;
        }
    }
    let mae = error / f64::from(draws);
    // 4000 draws: the standard error is about 0.16, so ±1.5 is nearly ten of them.
    assert!(
        (8.5..=11.5).contains(&mae),
        "mean absolute error {mae}, expected about 10"
    );
}

#[test]
fn noisy_means_stay_within_bounds_and_counts_are_nonnegative() {
    let questions = vec![
        Question {
            id: "rating".into(),
            kind: QuestionKind::Rating { scale: 5 },
        },
        Question {
            id: "number".into(),
            kind: QuestionKind::Number {
                min: -2.0,
                max: 3.0,
            },
        },
        Question {
            id: "multi".into(),
            kind: QuestionKind::MultipleChoice { options: 3 },
        },
    ];
    // Tiny cohorts and a small ε: noise dominates, so bounds and clamps are exercised.
    let responses: Vec<Response> = (0..6)
        .map(|i| Response {
            cohort: if i % 2 == 0 { "a" } else { "b" }.into(),
            answers: vec![
                Some(Answer::Rating(5)),
                Some(Answer::Number(3.0)),
                Some(Answer::Choices(vec![0, 1, 2, 2])),
            ],
        })
        .collect();
    let request = DpRequest {
        epsilon: MicroEpsilon(30_000),
        cohorts: vec!["a".into(), "b".into(), "empty".into()],
        max_choices: 2,
    };
    for _ in 0..200 {
        let out = release_dp(&questions, &responses, &request, &roomy(), &[]).unwrap();
        assert_eq!(out.spend, laplace(30_000));
        let rating = out.questions[0].means.as_ref().unwrap();
        for m in rating.cohorts.iter().chain([&rating.overall]).flatten() {
            assert!((1.0..=5.0).contains(m), "{m}");
        }
        let number = out.questions[1].means.as_ref().unwrap();
        for m in number.cohorts.iter().chain([&number.overall]).flatten() {
            assert!((-2.0..=3.0).contains(m), "{m}");
        }
        // Multiple choice: sensitivity max_choices + 1.
        assert!((out.questions[2].count_scale - 3.0 / 0.01).abs() < 1e-3);
        assert_eq!(out.questions[2].counts.len(), 3);
    }
}

#[test]
fn a_release_over_budget_is_refused_and_unknown_cohorts_too() {
    let questions = vec![Question {
        id: "q".into(),
        kind: QuestionKind::Rating { scale: 3 },
    }];
    let request = DpRequest {
        epsilon: MicroEpsilon(500_000),
        cohorts: vec!["a".into()],
        max_choices: 1,
    };
    let budget = Budget {
        epsilon_total: MicroEpsilon(1_000_000),
        delta_total: PicoDelta(0),
    };
    let spent = [laplace(600_000)];
    assert!(matches!(
        release_dp(&questions, &[], &request, &budget, &spent),
        Err(DpError::Budget(_))
    ));
    let stranger = Response {
        cohort: "b".into(),
        answers: vec![None],
    };
    assert!(matches!(
        release_dp(&questions, &[stranger], &request, &budget, &[]),
        Err(DpError::UnknownCohort(_))
    ));
    // ε split over questions in whole millionths: 1 millionth over 3 questions is too little.
    let three = vec![
        questions[0].clone(),
        questions[0].clone(),
        questions[0].clone(),
    ];
    let tiny = DpRequest {
        epsilon: MicroEpsilon(2),
        ..request.clone()
    };
    assert!(matches!(
        plan(&three, &tiny),
        Err(DpError::EpsilonTooSmall { .. })
    ));
    let seven = DpRequest {
        epsilon: MicroEpsilon(7),
        ..request
    };
    // 7 over 3 questions: 2 each, 6 spent.
    assert_eq!(plan(&three, &seven).unwrap(), laplace(6));
}

proptest! {
    #[test]
    fn spends_never_exceed_the_budget(
        total_e in 0u64..5_000_000,
        total_d in 0u64..1_000,
        requests in prop::collection::vec((0u64..2_000_000, 0u64..400, any::<bool>()), 0..40),
    ) {
        let budget = Budget { epsilon_total: MicroEpsilon(total_e), delta_total: PicoDelta(total_d) };
        let mut ledger: Vec<Spend> = Vec::new();
        for (e, d, gaussian) in requests {
            let request = Spend {
                epsilon: MicroEpsilon(e),
                delta: PicoDelta(if gaussian { d } else { 0 }),
                mechanism: if gaussian { Mechanism::Gaussian } else { Mechanism::Laplace },
            };
            let before = ledger.clone();
            let spent_e: u64 = ledger.iter().map(|s| s.epsilon.0).sum();
            let spent_d: u64 = ledger.iter().map(|s| s.delta.0).sum();
            let fits = spent_e + e <= total_e && spent_d + request.delta.0 <= total_d;
            match check(&budget, &ledger, &request) {
                Ok(()) => {
                    prop_assert!(fits);
                    ledger.push(request);
                }
                Err(refused) => {
                    prop_assert!(!fits);
                    prop_assert_eq!(refused.request, request);
                    prop_assert_eq!(&ledger, &before);
                }
            }
            let spent_e: u64 = ledger.iter().map(|s| s.epsilon.0).sum();
            let spent_d: u64 = ledger.iter().map(|s| s.delta.0).sum();
            prop_assert!(spent_e <= total_e && spent_d <= total_d);
            prop_assert_eq!(remaining(&budget, &ledger), (MicroEpsilon(total_e - spent_e), PicoDelta(total_d - spent_d)));
        }
    }

    #[test]
    fn tiny_spends_are_never_lost(n in 1usize..2000) {
        // The float fail-open: 1e-17 added to 1.0 is 1.0. In millionths, every spend counts.
        let budget = Budget { epsilon_total: MicroEpsilon(1_000_000), delta_total: PicoDelta(0) };
        let mut ledger = vec![laplace(1_000_000 - n as u64)];
        for _ in 0..n {
            check(&budget, &ledger, &laplace(1)).unwrap();
            ledger.push(laplace(1));
        }
        prop_assert!(check(&budget, &ledger, &laplace(1)).is_err());
    }
}

#[test]
fn overflowing_spends_fail_closed() {
    let budget = Budget {
        epsilon_total: MicroEpsilon(u64::MAX),
        delta_total: PicoDelta(u64::MAX),
    };
    let spent = [laplace(u64::MAX - 1)];
    assert!(check(&budget, &spent, &laplace(1)).is_ok());
    assert!(check(&budget, &[laplace(u64::MAX), laplace(1)], &laplace(0)).is_err());
}
