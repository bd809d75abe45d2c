//! A small JSON reader for the official-code fixtures (the pruners crate has no JSON dependency): objects, arrays,
//! numbers (read as f64, so a fixture's float32 values written as their shortest f64 text come back exactly after
//! `as f32`), strings without escapes beyond `\"` and `\\`, booleans and null.

#![allow(dead_code)]

use std::collections::BTreeMap;

/// A parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Json>),
    Obj(BTreeMap<String, Json>),
}

impl Json {
    /// Parses a whole document; panics with the byte offset on malformed input (test fixtures only).
    pub fn parse(text: &str) -> Json {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing characters at byte {}", p.i);
        v
    }

    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => m.get(key).unwrap_or_else(|| panic!("no key {key}")),
            _ => panic!("not an object looking up {key}"),
        }
    }

    /// The elements of an array.
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => panic!("not an array: {self:?}"),
        }
    }

    /// A number.
    pub fn num(&self) -> f64 {
        match self {
            Json::Num(v) => *v,
            _ => panic!("not a number: {self:?}"),
        }
    }

    /// A non-negative integer.
    pub fn usize(&self) -> usize {
        let v = self.num();
        assert!(v >= 0.0 && v.fract() == 0.0, "not an index: {v}");
        v as usize
    }

    /// A string.
    pub fn str(&self) -> &str {
        match self {
            Json::Str(v) => v,
            _ => panic!("not a string: {self:?}"),
        }
    }

    /// True for null.
    pub fn is_null(&self) -> bool {
        matches!(self, Json::Null)
    }

    /// An array of numbers as f32.
    pub fn f32s(&self) -> Vec<f32> {
        self.arr().iter().map(|v| v.num() as f32).collect()
    }

    /// An array of indices.
    pub fn usizes(&self) -> Vec<usize> {
        self.arr().iter().map(Json::usize).collect()
    }

    /// An array of equal-length number arrays as a matrix.
    pub fn matrix(&self) -> ndarray::Array2<f32> {
        let rows: Vec<Vec<f32>> = self.arr().iter().map(Json::f32s).collect();
        let cols = rows.first().map_or(0, Vec::len);
        assert!(rows.iter().all(|r| r.len() == cols), "ragged matrix");
        ndarray::Array2::from_shape_vec((rows.len(), cols), rows.concat()).expect("matrix shape")
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) {
        self.ws();
        assert_eq!(self.s.get(self.i), Some(&c), "expected {:?} at byte {}", c as char, self.i);
        self.i += 1;
    }

    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = BTreeMap::new();
                self.ws();
                if self.s[self.i] == b'}' {
                    self.i += 1;
                    return Json::Obj(m);
                }
                loop {
                    self.ws();
                    let k = self.string();
                    self.eat(b':');
                    m.insert(k, self.value());
                    self.ws();
                    self.i += 1;
                    match self.s[self.i - 1] {
                        b',' => continue,
                        b'}' => return Json::Obj(m),
                        c => panic!("unexpected {:?} at byte {}", c as char, self.i - 1),
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                self.ws();
                if self.s[self.i] == b']' {
                    self.i += 1;
                    return Json::Arr(v);
                }
                loop {
                    v.push(self.value());
                    self.ws();
                    self.i += 1;
                    match self.s[self.i - 1] {
                        b',' => continue,
                        b']' => return Json::Arr(v),
                        c => panic!("unexpected {:?} at byte {}", c as char, self.i - 1),
                    }
                }
            }
            b'"' => Json::Str(self.string()),
            b't' => self.word("true", Json::Bool(true)),
            b'f' => self.word("false", Json::Bool(false)),
            b'n' => self.word("null", Json::Null),
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-0123456789.eE".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).expect("ascii number");
                Json::Num(text.parse().unwrap_or_else(|_| panic!("bad number {text:?} at byte {start}")))
            }
        }
    }

    fn word(&mut self, w: &str, v: Json) -> Json {
        assert!(self.s[self.i..].starts_with(w.as_bytes()), "expected {w} at byte {}", self.i);
        self.i += w.len();
        v
    }

    fn string(&mut self) -> String {
        self.eat(b'"');
        let mut out = Vec::new();
        while self.s[self.i] != b'"' {
            if self.s[self.i] == b'\\' {
                self.i += 1;
            }
            out.push(self.s[self.i]);
            self.i += 1;
        }
        self.i += 1;
        String::from_utf8(out).expect("utf-8 string")
    }
}
