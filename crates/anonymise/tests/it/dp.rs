//! Differentially private releases: the noise has the scale the ε (and, for the Gaussian, δ) asks
//! for (statistically, with a generous fixed tolerance), the Gaussian's σ is the smallest OpenDP's
//! own map accepts, released values stay within their bounds, δ must suit the mechanism, and the
//! budget accounting never lets spends pass the total.

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

fn gaussian(epsilon: u64, delta: u64) -> Spend {
    Spend {
        epsilon: MicroEpsilon(epsilon),
        delta: PicoDelta(delta),
        mechanism: Mechanism::Gaussian,
    }
}

fn roomy() -> Budget {
    Budget {
        epsilon_total: MicroEpsilon(u64::MAX / 2),
        delta_total: PicoDelta(u64::MAX / 2),
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
    let request = DpRequest::laplace(MicroEpsilon(100_000), vec!["a".into()], 1);
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

fn mixed_questions() -> Vec<Question> {
    vec![
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
    ]
}

/// Six respondents in cohorts a and b, everyone at the top of every scale.
fn tiny_responses() -> Vec<Response> {
    (0..6)
        .map(|i| Response {
            cohort: if i % 2 == 0 { "a" } else { "b" }.into(),
            answers: vec![
                Some(Answer::Rating(5)),
                Some(Answer::Number(3.0)),
                Some(Answer::Choices(vec![0, 1, 2, 2])),
            ],
        })
        .collect()
}

/// Releases `request` over [`mixed_questions`] and [`tiny_responses`] many times: means stay
/// within their bounds, and counts that noise pushes below 0 are reported as 0 rather than
/// wrapping (a wrapped count would be near `u64::MAX`). Returns the spends and whether a count
/// of the empty cohort was ever clamped to 0.
fn check_bounds(request: &DpRequest, budget: &Budget) -> (Vec<Spend>, bool) {
    let (questions, responses) = (mixed_questions(), tiny_responses());
    let (mut spends, mut clamped) = (Vec::new(), false);
    for _ in 0..200 {
        let out = release_dp(&questions, &responses, request, budget, &[]).unwrap();
        spends.push(out.spend);
        let rating = out.questions[0].means.as_ref().unwrap();
        for m in rating.cohorts.iter().chain([&rating.overall]).flatten() {
            assert!((1.0..=5.0).contains(m), "{m}");
        }
        let number = out.questions[1].means.as_ref().unwrap();
        for m in number.cohorts.iter().chain([&number.overall]).flatten() {
            assert!((-2.0..=3.0).contains(m), "{m}");
        }
        assert_eq!(out.questions[2].counts.len(), 3);
        for q in &out.questions {
            for &c in q.counts.iter().flatten().chain(&q.overall).chain(&q.n) {
                assert!(c < 1 << 32, "count {c} of {}", q.id);
            }
            clamped |= q.counts[2].contains(&0) || q.n[2] == 0;
        }
    }
    (spends, clamped)
}

#[test]
fn noisy_means_stay_within_bounds_and_counts_are_nonnegative() {
    // Tiny cohorts and a small ε: noise dominates, so bounds and clamps are exercised.
    let request = DpRequest::laplace(
        MicroEpsilon(30_000),
        vec!["a".into(), "b".into(), "empty".into()],
        2,
    );
    let out = release_dp(
        &mixed_questions(),
        &tiny_responses(),
        &request,
        &roomy(),
        &[],
    )
    .unwrap();
    // Multiple choice: L1 sensitivity max_choices + 1.
    assert!((out.questions[2].count_scale - 3.0 / 0.01).abs() < 1e-3);
    let (spends, clamped) = check_bounds(&request, &roomy());
    assert!(spends.iter().all(|s| *s == laplace(30_000)));
    assert!(clamped, "noise never took an empty cohort's count below 0");
}

#[test]
fn gaussian_means_stay_within_bounds_and_counts_are_nonnegative() {
    let request = DpRequest::gaussian(
        MicroEpsilon(30_000),
        PicoDelta(3_000_000),
        vec!["a".into(), "b".into(), "empty".into()],
        2,
    );
    let (spends, clamped) = check_bounds(&request, &roomy());
    assert!(spends.iter().all(|s| *s == gaussian(30_000, 3_000_000)));
    assert!(clamped, "noise never took an empty cohort's count below 0");
}

#[test]
fn a_release_over_budget_is_refused_and_unknown_cohorts_too() {
    let questions = vec![Question {
        id: "q".into(),
        kind: QuestionKind::Rating { scale: 3 },
    }];
    let request = DpRequest::laplace(MicroEpsilon(500_000), vec!["a".into()], 1);
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

fn single_choice(options: u16) -> Vec<Question> {
    vec![Question {
        id: "q".into(),
        kind: QuestionKind::SingleChoice { options },
    }]
}

/// 200 respondents per option of a ten-option single-choice question, in cohort a.
fn two_hundred_each() -> Vec<Response> {
    (0..2000)
        .map(|i| Response {
            cohort: "a".into(),
            answers: vec![Some(Answer::Choice((i % 10) as u16))],
        })
        .collect()
}

#[test]
fn gaussian_counts_have_the_reported_standard_deviation() {
    // ε = 0.5, δ = 10⁻⁶ on one question: σ is about 8.7, so counts of 200 keep clear of the clamp
    // at 0 and the noise is simply count - 200.
    let questions = single_choice(10);
    let responses = two_hundred_each();
    let request = DpRequest::gaussian(
        MicroEpsilon(500_000),
        PicoDelta(1_000_000),
        vec!["a".into()],
        1,
    );
    let sigma = release_dp(&questions, &responses, &request, &roomy(), &[])
        .unwrap()
        .questions[0]
        .count_scale;
    // The classic bound σ = √(2 ln(1.25/δ))/ε = 10.6 is looser than the zCDP conversion; the
    // Laplace's standard deviation at this ε would be 2√2 = 2.8.
    assert!((4.0..10.6).contains(&sigma), "σ {sigma}");
    let (mut sum, mut squares, mut draws) = (0.0, 0.0, 0u32);
    for _ in 0..400 {
        let out = release_dp(&questions, &responses, &request, &roomy(), &[]).unwrap();
        let q = &out.questions[0];
        assert_eq!(
            q.count_scale, sigma,
            "σ is calibrated the same way every time"
        );
        for &c in &q.counts[0] {
            let noise = c as f64 - 200.0;
            sum += noise;
            squares += noise * noise;
            draws += 1;
        }
    }
    let n = f64::from(draws);
    let mean = sum / n;
    let sd = ((squares - sum * sum / n) / (n - 1.0)).sqrt();
    // 4000 draws: the standard error of the sample standard deviation is σ/√8000, about 1.1% of
    // σ, so ±6% is over five of them; the mean's is σ/√4000, about 0.13.
    assert!(
        (sd / sigma - 1.0).abs() < 0.06,
        "sample standard deviation {sd}, reported σ {sigma}"
    );
    assert!(mean.abs() < 0.1 * sigma, "mean noise {mean}");
}

#[test]
fn gaussian_scale_is_the_smallest_within_the_allotment() {
    use opendp::combinators::{make_fix_delta, make_zCDP_to_approxDP};
    use opendp::domains::{AtomDomain, VectorDomain};
    use opendp::measurements::make_gaussian;
    use opendp::measures::ZeroConcentratedDivergence;
    use opendp::metrics::L2Distance;

    // ε spent at δ = 10⁻⁶ by OpenDP's own map, for L2 sensitivity 1 at σ.
    let epsilon_at = |sigma: f64| {
        let m = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L2Distance::<f64>::default(),
            sigma,
            None,
        )
        .unwrap();
        let m = make_fix_delta(&make_zCDP_to_approxDP(m).unwrap(), 1e-6).unwrap();
        m.map(&1.0).unwrap().0
    };
    let request = DpRequest::gaussian(
        MicroEpsilon(1_000_000),
        PicoDelta(1_000_000),
        vec!["a".into()],
        3,
    );
    let out = release_dp(&single_choice(4), &[], &request, &roomy(), &[]).unwrap();
    let sigma = out.questions[0].count_scale;
    assert!(epsilon_at(sigma) <= 1.0);
    assert!(
        epsilon_at(sigma * (1.0 - 1e-6)) > 1.0,
        "σ {sigma} is not tight"
    );

    // Multiple choice with max_choices 3: L2 sensitivity √4 = 2, so twice the σ.
    let multi = vec![Question {
        id: "m".into(),
        kind: QuestionKind::MultipleChoice { options: 4 },
    }];
    let out = release_dp(&multi, &[], &request, &roomy(), &[]).unwrap();
    let ratio = out.questions[0].count_scale / sigma;
    assert!((ratio - 2.0).abs() < 1e-6, "σ ratio {ratio}");

    // Numbers: half the ε and δ to each of count and sum; the sum's sensitivity is (max-min)/2.
    let number = vec![Question {
        id: "x".into(),
        kind: QuestionKind::Number {
            min: 0.0,
            max: 10.0,
        },
    }];
    let out = release_dp(&number, &[], &request, &roomy(), &[]).unwrap();
    let q = &out.questions[0];
    let ratio = q.sum_scale.unwrap() / q.count_scale;
    assert!((ratio - 5.0).abs() < 1e-3, "sum/count σ ratio {ratio}");
    assert!(
        q.count_scale > sigma,
        "half the allotment must mean more noise"
    );
}

#[test]
fn a_gaussian_release_spends_exactly_what_was_planned() {
    let questions = mixed_questions();
    // Three questions: ε 1 and δ 1_000_001·10⁻¹² split into 333_333 units each, rounding down.
    let request = DpRequest::gaussian(
        MicroEpsilon(1_000_000),
        PicoDelta(1_000_001),
        vec!["a".into(), "b".into()],
        2,
    );
    let planned = plan(&questions, &request).unwrap();
    assert_eq!(planned, gaussian(999_999, 999_999));
    // A budget of exactly the plan is enough, and the release spends exactly it.
    let exact = Budget {
        epsilon_total: MicroEpsilon(999_999),
        delta_total: PicoDelta(999_999),
    };
    let out = release_dp(&questions, &tiny_responses(), &request, &exact, &[]).unwrap();
    assert_eq!(out.spend, planned);
    for q in &out.questions {
        assert_eq!(
            (q.epsilon, q.delta),
            (MicroEpsilon(333_333), PicoDelta(333_333))
        );
    }
    assert_eq!(
        remaining(&exact, &[out.spend]),
        (MicroEpsilon(0), PicoDelta(0))
    );
    // δ split too thin: 2 units over 3 questions.
    let thin = DpRequest {
        delta: PicoDelta(2),
        ..request
    };
    assert!(matches!(
        plan(&questions, &thin),
        Err(DpError::DeltaTooSmall { .. })
    ));
}

#[test]
fn a_gaussian_release_over_the_delta_budget_is_refused_before_responses_are_read() {
    let questions = single_choice(3);
    let request = DpRequest::gaussian(
        MicroEpsilon(100_000),
        PicoDelta(1_000_000),
        vec!["a".into()],
        1,
    );
    // Plenty of ε left, but only half the δ asked for.
    let budget = Budget {
        epsilon_total: MicroEpsilon(10_000_000),
        delta_total: PicoDelta(2_000_000),
    };
    let spent = [gaussian(100_000, 1_500_000), laplace(100_000)];
    // Responses that would fail validation (an unknown cohort, an answer out of range): the
    // refusal comes first, so they are never read.
    let unreadable = vec![Response {
        cohort: "nobody".into(),
        answers: vec![Some(Answer::Choice(99))],
    }];
    match release_dp(&questions, &unreadable, &request, &budget, &spent) {
        Err(DpError::Budget(refused)) => {
            assert_eq!(refused.request, gaussian(100_000, 1_000_000));
            assert_eq!(refused.delta_spent, PicoDelta(1_500_000));
            assert_eq!(refused.epsilon_spent, MicroEpsilon(200_000));
        }
        other => panic!("expected BudgetExhausted, got {other:?}"),
    }
    // With the δ there, the same responses are read and rejected.
    assert!(matches!(
        release_dp(&questions, &unreadable, &request, &roomy(), &[]),
        Err(DpError::Invalid(_) | DpError::UnknownCohort(_))
    ));
}

#[test]
fn delta_must_suit_the_mechanism() {
    let questions = single_choice(3);
    let cohorts = vec!["a".to_string()];
    let gaussian_without_delta =
        DpRequest::gaussian(MicroEpsilon(100_000), PicoDelta(0), cohorts.clone(), 1);
    let gaussian_delta_one = DpRequest::gaussian(
        MicroEpsilon(100_000),
        PicoDelta(1_000_000_000_000),
        cohorts.clone(),
        1,
    );
    let laplace_with_delta = DpRequest {
        delta: PicoDelta(1),
        ..DpRequest::laplace(MicroEpsilon(100_000), cohorts.clone(), 1)
    };
    for request in [&gaussian_without_delta, &gaussian_delta_one] {
        assert!(matches!(
            plan(&questions, request),
            Err(DpError::DeltaOutOfRange(_))
        ));
        assert!(matches!(
            release_dp(&questions, &[], request, &roomy(), &[]),
            Err(DpError::DeltaOutOfRange(_))
        ));
    }
    assert!(matches!(
        plan(&questions, &laplace_with_delta),
        Err(DpError::DeltaWithLaplace(PicoDelta(1)))
    ));
    assert!(matches!(
        release_dp(&questions, &[], &laplace_with_delta, &roomy(), &[]),
        Err(DpError::DeltaWithLaplace(_))
    ));
    // Just inside the range is accepted.
    let almost_one = DpRequest::gaussian(
        MicroEpsilon(100_000),
        PicoDelta(999_999_999_999),
        cohorts,
        1,
    );
    assert_eq!(
        plan(&questions, &almost_one).unwrap(),
        gaussian(100_000, 999_999_999_999)
    );
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
