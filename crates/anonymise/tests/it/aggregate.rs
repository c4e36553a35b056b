//! Aggregate releases: suppression properties over random tables, checked with the exact auditor,
//! and whole releases over random responses against their true counts.

use proptest::prelude::*;
use tutela_anonymise::aggregate::{
    Answer, Body, Cell, Leak, Position, Question, QuestionKind, Response, Rules, Table, audit,
    intervals, release, suppress,
};

/// Tables up to 12 × 12 of mostly small counts, so suppression has plenty to do.
fn tables() -> impl Strategy<Value = Vec<Vec<u64>>> {
    (1usize..=12, 1usize..=12).prop_flat_map(|(rows, cols)| {
        prop::collection::vec(
            prop::collection::vec(
                prop_oneof![3 => Just(0u64), 4 => 1u64..5, 3 => 5u64..40],
                cols,
            ),
            rows,
        )
    })
}

fn check_released_matches(counts: &[Vec<u64>], table: &Table, min_cell: u64) {
    let small = |x: u64| x > 0 && x < min_cell;
    for (r, row) in counts.iter().enumerate() {
        for (c, &x) in row.iter().enumerate() {
            match table.cells[r][c] {
                Cell::Count(v) => {
                    assert_eq!(v, x, "released cell ({r},{c}) differs from the true count");
                    assert!(!small(v), "released small cell ({r},{c}) = {v}");
                }
                Cell::Suppressed => {}
            }
        }
        if let Cell::Count(v) = table.row_totals[r] {
            assert_eq!(v, row.iter().sum::<u64>());
        }
    }
    for (c, total) in table.col_totals.iter().enumerate() {
        if let Cell::Count(v) = total {
            assert_eq!(*v, counts.iter().map(|row| row[c]).sum::<u64>());
            assert!(!small(*v), "released small column total {c} = {v}");
        }
    }
    if let Cell::Count(v) = table.total {
        assert_eq!(v, counts.iter().flatten().sum::<u64>());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn suppressed_tables_pass_the_audit(counts in tables(), min_cell in 2u64..8) {
        let table = suppress(&counts, min_cell).unwrap();
        check_released_matches(&counts, &table, min_cell);
        audit(&table).unwrap();
        for iv in intervals(&table).unwrap() {
            // Width at least 1: the true value is inside, and some other value is feasible.
            let truth = match iv.at {
                Position::Cell { row, col } => counts[row][col],
                Position::RowTotal(r) => counts[r].iter().sum(),
                Position::ColTotal(c) => counts.iter().map(|row| row[c]).sum(),
                Position::Total => counts.iter().flatten().sum(),
            };
            prop_assert!(iv.min <= truth && iv.max.is_none_or(|m| m >= truth), "{iv:?} misses {truth}");
            prop_assert!(iv.max.is_none_or(|m| m > iv.min), "{iv:?} is a single value");
            // Where the value is positive it can also go down, and it can always go up.
            if truth > 0 {
                prop_assert!(iv.min < truth, "{iv:?} cannot go below {truth}");
            }
            prop_assert!(iv.max.is_none_or(|m| m > truth), "{iv:?} cannot go above {truth}");
        }
    }
}

#[test]
fn audit_finds_a_cell_solvable_only_by_combining_rows_and_columns() {
    // Row 0 has two suppressed cells, so the row alone does not give them; but column 1's only
    // suppressed cell is (0,1), so the column total gives it, and then row 0 gives (0,0).
    let table = Table {
        cells: vec![
            vec![Cell::Suppressed, Cell::Suppressed, Cell::Count(9)],
            vec![Cell::Suppressed, Cell::Count(8), Cell::Count(7)],
            vec![Cell::Suppressed, Cell::Count(6), Cell::Count(9)],
        ],
        row_totals: vec![Cell::Count(14), Cell::Count(17), Cell::Count(17)],
        col_totals: vec![Cell::Count(7), Cell::Count(16), Cell::Count(25)],
        total: Cell::Count(48),
    };
    assert!(matches!(audit(&table), Err(Leak::Derivable { .. })));
}

#[test]
fn audit_refuses_inconsistent_tables() {
    let table = Table {
        cells: vec![vec![Cell::Suppressed, Cell::Count(9)]],
        row_totals: vec![Cell::Count(5)],
        col_totals: vec![Cell::Suppressed, Cell::Count(9)],
        total: Cell::Count(5),
    };
    assert_eq!(audit(&table), Err(Leak::Inconsistent));
}

#[test]
fn a_single_cohort_hides_small_overall_counts_too() {
    // One row: the column totals are the row, so they must be suppressed with the cells.
    let table = suppress(&[vec![3, 20, 30]], 5).unwrap();
    assert!(table.cells[0][0].is_suppressed());
    assert!(table.col_totals[0].is_suppressed());
    audit(&table).unwrap();
}

fn questions() -> Vec<Question> {
    vec![
        Question {
            id: "rating".into(),
            kind: QuestionKind::Rating { scale: 5 },
        },
        Question {
            id: "single".into(),
            kind: QuestionKind::SingleChoice { options: 3 },
        },
        Question {
            id: "multi".into(),
            kind: QuestionKind::MultipleChoice { options: 4 },
        },
        Question {
            id: "number".into(),
            kind: QuestionKind::Number {
                min: 0.0,
                max: 40.0,
            },
        },
    ]
}

fn responses() -> impl Strategy<Value = Vec<Response>> {
    let answer = (
        prop::option::weighted(0.9, 1u16..=5),
        prop::option::weighted(0.9, 0u16..3),
        prop::option::weighted(0.9, prop::collection::vec(0u16..4, 0..4)),
        prop::option::weighted(0.9, 0.0f64..=40.0),
    );
    prop::collection::vec((0usize..8, answer), 0..300).prop_map(|rows| {
        rows.into_iter()
            .map(|(cohort, (a, b, c, d))| Response {
                // Uneven cohort sizes: low labels are much likelier, so some fall below minimum.
                cohort: format!("run-{}", cohort * cohort % 8),
                answers: vec![
                    a.map(Answer::Rating),
                    b.map(Answer::Choice),
                    c.map(Answer::Choices),
                    d.map(Answer::Number),
                ],
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn releases_withhold_small_cohorts_and_publish_true_counts(
        responses in responses(),
        min_cohort in 1u64..30,
        min_cell in 2u64..6,
    ) {
        let questions = questions();
        let rules = Rules { min_cohort, min_cell };
        let out = release(&questions, &responses, &rules).unwrap();
        let size = |label: &str| responses.iter().filter(|r| r.cohort == label).count() as u64;
        for label in &out.withheld {
            prop_assert!(size(label) < min_cohort);
            prop_assert!(!out.cohorts.contains(label));
        }
        for label in &out.cohorts {
            prop_assert!(size(label) >= min_cohort);
        }
        let cohorts = &out.cohorts;
        let responses = &responses;
        let in_row = move |r: usize| responses.iter().filter(move |resp| resp.cohort == cohorts[r]);
        for q in &out.questions {
            match &q.body {
                Body::Distribution { table, means } => {
                    let index = if q.id == "rating" { 0 } else { 1 };
                    let counts: Vec<Vec<u64>> = (0..out.cohorts.len())
                        .map(|r| {
                            let mut row = vec![0u64; table.col_totals.len()];
                            for resp in in_row(r) {
                                match resp.answers[index] {
                                    Some(Answer::Rating(v)) => row[usize::from(v) - 1] += 1,
                                    Some(Answer::Choice(o)) => row[usize::from(o)] += 1,
                                    _ => {}
                                }
                            }
                            row
                        })
                        .collect();
                    check_released_matches(&counts, table, min_cell);
                    audit(table).unwrap();
                    if let Some(means) = means {
                        for (r, m) in means.cohorts.iter().enumerate() {
                            if m.is_some() {
                                prop_assert!(table.cells[r].iter().all(|c| !c.is_suppressed()));
                            }
                        }
                    }
                }
                Body::MultipleChoice { options } => {
                    for (o, table) in options.iter().enumerate() {
                        let counts: Vec<Vec<u64>> = (0..out.cohorts.len())
                            .map(|r| {
                                let (mut yes, mut no) = (0, 0);
                                for resp in in_row(r) {
                                    if let Some(Answer::Choices(os)) = &resp.answers[2] {
                                        if os.contains(&(o as u16)) { yes += 1 } else { no += 1 }
                                    }
                                }
                                vec![yes, no]
                            })
                            .collect();
                        check_released_matches(&counts, table, min_cell);
                        audit(table).unwrap();
                        // The option tables agree on which row totals they publish.
                        prop_assert_eq!(&table.row_totals, &options[0].row_totals);
                    }
                }
                Body::Number { n, n_total, means } => {
                    prop_assert_eq!(n.iter().sum::<u64>(), *n_total);
                    for (r, m) in means.cohorts.iter().enumerate() {
                        if let Some(m) = m {
                            prop_assert!(n[r] >= min_cell);
                            prop_assert!((0.0..=40.0).contains(m));
                        }
                    }
                    let hidden = (0..n.len()).filter(|&r| n[r] > 0 && means.cohorts[r].is_none()).count();
                    prop_assert!(hidden != 1 || means.overall.is_none());
                }
            }
        }
    }
}

#[test]
fn out_of_range_answers_are_refused_and_debug_redacts() {
    let questions = questions();
    let bad = Response {
        cohort: "run-1".into(),
        answers: vec![Some(Answer::Rating(6)), None, None, None],
    };
    assert!(release(&questions, std::slice::from_ref(&bad), &Rules::default()).is_err());
    assert_eq!(format!("{bad:?}"), "[redacted]");
    assert_eq!(format!("{:?}", Answer::Number(3.5)), "[redacted]");
}
