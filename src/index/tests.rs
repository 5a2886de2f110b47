//! Golden cases for `chiso index score`, worked out by hand from SPEC §4.

use super::*;

fn methodologies() -> Methodologies {
    Methodologies::embedded().unwrap()
}

/// Parses the output into (unit, period, indicator) → (numerator, denominator, ratio, points, max).
fn parse_out(out: &str) -> BTreeMap<(String, String, String), [String; 5]> {
    let mut r = csv::Reader::from_reader(out.as_bytes());
    assert_eq!(
        r.headers().unwrap().iter().collect::<Vec<_>>(),
        vec![
            "unit_id",
            "period",
            "indicator",
            "numerator",
            "denominator",
            "ratio",
            "points",
            "max_points"
        ]
    );
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            (
                (rec[0].to_string(), rec[1].to_string(), rec[2].to_string()),
                [
                    rec[3].to_string(),
                    rec[4].to_string(),
                    rec[5].to_string(),
                    rec[6].to_string(),
                    rec[7].to_string(),
                ],
            )
        })
        .collect()
}

fn close(got: &str, want: f64) -> bool {
    got.parse::<f64>().is_ok_and(|g| (g - want).abs() < 1e-9)
}

#[test]
fn one_unit_one_month_by_hand() {
    let counts = "unit_id,period,indicator,numerator,denominator
U1,2026-08,PUBLISH_ON_TIME,3,4
U1,2026-08,PUBLIC_UPDATE_ON_TIME,0,0
U1,2026-08,DOSSIER_SYNC,95,100
U1,2026-08,ON_TIME_HANDLING,78,100
U1,2026-08,ONLINE_SERVICE_PROVIDED,70,100
U1,2026-08,ONLINE_DOSSIER_SHARE,99,100
U1,2026-08,ONLINE_PAYMENT_DOSSIER,0,0
U1,2026-08,PETITION_PROCESSING_ON_TIME,0,0
U1,2026-08,DOSSIER_RECEIVING_SATISFACTION,78,100
U1,2026-08,PETITION_CLASSIFICATION_TTHC,72,100
";
    let out = score(counts, "counts.csv", &methodologies(), None).unwrap();
    let rows = parse_out(&out);
    let get = |i: &str| {
        rows.get(&("U1".into(), "2026-08".into(), i.into()))
            .unwrap_or_else(|| panic!("{i} missing:\n{out}"))
    };
    // 3/4 = 0.75 of target 1 → 6 × 0.75 = 4.5
    assert!(close(&get("PUBLISH_ON_TIME")[2], 0.75) && close(&get("PUBLISH_ON_TIME")[3], 4.5));
    // 0/0, "not scored": ratio and points empty.
    assert_eq!(
        &get("PUBLIC_UPDATE_ON_TIME")[2..4],
        &["".to_string(), "".to_string()]
    );
    // 95/100 → 6 × 0.95 = 5.7
    assert!(close(&get("DOSSIER_SYNC")[3], 5.7));
    // 78/100 of 20 → 15.6
    assert!(close(&get("ON_TIME_HANDLING")[3], 15.6));
    // 0.70 against target 0.8 → 2 × 0.7 / 0.8 = 1.75
    assert!(close(&get("ONLINE_SERVICE_PROVIDED")[3], 1.75));
    // 0.99 against target 0.5 → capped at the maximum, 6
    assert!(close(&get("ONLINE_DOSSIER_SHARE")[3], 6.0));
    // 0/0 with "zero": 0 points, ratio empty
    assert_eq!(get("ONLINE_PAYMENT_DOSSIER")[2], "");
    assert!(close(&get("ONLINE_PAYMENT_DOSSIER")[3], 0.0));
    // 0/0 with "full": the maximum, 6
    assert!(close(&get("PETITION_PROCESSING_ON_TIME")[3], 6.0));
    // 0.78 against target 0.9 → 6 × 0.78 / 0.9 = 5.2
    assert!(close(&get("DOSSIER_RECEIVING_SATISFACTION")[3], 5.2));
    // Shown, not scored: the share is shown, points empty, max 0.
    assert!(close(&get("PETITION_CLASSIFICATION_TTHC")[2], 0.72));
    assert_eq!(get("PETITION_CLASSIFICATION_TTHC")[3], "");
    assert_eq!(get("PETITION_CLASSIFICATION_TTHC")[4], "0");
    // Not applicable to tax units: the maximum, though absent from the input.
    let ecc = get("ELECTRONIC_CERTIFIED_COPY");
    assert_eq!((&ecc[0][..], &ecc[1][..], &ecc[2][..]), ("", "", ""));
    assert!(close(&ecc[3], 2.0));
    // Absent indicators are not scored: no row.
    assert!(!rows.contains_key(&("U1".into(), "2026-08".into(), "PUBLIC_CONTENT_FULL".into())));
    // Counts are echoed as given.
    assert_eq!(get("ON_TIME_HANDLING")[0], "78");
    // Groups are sums; not-scored adds 0.
    for (g, want, max) in [
        ("GROUP:CKMB", 4.5 + 5.7, 18.0),
        ("GROUP:TDGQ", 15.6, 20.0),
        ("GROUP:CLGQ", 1.75 + 6.0, 12.0),
        ("GROUP:TTTT", 0.0, 10.0),
        ("GROUP:MDSH", 2.0, 22.0),
        ("GROUP:MDHL", 6.0 + 5.2, 18.0),
        ("TOTAL", 10.2 + 15.6 + 7.75 + 0.0 + 2.0 + 11.2, 100.0),
    ] {
        let r = get(g);
        assert!(close(&r[3], want), "{g}: {} != {want}", r[3]);
        assert!(close(&r[4], max), "{g} max");
        assert_eq!(&r[0..3], &["".to_string(), "".to_string(), "".to_string()]);
    }
    // Order: indicators of a unit-period, then its groups, then its total.
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[1].contains("PUBLISH_ON_TIME"));
    assert!(lines.last().unwrap().contains(",TOTAL,"));
}

#[test]
fn quarters_years_and_several_units() {
    let counts = "unit_id,period,indicator,numerator,denominator
B,2026,ON_TIME_HANDLING,1,2
A,2026-Q3,ON_TIME_HANDLING,9,10
A,2026-Q3,ONLINE_PAYMENT_FORMALITY,3,4
";
    let out = score(counts, "c.csv", &methodologies(), Some("dvcqg-2026")).unwrap();
    let rows = parse_out(&out);
    let p = |u: &str, per: &str, i: &str| rows[&(u.into(), per.into(), i.into())][3].clone();
    assert!(close(&p("B", "2026", "ON_TIME_HANDLING"), 10.0));
    assert!(close(&p("A", "2026-Q3", "ON_TIME_HANDLING"), 18.0));
    // 0.75 against target 0.8 → 2 × 0.75 / 0.8 = 1.875
    assert!(close(&p("A", "2026-Q3", "ONLINE_PAYMENT_FORMALITY"), 1.875));
    assert!(close(&p("A", "2026-Q3", "TOTAL"), 18.0 + 1.875 + 2.0));
    assert!(close(&p("B", "2026", "TOTAL"), 12.0));
    // Units in order, A first.
    assert!(out.lines().nth(1).unwrap().starts_with("A,2026-Q3,"));
}

#[test]
fn bad_input_names_the_line() {
    let m = methodologies();
    let bad = |body: &str| {
        score(
            &format!("unit_id,period,indicator,numerator,denominator\n{body}"),
            "c.csv",
            &m,
            None,
        )
        .unwrap_err()
        .to_string()
    };
    let e = bad("U1,2026-08,ON_TIME_HANDLING,1,2\nU1,2026-08,NOT_AN_INDICATOR,1,2\n");
    assert!(
        e.starts_with("c.csv:3: unknown indicator \"NOT_AN_INDICATOR\""),
        "{e}"
    );
    let e = bad("U1,2026-08,ON_TIME_HANDLING,-1,2\n");
    assert!(e.starts_with("c.csv:2: numerator -1 is negative"), "{e}");
    let e = bad("U1,2026-13,ON_TIME_HANDLING,1,2\n");
    assert!(e.starts_with("c.csv:2: period \"2026-13\""), "{e}");
    let e = bad("U1,2026-08,ON_TIME_HANDLING,x,2\n");
    assert!(
        e.starts_with("c.csv:2: numerator \"x\" is not a number"),
        "{e}"
    );
    let e = bad("U1,2026-08,ON_TIME_HANDLING,1,2\nU1,2026-08,ON_TIME_HANDLING,1,2\n");
    assert!(e.contains("c.csv:3:") && e.contains("twice"), "{e}");
    let e = score("unit,period\n", "c.csv", &m, None)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.csv:1: the header must be"), "{e}");
    let e = score(
        "unit_id,period,indicator,numerator,denominator\n",
        "c.csv",
        &m,
        Some("v9"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("unknown methodology \"v9\""), "{e}");
}

#[test]
fn periods_parse() {
    assert_eq!(Period::parse("2026-08"), Some(Period::Month(2026, 8)));
    assert_eq!(Period::parse("2026-Q3").unwrap().first_month(), "2026-07");
    assert_eq!(Period::parse("2026").unwrap().first_month(), "2026-01");
    for bad in ["2026-8", "2026-Q5", "26-08", "2026-00", "2026-1a", ""] {
        assert_eq!(Period::parse(bad), None, "{bad}");
    }
}

#[test]
fn methodology_file_is_complete() {
    let m = methodologies();
    let rules = m.rules_of("dvcqg-2026");
    // The 23 indicators of SPEC §4 and three measures shown but not scored: average handling
    // time and the in-person and postal shares of received dossiers.
    assert_eq!(rules.len(), 26);
    assert_eq!(rules.iter().filter(|r| !r.scored).count(), 5);
    let total: f64 = rules.iter().map(|r| r.max_points).sum();
    assert_eq!(total, 100.0);
}

#[test]
fn the_sync_window_is_dossier_syncs_parameter() {
    let m = methodologies();
    let sync = m
        .rules_of("dvcqg-2026")
        .into_iter()
        .find(|r| r.indicator == "DOSSIER_SYNC")
        .unwrap();
    assert_eq!(sync.window_hours, Some(24.0));
    let text = include_str!("../../sql/methodology/dvcqg-2026.csv");
    let with = |from: &str, to: &str| {
        let changed = text.replacen(from, to, 1);
        assert_ne!(changed, text, "{from:?} is in the file");
        Methodologies::parse(vec![("m.csv".into(), changed)])
            .err()
            .map(|e| format!("{e:#}"))
    };
    // Another indicator with a window, a window of 0 or of part of an hour: named errors.
    let online = ",ONLINE_DOSSIER_SHARE,";
    let line = text.lines().find(|l| l.contains(online)).unwrap();
    let e = with(line, &format!("{line}12")).unwrap();
    assert!(
        e.contains("m.csv:") && e.contains("DOSSIER_SYNC's parameter only"),
        "{e}"
    );
    let sync_line = text.lines().find(|l| l.contains(",DOSSIER_SYNC,")).unwrap();
    let zero = sync_line.strip_suffix(",24").unwrap().to_string() + ",0";
    assert!(with(sync_line, &zero)
        .unwrap()
        .contains("whole number of hours"));
    let part = sync_line.strip_suffix(",24").unwrap().to_string() + ",1.5";
    assert!(with(sync_line, &part)
        .unwrap()
        .contains("whole number of hours"));
    // Empty: SPEC's default (24, applied where the window is used).
    let empty = sync_line.strip_suffix(",24").unwrap().to_string() + ",";
    assert_eq!(with(sync_line, &empty), None);
}
