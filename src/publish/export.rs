//! The files of a revision, under `warehouse/exports/<period>/rev-<N>/`, written from the
//! ledger's rows (never from the marts, which move on): CSV and JSON per unit level, an XLSX
//! workbook, the HTML report and `manifest.json` with every file's SHA-256. A revision's folder
//! is written whole under a temporary name and renamed into place, so it is either complete or
//! absent; a publish writes the folders missing after a crash.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::rows::{status_vi, IndicatorRow, Meta, Revision, UnitRow, GROUPS};
use crate::fs::{sync_dir, write_durably};

pub fn exports_dir(warehouse: &Path) -> PathBuf {
    warehouse.join("exports")
}

/// The folder of a final revision (`rev-<N>`), or of the period's preview (revision 0,
/// `preview-<when it was made>`: a new preview gets a new folder, and the older one goes).
pub fn revision_dir(warehouse: &Path, period: &str, revision: i64) -> PathBuf {
    exports_dir(warehouse)
        .join(period)
        .join(format!("rev-{revision}"))
}

/// The folder of `meta`'s revision: `rev-<N>` for a final one, `preview-<created_at>` for the
/// preview.
pub fn folder_of(warehouse: &Path, meta: &super::rows::Meta) -> PathBuf {
    folder(warehouse, &meta.period, meta.revision, &meta.created_at)
}

/// [`folder_of`] from the record's parts (`created_at` as [`super::rows::Meta`] has it).
pub fn folder(warehouse: &Path, period: &str, revision: i64, created_at: &str) -> PathBuf {
    if revision == super::revision::PREVIEW {
        let when: String = created_at
            .chars()
            .take(19)
            .filter(|c| c.is_ascii_digit() || *c == 'T')
            .collect();
        exports_dir(warehouse)
            .join(period)
            .join(format!("preview-{when}"))
    } else {
        revision_dir(warehouse, period, revision)
    }
}

/// Deletes the period's preview folders but `keep` (older previews, and any once a final
/// revision exists).
pub fn prune_previews(warehouse: &Path, period: &str, keep: Option<&Path>) -> anyhow::Result<()> {
    let dir = exports_dir(warehouse).join(period);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let is_preview = name.starts_with("preview-") || name.starts_with(".rev-0.tmp-");
        if is_preview && keep.is_none_or(|k| k != e.path()) {
            std::fs::remove_dir_all(e.path())
                .with_context(|| format!("removing the older preview {}", e.path().display()))?;
        }
    }
    Ok(())
}

const UNIT_HEADERS: [&str; 15] = [
    "unit_id",
    "unit_name",
    "unit_level",
    "parent_unit_id",
    "period",
    "ckmb",
    "tdgq",
    "clgq",
    "tttt",
    "mdsh",
    "mdhl",
    "total",
    "rank_among_siblings",
    "change_from_previous",
    "status",
];

const INDICATOR_HEADERS: [&str; 8] = [
    "unit_id",
    "group_code",
    "indicator",
    "numerator",
    "denominator",
    "ratio",
    "points",
    "max_points",
];

/// A text cell as a CSV file carries it: one that starts like a formula (`=`, `+`, `-`, `@`,
/// a tab or a carriage return) gets a leading `'`, so a spreadsheet opening the file shows it
/// as text instead of running it (OWASP's CSV injection advice). Numbers are written apart.
pub fn text_cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// The units of `levels` as CSV (full precision; the workbook and the report round).
pub fn units_csv(rev: &Revision, levels: &[i64]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(UNIT_HEADERS)?;
    for u in rev
        .units
        .iter()
        .filter(|u| u.unit_level.is_some_and(|l| levels.contains(&l)))
    {
        w.write_record([
            text_cell(&u.unit_id),
            text_cell(u.unit_name.as_deref().unwrap_or_default()),
            u.unit_level.map(|l| l.to_string()).unwrap_or_default(),
            text_cell(u.parent_unit_id.as_deref().unwrap_or_default()),
            text_cell(&u.period),
            u.ckmb.to_string(),
            u.tdgq.to_string(),
            u.clgq.to_string(),
            u.tttt.to_string(),
            u.mdsh.to_string(),
            u.mdhl.to_string(),
            u.total.to_string(),
            u.rank_among_siblings
                .map(|r| r.to_string())
                .unwrap_or_default(),
            num(u.change_from_previous),
            text_cell(&u.status),
        ])?;
    }
    Ok(w.into_inner()?)
}

fn indicators_csv(rev: &Revision, level: i64) -> anyhow::Result<Vec<u8>> {
    let units: std::collections::BTreeSet<&str> =
        rev.units_of(level).map(|u| u.unit_id.as_str()).collect();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(INDICATOR_HEADERS)?;
    for i in rev
        .indicators
        .iter()
        .filter(|i| units.contains(i.unit_id.as_str()))
    {
        w.write_record([
            text_cell(&i.unit_id),
            text_cell(i.group_code.as_deref().unwrap_or_default()),
            text_cell(&i.indicator),
            num(i.numerator),
            num(i.denominator),
            num(i.ratio),
            num(i.points),
            num(i.max_points),
        ])?;
    }
    Ok(w.into_inner()?)
}

/// The revision's record and the units of `levels`, each with its indicators: the JSON file
/// of a level and the JSON the portals receive.
pub fn units_json(rev: &Revision, levels: &[i64]) -> serde_json::Value {
    let by_unit = rev.indicators_by_unit();
    let units: Vec<serde_json::Value> = rev
        .units
        .iter()
        .filter(|u| u.unit_level.is_some_and(|l| levels.contains(&l)))
        .map(|u| {
            let mut v = serde_json::to_value(u).expect("serialisable");
            v["indicators"] =
                serde_json::to_value(by_unit.get(u.unit_id.as_str())).expect("serialisable");
            v
        })
        .collect();
    serde_json::json!({
        "period": rev.meta.period,
        "revision": rev.meta.revision,
        "status": rev.meta.status,
        "methodology": rev.meta.methodology,
        "data_watermark": rev.meta.data_watermark,
        "previous_revision": rev.meta.previous_revision,
        "change_note": rev.meta.change_note,
        "levels": levels,
        "units": units,
    })
}

/// The workbook an office sends: a sheet per unit level, a sheet of indicator detail,
/// Vietnamese headers, numbers shown to 2 decimals, the header row frozen.
pub fn workbook(rev: &Revision) -> anyhow::Result<Vec<u8>> {
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook};
    let mut wb = Workbook::new();
    // Stamped with the revision's time, not the writing's: a revision's files are the same
    // bytes whenever they are written (again, after a crash).
    let created = chrono::NaiveDateTime::parse_from_str(
        rev.meta.created_at.get(..19).unwrap_or_default(),
        "%Y-%m-%dT%H:%M:%S",
    )
    .with_context(|| format!("the revision's time {:?}", rev.meta.created_at))?;
    {
        use chrono::{Datelike, Timelike};
        let stamp = ExcelDateTime::from_ymd(
            created.year() as u16,
            created.month() as u8,
            created.day() as u8,
        )?
        .and_hms(
            created.hour() as u16,
            created.minute() as u8,
            created.second(),
        )?;
        wb.set_properties(
            &DocProperties::new()
                .set_title(format!(
                    "Chỉ số phục vụ — kỳ {}, {}",
                    rev.meta.period,
                    if rev.meta.revision == super::revision::PREVIEW {
                        "bản xem trước".to_string()
                    } else {
                        format!("lần công bố {}", rev.meta.revision)
                    }
                ))
                .set_author("chiso")
                .set_creation_datetime(&stamp),
        );
    }
    let head = Format::new().set_bold().set_text_wrap();
    let two = Format::new().set_num_format("0.00");
    let mut unit_headers: Vec<String> = vec![
        "Mã đơn vị".into(),
        "Tên đơn vị".into(),
        "Đơn vị cấp trên".into(),
    ];
    unit_headers.extend(
        GROUPS
            .iter()
            .map(|(_, code, name, max)| format!("{name} ({code}, tối đa {max})")),
    );
    unit_headers.extend([
        "Tổng điểm".into(),
        "Xếp hạng".into(),
        "Thay đổi so với kỳ trước".into(),
        "Trạng thái".into(),
    ]);
    for level in rev.levels() {
        let ws = wb.add_worksheet();
        ws.set_name(sheet_name(level))?;
        for (c, h) in unit_headers.iter().enumerate() {
            ws.write_string_with_format(0, c as u16, h, &head)?;
        }
        for (r, u) in rev.units_of(level).enumerate() {
            let r = r as u32 + 1;
            ws.write_string(r, 0, &u.unit_id)?;
            ws.write_string(r, 1, u.unit_name.as_deref().unwrap_or(""))?;
            ws.write_string(r, 2, u.parent_unit_id.as_deref().unwrap_or(""))?;
            for (k, (col, ..)) in GROUPS.iter().enumerate() {
                ws.write_number_with_format(r, 3 + k as u16, u.group(col), &two)?;
            }
            ws.write_number_with_format(r, 9, u.total, &two)?;
            if let Some(rank) = u.rank_among_siblings {
                ws.write_number(r, 10, rank as f64)?;
            }
            if let Some(c) = u.change_from_previous {
                ws.write_number_with_format(r, 11, c, &two)?;
            }
            ws.write_string(r, 12, status_vi(&u.status))?;
        }
        ws.set_freeze_panes(1, 0)?;
        ws.set_column_width(1, 36)?;
        ws.set_row_height(0, 45)?;
    }
    let ws = wb.add_worksheet();
    ws.set_name(INDICATOR_SHEET)?;
    for (c, h) in INDICATOR_SHEET_HEADERS.iter().enumerate() {
        ws.write_string_with_format(0, c as u16, *h, &head)?;
    }
    for (r, i) in rev.indicators.iter().enumerate() {
        let r = r as u32 + 1;
        ws.write_string(r, 0, &i.unit_id)?;
        ws.write_string(r, 1, i.group_code.as_deref().unwrap_or(""))?;
        ws.write_string(r, 2, &i.indicator)?;
        for (k, v) in [i.numerator, i.denominator, i.ratio, i.points, i.max_points]
            .into_iter()
            .enumerate()
        {
            if let Some(v) = v {
                ws.write_number_with_format(r, 3 + k as u16, v, &two)?;
            }
        }
    }
    ws.set_freeze_panes(1, 0)?;
    Ok(wb.save_to_buffer()?)
}

pub const INDICATOR_SHEET: &str = "Chi tiết chỉ số";
pub const INDICATOR_SHEET_HEADERS: [&str; 8] = [
    "Mã đơn vị",
    "Nhóm",
    "Chỉ số",
    "Tử số",
    "Mẫu số",
    "Tỷ lệ",
    "Điểm",
    "Điểm tối đa",
];

pub fn sheet_name(level: i64) -> String {
    format!("Đơn vị cấp {level}")
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

/// Writes the revision's folder unless it is there; returns it.
pub fn ensure(warehouse: &Path, rev: &Revision, duckdb_version: &str) -> anyhow::Result<PathBuf> {
    let dir = folder_of(warehouse, &rev.meta);
    if dir.join("manifest.json").exists() {
        return Ok(dir);
    }
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for level in rev.levels() {
        files.push((
            format!("units-level-{level}.csv"),
            units_csv(rev, &[level])?,
        ));
        files.push((
            format!("indicators-level-{level}.csv"),
            indicators_csv(rev, level)?,
        ));
        files.push((
            format!("units-level-{level}.json"),
            serde_json::to_vec_pretty(&units_json(rev, &[level]))?,
        ));
    }
    files.push(("index.xlsx".into(), workbook(rev)?));
    files.push((
        "report.html".into(),
        super::report::render(rev)?.into_bytes(),
    ));
    let listed: Vec<ManifestFile> = files
        .iter()
        .map(|(name, bytes)| ManifestFile {
            name: name.clone(),
            bytes: bytes.len() as u64,
            sha256: format!("{:x}", Sha256::digest(bytes)),
        })
        .collect();
    let manifest = serde_json::json!({
        "period": rev.meta.period,
        "revision": rev.meta.revision,
        "previous_revision": rev.meta.previous_revision,
        "status": rev.meta.status,
        "created_at": rev.meta.created_at,
        "methodology": rev.meta.methodology,
        "data_watermark": rev.meta.data_watermark,
        "model_sql_digest": rev.meta.sql_digest,
        "build_id": rev.meta.build_id,
        "chiso_version": env!("CARGO_PKG_VERSION"),
        "duckdb_version": duckdb_version,
        "units": rev.units.len(),
        "change_summary": rev.meta.change_note.as_ref().map(|c| c.text()),
        "warnings": rev.meta.warnings,
        "accepted": rev.meta.accepted,
        "files": listed,
    });
    files.push((
        "manifest.json".into(),
        serde_json::to_vec_pretty(&manifest)?,
    ));
    let parent = dir.parent().expect("a period folder");
    std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(
        ".rev-{}.tmp-{}",
        rev.meta.revision,
        std::process::id()
    ));
    // Folders a crash left half written (this revision's, by any process) go first.
    let stale = format!(".rev-{}.tmp-", rev.meta.revision);
    for e in std::fs::read_dir(parent)?.flatten() {
        if e.file_name().to_string_lossy().starts_with(&stale) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    std::fs::create_dir_all(&tmp)?;
    for (name, bytes) in &files {
        write_durably(&tmp.join(name), bytes)
            .with_context(|| format!("writing {}", tmp.join(name).display()))?;
    }
    sync_dir(&tmp)?;
    if dir.exists() {
        // A folder left without its manifest by an older crash: replaced whole.
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("publishing {}", dir.display()))?;
    sync_dir(parent)?;
    Ok(dir)
}
