//! A minimal JSON reader for the official-reference fixtures (the pruners crate has no JSON dependency): objects,
//! arrays, numbers, strings without escapes beyond `\"` and `\\`, booleans and null. Numbers keep their text so an
//! `f32` is parsed straight from the decimal the generator wrote (no rounding through `f64`).

#![allow(dead_code)]

use ndarray::Array2;

/// A parsed JSON value.
#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// Parses a whole document; panics with the byte offset on malformed input (test fixtures only).
    pub fn parse(text: &str) -> Json {
        let bytes = text.as_bytes();
        let mut pos = 0;
        let v = value(bytes, &mut pos);
        skip_ws(bytes, &mut pos);
        assert_eq!(pos, bytes.len(), "trailing characters at {pos}");
        v
    }

    /// Reads and parses a fixture file.
    pub fn read(path: &std::path::Path) -> Json {
        Json::parse(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> &Json {
        self.try_get(key).unwrap_or_else(|| panic!("no key `{key}`"))
    }

    /// The member `key` of an object, if present.
    pub fn try_get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => panic!("`{key}` looked up in a non-object"),
        }
    }

    /// The elements of an array.
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            other => panic!("not an array: {other:?}"),
        }
    }

    /// A string.
    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            other => panic!("not a string: {other:?}"),
        }
    }

    /// A number as `f64`.
    pub fn f64(&self) -> f64 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("bad number {n}")),
            other => panic!("not a number: {other:?}"),
        }
    }

    /// A number as `f32`, parsed from its decimal text.
    pub fn f32(&self) -> f32 {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| panic!("bad number {n}")),
            other => panic!("not a number: {other:?}"),
        }
    }

    /// A number as `f64` (the name the video methods' tests read it by).
    pub fn num(&self) -> f64 {
        self.f64()
    }

    /// A non-negative integer, written as `3` or `3.0`.
    pub fn usize(&self) -> usize {
        match self {
            Json::Num(n) => n.parse().unwrap_or_else(|_| {
                let v = self.f64();
                assert!(v >= 0.0 && v.fract() == 0.0, "not an index: {n}");
                v as usize
            }),
            other => panic!("not a number: {other:?}"),
        }
    }

    /// True for `null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// A boolean.
    pub fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            other => panic!("not a boolean: {other:?}"),
        }
    }

    /// An array of `f32`.
    pub fn f32s(&self) -> Vec<f32> {
        self.arr().iter().map(Json::f32).collect()
    }

    /// An array of indices.
    pub fn usizes(&self) -> Vec<usize> {
        self.arr().iter().map(Json::usize).collect()
    }

    /// A flat array of `rows · cols` numbers as a row-major matrix.
    pub fn flat_matrix(&self, rows: usize, cols: usize) -> Array2<f32> {
        Array2::from_shape_vec((rows, cols), self.f32s()).expect("matrix shape")
    }

    /// An array of equal-length `f32` arrays as a matrix (`[0, 0]` for an empty array).
    pub fn matrix(&self) -> Array2<f32> {
        let rows: Vec<Vec<f32>> = self.arr().iter().map(Json::f32s).collect();
        let cols = rows.first().map_or(0, Vec::len);
        assert!(rows.iter().all(|r| r.len() == cols), "ragged matrix");
        Array2::from_shape_vec((rows.len(), cols), rows.concat()).expect("shape")
    }
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while *pos < b.len() && b[*pos].is_ascii_whitespace() {
        *pos += 1;
    }
}

fn expect(b: &[u8], pos: &mut usize, c: u8) {
    skip_ws(b, pos);
    assert_eq!(b.get(*pos), Some(&c), "expected `{}` at {}", c as char, pos);
    *pos += 1;
}

fn string(b: &[u8], pos: &mut usize) -> String {
    expect(b, pos, b'"');
    let mut out = Vec::new();
    while b[*pos] != b'"' {
        if b[*pos] == b'\\' {
            *pos += 1;
            assert!(matches!(b[*pos], b'"' | b'\\' | b'/'), "unsupported escape at {pos}");
        }
        out.push(b[*pos]);
        *pos += 1;
    }
    *pos += 1;
    String::from_utf8(out).expect("utf-8 string")
}

fn value(b: &[u8], pos: &mut usize) -> Json {
    skip_ws(b, pos);
    match b[*pos] {
        b'{' => {
            *pos += 1;
            let mut members = Vec::new();
            skip_ws(b, pos);
            if b[*pos] == b'}' {
                *pos += 1;
                return Json::Obj(members);
            }
            loop {
                let key = string(b, pos);
                expect(b, pos, b':');
                members.push((key, value(b, pos)));
                skip_ws(b, pos);
                *pos += 1;
                match b[*pos - 1] {
                    b',' => continue,
                    b'}' => return Json::Obj(members),
                    c => panic!("unexpected `{}` at {}", c as char, pos),
                }
            }
        }
        b'[' => {
            *pos += 1;
            let mut items = Vec::new();
            skip_ws(b, pos);
            if b[*pos] == b']' {
                *pos += 1;
                return Json::Arr(items);
            }
            loop {
                items.push(value(b, pos));
                skip_ws(b, pos);
                *pos += 1;
                match b[*pos - 1] {
                    b',' => continue,
                    b']' => return Json::Arr(items),
                    c => panic!("unexpected `{}` at {}", c as char, pos),
                }
            }
        }
        b'"' => Json::Str(string(b, pos)),
        b't' if b[*pos..].starts_with(b"true") => {
            *pos += 4;
            Json::Bool(true)
        }
        b'f' if b[*pos..].starts_with(b"false") => {
            *pos += 5;
            Json::Bool(false)
        }
        b'n' if b[*pos..].starts_with(b"null") => {
            *pos += 4;
            Json::Null
        }
        _ => {
            let start = *pos;
            while *pos < b.len() && matches!(b[*pos], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                *pos += 1;
            }
            assert!(*pos > start, "unexpected character at {start}");
            Json::Num(String::from_utf8(b[start..*pos].to_vec()).expect("ascii number"))
        }
    }
}

/// The directory of one method's fixture, `tests/official/<method>/`.
pub fn fixture_dir(method: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("official").join(method)
}

/// `m` with every element moved by one to four parts in 2²³, up or down by a fixed hash of its index: more than
/// another CPU's SIMD kernels (another summation order) change a dot product, and different for every row, so
/// near-tied similarities swap. A reference whose picks survive it does not hinge on f32 rounding, so it holds on
/// every CI machine, not only on the one that generated it.
pub fn nudged(m: &Array2<f32>) -> Array2<f32> {
    let mut out = m.clone();
    out.iter_mut().enumerate().for_each(|(i, v)| {
        let h = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let ulps = (1 + (h >> 61) % 4) as f32;
        let sign = if h >> 63 == 1 { 1.0 } else { -1.0 };
        *v *= 1.0 + sign * ulps * f32::EPSILON;
    });
    out
}
