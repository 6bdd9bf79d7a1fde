//! `revokd-devca`: writes a development CA and node certificates for a local TLS cluster, and
//! optionally an admin CA with admins' client certificates (`scripts/gen-certs.sh` runs it).
//! Not for production: keys are unencrypted.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use revokd_testkit::devca::{DevCa, CA_VALIDITY, CERT_VALIDITY};

const DAY: u64 = 24 * 3600;

fn days(v: Option<String>, flag: &str) -> Result<Duration> {
    let n: u64 = v
        .with_context(|| format!("{flag} needs a number of days"))?
        .parse()
        .with_context(|| format!("{flag} takes a number of days"))?;
    anyhow::ensure!(n > 0, "{flag} must be at least 1");
    Ok(Duration::from_secs(n * DAY))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("certs");
    let mut nodes: Vec<String> = Vec::new();
    let mut sans: Vec<String> = vec!["localhost".into(), "127.0.0.1".into()];
    let mut admins: Vec<String> = Vec::new();
    let (mut ca_validity, mut cert_validity) = (CA_VALIDITY, CERT_VALIDITY);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ca-days" => ca_validity = days(args.next(), "--ca-days")?,
            "--days" => cert_validity = days(args.next(), "--days")?,
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--node" => nodes.extend(args.next()),
            "--san" => sans.extend(args.next()),
            "--admin" => admins.extend(args.next()),
            "-h" | "--help" => {
                println!("revokd-devca [--out DIR] [--node NAME]... [--san HOST_OR_IP]... [--admin NAME]... [--ca-days N] [--days N]\n\nWrites DIR/ca.pem and DIR/<node>.pem + DIR/<node>-key.pem per node (default nodes:\nnode1 node2 node3), each valid for its name, localhost, 127.0.0.1 and every --san.\nWith --admin: also DIR/admin-ca.pem, a separate CA for admins (revokd --admin-client-ca),\nand DIR/<admin>.pem + DIR/<admin>-key.pem, a client certificate named NAME per admin.\nCAs are valid for --ca-days (default 3650) and may not issue further CAs; certificates\nfor --days (default 365). Keys are written with mode 0600.");
                return Ok(());
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    if nodes.is_empty() {
        nodes = vec!["node1".into(), "node2".into(), "node3".into()];
    }
    let ca = DevCa::with_validity("revokd development CA", ca_validity, cert_validity)?;
    println!("{}", ca.write_ca(&out)?.display());
    let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
    for n in &nodes {
        let (cert, key) = ca.issue(n, &sans)?.write(&out, n)?;
        println!("{} {}", cert.display(), key.display());
    }
    if !admins.is_empty() {
        let admin_ca =
            DevCa::with_validity("revokd development admin CA", ca_validity, cert_validity)?;
        println!("{}", admin_ca.write_ca_as(&out, "admin-ca")?.display());
        for a in &admins {
            let (cert, key) = admin_ca.issue_client(a)?.write(&out, a)?;
            println!("{} {}", cert.display(), key.display());
        }
    }
    Ok(())
}
