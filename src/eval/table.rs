//! Rows of a dataset file, whatever format it was published in: the benchmarks this harness reads ship as JSON
//! (a list, a list under a key, or an object keyed by id), JSON Lines, CSV (NExT-QA, the D-CoDe subsets) or parquet
//! (Hugging Face datasets: LingoQA, Video-MME, EgoSchema). Every row becomes a JSON object so that one loader per
//! benchmark reads every format its data comes in.
//!
//! Choices \[project\]: CSV cells stay strings (loaders parse numbers where the schema says so); a JSON object whose
//! values are all objects is read as rows keyed by id, the key kept under `"_key"`; parquet nested lists and structs
//! become JSON arrays and objects. Parquet is read row by row (no Arrow), so a large file is never held twice.

use super::error::EvalError;
use serde_json::{Map, Value};
use std::path::Path;

/// One record of a dataset file.
pub type Row = Map<String, Value>;

/// Reads every row of `path`; the format follows the extension (`.json`, `.jsonl`, `.csv`, `.parquet`).
pub fn read_rows(path: &Path) -> Result<Vec<Row>, EvalError> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "parquet" => read_parquet(path),
        "csv" => read_csv(path),
        "jsonl" => {
            let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
            text.lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(n, l)| match serde_json::from_str(l) {
                    Ok(Value::Object(row)) => Ok(row),
                    Ok(_) => Err(EvalError::format(format!("{}:{}", path.display(), n + 1), "not a JSON object")),
                    Err(e) => Err(EvalError::format(format!("{}:{}", path.display(), n + 1), e)),
                })
                .collect()
        }
        "json" => {
            let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
            let value: Value = serde_json::from_str(&text).map_err(|e| EvalError::format(path.display(), e))?;
            rows_of_json(value).map_err(|reason| EvalError::format(path.display(), reason))
        }
        _ => Err(EvalError::format(path.display(), "unknown table format (expected .json, .jsonl, .csv or .parquet)")),
    }
}

/// Rows of a JSON document: a list of objects, an object holding one list of objects (`{"questions": [...]}`), or
/// an object of objects keyed by id.
pub fn rows_of_json(value: Value) -> Result<Vec<Row>, String> {
    let objects = |items: Vec<Value>| -> Result<Vec<Row>, String> {
        items
            .into_iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::Object(row) => Ok(row),
                _ => Err(format!("item {i} is not an object")),
            })
            .collect()
    };
    match value {
        Value::Array(items) => objects(items),
        Value::Object(map) => {
            let lists: Vec<&String> = map.iter().filter(|(_, v)| v.is_array()).map(|(k, _)| k).collect();
            if lists.len() == 1 {
                let key = lists[0].clone();
                let Some(Value::Array(items)) = map.into_iter().find(|(k, _)| *k == key).map(|(_, v)| v) else {
                    return Err("unreachable".into());
                };
                return objects(items);
            }
            if !map.is_empty() && map.values().all(Value::is_object) {
                return Ok(map
                    .into_iter()
                    .map(|(k, v)| {
                        let mut row = match v {
                            Value::Object(row) => row,
                            _ => Row::new(),
                        };
                        row.insert("_key".into(), Value::String(k));
                        row
                    })
                    .collect());
            }
            Err("expected a list of records, an object with one list, or an object of records keyed by id".into())
        }
        _ => Err("expected a list of records".into()),
    }
}

fn read_csv(path: &Path) -> Result<Vec<Row>, EvalError> {
    let mut reader = csv::ReaderBuilder::new().flexible(false).from_path(path).map_err(|e| csv_error(path, e))?;
    let header: Vec<String> = reader.headers().map_err(|e| csv_error(path, e))?.iter().map(str::to_string).collect();
    reader
        .records()
        .map(|r| {
            let record = r.map_err(|e| csv_error(path, e))?;
            Ok(header.iter().zip(record.iter()).map(|(k, v)| (k.clone(), Value::String(v.to_string()))).collect())
        })
        .collect()
}

fn csv_error(path: &Path, e: csv::Error) -> EvalError {
    match e.into_kind() {
        csv::ErrorKind::Io(source) => EvalError::io(path, source),
        kind => EvalError::format(path.display(), format!("{kind:?}")),
    }
}

fn read_parquet(path: &Path) -> Result<Vec<Row>, EvalError> {
    use parquet::file::reader::SerializedFileReader;
    let file = std::fs::File::open(path).map_err(|e| EvalError::io(path, e))?;
    let reader = SerializedFileReader::new(file).map_err(|e| EvalError::format(path.display(), e))?;
    reader
        .into_iter()
        .enumerate()
        .map(|(i, row)| {
            let at = || format!("{} row {i}", path.display());
            match row.map_err(|e| EvalError::format(at(), e))?.to_json_value() {
                Value::Object(map) => Ok(map),
                _ => Err(EvalError::format(at(), "not a record")),
            }
        })
        .collect()
}

/// A string field (numbers are written out, so ids stored as integers read the same).
pub fn text(row: &Row, key: &str) -> Option<String> {
    match row.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// An integer field, from a number or a numeric string (CSV).
pub fn integer(row: &Row, key: &str) -> Option<i64> {
    match row.get(key)? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_shapes_become_rows() {
        assert_eq!(rows_of_json(json!([{"a": 1}])).unwrap().len(), 1);
        let wrapped = rows_of_json(json!({"info": {}, "questions": [{"a": 1}, {"a": 2}]})).unwrap();
        assert_eq!(wrapped.len(), 2);
        let keyed = rows_of_json(json!({"q1": {"a": 1}, "q2": {"a": 2}})).unwrap();
        assert_eq!(keyed.iter().filter_map(|r| text(r, "_key")).collect::<Vec<_>>(), ["q1", "q2"]);
        assert!(rows_of_json(json!([1, 2])).unwrap_err().contains("item 0"));
        assert!(rows_of_json(json!("x")).is_err());
    }

    #[test]
    fn csv_and_jsonl_read_with_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("val.csv");
        std::fs::write(&csv, "video,question,answer\n42,why?,2\n43,\"how, then?\",0\n").unwrap();
        let rows = read_rows(&csv).unwrap();
        assert_eq!(text(&rows[1], "question").as_deref(), Some("how, then?"));
        assert_eq!(integer(&rows[0], "answer"), Some(2));
        std::fs::write(&csv, "a,b\n1,2,3\n").unwrap();
        assert!(matches!(read_rows(&csv), Err(EvalError::Format { .. })));
        let jsonl = dir.path().join("x.jsonl");
        std::fs::write(&jsonl, "{\"a\": 1}\n\n[2]\n").unwrap();
        assert!(read_rows(&jsonl).unwrap_err().to_string().contains("x.jsonl:3"));
        assert!(matches!(read_rows(&dir.path().join("missing.json")), Err(EvalError::Io { .. })));
        assert!(read_rows(&dir.path().join("data.xlsx")).unwrap_err().to_string().contains("unknown table format"));
    }
}
