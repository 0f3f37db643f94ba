//! A run's input, output and error: inline in the run record up to [`INLINE_MAX`] bytes, in
//! chunks under `(RUN_DATA, run, part)` beyond, so that a run record always fits in one store
//! value however large a valid input or output is.

use super::record::RunText;
use crate::error::{Error, Result};
use crate::keys;
use crate::store::{RangeOptions, Transaction};

/// Which text of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Part {
    Input = 0,
    Output = 1,
    Error = 2,
}

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Input => "input",
            Part::Output => "output",
            Part::Error => "error",
        }
    }
}

/// Largest text kept inline in the record.
pub(super) const INLINE_MAX: usize = 16 * 1024;
/// Bytes per chunk (well below the store's 100,000-byte values and FoundationDB's 80 kB range
/// replies).
const CHUNK: usize = 64 * 1024;

/// Writes `text` as part `part` of `run` in `tx`: inline when small, in chunks otherwise, not
/// at all (only its size) when it is over `limit`.
pub(super) fn put<T: Transaction>(
    tx: &T,
    run: &str,
    part: Part,
    text: &str,
    limit: usize,
) -> RunText {
    let bytes = text.len() as u64;
    if text.len() > limit {
        return RunText {
            bytes,
            kept: false,
            chunks: 0,
            checksum: 0,
            text: None,
        };
    }
    let checksum = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    if text.len() <= INLINE_MAX {
        return RunText {
            bytes,
            kept: true,
            chunks: 0,
            checksum,
            text: Some(text.to_string()),
        };
    }
    let (begin, end) = keys::run_data_part(run, part as i64);
    tx.clear_range(&begin, &end);
    let mut chunks = 0;
    for (i, chunk) in text.as_bytes().chunks(CHUNK).enumerate() {
        tx.set(&keys::run_data(run, part as i64, i as u32), chunk);
        chunks += 1;
    }
    RunText {
        bytes,
        kept: true,
        chunks,
        checksum,
        text: None,
    }
}

/// Fills in `text.text` from its chunks, checking count, size and checksum.
pub(super) async fn load<T: Transaction>(
    tx: &T,
    run: &str,
    part: Part,
    text: &mut RunText,
) -> Result<()> {
    if text.text.is_some() || !text.kept || text.chunks == 0 {
        return Ok(());
    }
    let corrupt = |detail: String| Error::Corrupt {
        what: format!("{} of run {run:?}", part.name()),
        detail,
    };
    let (begin, end) = keys::run_data_part(run, part as i64);
    let rows = tx
        .get_range(&begin, &end, RangeOptions::all().snapshot())
        .await?;
    if rows.len() != text.chunks as usize {
        return Err(corrupt(format!(
            "{} chunks stored, the record says {}",
            rows.len(),
            text.chunks
        )));
    }
    let bytes: Vec<u8> = rows.into_iter().flat_map(|kv| kv.value).collect();
    if bytes.len() as u64 != text.bytes || xxhash_rust::xxh3::xxh3_64(&bytes) != text.checksum {
        return Err(corrupt("size or checksum mismatch".into()));
    }
    text.text = Some(String::from_utf8(bytes).map_err(|e| corrupt(e.to_string()))?);
    Ok(())
}

/// `s` cut to at most `max` bytes on a character boundary, saying how long it was.
pub(super) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}
