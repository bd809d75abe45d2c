//! A minimal JSON reader for the committed fixtures (numbers, strings, arrays, objects; no escapes needed).

#![allow(dead_code)] // each test file reads a different part of the API

/// One JSON value; a number keeps its text, so `f32s` parses each decimal straight to the nearest f32.
#[derive(Debug)]
pub enum Json {
    Num(String),
    Str(String),
    Arr(Vec<Json>),
    Obj(Vec<(String, Json)>),
    Bool(bool),
    Null,
}

impl Json {
    pub fn parse(text: &str) -> Json {
        let mut p = Parser { s: text.as_bytes(), i: 0 };
        p.value()
    }
    pub fn get(&self, key: &str) -> &Json {
        match self {
            Json::Obj(m) => &m.iter().find(|(k, _)| k == key).unwrap_or_else(|| panic!("no key {key}")).1,
            _ => panic!("not an object looking up {key}"),
        }
    }
    pub fn arr(&self) -> &[Json] {
        match self {
            Json::Arr(v) => v,
            _ => panic!("not an array"),
        }
    }
    pub fn num(&self) -> f64 {
        match self {
            Json::Num(x) => x.parse().expect("number"),
            _ => panic!("not a number"),
        }
    }
    pub fn bool(&self) -> bool {
        match self {
            Json::Bool(b) => *b,
            _ => panic!("not a boolean"),
        }
    }
    pub fn str(&self) -> &str {
        match self {
            Json::Str(s) => s,
            _ => panic!("not a string"),
        }
    }
    pub fn f32s(&self) -> Vec<f32> {
        self.arr()
            .iter()
            .map(|v| match v {
                Json::Num(x) => x.parse::<f32>().expect("number"),
                _ => panic!("not a number"),
            })
            .collect()
    }
    pub fn usizes(&self) -> Vec<usize> {
        self.arr().iter().map(|v| v.num() as usize).collect()
    }
    pub fn matrix(&self, rows: usize, cols: usize) -> ndarray::Array2<f32> {
        ndarray::Array2::from_shape_vec((rows, cols), self.f32s()).expect("matrix shape")
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
    fn value(&mut self) -> Json {
        self.ws();
        match self.s[self.i] {
            b'{' => {
                self.i += 1;
                let mut m = Vec::new();
                loop {
                    self.ws();
                    if self.s[self.i] == b'}' {
                        self.i += 1;
                        return Json::Obj(m);
                    }
                    let Json::Str(k) = self.value() else { panic!("object key") };
                    self.ws();
                    self.i += 1; // ':'
                    m.push((k, self.value()));
                    self.ws();
                    if self.s[self.i] == b',' {
                        self.i += 1;
                    }
                }
            }
            b'[' => {
                self.i += 1;
                let mut v = Vec::new();
                loop {
                    self.ws();
                    if self.s[self.i] == b']' {
                        self.i += 1;
                        return Json::Arr(v);
                    }
                    v.push(self.value());
                    self.ws();
                    if self.s[self.i] == b',' {
                        self.i += 1;
                    }
                }
            }
            b'"' => {
                let start = self.i + 1;
                self.i = start + self.s[start..].iter().position(|&c| c == b'"').expect("string end");
                let out = String::from_utf8(self.s[start..self.i].to_vec()).expect("utf-8");
                self.i += 1;
                Json::Str(out)
            }
            b't' | b'f' | b'n' => {
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i].is_ascii_alphabetic() {
                    self.i += 1;
                }
                match &self.s[start..self.i] {
                    b"true" => Json::Bool(true),
                    b"false" => Json::Bool(false),
                    _ => Json::Null,
                }
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len() && b"+-.eE0123456789".contains(&self.s[self.i]) {
                    self.i += 1;
                }
                Json::Num(std::str::from_utf8(&self.s[start..self.i]).expect("ascii").to_string())
            }
        }
    }
}
