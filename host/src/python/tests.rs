//! The guest choice for python3.11 and the runtime's trees.

use super::*;

fn zip_of(names: &[&str]) -> Vec<u8> {
    use std::io::Write;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for n in names {
        w.start_file(*n, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"x").unwrap();
    }
    w.finish().unwrap().into_inner()
}

fn wasm_runtime() -> Arc<WasmRuntime> {
    Arc::new(WasmRuntime {
        reactor: Arc::new(Vec::new()),
        code_id: "runtime:x".into(),
        trees: Vec::new(),
    })
}

#[test]
fn native_extensions_are_every_so_file() {
    let z = zip_of(&[
        "lambda_function.py",
        "pkg/_speedups.cpython-311-x86_64-linux-gnu.so",
        "lib/libfoo.so.1",
        "notes.so.txt.py",
        "a.sox",
    ]);
    assert_eq!(
        native_extensions(&z),
        [
            "lib/libfoo.so.1",
            "notes.so.txt.py",
            "pkg/_speedups.cpython-311-x86_64-linux-gnu.so"
        ]
    );
    assert!(native_extensions(&zip_of(&["a.py"])).is_empty());
    assert!(native_extensions(b"not a zip").is_empty());
}

#[test]
fn auto_takes_linux_only_for_native_code_where_linux_runs() {
    let so = vec!["x.so".to_string()];
    let p = |setting, wasm: bool, linux: bool| Python {
        setting,
        wasm: wasm.then(wasm_runtime),
        linux: if linux {
            Ok(())
        } else {
            Err("no KVM with VMX/SVM".into())
        },
    };
    // This PVM host: no Linux guest.
    let pvm = p(Setting::Auto, true, false);
    assert_eq!(pvm.choose(&[]), Ok(Guest::Wasm));
    let e = pvm.choose(&so).unwrap_err();
    assert!(e.to_string().contains("(x.so)"), "{e}");
    assert!(e.to_string().contains("cannot run Linux guests"), "{e}");
    // A host with hardware virtualization.
    let hw = p(Setting::Auto, true, true);
    assert_eq!(hw.choose(&[]), Ok(Guest::Wasm));
    assert_eq!(hw.choose(&so), Ok(Guest::Linux));
    assert_eq!(p(Setting::Linux, true, true).choose(&[]), Ok(Guest::Linux));
    assert!(p(Setting::Linux, true, false).choose(&[]).is_err());
    let forced = p(Setting::Wasm, true, true).choose(&so).unwrap_err();
    assert!(
        forced.to_string().contains("--python-guest wasm"),
        "{forced}"
    );
    assert_eq!(p(Setting::Auto, false, true).choose(&[]), Ok(Guest::Linux));
    let none = p(Setting::Auto, false, false).choose(&[]).unwrap_err();
    assert!(none.to_string().contains("no KVM with VMX/SVM"), "{none}");
    assert!(none.to_string().contains("build-python-wasm.sh"), "{none}");
    let linux_only = p(Setting::Linux, true, false).choose(&[]).unwrap_err();
    assert_eq!(linux_only.to_string(), "no KVM with VMX/SVM");
}

#[test]
fn the_bootstrap_travels_as_a_stored_zip() {
    let z = bootstrap_zip().unwrap();
    let mut a = zip::ZipArchive::new(Cursor::new(&z)).unwrap();
    let mut f = a.by_name("ember_bootstrap.py").unwrap();
    assert_eq!(f.compression(), zip::CompressionMethod::Stored);
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    assert!(s.contains("def invoke("));
    drop(f);
    let mut f = a.by_name("snapshot_restore_py.py").unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).unwrap();
    assert!(s.contains("def register_after_restore("));
}
