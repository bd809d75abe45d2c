//! VisPruner against a transcription of the official `encode_images` loop (Theia-4869/VisPruner): the same kept
//! indices on random and clustered inputs, for several budgets and important ratios. The fixture and its generator
//! are in `tests/official/vispruner/` (`python make_vispruner.py` rewrites the fixture).

mod json {
    //! A minimal JSON reader for the committed fixtures (numbers, strings, arrays, objects; no escapes needed).

    /// One JSON value.
    #[derive(Debug)]
    pub enum Json {
        Num(f64),
        Str(String),
        Arr(Vec<Json>),
        Obj(Vec<(String, Json)>),
        Other,
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
                Json::Num(x) => *x,
                _ => panic!("not a number"),
            }
        }
        pub fn str(&self) -> &str {
            match self {
                Json::Str(s) => s,
                _ => panic!("not a string"),
            }
        }
        pub fn f32s(&self) -> Vec<f32> {
            self.arr().iter().map(|v| v.num() as f32).collect()
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
                    while self.i < self.s.len() && self.s[self.i].is_ascii_alphabetic() {
                        self.i += 1;
                    }
                    Json::Other
                }
                _ => {
                    let start = self.i;
                    while self.i < self.s.len() && b"+-.eE0123456789".contains(&self.s[self.i]) {
                        self.i += 1;
                    }
                    Json::Num(std::str::from_utf8(&self.s[start..self.i]).unwrap().parse().expect("number"))
                }
            }
        }
    }
}

use json::Json;
use tokensieve_pruners::{prune, Budget, CpuBackend, Method, TokenSet};

#[test]
fn vispruner_keeps_what_the_official_loop_keeps() {
    let text = include_str!("official/vispruner/vispruner.json");
    let fixture = Json::parse(text);
    let mut checked = 0;
    for case in fixture.get("cases").arr() {
        let (n, d) = (case.get("n").num() as usize, case.get("d").num() as usize);
        let tokens = TokenSet::from_array(case.get("features").matrix(n, d))
            .unwrap()
            .with_cls_attention(case.get("cls_attention").f32s())
            .unwrap();
        for run in case.get("runs").arr() {
            let k = run.get("k").num() as usize;
            let ratio = run.get("important_ratio").num();
            let (method, _) = Method::from_spec(&format!("vispruner:important_ratio={ratio}")).unwrap();
            let s = prune(&CpuBackend, &method, &tokens, Budget::Keep(k)).unwrap();
            assert_eq!(s.kept, run.get("kept").usizes(), "{} k={k} r={ratio}", case.get("name").str());
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "every committed run was compared");
}
