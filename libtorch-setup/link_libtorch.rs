//! Build script shared by every crate that links libtorch into an executable or a test.
//!
//! `torch-sys` tells its direct dependents where libtorch lives (`DEP_TCH_LIBTORCH_LIB`, because it declares
//! `links = "tch"`), but the rpath it sets only reaches its own C++ shim. Without the three link arguments below a
//! binary either cannot find `libtorch_cpu.so` at start-up or, worse, the linker's as-needed rule drops
//! `libtorch_cuda.so` and CUDA is reported unavailable on a GPU machine (tch-rs #767, #907, #980). Cargo applies
//! `rustc-link-arg` only to the package whose build script emits it, so each such crate points its `build` key here.
//! Without the `torch` feature the variable is absent and this script does nothing.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg=-Wl,-rpath={lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch");
    }
    // The PyPI wheel has no build-version file; its version.py sits one folder above lib/. Recording it here lets
    // `tokensieve doctor` say which libtorch the binary was linked against without importing Python.
    let version_py = std::path::Path::new(&lib).join("..").join("version.py");
    let version = std::fs::read_to_string(&version_py)
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                line.strip_prefix("__version__ = ").map(|v| v.trim_matches(['\'', '"', ' ']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=TOKENSIEVE_LIBTORCH_VERSION={version}");
    println!("cargo:rustc-env=TOKENSIEVE_LIBTORCH_LIB={lib}");
}
