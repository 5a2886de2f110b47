//! Times a Delta table's commits and snapshot loads as its history grows: `delta-probe DIR
//! [COMMITS] [ROWS]` appends COMMITS commits (default 2000) of ROWS rows (default 50) each, one
//! data file per commit as chiso lands one file per chunk, with deltalake's RecordBatchWriter
//! (checkpoints every 100 commits, the table default), and prints, at each power-of-ten step,
//! the mean time per commit over the last step and the time to open the table and list its
//! files (what a build would do to learn its snapshot).

use std::sync::Arc;
use std::time::Instant;

use deltalake::arrow::array::{Int64Array, StringArray};
use deltalake::arrow::datatypes::{DataType as ArrowType, Field, Schema};
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::kernel::{DataType, PrimitiveType, StructField};
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::DeltaTable;
use url::Url;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = std::path::PathBuf::from(args.next().ok_or("usage: delta-probe DIR [COMMITS] [ROWS]")?);
    let commits: usize = args.next().map_or(Ok(2000), |s| s.parse())?;
    let rows: usize = args.next().map_or(Ok(50), |s| s.parse())?;
    std::fs::create_dir_all(&dir)?;
    let url = Url::from_directory_path(std::fs::canonicalize(&dir)?).map_err(|_| "bad dir")?;
    let mut table = DeltaTable::try_from_url(url.clone())
        .await?
        .create()
        .with_columns([
            StructField::new("MaHoSo", DataType::Primitive(PrimitiveType::String), true),
            StructField::new("n", DataType::Primitive(PrimitiveType::Long), true),
        ])
        .await?;
    let schema = Arc::new(Schema::new(vec![
        Field::new("MaHoSo", ArrowType::Utf8, true),
        Field::new("n", ArrowType::Int64, true),
    ]));
    println!("| commits | ms per commit (last step) | ms to open and list files | files |");
    println!("|---:|---:|---:|---:|");
    let (mut step_start, mut since) = (0usize, Instant::now());
    for i in 0..commits {
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from_iter_values(
                    (0..rows).map(|r| format!("HS-{i:07}-{r:03}")),
                )),
                Arc::new(Int64Array::from_iter_values((0..rows).map(|r| (i * rows + r) as i64))),
            ],
        )?;
        let mut writer = RecordBatchWriter::for_table(&table)?;
        writer.write(batch).await?;
        writer.flush_and_commit(&mut table).await?;
        let done = i + 1;
        if done == commits || (done >= 10 && is_step(done)) {
            let per_commit = since.elapsed().as_secs_f64() * 1000.0 / (done - step_start) as f64;
            let t = Instant::now();
            let opened = deltalake::open_table(url.clone()).await?;
            let files = opened.get_file_uris()?.count();
            let open_ms = t.elapsed().as_secs_f64() * 1000.0;
            println!("| {done} | {per_commit:.2} | {open_ms:.1} | {files} |");
            step_start = done;
            since = Instant::now();
        }
    }
    Ok(())
}

/// 10, 20, 50, 100, 200, 500, 1000, …
fn is_step(n: usize) -> bool {
    let mut p = 1;
    while p * 10 <= n {
        p *= 10;
    }
    n.is_multiple_of(p) && matches!(n / p, 1 | 2 | 5)
}
