//! Test certificates generated at run time with the `openssl` CLI (nothing
//! secret is committed): a CA, and leaves signed by it with chosen SANs,
//! usable as TLS servers and clients.  Shared by the TLS end-to-end tests
//! (`tests/tls_downstream.rs`, `tests/tls_upstream.rs`).

use std::path::Path;
use std::process::Command;

/// Runs `openssl` with `args` in `dir`; panics with its stderr on failure.
pub fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA (`<name>.pem`, `<name>.key`) in `dir`.
pub fn make_ca(dir: &Path, name: &str) {
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
}

/// A leaf `<name>.pem`/`<name>.key` signed by CA `ca`, with subject CN
/// `cn` and the given SANs (`DNS:x`, `URI:y`), good for server and client auth.
pub fn make_leaf(dir: &Path, ca: &str, name: &str, cn: &str, sans: &[&str]) {
    let ext = format!(
        "subjectAltName={}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        sans.join(",")
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={cn}"),
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ],
        dir,
    );
}

/// `dir/file` as a string (for configs).
pub fn p(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}
